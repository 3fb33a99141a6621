//! What a run writes into its artifacts directory, the directory's lock, and whether a
//! directory may hold a run.

use std::path::Path;

use burn::module::Module;
use rnnlm::RnnLm;
use rnnlm_data::{TextShare, Vocab};

use crate::checkpoint::write_atomic;
use crate::error::{ArtifactsError, TrainError};
use crate::experiment::ExperimentConfig;

/// File names inside an artifacts directory.
pub mod files {
    /// The experiment as run.
    pub const CONFIG: &str = "config.toml";
    /// The vocabulary.
    pub const VOCAB: &str = "vocab.json";
    /// The final model.
    pub const MODEL: &str = "model.bpk";
    /// The model of the epoch with the best validation perplexity.
    pub const BEST_MODEL: &str = "model-best.bpk";
    /// Why training stopped before its last epoch (`train.patience`, `train.max_minutes`).
    pub const STOP: &str = "stop.txt";
    /// Metrics per epoch.
    pub const METRICS: &str = "metrics.csv";
    /// Perplexity plot.
    pub const PLOT: &str = "perplexity.svg";
    /// Every corpus file's tokens and its training and validation shares.
    pub const DATA: &str = "data.csv";
    /// Validations inside epochs (`train.valid_every`).
    pub const VALIDATION: &str = "validation.csv";
}

/// Checks that `dir` is free for this run (or holds this very run, when resuming) and writes
/// the config and the vocabulary into it.
pub(crate) fn claim_artifacts(
    dir: &Path,
    config: &ExperimentConfig,
    vocab: &Vocab,
    resume: bool,
) -> Result<(), TrainError> {
    let config_path = dir.join(files::CONFIG);
    if config_path.exists() {
        let existing = ExperimentConfig::load(&config_path, &[])?;
        // A resumed run may be extended: everything but the number of epochs must match.
        let mut comparable = existing.clone();
        comparable.train.epochs = config.train.epochs;
        // Nor do the devices: data-parallel training computes the same updates. A resumed run
        // may also get more patience or a larger time budget.
        comparable.train.devices = config.train.devices.clone();
        comparable.train.patience = config.train.patience;
        comparable.train.max_minutes = config.train.max_minutes;
        comparable.train.max_steps = config.train.max_steps;
        // Nor how often it checkpoints, validates or reports, nor where the corpus is prepared.
        comparable.train.checkpoint_minutes = config.train.checkpoint_minutes;
        comparable.train.valid_every = config.train.valid_every;
        comparable.train.progress_minutes = config.train.progress_minutes;
        comparable.data.prepared = config.data.prepared.clone();
        if comparable != *config {
            return Err(ArtifactsError::DifferentRun {
                dir: dir.to_owned(),
            }
            .into());
        }
        if !resume {
            return Err(ArtifactsError::AlreadyHeld {
                dir: dir.to_owned(),
            }
            .into());
        }
    } else if resume {
        return Err(ArtifactsError::NothingToResume {
            dir: dir.to_owned(),
        }
        .into());
    } else if holds_files(dir)? {
        return Err(ArtifactsError::NotARun {
            dir: dir.to_owned(),
        }
        .into());
    }
    write_config_and_vocab(dir, config, vocab)
}

/// Whether `dir` exists and has at least one entry besides a run's lock file.
pub(crate) fn holds_files(dir: &Path) -> Result<bool, TrainError> {
    if !dir.exists() {
        return Ok(false);
    }
    for entry in std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))? {
        let entry = entry.map_err(|e| TrainError::io(dir, e))?;
        if entry.file_name() != LOCK_FILE {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The file a run holds an exclusive lock on for as long as it trains in a directory.
const LOCK_FILE: &str = ".rnnlm-train.lock";

/// Makes `dir` (if needed) and takes the exclusive lock of its run, writing this process's id
/// into the lock file; a second run on the same directory is refused with the holder's id.
/// The lock goes with the returned file (and with the process, however it ends).
pub(crate) fn lock_artifacts(dir: &Path) -> Result<std::fs::File, TrainError> {
    if dir.exists() && !dir.is_dir() {
        return Err(ArtifactsError::IsAFile {
            dir: dir.to_owned(),
        }
        .into());
    }
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| TrainError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(ArtifactsError::InUse {
                dir: dir.to_owned(),
                pid: holder.trim().to_owned(),
            }
            .into());
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(TrainError::io(&path, e)),
    }
    use std::io::{Seek, Write};
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()))
        .and_then(|()| file.sync_all())
        .map_err(|e| TrainError::io(&path, e))?;
    Ok(file)
}

/// Writes every corpus file's share (`file,tokens,train,valid`) atomically.
pub(crate) fn write_shares(path: &Path, shares: &[TextShare]) -> Result<(), TrainError> {
    let mut csv = String::from("file,tokens,train,valid\n");
    for share in shares {
        // A comma or a quote in a path is quoted, as CSV readers expect.
        let name = if share.name.contains([',', '"', '\n']) {
            format!("\"{}\"", share.name.replace('"', "\"\""))
        } else {
            share.name.clone()
        };
        csv.push_str(&format!(
            "{name},{},{},{}\n",
            share.tokens, share.train, share.valid
        ));
    }
    write_atomic(path, csv.as_bytes()).map_err(|e| TrainError::io(path, e))
}

/// Writes the experiment and the vocabulary into `dir`, each atomically.
pub(crate) fn write_config_and_vocab(
    dir: &Path,
    config: &ExperimentConfig,
    vocab: &Vocab,
) -> Result<(), TrainError> {
    let config_path = dir.join(files::CONFIG);
    write_atomic(&config_path, config.to_toml().as_bytes())
        .map_err(|e| TrainError::io(&config_path, e))?;
    let vocab_path = dir.join(files::VOCAB);
    let json = serde_json::to_vec(vocab).expect("a vocabulary serialises");
    write_atomic(&vocab_path, &json).map_err(|e| TrainError::io(&vocab_path, e))
}

pub(crate) fn save_model(path: &Path, model: &RnnLm) -> Result<(), TrainError> {
    let bytes =
        model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| TrainError::RecordUnwritable {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
    write_atomic(path, &bytes).map_err(|e| TrainError::io(path, e))
}

/// Writes a model that was not trained here (e.g. imported from PyTorch) as a checkpoint
/// directory that [`load_model`](crate::load_model), `rnnlm generate` and `rnnlm eval` read: the experiment (its
/// `[data]` says how text is tokenised), the vocabulary and the weights, each written
/// atomically, the weights last. `dir` must be new or empty.
pub fn save_model_dir(
    dir: &Path,
    config: &ExperimentConfig,
    vocab: &Vocab,
    model: &RnnLm,
) -> Result<(), TrainError> {
    if vocab.len() != config.model.vocab_size || model.vocab_size != vocab.len() {
        return Err(ArtifactsError::VocabularyMismatch {
            vocab: vocab.len(),
            outputs: model.vocab_size,
            config: config.model.vocab_size,
        }
        .into());
    }
    if holds_files(dir)? {
        return Err(ArtifactsError::NotEmpty {
            dir: dir.to_owned(),
        }
        .into());
    }
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    write_config_and_vocab(dir, config, vocab)?;
    save_model(&dir.join(files::MODEL), model)
}
