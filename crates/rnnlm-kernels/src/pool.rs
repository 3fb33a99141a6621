//! Helper threads that stay awake between the parallel parts of a step.
//!
//! A training step runs a dozen short parallel regions (each layer's time loop, the large
//! products, the column sums) with serial work between them. Spawning scoped threads for each
//! cost 40 µs on an idle machine, and far more on a virtual machine whose second vCPU has gone
//! idle meanwhile: measured here, 100-500 µs per region once the serial gap before it exceeded
//! ~50 µs, against 1-3 µs for a helper that was still spinning. So the helpers here are started
//! once, spin (then yield) for a couple of milliseconds after each job, which covers the gaps
//! inside a step and between steps, and only then block until the next job.
//!
//! One caller uses the helpers at a time; a call made while they are busy (another thread's
//! step, or a parallel region nested in one) spawns scoped threads as before, so the results
//! never depend on who ran them.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a helper stays awake after its last job by default: longer than the serial gaps of
/// a training step (the loss, the optimizer's update between steps: well under a millisecond
/// for the chapter's models), short enough that an idle process stops burning a core at once.
pub(crate) const STAY_AWAKE: Duration = Duration::from_millis(2);

/// The stay-awake time in force, in microseconds ([`crate::set_helper_stay_awake`]).
static STAY_AWAKE_MICROS: AtomicU64 = AtomicU64::new(STAY_AWAKE.as_micros() as u64);

pub(crate) fn set_stay_awake(time: Duration) {
    let micros = u64::try_from(time.as_micros()).unwrap_or(u64::MAX);
    STAY_AWAKE_MICROS.store(micros, Ordering::Relaxed);
}

pub(crate) fn stay_awake() -> Duration {
    Duration::from_micros(STAY_AWAKE_MICROS.load(Ordering::Relaxed))
}

/// Spins between yields while awake: about 100 µs of `pause` on recent Intel cores (some 140
/// cycles each), a few µs on cores where it is short.
const SPINS_PER_YIELD: u32 = 2_000;

/// The work of one region, borrowed for the duration of [`run`].
type Work = *const (dyn Fn(usize) + Sync);

/// One helper's mailbox.
struct Slot {
    /// Incremented by the caller to hand over a job (written before it, read after it).
    posted: AtomicU64,
    /// Set to the job's number by the helper when it is done with it.
    finished: AtomicU64,
    /// The job: the work and this helper's part of it, valid while `posted != finished`.
    job: UnsafeCell<(Option<Work>, usize)>,
    /// A panic of the last job, to re-raise in the caller.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
    /// Whether the helper sleeps on `wake` (then the caller must notify it).
    asleep: AtomicBool,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written by the caller only while the helper is idle (`finished == posted`)
// and read by the helper only between seeing `posted` advance and advancing `finished`; the
// atomics order both.
unsafe impl Sync for Slot {}
unsafe impl Send for Slot {}

impl Slot {
    fn new() -> Self {
        Self {
            posted: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            job: UnsafeCell::new((None, 0)),
            panic: Mutex::new(None),
            asleep: AtomicBool::new(false),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// The helper's loop: wait for a job, run it, report.
    fn serve(&self) {
        let mut seen = 0u64;
        loop {
            seen = self.next_job(seen);
            // SAFETY: the caller wrote the job before posting it and waits for `finished`.
            let (work, part) = unsafe { *self.job.get() };
            let work = work.expect("a posted job has work");
            // SAFETY: the caller keeps the work alive until it sees `finished == seen`.
            let result = catch_unwind(AssertUnwindSafe(|| unsafe { (*work)(part) }));
            if let Err(payload) = result {
                *self.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(payload);
            }
            self.finished.store(seen, Ordering::Release);
        }
    }

    /// Waits until a job after `seen` is posted: spinning, then yielding, then asleep.
    fn next_job(&self, seen: u64) -> u64 {
        let since = Instant::now();
        loop {
            for _ in 0..SPINS_PER_YIELD {
                let posted = self.posted.load(Ordering::Acquire);
                if posted != seen {
                    return posted;
                }
                std::hint::spin_loop();
            }
            if since.elapsed() < stay_awake() {
                std::thread::yield_now();
                continue;
            }
            let mut guard = self.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            // With `post`'s SeqCst pair: either the caller sees `asleep` and notifies under
            // the lock, or this load sees its job.
            self.asleep.store(true, Ordering::SeqCst);
            while self.posted.load(Ordering::SeqCst) == seen {
                guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            self.asleep.store(false, Ordering::Relaxed);
            drop(guard);
        }
    }

    /// Hands `part` of `work` to this (idle) helper.
    ///
    /// # Safety
    /// `work` must stay valid until [`Slot::wait`] returns.
    unsafe fn post(&self, work: Work, part: usize) {
        // SAFETY: the helper is idle (the previous job was waited for), so it does not read
        // the job now.
        unsafe { *self.job.get() = (Some(work), part) };
        self.posted.fetch_add(1, Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst) {
            let _guard = self.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_one();
        }
    }

    /// Waits for the posted job; its panic, if it panicked.
    fn wait(&self) -> Option<Box<dyn std::any::Any + Send>> {
        let posted = self.posted.load(Ordering::Relaxed);
        let mut spins = 0u32;
        while self.finished.load(Ordering::Acquire) != posted {
            spins += 1;
            if spins < SPINS_PER_YIELD {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        self.panic.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The helpers, started as calls need them.
fn helper_slots() -> &'static Mutex<Vec<Arc<Slot>>> {
    static HELPERS: OnceLock<Mutex<Vec<Arc<Slot>>>> = OnceLock::new();
    HELPERS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Runs `work(part)` for every part in `0..parts` (the calling thread takes part 0) and returns
/// when all are done, re-raising a part's panic.
pub(crate) fn run(parts: usize, work: &(dyn Fn(usize) + Sync)) {
    run_beside(parts, || work(0), work);
}

/// Runs `own` on the calling thread while `helpers(part)` runs for each part in `1..parts` on
/// other threads; returns what `own` returns once all are done, re-raising a part's panic
/// (`own`'s first). `own` never leaves the calling thread, so it need not be `Send`.
pub(crate) fn run_beside<R>(
    parts: usize,
    own: impl FnOnce() -> R,
    helpers: &(dyn Fn(usize) + Sync),
) -> R {
    if parts <= 1 {
        return own();
    }
    let Ok(mut slots) = helper_slots().try_lock() else {
        // Busy with another caller's region (or this is nested in one): threads of our own.
        return scoped(parts, own, helpers);
    };
    while slots.len() < parts - 1 {
        let slot = Arc::new(Slot::new());
        let serving = Arc::clone(&slot);
        let started = std::thread::Builder::new()
            .name(format!("rnnlm-kernels-{}", slots.len() + 1))
            .spawn(move || serving.serve());
        if started.is_err() {
            drop(slots);
            return scoped(parts, own, helpers);
        }
        slots.push(slot);
    }
    // SAFETY: the lifetime is erased for the helpers; every posted job is waited for below
    // before this function returns or unwinds, so `helpers` outlives its use.
    let erased: Work = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Work>(helpers) };
    for (part, slot) in (1..parts).zip(slots.iter()) {
        // SAFETY: as above.
        unsafe { slot.post(erased, part) };
    }
    let result = catch_unwind(AssertUnwindSafe(own));
    let mut panic = None;
    for slot in slots.iter().take(parts - 1) {
        if let Some(payload) = slot.wait() {
            panic.get_or_insert(payload);
        }
    }
    drop(slots);
    finish(result, panic)
}

/// `own`'s result, or the first panic: `own`'s, then a helper's.
fn finish<R>(
    result: std::thread::Result<R>,
    helper_panic: Option<Box<dyn std::any::Any + Send>>,
) -> R {
    match (result, helper_panic) {
        (Err(payload), _) | (Ok(_), Some(payload)) => resume_unwind(payload),
        (Ok(value), None) => value,
    }
}

/// [`run_beside`] on threads spawned for this call.
fn scoped<R>(parts: usize, own: impl FnOnce() -> R, helpers: &(dyn Fn(usize) + Sync)) -> R {
    let (result, panic) = std::thread::scope(|scope| {
        let spawned: Vec<_> = (1..parts)
            .map(|part| scope.spawn(move || helpers(part)))
            .collect();
        let result = catch_unwind(AssertUnwindSafe(own));
        let mut panic = None;
        for thread in spawned {
            if let Err(payload) = thread.join() {
                panic.get_or_insert(payload);
            }
        }
        (result, panic)
    });
    finish(result, panic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_part_runs_once_per_call() {
        for parts in 1..5 {
            for _ in 0..50 {
                let counts: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
                run(parts, &|part| {
                    counts[part].fetch_add(1, Ordering::Relaxed);
                });
                assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn helpers_wake_after_sleeping() {
        let total = AtomicUsize::new(0);
        run(2, &|part| {
            total.fetch_add(part + 1, Ordering::Relaxed);
        });
        std::thread::sleep(STAY_AWAKE * 3);
        run(2, &|part| {
            total.fetch_add(part + 1, Ordering::Relaxed);
        });
        assert_eq!(total.load(Ordering::Relaxed), 6);
    }

    /// With no stay-awake time the helpers sleep after every job, and every job still runs
    /// (the other tests of this binary only get slower meanwhile).
    #[test]
    fn helpers_that_sleep_at_once_still_run_every_job() {
        crate::set_helper_stay_awake(Some(Duration::ZERO));
        assert_eq!(stay_awake(), Duration::ZERO);
        let total = AtomicUsize::new(0);
        for _ in 0..20 {
            run(2, &|part| {
                total.fetch_add(part + 1, Ordering::Relaxed);
            });
            std::thread::sleep(Duration::from_micros(300));
        }
        crate::set_helper_stay_awake(None);
        assert_eq!(stay_awake(), STAY_AWAKE);
        assert_eq!(total.load(Ordering::Relaxed), 20 * 3);
    }

    #[test]
    fn a_helpers_panic_reaches_the_caller_and_the_pool_survives() {
        let result = catch_unwind(|| {
            run(2, &|part| {
                if part == 1 {
                    panic!("part one fails");
                }
            })
        });
        let payload = result.expect_err("the panic is re-raised");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"part one fails"));
        let ran = AtomicUsize::new(0);
        run(2, &|_| {
            ran.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(ran.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn threads_of_its_own_reraise_a_parts_panic_too() {
        let payload = catch_unwind(|| {
            scoped(3, || (), &|part| {
                if part == 2 {
                    panic!("part two fails");
                }
            })
        })
        .expect_err("the panic is re-raised");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"part two fails"));
    }

    #[test]
    fn the_callers_own_work_returns_its_result() {
        let helped = AtomicUsize::new(0);
        let own = std::cell::Cell::new(0); // not Sync: it stays on this thread
        let result = run_beside(
            3,
            || {
                own.set(5);
                own.get() * 2
            },
            &|part| {
                helped.fetch_add(part, Ordering::Relaxed);
            },
        );
        assert_eq!((result, helped.load(Ordering::Relaxed)), (10, 3));
    }

    #[test]
    fn concurrent_and_nested_callers_all_finish() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..20 {
                        run(2, &|_| {
                            run(2, &|_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 20 * 4);
    }
}
