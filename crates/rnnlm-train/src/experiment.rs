//! Experiment files: TOML with `[model]`, `[data]`, `[optimizer]`, `[schedule]` and `[train]`
//! tables, command-line overrides (`--set optimizer.lr=0.5`) and validation.

use std::path::{Path, PathBuf};

use rnnlm::RnnLmConfig;
use rnnlm_data::{BatchConfig, Preprocess, Sampling, TokenLevel, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// A whole experiment, as written in `configs/*.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The model; `vocab_size` is filled from the vocabulary.
    pub model: RnnLmConfig,
    /// Corpus, preprocessing and minibatches.
    #[serde(default)]
    pub data: DataConfig,
    /// Optimizer and learning rate.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Epochs, clipping, seed, sampling during training.
    #[serde(default)]
    pub train: TrainConfig,
}

/// `[data]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// A text file (relative to the working directory); absent, with `files` empty, means The
    /// Time Machine, downloaded once into the cache directory.
    pub file: Option<PathBuf>,
    /// Several corpora, trained on one after the other with one vocabulary: text files, and
    /// directories standing for the `*.txt` files inside them (in name order). Each keeps the
    /// last `valid_fraction` of its tokens for validation, unless `valid_files` is given.
    pub files: Vec<PathBuf>,
    /// Validation texts (files or directories, as `files`); then the training texts train
    /// whole and `valid_fraction` is not used.
    pub valid_files: Vec<PathBuf>,
    /// The files' character encoding: `utf-8` (the default), or any WHATWG label such as
    /// `windows-1252` or `latin-1` (many Project Gutenberg files).
    pub encoding: String,
    /// `d2l-lines` (d2l's classic chapter), `d2l-whole` (current book) or `raw`.
    pub preprocess: Preprocess,
    /// `char` or `word`.
    pub level: TokenLevel,
    /// Keep only the first N tokens (d2l's old experiments: 10000); 0 keeps all.
    pub max_tokens: usize,
    /// Tokens seen fewer times become `<unk>`.
    pub min_freq: usize,
    /// Fraction of the corpus, taken from its end, held out for validation; 0 disables it.
    pub valid_fraction: f64,
    /// Sequences per minibatch.
    pub batch_size: usize,
    /// Time steps per minibatch (truncated BPTT length).
    pub num_steps: usize,
    /// `sequential` (state carried across minibatches) or `random` (state reset each one).
    pub sampling: Sampling,
    /// Where the prepared token file goes (made on first use, reused while the sources and
    /// the options above are unchanged); absent: `<cache>/prepared/`, named by a hash of them.
    pub prepared: Option<PathBuf>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            file: None,
            files: Vec::new(),
            valid_files: Vec::new(),
            encoding: rnnlm_data::UTF_8.to_owned(),
            preprocess: Preprocess::D2lLines,
            level: TokenLevel::Char,
            max_tokens: 0,
            min_freq: 0,
            valid_fraction: 0.1,
            batch_size: 32,
            num_steps: 35,
            sampling: Sampling::Sequential,
            prepared: None,
        }
    }
}

impl DataConfig {
    /// The training corpora as named: `file`, then `files` (directories not yet expanded);
    /// empty for The Time Machine.
    pub fn sources(&self) -> Vec<PathBuf> {
        self.file.iter().chain(&self.files).cloned().collect()
    }

    /// The tokenizer these settings describe.
    pub fn tokenizer(&self) -> Tokenizer {
        Tokenizer {
            preprocess: self.preprocess,
            level: self.level,
        }
    }

    /// The minibatch shape and scheme.
    pub fn batches(&self) -> BatchConfig {
        BatchConfig {
            batch_size: self.batch_size,
            num_steps: self.num_steps,
            sampling: self.sampling,
        }
    }
}

/// Which optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// Plain SGD, d2l's.
    Sgd,
    /// Adam.
    Adam,
}

/// `[optimizer]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// `sgd` or `adam`.
    pub kind: OptimizerKind,
    /// Learning rate (before the schedule).
    pub lr: f64,
    /// Adam's β1.
    pub beta1: f32,
    /// Adam's β2.
    pub beta2: f32,
    /// Adam's ε.
    pub epsilon: f32,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Sgd,
            lr: 1.0,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        }
    }
}

/// The shape of the learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// Always `optimizer.lr`.
    Constant,
    /// Multiply by `gamma` every `step_epochs` epochs.
    Step,
    /// Cosine from `optimizer.lr` down to `min_lr` over the whole run.
    Cosine,
}

/// `[schedule]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// `constant`, `step` or `cosine`.
    pub kind: ScheduleKind,
    /// Decay factor of `step`.
    pub gamma: f64,
    /// Epochs between decays of `step`.
    pub step_epochs: usize,
    /// Final learning rate of `cosine`.
    pub min_lr: f64,
    /// What the schedule runs over: `epochs` (`train.epochs` of them), or `time`
    /// (`train.max_minutes` of training, however many epochs the machine gets through: a cosine
    /// that ends when the budget does).
    pub over: ScheduleOver,
}

/// What a learning-rate schedule counts its progress in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleOver {
    /// Minibatches, over `train.epochs` epochs.
    #[default]
    Epochs,
    /// Training time, over `train.max_minutes`.
    Time,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Constant,
            gamma: 0.5,
            step_epochs: 10,
            min_lr: 0.0,
            over: ScheduleOver::Epochs,
        }
    }
}

/// `[train]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Number of passes over the training text.
    pub epochs: usize,
    /// Clip the gradients' global L2 norm to this value (d2l's theta).
    pub theta: f64,
    /// Seed of the weights, dropout and data order.
    pub seed: u64,
    /// Print a greedy continuation of `sample_prefix` every N epochs (and after the last); 0 never.
    pub sample_every: usize,
    /// Prefix of those samples.
    pub sample_prefix: String,
    /// Tokens generated per sample.
    pub sample_len: usize,
    /// Data-parallel training: device names such as `["cuda:0", "cuda:1"]` or, on a CPU,
    /// `["flex", "flex"]` (two workers on the one CPU device). Each device runs its share of the
    /// minibatch's parallel streams; empty trains on the `--device` one alone.
    pub devices: Vec<String>,
    /// Stop when the validation perplexity has not improved for this many epochs (0: never;
    /// needs a validation split). The best model is kept as `model-best.bpk` either way.
    pub patience: usize,
    /// A time budget: stop at the minibatch that brings the run's training time (a resumed
    /// run's earlier time included) to this many minutes (0: none); a checkpoint is written
    /// there, so a larger budget resumes exactly where it stopped.
    pub max_minutes: f64,
    /// Stop after this many minibatches of training in all (0: no limit), with a checkpoint
    /// there, as `max_minutes` does: a fixed amount of work for measurements and smoke runs.
    pub max_steps: usize,
    /// Also checkpoint inside an epoch every this many minutes (default 10; 0: at the end of
    /// each epoch only), so a kill loses at most that much training; `--resume` continues from
    /// the minibatch it was taken at, with the same result as an uninterrupted run.
    pub checkpoint_minutes: f64,
    /// Also validate every this many minibatches (0: at the end of each epoch only); each
    /// is a line on stdout and a row of `validation.csv`.
    pub valid_every: usize,
    /// Without a terminal, print a progress line (step, tokens/s, ETA) every this many minutes
    /// within an epoch (0: never); a terminal gets a line updated in place.
    pub progress_minutes: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            theta: 1.0,
            seed: 0,
            sample_every: 10,
            sample_prefix: "time traveller".to_owned(),
            sample_len: 50,
            devices: Vec::new(),
            patience: 0,
            max_minutes: 0.0,
            max_steps: 0,
            checkpoint_minutes: 10.0,
            valid_every: 0,
            progress_minutes: 1.0,
        }
    }
}

fn invalid(field: &str, value: impl std::fmt::Display, expected: &str) -> TrainError {
    TrainError::Invalid {
        field: field.to_owned(),
        value: value.to_string(),
        expected: expected.to_owned(),
    }
}

impl ExperimentConfig {
    /// Reads a TOML experiment file and applies `overrides` (`table.field=value`, the value in
    /// TOML syntax, or a bare string). Errors name the file, the line or the field.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            TrainError::Config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    /// Like [`load`](Self::load), from text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self, TrainError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| TrainError::Config(format!("{origin}: {e}")))?;
        for assignment in overrides {
            apply_override(&mut table, assignment)?;
        }
        let config: Self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| TrainError::Config(format!("{origin}: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value that the types alone do not (the model's vocabulary size is checked
    /// once the vocabulary exists).
    pub fn validate(&self) -> Result<(), TrainError> {
        let d = &self.data;
        if d.batch_size == 0 {
            return Err(invalid("data.batch_size", 0, "must be at least 1"));
        }
        if d.num_steps == 0 {
            return Err(invalid("data.num_steps", 0, "must be at least 1"));
        }
        if !(0.0..1.0).contains(&d.valid_fraction) {
            return Err(invalid(
                "data.valid_fraction",
                d.valid_fraction,
                "must lie in [0, 1)",
            ));
        }
        if d.file.is_some() && !d.files.is_empty() {
            return Err(invalid(
                "data.file",
                format!(
                    "{:?}",
                    d.file
                        .as_ref()
                        .map(|f| f.display().to_string())
                        .unwrap_or_default()
                ),
                "give either data.file or data.files, not both (data.files may hold one file)",
            ));
        }
        rnnlm_data::encoding_for(&d.encoding)?;
        let o = &self.optimizer;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return Err(invalid("optimizer.lr", o.lr, "must be a finite number > 0"));
        }
        for (field, value) in [("optimizer.beta1", o.beta1), ("optimizer.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&value) {
                return Err(invalid(field, value, "must lie in [0, 1)"));
            }
        }
        if !(o.epsilon.is_finite() && o.epsilon > 0.0) {
            return Err(invalid(
                "optimizer.epsilon",
                o.epsilon,
                "must be a finite number > 0",
            ));
        }
        let s = &self.schedule;
        if s.kind == ScheduleKind::Step && !(s.gamma > 0.0 && s.gamma <= 1.0) {
            return Err(invalid("schedule.gamma", s.gamma, "must lie in (0, 1]"));
        }
        if s.kind == ScheduleKind::Step && s.step_epochs == 0 {
            return Err(invalid("schedule.step_epochs", 0, "must be at least 1"));
        }
        if s.kind == ScheduleKind::Cosine && !(s.min_lr >= 0.0 && s.min_lr <= o.lr) {
            return Err(invalid(
                "schedule.min_lr",
                s.min_lr,
                "must lie in [0, optimizer.lr]",
            ));
        }
        let t = &self.train;
        if t.epochs == 0 {
            return Err(invalid("train.epochs", 0, "must be at least 1"));
        }
        if !(t.theta.is_finite() && t.theta > 0.0) {
            return Err(invalid(
                "train.theta",
                t.theta,
                "must be a finite number > 0",
            ));
        }
        if !(t.max_minutes.is_finite() && t.max_minutes >= 0.0) {
            return Err(invalid(
                "train.max_minutes",
                t.max_minutes,
                "must be a finite number of minutes >= 0 (0: no budget)",
            ));
        }
        for (field, value) in [
            ("train.checkpoint_minutes", t.checkpoint_minutes),
            ("train.progress_minutes", t.progress_minutes),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(invalid(
                    field,
                    value,
                    "must be a finite number of minutes >= 0 (0: never)",
                ));
            }
        }
        if s.over == ScheduleOver::Time {
            if t.max_minutes == 0.0 {
                return Err(invalid(
                    "schedule.over",
                    "\"time\"",
                    "runs over the time budget: set train.max_minutes (--max-minutes) > 0",
                ));
            }
            if s.kind == ScheduleKind::Step {
                return Err(invalid(
                    "schedule.over",
                    "\"time\"",
                    "the step schedule counts epochs (schedule.step_epochs); use kind = \"cosine\" over time, or over = \"epochs\"",
                ));
            }
        }
        if t.valid_every > 0 && d.valid_fraction == 0.0 && d.valid_files.is_empty() {
            return Err(invalid(
                "train.valid_every",
                t.valid_every,
                "needs a validation split: set data.valid_fraction > 0 or data.valid_files",
            ));
        }
        if t.patience > 0 && d.valid_fraction == 0.0 && d.valid_files.is_empty() {
            return Err(invalid(
                "train.patience",
                t.patience,
                "needs a validation split: set data.valid_fraction > 0 or data.valid_files",
            ));
        }
        if t.sample_every > 0 && t.sample_len == 0 {
            return Err(invalid(
                "train.sample_len",
                0,
                "must be at least 1 when train.sample_every > 0",
            ));
        }
        if t.devices.len() > d.batch_size {
            return Err(invalid(
                "train.devices",
                format!("{:?}", t.devices),
                &format!(
                    "{} devices but data.batch_size = {}: each device runs at least one of the \
                     minibatch's parallel streams; list at most {} devices or raise data.batch_size",
                    t.devices.len(),
                    d.batch_size,
                    d.batch_size
                ),
            ));
        }
        let backends: Vec<&str> = t
            .devices
            .iter()
            .map(|name| name.split(':').next().unwrap_or(name).trim())
            .collect();
        if let Some(other) = backends.iter().find(|b| **b != backends[0]) {
            return Err(invalid(
                "train.devices",
                format!("{:?}", t.devices),
                &format!(
                    "mixes the {} and {other} backends; data-parallel training runs one backend \
                     on several devices (gradients are summed on the first device)",
                    backends[0]
                ),
            ));
        }
        let model = RnnLmConfig {
            vocab_size: self.model.vocab_size.max(1),
            ..self.model.clone()
        };
        Ok(model.validate()?)
    }

    /// The configuration as TOML, as written into the artifacts directory.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("an experiment config serialises to TOML")
    }
}

/// `a.b.c=value`: sets a nested key, creating tables on the way. The value is parsed as TOML
/// (`0.5`, `true`, `"text"`, `[1, 2]`); anything that does not parse is taken as a string.
fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<(), TrainError> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| {
        TrainError::Config(format!(
            "--set {assignment:?}: expected KEY=VALUE, e.g. optimizer.lr=0.5"
        ))
    })?;
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let path: Vec<&str> = key.trim().split('.').collect();
    let (last, parents) = path.split_last().expect("split yields at least one part");
    let mut current = table;
    for part in parents {
        current = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| TrainError::Config(format!("--set {key}: {part} is not a table")))?;
    }
    current.insert(last.to_string(), value);
    Ok(())
}
