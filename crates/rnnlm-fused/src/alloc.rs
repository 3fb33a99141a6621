//! Allocator settings for training loops.

use std::sync::atomic::{AtomicBool, Ordering};

static KEPT: AtomicBool = AtomicBool::new(false);

/// Makes glibc's `malloc` keep freed memory in the process instead of handing it back to the
/// kernel. Call it once, early in `main`; it does nothing on other C libraries.
///
/// Why: by default glibc serves every buffer above 128 KiB with its own `mmap` and trims the heap
/// top as soon as 128 KiB are free, so each training step gives its activations back to the kernel
/// and page-faults them in again (zeroed) on the next step. For the 512-wide scratch RNN a third
/// of the CPU time went to the kernel; with these settings `rnnlm bench --model rnn-scratch`
/// trains about 2x faster (12.5-13.3k -> 21-28k tokens/s on the flex backend, 2 cores). The
/// process keeps its peak working set (tens of MB for the d2l models) instead of returning it.
///
/// `RNNLM_MALLOC_DEFAULTS=1` leaves glibc's settings alone (to measure what a program that does
/// not call this gets).
pub fn keep_freed_memory() {
    if std::env::var_os("RNNLM_MALLOC_DEFAULTS").is_some_and(|v| v == "1") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads run.
    unsafe {
        // 32 MiB is the largest mmap threshold glibc accepts on 64-bit targets.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        KEPT.store(true, Ordering::Relaxed);
    }
}

/// Whether [`keep_freed_memory`] changed the allocator's settings in this process.
pub fn freed_memory_kept() -> bool {
    KEPT.load(Ordering::Relaxed)
}
