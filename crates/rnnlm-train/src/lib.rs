//! Training for `rnnlm` language models through burn-train: the experiment files, a learning
//! strategy with truncated back-propagation through time and gradient clipping by the global
//! norm, atomic checkpoints with bit-exact resume, metrics, and evaluation.
#![deny(missing_docs)]

mod checkpoint;
mod clip;
mod data;
mod device;
mod experiment;
mod plot;
mod render;
mod run;
mod schedule;
mod strategy;

use std::path::Path;

pub use checkpoint::{
    AtomicFileCheckpointer, EpochMetrics, EpochState, PartialEpoch, SavedState, best_epoch,
    latest_complete_checkpoint, next_checkpoint_key, write_atomic,
};
pub use clip::{clip_grad_global_norm, global_grad_norm};
pub use data::{PrepareMeter, corpus_spec, format_prepare, prepare_corpus, prepared_path};
pub use device::{DeviceError, probe_device};
pub use experiment::{
    DataConfig, ExperimentConfig, OptimizerConfig, OptimizerKind, ScheduleConfig, ScheduleKind,
    ScheduleOver, TrainConfig,
};
pub use render::QuietRenderer;
pub use run::{
    Evaluation, LoadedModel, Progress, TrainOptions, TrainReport, Which, evaluate, evaluate_file,
    evaluate_tokens, files,
    load_model, load_model_as, save_model_dir, train,
};
pub use schedule::{Schedule, TrainingClock};
pub use strategy::{
    DataParallel, DataPlan, ParallelStep, ShardBatch, ShardBatcher, ShardOutput, TbpttStrategy,
    TrainableLm, format_epoch, sequence_loss,
};

/// Why training or evaluation stopped. Every message names the file, field or step involved.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The experiment file or an override is wrong.
    #[error("{0}")]
    Config(String),
    /// The corpus could not be read or cut.
    #[error(transparent)]
    Data(#[from] rnnlm_data::DataError),
    /// The artifacts or checkpoint directory cannot be used.
    #[error("{0}")]
    Artifacts(String),
    /// A weights file could not be written or read.
    #[error("{0}")]
    Record(String),
    /// The plot could not be drawn.
    #[error("cannot draw the perplexity plot: {0}")]
    Plot(String),
    /// A file operation failed. The message holds the reason, so it is not also given as the
    /// error's source (which would print it twice in a chain).
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The reason.
        reason: std::io::Error,
    },
    /// Loss or gradient norm became NaN or infinite.
    #[error(
        "the {what} became {value} at epoch {epoch}, step {step}; training stopped and the last \
         complete checkpoint was kept (lower optimizer.lr or train.theta, then --resume)"
    )]
    NonFinite {
        /// Which quantity.
        what: &'static str,
        /// Its value.
        value: f64,
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
    },
    /// Stopped before the end (Ctrl-C).
    #[error("training stopped ({reason}); {}", match last_checkpoint {
        Some(position) => format!("the last checkpoint is after {position}: continue from it with --resume"),
        None => "no checkpoint was written".to_owned(),
    })]
    Interrupted {
        /// Why.
        reason: String,
        /// Where the last checkpoint stands ("epoch 3", "epoch 4, minibatch 120 of 400").
        last_checkpoint: Option<String>,
    },
    /// burn-train reported an error.
    #[error("training failed: {0}")]
    Training(String),
    /// A device given to train on cannot run (see [`probe_device`]).
    #[error("device {device}: {source}")]
    Device {
        /// The device, as burn prints it.
        device: String,
        /// What went wrong.
        source: DeviceError,
    },
}

impl TrainError {
    pub(crate) fn io(path: &Path, reason: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            reason,
        }
    }
}

/// The crate's README, whose example runs as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
