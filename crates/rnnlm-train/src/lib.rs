//! Training for `rnnlm` language models through burn-train: the experiment files, a learning
//! strategy with truncated back-propagation through time and gradient clipping by the global
//! norm, atomic checkpoints with bit-exact resume (inside epochs too), corpora of any size
//! through prepared token files, metrics, and evaluation.
//!
//! One concern a module, each depending only on those listed before it: `error`, `device`,
//! `experiment`, `schedule`, `checkpoint`, `report`, `plot`, `render`, `clip`, `step` (the loss
//! and the model burn-train trains), `plan` (the data plan), `parallel` (data parallelism), `ranks` (processes: MPI),
//! `artifacts` (the run's files and its lock), `load`, `data` (the prepared corpus of an
//! experiment, or of a text to score), `evaluate` (the scoring loop that validation shares),
//! `fit` (the learning
//! strategy) and `train`.
#![deny(missing_docs)]

mod artifacts;
mod checkpoint;
mod clip;
mod data;
mod device;
mod error;
mod evaluate;
mod experiment;
mod fit;
mod load;
mod parallel;
mod plan;
mod plot;
mod ranks;
mod render;
mod report;
mod schedule;
mod step;
mod train;

pub use artifacts::{files, save_model_dir};
pub use checkpoint::{
    AtomicFileCheckpointer, EpochMetrics, EpochState, PartialEpoch, ReadOnlyCheckpointer,
    SavedState, best_epoch, latest_complete_checkpoint, next_checkpoint_key, write_atomic,
};
pub use clip::{clip_grad_global_norm, global_grad_norm};
pub use data::{PrepareMeter, corpus_spec, format_prepare, prepare_corpus, prepared_path};
pub use device::{DeviceError, probe_device};
pub use error::{ArtifactsError, TrainError};
pub use evaluate::{Evaluation, evaluate, evaluate_file, evaluate_tokens};
pub use experiment::{
    DataConfig, ExperimentConfig, OptimizerConfig, OptimizerKind, ScheduleConfig, ScheduleKind,
    ScheduleOver, TrainConfig,
};
pub use fit::{ReduceTime, TbpttStrategy};
pub use load::{LoadedModel, Which, load_model, load_model_as};
pub use parallel::{DataParallel, ParallelStep};
pub use plan::DataPlan;
#[cfg(feature = "mpi")]
pub use ranks::MpiRanks;
pub use ranks::{OneProcess, Ranks, launched_ranks, require_mpi_build};
pub use render::QuietRenderer;
pub use report::format_epoch;
pub use schedule::{Schedule, TrainingClock};
pub use step::{ShardBatch, ShardBatcher, ShardOutput, TrainableLm, sequence_loss};
pub use train::{Progress, TrainOptions, TrainReport, train, train_on};

/// The crate's README, whose example runs as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
