//! Wall time per phase of the fused kernels (scan forward and backward), to see what a change
//! should attack (`rnnlm bench --profile` prints it). Off unless [`enable`]d; off, a phase costs one relaxed
//! atomic load.
//!
//! The figures are process-wide sums over every call while enabled: profile one training loop
//! at a time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
static TIMES: Mutex<Vec<PhaseTime>> = Mutex::new(Vec::new());

/// The time spent in one phase since the last [`take`].
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseTime {
    /// What ran, for example `backward: time loops`.
    pub phase: &'static str,
    /// Wall time over every call.
    pub total: Duration,
    /// How many times it ran.
    pub calls: u64,
}

/// Starts or stops recording phase times.
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// The phase times recorded since the last call, in the order the phases first ran; clears
/// them.
pub fn take() -> Vec<PhaseTime> {
    std::mem::take(&mut *TIMES.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Runs `work`, adding its wall time to `phase` while recording is enabled.
pub fn timed<R>(phase: &'static str, work: impl FnOnce() -> R) -> R {
    if !ENABLED.load(Ordering::Relaxed) {
        return work();
    }
    let started = Instant::now();
    let result = work();
    let elapsed = started.elapsed();
    let mut times = TIMES.lock().unwrap_or_else(|e| e.into_inner());
    match times.iter_mut().find(|t| t.phase == phase) {
        Some(time) => {
            time.total += elapsed;
            time.calls += 1;
        }
        None => times.push(PhaseTime {
            phase,
            total: elapsed,
            calls: 1,
        }),
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_while_enabled() {
        timed("before", || ());
        enable(true);
        timed("phase", || std::thread::sleep(Duration::from_millis(2)));
        timed("phase", || ());
        enable(false);
        timed("after", || ());
        // The recorder is process-wide and the other tests' scans run meanwhile: look at the
        // phases of this test only.
        let times = take();
        let ours: Vec<&PhaseTime> = times
            .iter()
            .filter(|t| ["before", "phase", "after"].contains(&t.phase))
            .collect();
        assert_eq!(ours.len(), 1, "{times:?}");
        assert_eq!((ours[0].phase, ours[0].calls), ("phase", 2));
        assert!(ours[0].total >= Duration::from_millis(2));
    }
}
