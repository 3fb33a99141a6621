//! The allocator settings the fused scan runs best with, set by the first fused scan.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

static KEPT: AtomicBool = AtomicBool::new(false);

/// Makes glibc's `malloc` keep freed memory in the process instead of handing it back to the
/// kernel; does nothing on other C libraries (and to programs whose global allocator is not
/// the system's). The first fused scan of the process calls it, so a program need not; calling
/// it again does nothing.
///
/// Why: by default glibc serves every buffer above 128 KiB with its own `mmap` and trims the heap
/// top as soon as 128 KiB are free, so each training step gives its activations and the scan's
/// tape back to the kernel and page-faults them in again (zeroed) on the next step. Measured on
/// 2 cores (flex), the primer's classifier with an LSTM 512 and batch 32 trains at 231 samples/s
/// with glibc's defaults and 410 with these settings; the 512-wide scratch RNN twice as fast.
/// The process keeps its peak working set instead of returning it between steps.
///
/// `RNNLM_MALLOC_DEFAULTS=1` leaves glibc's settings alone (to measure what they give).
pub fn keep_freed_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RNNLM_MALLOC_DEFAULTS").is_some_and(|v| v == "1") {
            return;
        }
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

/// Whether [`keep_freed_memory`] changed the allocator's settings in this process.
pub fn freed_memory_kept() -> bool {
    KEPT.load(Ordering::Relaxed)
}
