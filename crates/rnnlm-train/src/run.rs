//! `train` and `evaluate`: from files to a trained model and back.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::module::Module;
use burn::optim::{AdamConfig, SgdConfig};
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use burn::train::checkpoint::KeepLastNCheckpoints;
use burn::train::metric::{LossMetric, PerplexityMetric};
use burn::train::{Learner, SupervisedTraining, TrainingStrategy};
use rnnlm::RnnLm;
use rnnlm_data::{PreparedCorpus, TextShare, Tokens, Vocab, encode};

use crate::TrainError;
use crate::checkpoint::{
    AtomicFileCheckpointer, EpochMetrics, EpochState, checkpoint_dir, checkpoint_file,
    latest_complete_checkpoint, write_atomic, write_metrics_csv,
};
use crate::experiment::{ExperimentConfig, OptimizerKind};
use crate::plot::plot_perplexity;
use crate::render::QuietRenderer;
use crate::experiment::ScheduleOver;
use crate::schedule::{Schedule, TrainingClock};
use crate::strategy::{DataPlan, SampleSpec, TbpttStrategy, TrainableLm};

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

/// How a run reports progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// burn-train's dashboard (a terminal, with the `tui` feature).
    Dashboard,
    /// One line per epoch on stdout.
    Lines,
}

/// Everything `rnnlm train` takes.
#[derive(Clone)]
pub struct TrainOptions {
    /// The experiment file.
    pub config: PathBuf,
    /// `table.field=value` overrides.
    pub overrides: Vec<String>,
    /// Train on these files (or directories of `*.txt` files) instead of the config's corpus.
    pub data: Vec<PathBuf>,
    /// The corpus files' encoding instead of the config's `data.encoding`.
    pub encoding: Option<String>,
    /// Where the artifacts go.
    pub artifacts: PathBuf,
    /// Continue the run in `artifacts` from its last complete checkpoint.
    pub resume: bool,
    /// The device to train on (without autodiff; it is added here).
    pub device: Device,
    /// Data-parallel training on these devices (without autodiff), the first holding the
    /// optimizer and running validation; each runs its share of the minibatch's parallel
    /// streams. Empty trains on `device` alone.
    pub devices: Vec<Device>,
    /// Cache directory for The Time Machine (default: [`rnnlm_data::default_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// Dashboard or plain lines.
    pub progress: Progress,
    /// Stops training at the next minibatch when triggered (e.g. from a Ctrl-C handler); a
    /// checkpoint is written there, so `--resume` continues from that minibatch.
    pub interrupter: Option<burn::train::Interrupter>,
}

/// What a finished run produced.
#[derive(Debug)]
pub struct TrainReport {
    /// Metrics of every epoch (those before a resume included).
    pub history: Vec<EpochMetrics>,
    /// The epoch training resumed after, if it did.
    pub resumed_from: Option<usize>,
    /// The trained model (no autodiff).
    pub model: RnnLm,
    /// The artifacts directory.
    pub artifacts: PathBuf,
    /// Samples taken during training that were not printed (dashboard mode).
    pub held_samples: Vec<String>,
    /// Why training stopped before its last epoch (patience or the time budget), if it did.
    pub stopped: Option<String>,
}

/// The experiment, its corpus and the derived data of a run.
struct Prepared {
    config: ExperimentConfig,
    corpus: PreparedCorpus,
    plan: DataPlan,
}

fn prepare(options: &TrainOptions) -> Result<Prepared, TrainError> {
    let mut config = ExperimentConfig::load(&options.config, &options.overrides)?;
    if !options.data.is_empty() {
        config.data.file = None;
        config.data.files = options.data.clone();
    }
    if let Some(encoding) = &options.encoding {
        config.data.encoding = encoding.clone();
    }
    config.validate()?;
    let (corpus, _) = crate::data::prepare_corpus(&config, options.cache_dir.as_deref())?;
    let what = match corpus.shares.as_slice() {
        [one] => one.name.clone(),
        many => format!("the {} corpus files", many.len()),
    };
    let (train, valid) = (&corpus.train, &corpus.valid);
    let batches = config.data.batches();
    batches.check(train.len(), &format!("the training part of {what}"))?;
    if !valid.is_empty() {
        batches.check(
            valid.len(),
            &format!(
                "the validation part of {what} (data.valid_fraction = {})",
                config.data.valid_fraction
            ),
        )?;
    }
    config.model.vocab_size = corpus.vocab.len();
    config.validate()?;
    let plan = DataPlan {
        train: train.clone(),
        valid: valid.clone(),
        batches,
        seed: config.train.seed,
    };
    Ok(Prepared {
        config,
        corpus,
        plan,
    })
}

/// Checks that `dir` is free for this run (or holds this very run, when resuming) and writes
/// the config and the vocabulary into it.
fn claim_artifacts(
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
            return Err(TrainError::Artifacts(format!(
                "{} holds a different run (its {} differs from this experiment); choose another --artifacts directory",
                dir.display(),
                files::CONFIG
            )));
        }
        if !resume {
            return Err(TrainError::Artifacts(format!(
                "{} already holds this run; pass --resume to continue it, or choose another --artifacts directory",
                dir.display()
            )));
        }
    } else if resume {
        return Err(TrainError::Artifacts(format!(
            "nothing to resume in {}: it has no {}",
            dir.display(),
            files::CONFIG
        )));
    } else if holds_files(dir)? {
        return Err(TrainError::Artifacts(format!(
            "{} is not empty and holds no rnnlm run; choose another --artifacts directory",
            dir.display()
        )));
    }
    write_config_and_vocab(dir, config, vocab)
}

/// Whether `dir` exists and has at least one entry besides a run's lock file.
fn holds_files(dir: &Path) -> Result<bool, TrainError> {
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
fn lock_artifacts(dir: &Path) -> Result<std::fs::File, TrainError> {
    if dir.exists() && !dir.is_dir() {
        return Err(TrainError::Artifacts(format!(
            "--artifacts {} is a file, not a directory; name a new or empty directory",
            dir.display()
        )));
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
            return Err(TrainError::Artifacts(format!(
                "{} is in use by another rnnlm train (pid {}); wait for it to finish, or choose \
                 another --artifacts directory",
                dir.display(),
                holder.trim()
            )));
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
fn write_shares(path: &Path, shares: &[TextShare]) -> Result<(), TrainError> {
    let mut csv = String::from("file,tokens,train,valid\n");
    for share in shares {
        // A comma or a quote in a path is quoted, as CSV readers expect.
        let name = if share.name.contains([',', '"', '\n']) {
            format!("\"{}\"", share.name.replace('"', "\"\""))
        } else {
            share.name.clone()
        };
        csv.push_str(&format!("{name},{},{},{}\n", share.tokens, share.train, share.valid));
    }
    write_atomic(path, csv.as_bytes()).map_err(|e| TrainError::io(path, e))
}

/// Writes the experiment and the vocabulary into `dir`, each atomically.
fn write_config_and_vocab(
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

/// Trains as the experiment says, writing checkpoints, metrics, a plot and the final model.
pub fn train(options: &TrainOptions) -> Result<TrainReport, TrainError> {
    let started = std::time::Instant::now();
    let Prepared {
        config,
        corpus,
        plan,
    } = prepare(options)?;
    let parallel: Vec<Device> = options
        .devices
        .iter()
        .map(|d| d.clone().autodiff())
        .collect();
    if parallel.len() > config.data.batch_size {
        return Err(TrainError::Config(format!(
            "{} devices for data.batch_size = {}: each device runs at least one of the minibatch's \
             parallel streams; use at most {} devices or raise data.batch_size",
            parallel.len(),
            config.data.batch_size,
            config.data.batch_size
        )));
    }
    // A missing runtime (driver, library) is an error here rather than a panic mid-epoch.
    let used: Vec<&Device> = if options.devices.is_empty() {
        vec![&options.device]
    } else {
        options.devices.iter().collect()
    };
    for device in used {
        crate::probe_device(device).map_err(|source| TrainError::Device {
            device: format!("{device:?}"),
            source,
        })?;
    }
    let artifacts = options.artifacts.clone();
    // Held until training returns: a second run on the same directory is refused meanwhile.
    let _lock = lock_artifacts(&artifacts)?;
    claim_artifacts(&artifacts, &config, &corpus.vocab, options.resume)?;
    for share in &corpus.shares {
        println!(
            "data: {}: {} tokens, {} for training, {} for validation",
            share.name, share.tokens, share.train, share.valid
        );
    }
    write_shares(&artifacts.join(files::DATA), &corpus.shares)?;
    let resume_state = if options.resume {
        latest_complete_checkpoint(&artifacts)
    } else {
        None
    };

    let device = match parallel.first() {
        Some(main) => main.clone(),
        None => options.device.clone().autodiff(),
    };
    device.seed(config.train.seed);
    let model = TrainableLm::new(config.model.init(&device));
    let optimizer = match config.optimizer.kind {
        OptimizerKind::Sgd => SgdConfig::new().init(),
        OptimizerKind::Adam => AdamConfig::new()
            .with_beta_1(config.optimizer.beta1)
            .with_beta_2(config.optimizer.beta2)
            .with_epsilon(config.optimizer.epsilon)
            .init(),
    };
    let per_epoch = plan.batches.nominal_batches(plan.train.len());
    let clock = TrainingClock::default();
    let mut schedule = Schedule::new(
        config.optimizer.lr,
        config.schedule.clone(),
        per_epoch,
        config.train.epochs,
    );
    if config.schedule.over == ScheduleOver::Time {
        schedule = schedule.over_time(config.train.max_minutes * 60.0, clock.clone());
    }
    let learner = Learner::new(model, optimizer, schedule);

    let history = Arc::new(Mutex::new(
        resume_state
            .as_ref()
            .map(|s| s.history.clone())
            .unwrap_or_default(),
    ));
    let failure = Arc::new(Mutex::new(None));
    let held_samples = Arc::new(Mutex::new(Vec::new()));
    let stopped = Arc::new(Mutex::new(None));
    let last_checkpoint = Arc::new(Mutex::new(resume_state.as_ref().map(EpochState::position)));
    let tokenizer = config.data.tokenizer();
    let sample = (config.train.sample_every > 0)
        .then(|| {
            let (prefix, _) = encode(&config.train.sample_prefix, &tokenizer, &corpus.vocab);
            SampleSpec {
                every: config.train.sample_every,
                prefix_text: tokenizer
                    .tokenize(&config.train.sample_prefix)
                    .join(tokenizer.separator()),
                prefix,
                len: config.train.sample_len,
                vocab: corpus.vocab.clone(),
                separator: tokenizer.separator(),
            }
        })
        .filter(|s| !s.prefix.is_empty());
    let strategy = TbpttStrategy {
        device: device.clone(),
        parallel,
        plan: plan.clone(),
        theta: config.train.theta as f32,
        artifacts: artifacts.clone(),
        history: history.clone(),
        sample,
        print_epochs: options.progress == Progress::Lines,
        failure: failure.clone(),
        held_samples: held_samples.clone(),
        patience: config.train.patience,
        max_seconds: (config.train.max_minutes > 0.0).then(|| config.train.max_minutes * 60.0),
        stopped: stopped.clone(),
        checkpoint_seconds: (config.train.checkpoint_minutes > 0.0)
            .then(|| config.train.checkpoint_minutes * 60.0),
        valid_every: config.train.valid_every,
        max_steps: (config.train.max_steps > 0).then_some(config.train.max_steps),
        started,
        progress_seconds: (config.train.progress_minutes > 0.0)
            .then(|| config.train.progress_minutes * 60.0),
        terminal: std::io::stdout().is_terminal(),
        resume: resume_state.clone(),
        next_key: crate::checkpoint::next_checkpoint_key(&artifacts),
        clock,
        last_checkpoint: last_checkpoint.clone(),
    };

    let checkpoints = checkpoint_dir(&artifacts);
    let mut training = SupervisedTraining::new(
        &artifacts,
        plan.train_shard_loader(1, &device),
        plan.valid_loader(&device.clone().inner()),
    )
    .metrics((LossMetric::new(), PerplexityMetric::new()))
    .num_epochs(config.train.epochs)
    .with_custom_checkpointers(
        AtomicFileCheckpointer::new(&checkpoints, "model"),
        AtomicFileCheckpointer::new(&checkpoints, "optim"),
        AtomicFileCheckpointer::new(&checkpoints, "scheduler"),
    )
    .with_checkpointing_strategy(KeepLastNCheckpoints::new(2))
    .with_application_logger(None)
    .with_training_strategy(TrainingStrategy::Custom(Arc::new(strategy)));
    if options.progress == Progress::Lines {
        training = training.renderer(Box::new(QuietRenderer));
    }
    if let Some(interrupter) = &options.interrupter {
        training = training.with_interrupter(interrupter.clone());
    }
    let resumed_from = resume_state.as_ref().map(|s| s.epoch);
    if let Some(state) = &resume_state {
        if state.epoch >= config.train.epochs {
            return Err(TrainError::Artifacts(format!(
                "{} already finished all {} epochs; raise train.epochs to train further",
                artifacts.display(),
                config.train.epochs
            )));
        }
        let spent = state.seconds() / 60.0;
        if config.train.max_minutes > 0.0 && spent >= config.train.max_minutes {
            return Err(TrainError::Artifacts(format!(
                "{} already spent its time budget ({spent:.1} of train.max_minutes = {} minutes); \
                 raise train.max_minutes (--max-minutes) to train further",
                artifacts.display(),
                config.train.max_minutes
            )));
        }
        let done: usize = (1..=state.epoch).map(|e| plan.train_epoch(e).len()).sum::<usize>()
            + state.partial.as_ref().map_or(0, |p| p.steps);
        if config.train.max_steps > 0 && done >= config.train.max_steps {
            return Err(TrainError::Artifacts(format!(
                "{} already ran its {done} minibatches (train.max_steps = {}); raise \
                 train.max_steps to train further",
                artifacts.display(),
                config.train.max_steps
            )));
        }
        if let Some(partial) = &state.partial
            && partial.of != plan.train_epoch(state.epoch + 1).len()
        {
            return Err(TrainError::Artifacts(format!(
                "{} stopped inside epoch {} of {} minibatches, but this corpus cuts that epoch \
                 into {}: the corpus changed since; train in a new --artifacts directory",
                artifacts.display(),
                state.epoch + 1,
                partial.of,
                plan.train_epoch(state.epoch + 1).len()
            )));
        }
        println!("resuming after {} from {}", state.position(), checkpoints.display());
        training = training.checkpoint(state.key());
    }
    let result = training.launch(learner);

    if let Some(error) = failure.lock().expect("failure lock").take() {
        return Err(error);
    }
    if let Some(error) = result.error {
        return Err(TrainError::Training(error.to_string()));
    }
    let history = history.lock().expect("history").clone();
    if let Some(interruption) = result.interrupted {
        return Err(TrainError::Interrupted {
            reason: interruption.reason.unwrap_or_else(|| "stopped".to_owned()),
            last_checkpoint: last_checkpoint.lock().expect("checkpoint lock").clone(),
        });
    }

    let model = result.model.lm;
    save_model(&artifacts.join(files::MODEL), &model)?;
    write_metrics_csv(&artifacts.join(files::METRICS), &history)?;
    plot_perplexity(&artifacts.join(files::PLOT), &history)?;
    let stopped = stopped.lock().expect("stop lock").take();
    let stop_path = artifacts.join(files::STOP);
    match &stopped {
        Some(reason) => write_atomic(&stop_path, format!("{reason}\n").as_bytes())
            .map_err(|e| TrainError::io(&stop_path, e))?,
        // A resumed run that went on past an earlier stop no longer stopped there.
        None if stop_path.exists() => {
            std::fs::remove_file(&stop_path).map_err(|e| TrainError::io(&stop_path, e))?
        }
        None => {}
    }
    let held_samples = std::mem::take(&mut *held_samples.lock().expect("samples lock"));
    Ok(TrainReport {
        history,
        resumed_from,
        model,
        artifacts,
        held_samples,
        stopped,
    })
}

pub(crate) fn save_model(path: &Path, model: &RnnLm) -> Result<(), TrainError> {
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| TrainError::Record(format!("{}: {e}", path.display())))?;
    write_atomic(path, &bytes).map_err(|e| TrainError::io(path, e))
}

/// Writes a model that was not trained here (e.g. imported from PyTorch) as a checkpoint
/// directory that [`load_model`], `rnnlm generate` and `rnnlm eval` read: the experiment (its
/// `[data]` says how text is tokenised), the vocabulary and the weights, each written
/// atomically, the weights last. `dir` must be new or empty.
pub fn save_model_dir(
    dir: &Path,
    config: &ExperimentConfig,
    vocab: &Vocab,
    model: &RnnLm,
) -> Result<(), TrainError> {
    if vocab.len() != config.model.vocab_size || model.vocab_size != vocab.len() {
        return Err(TrainError::Artifacts(format!(
            "the vocabulary has {} tokens but the model has {} outputs (config says {}): they do not belong together",
            vocab.len(),
            model.vocab_size,
            config.model.vocab_size
        )));
    }
    if holds_files(dir)? {
        return Err(TrainError::Artifacts(format!(
            "{} is not empty; choose a new directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    write_config_and_vocab(dir, config, vocab)?;
    save_model(&dir.join(files::MODEL), model)
}

/// A trained model with what it needs to read text: its experiment and vocabulary.
#[derive(Debug)]
pub struct LoadedModel {
    /// The experiment it was trained with (model config with its vocabulary size).
    pub config: ExperimentConfig,
    /// Its vocabulary.
    pub vocab: Vocab,
    /// The model, on the requested device, without autodiff.
    pub model: RnnLm,
    /// The weights file it came from.
    pub weights: PathBuf,
}

impl LoadedModel {
    /// Token ids of `text` under the checkpoint's preprocessing and vocabulary; tokens the
    /// vocabulary does not know become `<unk>` (id 0).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        encode(text, &self.config.data.tokenizer(), &self.vocab).0
    }

    /// The text of `ids`, joined as the checkpoint's tokenizer joins tokens.
    pub fn decode(&self, ids: &[u32]) -> String {
        let separator = self.config.data.tokenizer().separator();
        self.vocab.decode(ids.iter().copied(), separator)
    }

    /// `prefix` continued by `len` tokens (d2l's `predict` with [`Decoding::Greedy`]): warms
    /// the state up on the prefix, then generates one token per step.
    ///
    /// [`Decoding::Greedy`]: rnnlm::sample::Decoding::Greedy
    pub fn continue_text(
        &self,
        prefix: &str,
        len: usize,
        decoding: &rnnlm::sample::Decoding,
        device: &Device,
    ) -> Result<String, TrainError> {
        let ids = self.encode(prefix);
        if ids.is_empty() {
            return Err(TrainError::Config(format!(
                "prefix {prefix:?} is empty after the checkpoint's {:?} preprocessing; give at least one character it keeps",
                self.config.data.preprocess
            )));
        }
        decoding
            .validate()
            .map_err(|message| TrainError::Config(format!("decoding: {message}")))?;
        let new = rnnlm::sample::generate(
            &self.model,
            std::slice::from_ref(&ids),
            len,
            decoding,
            device,
            |_| std::ops::ControlFlow::Continue(()),
        );
        let separator = self.config.data.tokenizer().separator();
        Ok(format!(
            "{}{separator}{}",
            self.decode(&ids),
            self.decode(&new[0])
        ))
    }
}

/// Which model of a run [`load_model_as`] reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Which {
    /// `model-best.bpk`, the epoch with the best validation perplexity, where the run kept
    /// one; else as [`Which::Last`].
    #[default]
    Best,
    /// The final model, or, if the run did not finish, that of its last complete checkpoint.
    Last,
}

/// Loads the best model of an artifacts directory where it has one ([`Which::Best`]), else
/// its final model or, if the run did not finish, the model of its last complete checkpoint.
pub fn load_model(dir: &Path, device: &Device) -> Result<LoadedModel, TrainError> {
    load_model_as(dir, Which::Best, device)
}

/// Loads the model `which` names from an artifacts directory (see [`Which`]).
pub fn load_model_as(dir: &Path, which: Which, device: &Device) -> Result<LoadedModel, TrainError> {
    let missing = |name: &str| {
        TrainError::Artifacts(format!(
            "{} is not a complete rnnlm checkpoint directory: {name} is missing",
            dir.display()
        ))
    };
    if !dir.is_dir() {
        return Err(TrainError::Artifacts(format!(
            "checkpoint directory {} does not exist",
            dir.display()
        )));
    }
    let config_path = dir.join(files::CONFIG);
    if !config_path.is_file() {
        return Err(missing(files::CONFIG));
    }
    let config = ExperimentConfig::load(&config_path, &[])?;
    let vocab_path = dir.join(files::VOCAB);
    let vocab_bytes = std::fs::read(&vocab_path).map_err(|_| missing(files::VOCAB))?;
    let vocab: Vocab = serde_json::from_slice(&vocab_bytes)
        .map_err(|e| TrainError::Artifacts(format!("{}: {e}", vocab_path.display())))?;
    if vocab.len() != config.model.vocab_size {
        return Err(TrainError::Artifacts(format!(
            "{} has {} tokens but {} says model.vocab_size = {}: the files come from different runs",
            vocab_path.display(),
            vocab.len(),
            config_path.display(),
            config.model.vocab_size
        )));
    }
    let best = dir.join(files::BEST_MODEL);
    let weights = match dir.join(files::MODEL) {
        _ if which == Which::Best && best.is_file() => best,
        path if path.is_file() => path,
        _ => match latest_complete_checkpoint(dir) {
            Some(state) => checkpoint_file(&checkpoint_dir(dir), "model", state.key()),
            None => return Err(missing("model.bpk (and no complete checkpoint)")),
        },
    };
    let bytes = std::fs::read(&weights).map_err(|e| TrainError::io(&weights, e))?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes)).map_err(|e| {
        TrainError::Record(format!(
            "{} is not a readable Burn record: {e}",
            weights.display()
        ))
    })?;
    // burn-train saves the TrainableLm wrapper (parameters under `lm.`); the final model file
    // holds the bare RnnLm.
    let record_for_bare = record.clone();
    let model = config.model.init(device);
    let model = match model.clone().try_load_record(record_for_bare) {
        Ok(model) => model,
        Err(_) => TrainableLm::new(model)
            .try_load_record(record)
            .map(|wrapper| wrapper.lm)
            .map_err(|e| {
                TrainError::Record(format!(
                    "{} does not fit the {} model of {}: {e}",
                    weights.display(),
                    config.model.kind,
                    config_path.display()
                ))
            })?,
    };
    Ok(LoadedModel {
        config,
        vocab,
        model,
        weights,
    })
}

/// Perplexity of a model on a text.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Tokens scored (every token but the first of each stream).
    pub tokens: usize,
    /// exp(mean NLL).
    pub perplexity: f64,
    /// Mean NLL in bits.
    pub bits_per_token: f64,
    /// Tokens not in the vocabulary (scored as `<unk>`), with counts.
    pub unknown: Vec<(String, usize)>,
}

/// Scores `text` with the model's own preprocessing and vocabulary. The text is cut into up
/// to `streams` contiguous streams read in parallel, `num_steps` tokens at a time, with the
/// state carried through each stream.
pub fn evaluate(
    loaded: &LoadedModel,
    text: &str,
    streams: usize,
    device: &Device,
) -> Result<Evaluation, TrainError> {
    let tokenizer = loaded.config.data.tokenizer();
    let (ids, unknown) = encode(text, &tokenizer, &loaded.vocab);
    evaluate_tokens(loaded, &ids.into(), unknown, streams, device)
}

/// Scores a text file as [`evaluate`] does, streaming it (in `encoding`) into a prepared token
/// file encoded with the model's vocabulary and reading the ids from the map: memory does not
/// grow with the file. The prepared file goes to `cache_dir` (default: the cache directory's
/// `prepared/`) and is reused while the file is unchanged.
pub fn evaluate_file(
    loaded: &LoadedModel,
    path: &Path,
    encoding: &str,
    streams: usize,
    device: &Device,
    cache_dir: Option<&Path>,
) -> Result<Evaluation, TrainError> {
    let spec = rnnlm_data::CorpusSpec {
        train: vec![rnnlm_data::SourceFile::new(path)],
        valid: Vec::new(),
        tokenizer: loaded.config.data.tokenizer(),
        encoding: encoding.to_owned(),
        min_freq: 0,
        max_tokens: None,
        valid_fraction: 0.0,
        vocab: Some(loaded.vocab.clone()),
    };
    let dir = match cache_dir {
        Some(dir) => dir.to_owned(),
        None => rnnlm_data::default_cache_dir()?,
    };
    let prepared_path = dir.join("prepared").join(spec.file_name()?);
    let mut meter = crate::data::PrepareMeter::new(std::io::stderr().is_terminal());
    let (corpus, _) = PreparedCorpus::load_or_prepare(&spec, &prepared_path, |p| meter.update(p))?;
    meter.finish();
    evaluate_tokens(loaded, &corpus.train, corpus.unknown, streams, device)
}

/// Scores ids already encoded with the model's vocabulary (`unknown`: the tokens that became
/// `<unk>`, reported back), as [`evaluate`] does.
pub fn evaluate_tokens(
    loaded: &LoadedModel,
    ids: &Tokens,
    unknown: Vec<(String, usize)>,
    streams: usize,
    device: &Device,
) -> Result<Evaluation, TrainError> {
    if ids.len() < 2 {
        return Err(TrainError::Data(rnnlm_data::DataError::TooShort {
            what: "the text".to_owned(),
            tokens: ids.len(),
            needed: 2,
            batch_size: 1,
            num_steps: 1,
            sampling: "sequential",
        }));
    }
    let steps = loaded.config.data.num_steps;
    let streams = streams.clamp(1, (ids.len() - 1).div_ceil(steps).max(1));
    let length = (ids.len() - 1) / streams; // tokens scored per stream
    let model = &loaded.model;
    let mut state = model.begin_state(streams, device);
    let (mut nll, mut count) = (0.0f64, 0usize);
    let mut start = 0;
    while start < length {
        let width = steps.min(length - start);
        let mut x = Vec::with_capacity(streams * width);
        let mut y = Vec::with_capacity(streams * width);
        for s in 0..streams {
            let base = s * length + start;
            ids.extend_i64(base..base + width, &mut x);
            ids.extend_i64(base + 1..base + 1 + width, &mut y);
        }
        let x = Tensor::<2, Int>::from_data(TensorData::new(x, [streams, width]), device);
        let y = Tensor::<2, Int>::from_data(TensorData::new(y, [streams, width]), device);
        let (logits, next) = model.forward(x, state);
        state = next;
        let loss = crate::strategy::sequence_loss(logits, y).into_scalar::<f64>();
        nll += loss * (streams * width) as f64;
        count += streams * width;
        start += width;
    }
    let mean = nll / count as f64;
    if !mean.is_finite() {
        return Err(TrainError::NonFinite {
            what: "evaluation loss",
            value: mean,
            epoch: 0,
            step: 0,
        });
    }
    Ok(Evaluation {
        tokens: count,
        perplexity: mean.exp(),
        bits_per_token: mean / std::f64::consts::LN_2,
        unknown,
    })
}
