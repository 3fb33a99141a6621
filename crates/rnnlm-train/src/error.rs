//! Why training, loading or evaluation stopped: one enum, each variant naming the file, field,
//! position or device involved.

use std::path::Path;

use crate::device::DeviceError;

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
    /// A data-parallel step failed on one of the devices.
    #[error("data-parallel step failed: {reason}")]
    DataParallel {
        /// burn-train's report of the failure.
        reason: String,
    },
    /// A prefix to continue has no token the checkpoint's preprocessing keeps.
    #[error(
        "prefix {prefix:?} is empty after the checkpoint's {preprocess:?} preprocessing; give at \
         least one character it keeps"
    )]
    EmptyPrefix {
        /// The prefix as given.
        prefix: String,
        /// The checkpoint's preprocessing.
        preprocess: rnnlm_data::Preprocess,
    },
    /// Sampling parameters that cannot run.
    #[error("decoding: {0}")]
    Decoding(#[from] rnnlm::sample::DecodingError),
    /// The loss over an evaluated text is not finite.
    #[error(
        "the evaluation loss became {value}: the model gives no finite perplexity on this text \
         (its weights are not finite, or it was trained diverging)"
    )]
    NonFiniteEvaluation {
        /// The mean loss.
        value: f64,
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
    /// A device given to train on cannot run (see [`probe_device`](crate::probe_device)).
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
