//! What a training run leaves on disk, written so that a crash or a kill never leaves a
//! half-written file: every file goes to a temporary name in the same directory, is synced,
//! and is renamed over its final name.
//!
//! ```text
//! <artifacts>/config.toml           the experiment as run (vocab_size filled in)
//! <artifacts>/vocab.json            the vocabulary
//! <artifacts>/checkpoint/model-K.bpk, optim-K.bpk, scheduler-K.bpk, state-K.json
//!                                   checkpoint K (numbered in order, at the end of an epoch or
//!                                   inside one); runs before them wrote epoch-N.json for
//!                                   checkpoint N at the end of epoch N, still read
//! <artifacts>/validation.csv        validations inside epochs (train.valid_every)
//! <artifacts>/model.bpk             the final model
//! <artifacts>/model-best.bpk        the model of the epoch with the best validation perplexity
//! <artifacts>/stop.txt              why training stopped before its last epoch (patience, time)
//! <artifacts>/data.csv              every corpus file's tokens, for training and validation
//! <artifacts>/metrics.csv           one row per epoch
//! <artifacts>/perplexity.svg        perplexity per epoch
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use burn::train::checkpoint::{Checkpoint, Checkpointer, CheckpointerError};
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// A burn-train checkpointer that writes each record atomically (burn's `FileCheckpointer`
/// writes in place, so a kill during the write leaves a truncated file behind).
#[derive(Clone, Debug)]
pub struct AtomicFileCheckpointer {
    directory: PathBuf,
    name: &'static str,
}

impl AtomicFileCheckpointer {
    /// Files `<directory>/<name>-<epoch>.bpk`.
    pub fn new(directory: &Path, name: &'static str) -> Self {
        Self {
            directory: directory.to_owned(),
            name,
        }
    }

    fn path(&self, epoch: usize) -> PathBuf {
        checkpoint_file(&self.directory, self.name, epoch)
    }
}

/// burn-train reports a checkpointer's error without a path: the message names the file (a
/// full disk, say, while writing the optimizer's state).
fn with_path(doing: &str, path: &Path, e: std::io::Error) -> CheckpointerError {
    CheckpointerError::IOError(std::io::Error::new(
        e.kind(),
        format!("{doing} {}: {e}", path.display()),
    ))
}

/// `<directory>/<name>-<epoch>.bpk`.
pub fn checkpoint_file(directory: &Path, name: &str, epoch: usize) -> PathBuf {
    directory.join(format!("{name}-{epoch}.bpk"))
}

impl<R: Checkpoint> Checkpointer<R> for AtomicFileCheckpointer {
    fn save(&self, epoch: usize, record: R) -> Result<(), CheckpointerError> {
        let bytes = record
            .checkpoint_into_bytes()
            .map_err(CheckpointerError::Record)?;
        let path = self.path(epoch);
        write_atomic(&path, &bytes).map_err(|e| with_path("writing", &path, e))
    }

    fn delete(&self, epoch: usize) -> Result<(), CheckpointerError> {
        let path = self.path(epoch);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(with_path("deleting", &path, e))
            }
            _ => Ok(()),
        }
    }

    fn restore(&self, epoch: usize) -> Result<R, CheckpointerError> {
        let path = self.path(epoch);
        let bytes = std::fs::read(&path).map_err(|e| with_path("reading", &path, e))?;
        R::checkpoint_from_bytes(Bytes::from_bytes_vec(bytes)).map_err(CheckpointerError::Record)
    }
}

/// A checkpointer that reads what [`AtomicFileCheckpointer`] wrote and writes nothing: the
/// ranks of a run but the first resume from the files rank 0 keeps.
#[derive(Clone, Debug)]
pub struct ReadOnlyCheckpointer(pub AtomicFileCheckpointer);

impl<R: Checkpoint> Checkpointer<R> for ReadOnlyCheckpointer {
    fn save(&self, _epoch: usize, _record: R) -> Result<(), CheckpointerError> {
        Ok(())
    }

    fn delete(&self, _epoch: usize) -> Result<(), CheckpointerError> {
        Ok(())
    }

    fn restore(&self, epoch: usize) -> Result<R, CheckpointerError> {
        <AtomicFileCheckpointer as Checkpointer<R>>::restore(&self.0, epoch)
    }
}

/// One row of the metrics table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// exp(mean training NLL per token), over the epoch.
    pub train_perplexity: f64,
    /// Validation perplexity, if there is a validation split.
    pub valid_perplexity: Option<f64>,
    /// Mean training NLL in bits per token (per character for character models).
    pub train_bits_per_token: f64,
    /// Validation bits per token.
    pub valid_bits_per_token: Option<f64>,
    /// Training throughput.
    pub tokens_per_second: f64,
    /// Mean global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Wall-clock seconds of the epoch, validation included (what `train.max_minutes`
    /// counts; 0 in runs written before it existed).
    #[serde(default)]
    pub seconds: f64,
}

/// What `state-K.json` holds: where training stands at checkpoint K, so a resumed run
/// continues the metrics table and, inside an epoch, the data position, the partial metrics and
/// the carried hidden states.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochState {
    /// The last completed epoch.
    pub epoch: usize,
    /// Metrics of epochs 1..=epoch.
    pub history: Vec<EpochMetrics>,
    /// The checkpoint's number (its records' `-K` files); absent in `epoch-N.json` files,
    /// whose checkpoint number is the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<usize>,
    /// Where epoch `epoch + 1` stood, for a checkpoint taken inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialEpoch>,
}

impl EpochState {
    /// The checkpoint's number.
    pub fn key(&self) -> usize {
        self.key.unwrap_or(self.epoch)
    }

    /// "epoch 3" or "epoch 4, minibatch 120 of 400".
    pub fn position(&self) -> String {
        match &self.partial {
            None => format!("epoch {}", self.epoch),
            Some(p) => format!(
                "epoch {}, minibatch {} of {}",
                self.epoch + 1,
                p.steps,
                p.of
            ),
        }
    }

    /// Training seconds the run had spent at this checkpoint.
    pub fn seconds(&self) -> f64 {
        self.history.iter().map(|m| m.seconds).sum::<f64>()
            + self.partial.as_ref().map_or(0.0, |p| p.seconds)
    }
}

/// An epoch that a checkpoint cut: its minibatches done and their sums.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// Minibatches done.
    pub steps: usize,
    /// Minibatches in the epoch.
    pub of: usize,
    /// Summed token-weighted training loss (nats).
    pub nll: f64,
    /// Training tokens seen.
    pub tokens: usize,
    /// Summed gradient norms before clipping.
    pub grad_norm: f64,
    /// Seconds spent in the epoch.
    pub seconds: f64,
    /// The carried hidden state of each shard (one without data parallelism); empty when
    /// nothing is carried (random sampling).
    pub states: Vec<SavedState>,
}

/// A hidden state, as values (f32 round trips exactly through the JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    /// `[num_layers, batch, hidden]`.
    pub shape: [usize; 3],
    /// `h`, row-major.
    pub hidden: Vec<f32>,
    /// `c` (LSTM), row-major.
    pub cell: Option<Vec<f32>>,
}

/// The checkpoint directory of an artifacts directory.
pub fn checkpoint_dir(artifacts: &Path) -> PathBuf {
    artifacts.join("checkpoint")
}

fn state_file(artifacts: &Path, key: usize) -> PathBuf {
    checkpoint_dir(artifacts).join(format!("state-{key}.json"))
}

/// Writes `state-K.json` (K = `state.key()`) and removes that of checkpoint K - 2, whose
/// records burn-train's keep-last-two strategy removes.
pub fn save_epoch_state(artifacts: &Path, state: &EpochState) -> Result<(), TrainError> {
    let key = state.key();
    let path = state_file(artifacts, key);
    let json = serde_json::to_vec(state).expect("epoch state serialises");
    write_atomic(&path, &json).map_err(|e| TrainError::io(&path, e))?;
    if let Some(old) = key.checked_sub(2).filter(|k| *k > 0) {
        let _ = std::fs::remove_file(state_file(artifacts, old));
        // A run begun before state files were numbered by checkpoint left epoch-N.json.
        let _ = std::fs::remove_file(checkpoint_dir(artifacts).join(format!("epoch-{old}.json")));
    }
    Ok(())
}

/// Every checkpoint number with a state file, newest first.
fn state_keys(artifacts: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(checkpoint_dir(artifacts)) else {
        return Vec::new();
    };
    let mut keys: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let number = name
                .strip_prefix("state-")
                .or_else(|| name.strip_prefix("epoch-"))?
                .strip_suffix(".json")?
                .parse()
                .ok()?;
            Some((number, e.path()))
        })
        .collect();
    keys.sort_unstable_by_key(|k| std::cmp::Reverse(k.0));
    keys
}

/// The number the next checkpoint of a run in `artifacts` gets: one past every number used.
pub fn next_checkpoint_key(artifacts: &Path) -> usize {
    state_keys(artifacts).first().map_or(1, |(k, _)| k + 1)
}

/// The newest checkpoint whose four files are all present and readable, with its state. A newer
/// one with a missing or unreadable file (a run killed while checkpointing) is skipped.
pub fn latest_complete_checkpoint(artifacts: &Path) -> Option<EpochState> {
    let dir = checkpoint_dir(artifacts);
    state_keys(artifacts).into_iter().find_map(|(key, path)| {
        let readable = |name: &str| {
            let bytes = std::fs::read(checkpoint_file(&dir, name, key)).ok()?;
            Some(Bytes::from_bytes_vec(bytes))
        };
        let model = ModuleRecord::from_bytes(readable("model")?).ok();
        let optim = burn::optim::OptimizerRecord::from_bytes(readable("optim")?).ok();
        let scheduler =
            burn::optim::lr_scheduler::LrSchedulerRecord::from_bytes(readable("scheduler")?).ok();
        if model.is_none() || optim.is_none() || scheduler.is_none() {
            eprintln!(
                "warning: checkpoint {key} in {} is unreadable; skipping it",
                dir.display()
            );
            return None;
        }
        let state: EpochState = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        (state.key() == key).then_some(state)
    })
}

/// The epoch (index into `history`) with the lowest validation perplexity, the first of equals.
pub fn best_epoch(history: &[EpochMetrics]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (index, metrics) in history.iter().enumerate() {
        if let Some(ppl) = metrics.valid_perplexity
            && best.is_none_or(|(_, lowest)| ppl < lowest)
        {
            best = Some((index, ppl));
        }
    }
    best.map(|(index, _)| index)
}

/// Writes `metrics.csv`.
pub fn write_metrics_csv(path: &Path, history: &[EpochMetrics]) -> Result<(), TrainError> {
    let mut csv = String::from(
        "epoch,train_perplexity,valid_perplexity,train_bits_per_token,valid_bits_per_token,tokens_per_second,grad_norm,lr,seconds\n",
    );
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    for m in history {
        csv.push_str(&format!(
            "{},{:.6},{},{:.6},{},{:.1},{:.6},{},{:.3}\n",
            m.epoch,
            m.train_perplexity,
            opt(m.valid_perplexity),
            m.train_bits_per_token,
            opt(m.valid_bits_per_token),
            m.tokens_per_second,
            m.grad_norm,
            m.lr,
            m.seconds
        ));
    }
    write_atomic(path, csv.as_bytes()).map_err(|e| TrainError::io(path, e))
}
