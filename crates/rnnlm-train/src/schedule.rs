//! The learning-rate schedule as a burn `LrScheduler`, so the learner steps it and its
//! checkpointer saves it. Burn's own cosine and exponential schedulers refuse a learning rate
//! above 1, and d2l trains at 1 and 2.

use burn::optim::LearningRate;
use burn::optim::lr_scheduler::{LrScheduler, LrSchedulerRecord};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::experiment::{ScheduleConfig, ScheduleKind, ScheduleOver};

/// Learning rate as a function of the iteration count, or of the training time spent.
#[derive(Clone, Debug)]
pub struct Schedule {
    base_lr: f64,
    config: ScheduleConfig,
    iterations_per_epoch: usize,
    total_iterations: usize,
    /// Steps taken so far.
    iteration: usize,
    /// Over time: the budget and the clock the trainer sets before each step.
    budget: Option<(f64, TrainingClock)>,
}

/// Training seconds spent so far, shared by the trainer (which sets it before each step) and a
/// schedule that runs over time.
#[derive(Clone, Debug, Default)]
pub struct TrainingClock(Arc<AtomicU64>);

impl TrainingClock {
    /// Sets the seconds spent.
    pub fn set(&self, seconds: f64) {
        self.0.store(seconds.to_bits(), Ordering::Relaxed);
    }

    /// The seconds spent.
    pub fn seconds(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

impl Schedule {
    /// `iterations_per_epoch` is the nominal number of minibatches per epoch (sequential
    /// partitioning may give one fewer, depending on the epoch's random offset).
    pub fn new(
        base_lr: f64,
        config: ScheduleConfig,
        iterations_per_epoch: usize,
        epochs: usize,
    ) -> Self {
        let iterations_per_epoch = iterations_per_epoch.max(1);
        Self {
            base_lr,
            config,
            iterations_per_epoch,
            total_iterations: iterations_per_epoch * epochs,
            iteration: 0,
            budget: None,
        }
    }

    /// The same schedule over `seconds` of training read from `clock` (`schedule.over =
    /// "time"`) rather than over the epochs' minibatches.
    pub fn over_time(mut self, seconds: f64, clock: TrainingClock) -> Self {
        self.budget = Some((seconds, clock));
        self
    }

    /// How far the run is, from 0 to 1: minibatches over the epochs', or time over the budget.
    fn progress(&self, iteration: usize) -> f64 {
        let progress = match &self.budget {
            Some((seconds, clock)) if self.config.over == ScheduleOver::Time => {
                clock.seconds() / seconds.max(1e-9)
            }
            _ => iteration as f64 / self.total_iterations.max(1) as f64,
        };
        progress.min(1.0)
    }

    /// The rate used by iteration `iteration` (0-based).
    pub fn lr_at(&self, iteration: usize) -> f64 {
        match self.config.kind {
            ScheduleKind::Constant => self.base_lr,
            ScheduleKind::Step => {
                let epoch = iteration / self.iterations_per_epoch;
                self.base_lr
                    * self
                        .config
                        .gamma
                        .powi((epoch / self.config.step_epochs) as i32)
            }
            ScheduleKind::Cosine => {
                let progress = self.progress(iteration);
                let min = self.config.min_lr;
                min + 0.5 * (self.base_lr - min) * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

impl LrScheduler for Schedule {
    fn step(&mut self) -> LearningRate {
        let lr = self.lr_at(self.iteration);
        self.iteration += 1;
        lr
    }

    fn to_record(&self) -> LrSchedulerRecord {
        LrSchedulerRecord::new().with_scalar("iteration", self.iteration as u64)
    }

    fn load_record(&mut self, record: LrSchedulerRecord) {
        if let Some(iteration) = record.scalar::<u64>("iteration") {
            self.iteration = iteration as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cosine_over_time_follows_the_clock_and_ends_with_the_budget() {
        let config = ScheduleConfig {
            kind: ScheduleKind::Cosine,
            min_lr: 0.1,
            over: ScheduleOver::Time,
            ..ScheduleConfig::default()
        };
        let clock = TrainingClock::default();
        // 10 epochs of 100 minibatches would take the iterations; the clock decides instead.
        let schedule = Schedule::new(1.1, config.clone(), 100, 10).over_time(60.0, clock.clone());
        clock.set(0.0);
        assert!((schedule.lr_at(500) - 1.1).abs() < 1e-12);
        clock.set(30.0);
        assert!(
            (schedule.lr_at(1) - 0.6).abs() < 1e-12,
            "half the budget: half way"
        );
        clock.set(90.0);
        assert!(
            (schedule.lr_at(2) - 0.1).abs() < 1e-12,
            "past the budget: the minimum"
        );
        // Over epochs the iteration decides, whatever the clock says.
        let epochs = ScheduleConfig {
            over: ScheduleOver::Epochs,
            ..config
        };
        let schedule = Schedule::new(1.1, epochs, 100, 10).over_time(60.0, clock);
        assert!((schedule.lr_at(500) - 0.6).abs() < 1e-12);
    }
}
