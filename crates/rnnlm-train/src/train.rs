//! `train`: from an experiment file to a trained model, through burn-train.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use burn::optim::{AdamConfig, SgdConfig};
use burn::prelude::*;
use burn::train::checkpoint::KeepLastNCheckpoints;
use burn::train::metric::{LossMetric, PerplexityMetric};
use burn::train::{Learner, SupervisedTraining, TrainingStrategy};
use rnnlm::RnnLm;
use rnnlm_data::{PreparedCorpus, encode};

use crate::artifacts::{claim_artifacts, files, lock_artifacts, save_model, write_shares};
use crate::checkpoint::{
    AtomicFileCheckpointer, EpochMetrics, EpochState, checkpoint_dir, latest_complete_checkpoint,
    write_atomic, write_metrics_csv,
};
use crate::error::TrainError;
use crate::experiment::{ExperimentConfig, OptimizerKind, ScheduleOver};
use crate::fit::{SampleSpec, TbpttStrategy};
use crate::plan::DataPlan;
use crate::plot::plot_perplexity;
use crate::render::QuietRenderer;
use crate::schedule::{Schedule, TrainingClock};
use crate::step::TrainableLm;

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
        crate::device::probe_device(device).map_err(|source| TrainError::Device {
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
        max_seconds: (config.train.max_minutes > 0.0).then_some(config.train.max_minutes * 60.0),
        stopped: stopped.clone(),
        checkpoint_seconds: (config.train.checkpoint_minutes > 0.0)
            .then_some(config.train.checkpoint_minutes * 60.0),
        valid_every: config.train.valid_every,
        max_steps: (config.train.max_steps > 0).then_some(config.train.max_steps),
        started,
        progress_seconds: (config.train.progress_minutes > 0.0)
            .then_some(config.train.progress_minutes * 60.0),
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
        let done: usize = (1..=state.epoch)
            .map(|e| plan.train_epoch(e).len())
            .sum::<usize>()
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
        println!(
            "resuming after {} from {}",
            state.position(),
            checkpoints.display()
        );
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
