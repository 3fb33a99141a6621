//! The learning-rate schedule as a burn `LrScheduler`, so the learner steps it and its
//! checkpointer saves it. Burn's own cosine and exponential schedulers refuse a learning rate
//! above 1, and d2l trains at 1 and 2.

use burn::optim::LearningRate;
use burn::optim::lr_scheduler::{LrScheduler, LrSchedulerRecord};

use crate::experiment::{ScheduleConfig, ScheduleKind};

/// Learning rate as a function of the iteration count.
#[derive(Clone, Debug)]
pub struct Schedule {
    base_lr: f64,
    config: ScheduleConfig,
    iterations_per_epoch: usize,
    total_iterations: usize,
    /// Steps taken so far.
    iteration: usize,
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
        }
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
                let progress = (iteration as f64 / self.total_iterations.max(1) as f64).min(1.0);
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
