//! What a training run leaves on disk, written so that a crash or a kill never leaves a
//! half-written file: every file goes to a temporary name in the same directory, is synced,
//! and is renamed over its final name.
//!
//! ```text
//! <artifacts>/config.toml           the experiment as run (vocab_size filled in)
//! <artifacts>/vocab.json            the vocabulary
//! <artifacts>/checkpoint/model-N.bpk, optim-N.bpk, scheduler-N.bpk, epoch-N.json
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

use crate::TrainError;

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
    CheckpointerError::IOError(std::io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display())))
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
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(with_path("deleting", &path, e)),
            _ => Ok(()),
        }
    }

    fn restore(&self, epoch: usize) -> Result<R, CheckpointerError> {
        let path = self.path(epoch);
        let bytes = std::fs::read(&path).map_err(|e| with_path("reading", &path, e))?;
        R::checkpoint_from_bytes(Bytes::from_bytes_vec(bytes)).map_err(CheckpointerError::Record)
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

/// What `epoch-N.json` holds: the metrics of every epoch up to N, so a resumed run continues
/// the table and the plot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochState {
    /// The last completed epoch.
    pub epoch: usize,
    /// Metrics of epochs 1..=epoch.
    pub history: Vec<EpochMetrics>,
}

/// The checkpoint directory of an artifacts directory.
pub fn checkpoint_dir(artifacts: &Path) -> PathBuf {
    artifacts.join("checkpoint")
}

fn state_file(artifacts: &Path, epoch: usize) -> PathBuf {
    checkpoint_dir(artifacts).join(format!("epoch-{epoch}.json"))
}

/// Writes `epoch-N.json`.
pub fn save_epoch_state(artifacts: &Path, state: &EpochState) -> Result<(), TrainError> {
    let path = state_file(artifacts, state.epoch);
    let json = serde_json::to_vec_pretty(state).expect("epoch state serialises");
    write_atomic(&path, &json).map_err(|e| TrainError::io(&path, e))
}

/// The newest epoch whose four files are all present and readable, with its state. A newer
/// epoch with a missing or unreadable file (a run killed while checkpointing) is skipped.
pub fn latest_complete_checkpoint(artifacts: &Path) -> Option<EpochState> {
    let dir = checkpoint_dir(artifacts);
    let mut epochs: Vec<usize> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("epoch-")?
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .collect();
    epochs.sort_unstable_by(|a, b| b.cmp(a));
    epochs.into_iter().find_map(|epoch| {
        let readable = |name: &str| {
            let bytes = std::fs::read(checkpoint_file(&dir, name, epoch)).ok()?;
            Some(Bytes::from_bytes_vec(bytes))
        };
        let model = ModuleRecord::from_bytes(readable("model")?).ok();
        let optim = burn::optim::OptimizerRecord::from_bytes(readable("optim")?).ok();
        let scheduler =
            burn::optim::lr_scheduler::LrSchedulerRecord::from_bytes(readable("scheduler")?).ok();
        if model.is_none() || optim.is_none() || scheduler.is_none() {
            eprintln!(
                "warning: checkpoint of epoch {epoch} in {} is unreadable; skipping it",
                dir.display()
            );
            return None;
        }
        let state: EpochState =
            serde_json::from_slice(&std::fs::read(state_file(artifacts, epoch)).ok()?).ok()?;
        (state.epoch == epoch).then_some(state)
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
