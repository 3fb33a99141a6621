//! The allocator settings the fused scan runs best with, set by the first fused scan.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

static KEPT: AtomicBool = AtomicBool::new(false);

/// Whether the first fused scan calls [`keep_freed_memory`] itself (see
/// [`set_automatic_allocator_settings`]).
static AUTOMATIC: AtomicBool = AtomicBool::new(true);

/// Makes glibc's `malloc` keep freed memory in the process instead of handing it back to the
/// kernel; does nothing on other C libraries (and to programs whose global allocator is not
/// the system's). Unless told otherwise ([`set_automatic_allocator_settings`],
/// `RNNLM_MALLOC_DEFAULTS=1`), the first fused scan of the process calls it, so a program need
/// not; calling it again does nothing.
///
/// This acts on the whole process, not only on rnnlm's buffers: glibc keeps up to its peak
/// working set instead of returning memory between steps (`M_MMAP_THRESHOLD` 32 MiB,
/// `M_TRIM_THRESHOLD` 1 GiB, `M_TOP_PAD` 64 MiB).
///
/// Why: by default glibc serves every buffer above 128 KiB with its own `mmap` and trims the heap
/// top as soon as 128 KiB are free, so each training step gives its activations and the scan's
/// tape back to the kernel and page-faults them in again (zeroed) on the next step. Measured on
/// 2 cores (flex), the primer's classifier with an LSTM 512 and batch 32 trains at 231 samples/s
/// with glibc's defaults and 410 with these settings; the 512-wide scratch RNN twice as fast.
pub fn keep_freed_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; glibc takes its arena lock for it,
        // and changes the mmap threshold itself at run time (from free) while other threads
        // allocate.
        unsafe {
            // 32 MiB is the largest mmap threshold glibc accepts on 64-bit targets.
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
            KEPT.store(true, Ordering::Relaxed);
        }
    });
}

/// Whether the first fused scan changes glibc's settings itself ([`keep_freed_memory`]): `true`
/// by default; `false` leaves the process's allocator as the program set it (call it before
/// the first forward pass). The environment's `RNNLM_MALLOC_DEFAULTS=1` says `false` too.
/// An explicit [`keep_freed_memory`] call applies either way.
pub fn set_automatic_allocator_settings(automatic: bool) {
    AUTOMATIC.store(automatic, Ordering::Relaxed);
}

/// What the first fused scan calls: [`keep_freed_memory`], unless the program
/// ([`set_automatic_allocator_settings`]) or the environment (`RNNLM_MALLOC_DEFAULTS=1`) said
/// not to. An application that wants the setting before its first scan (the `rnnlm` command,
/// whose composite paths gain from it too) calls this at start-up.
pub fn keep_freed_memory_unless_told_not_to() {
    static FROM_ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let leave_alone = *FROM_ENV
        .get_or_init(|| std::env::var_os("RNNLM_MALLOC_DEFAULTS").is_some_and(|v| v == "1"));
    if AUTOMATIC.load(Ordering::Relaxed) && !leave_alone {
        keep_freed_memory();
    }
}

/// Whether [`keep_freed_memory`] changed the allocator's settings in this process.
pub fn freed_memory_kept() -> bool {
    KEPT.load(Ordering::Relaxed)
}
