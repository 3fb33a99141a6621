//! Why training, loading or evaluation stopped: one enum, each variant naming the file, field,
//! position or device involved.

use std::path::{Path, PathBuf};

use crate::device::DeviceError;

/// Why training or evaluation stopped. Every message names the file, field or step involved.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The experiment file or an override cannot be read or parsed (the message names the file
    /// or the `--set`, and the line).
    #[error("{0}")]
    Config(String),
    /// A value of the experiment (or of the command line) is out of range.
    #[error("invalid {field} = {value}: {expected}")]
    Invalid {
        /// The field, e.g. `optimizer.lr` or `train.devices`.
        field: String,
        /// The value given.
        value: String,
        /// What is accepted, and how to fix it.
        expected: String,
    },
    /// The model part of the experiment cannot build a model.
    #[error(transparent)]
    Model(#[from] rnnlm::ConfigError),
    /// The corpus could not be read or cut.
    #[error(transparent)]
    Data(#[from] rnnlm_data::DataError),
    /// The artifacts or checkpoint directory cannot be used.
    #[error(transparent)]
    Artifacts(#[from] ArtifactsError),
    /// A model could not be turned into a record to write.
    #[error("{}: {reason}", .path.display())]
    RecordUnwritable {
        /// Where it was to go.
        path: PathBuf,
        /// Burn's reason.
        reason: String,
    },
    /// A weights file is no Burn record.
    #[error("{} is not a readable Burn record: {reason}", .path.display())]
    RecordUnreadable {
        /// The file.
        path: PathBuf,
        /// Burn's reason.
        reason: String,
    },
    /// A weights file holds another model than its experiment describes.
    #[error("{} does not fit the {kind} model of {}: {reason}", .path.display(), .config.display())]
    RecordDoesNotFit {
        /// The weights file.
        path: PathBuf,
        /// The kind of model the experiment names.
        kind: String,
        /// The experiment file.
        config: PathBuf,
        /// Burn's reason.
        reason: String,
    },
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
    /// Started by a launcher as one of several ranks, in a build without MPI: every process
    /// would train alone into the same directory.
    #[error(
        "this rnnlm was started as one of {ranks} ranks (mpirun or srun), but it was built \
         without MPI; build it with `cargo build --release -p rnnlm-cli --features mpi` \
         (OpenMPI: libopenmpi-dev and libclang-dev), or run it without mpirun"
    )]
    NotAnMpiBuild {
        /// The ranks the launcher started.
        ranks: usize,
    },
    /// MPI cannot run training.
    #[error("MPI: {reason}")]
    Mpi {
        /// What is missing.
        reason: String,
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

/// Why an artifacts or checkpoint directory cannot be used, each naming the directory and what
/// would fix it.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactsError {
    /// The directory holds another experiment's run.
    #[error("{} holds a different run (its config.toml differs from this experiment); choose another --artifacts directory", .dir.display())]
    DifferentRun {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory holds this run, and `--resume` was not given.
    #[error("{} already holds this run; pass --resume to continue it, or choose another --artifacts directory", .dir.display())]
    AlreadyHeld {
        /// The directory.
        dir: PathBuf,
    },
    /// `--resume` on a directory without a run.
    #[error("nothing to resume in {}: it has no config.toml", .dir.display())]
    NothingToResume {
        /// The directory.
        dir: PathBuf,
    },
    /// A directory with other files than a run's.
    #[error("{} is not empty and holds no rnnlm run; choose another --artifacts directory", .dir.display())]
    NotARun {
        /// The directory.
        dir: PathBuf,
    },
    /// A new checkpoint directory that already has files.
    #[error("{} is not empty; choose a new directory", .dir.display())]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// `--artifacts` names a file.
    #[error("--artifacts {} is a file, not a directory; name a new or empty directory", .dir.display())]
    IsAFile {
        /// The path.
        dir: PathBuf,
    },
    /// Another training run holds the directory's lock.
    #[error("{} is in use by another rnnlm train (pid {pid}); wait for it to finish, or choose another --artifacts directory", .dir.display())]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// The holder's process id, as its lock file says.
        pid: String,
    },
    /// A vocabulary and a model that do not belong together.
    #[error(
        "the vocabulary has {vocab} tokens but the model has {outputs} outputs (config says {config}): they do not belong together"
    )]
    VocabularyMismatch {
        /// Tokens in the vocabulary.
        vocab: usize,
        /// The model's outputs.
        outputs: usize,
        /// The config's `model.vocab_size`.
        config: usize,
    },
    /// The checkpoint directory does not exist.
    #[error("checkpoint directory {} does not exist", .dir.display())]
    NoCheckpoint {
        /// The directory.
        dir: PathBuf,
    },
    /// A file a checkpoint directory needs is missing.
    #[error("{} is not a complete rnnlm checkpoint directory: {missing} is missing", .dir.display())]
    Incomplete {
        /// The directory.
        dir: PathBuf,
        /// The missing file.
        missing: String,
    },
    /// The vocabulary file does not parse.
    #[error("{}: {reason}", .path.display())]
    UnreadableVocabulary {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The vocabulary and the config come from different runs.
    #[error("{} has {tokens} tokens but {} says model.vocab_size = {vocab_size}: the files come from different runs", .vocab.display(), .config.display())]
    VocabularyOfAnotherRun {
        /// The vocabulary file.
        vocab: PathBuf,
        /// Its tokens.
        tokens: usize,
        /// The config file.
        config: PathBuf,
        /// Its `model.vocab_size`.
        vocab_size: usize,
    },
    /// The run to resume already did all its epochs.
    #[error("{} already finished all {epochs} epochs; raise train.epochs to train further", .dir.display())]
    Finished {
        /// The directory.
        dir: PathBuf,
        /// `train.epochs`.
        epochs: usize,
    },
    /// The run to resume already spent its time budget.
    #[error("{} already spent its time budget ({spent:.1} of train.max_minutes = {budget} minutes); raise train.max_minutes (--max-minutes) to train further", .dir.display())]
    BudgetSpent {
        /// The directory.
        dir: PathBuf,
        /// Minutes spent.
        spent: f64,
        /// `train.max_minutes`.
        budget: f64,
    },
    /// The run to resume already ran its minibatches.
    #[error("{} already ran its {done} minibatches (train.max_steps = {max_steps}); raise train.max_steps to train further", .dir.display())]
    StepsDone {
        /// The directory.
        dir: PathBuf,
        /// Minibatches run.
        done: usize,
        /// `train.max_steps`.
        max_steps: usize,
    },
    /// The run stopped inside an epoch that the corpus now cuts otherwise.
    #[error("{} stopped inside epoch {epoch} of {was} minibatches, but this corpus cuts that epoch into {now}: the corpus changed since; train in a new --artifacts directory", .dir.display())]
    CorpusChanged {
        /// The directory.
        dir: PathBuf,
        /// The epoch it stopped in.
        epoch: usize,
        /// Its minibatches then.
        was: usize,
        /// Its minibatches now.
        now: usize,
    },
}
