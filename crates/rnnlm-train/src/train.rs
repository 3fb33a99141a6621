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
    AtomicFileCheckpointer, EpochMetrics, EpochState, ReadOnlyCheckpointer, checkpoint_dir,
    latest_complete_checkpoint, write_atomic, write_metrics_csv,
};
use crate::error::{ArtifactsError, TrainError};
use crate::experiment::{ExperimentConfig, OptimizerKind, ScheduleOver};
use crate::fit::{ReduceTime, SampleSpec, TbpttStrategy};
use crate::plan::DataPlan;
use crate::plot::plot_perplexity;
use crate::ranks::{OneProcess, Ranks};
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

fn prepare(options: &TrainOptions, ranks: &dyn Ranks) -> Result<Prepared, TrainError> {
    let mut config = ExperimentConfig::load(&options.config, &options.overrides)?;
    if !options.data.is_empty() {
        config.data.file = None;
        config.data.files = options.data.clone();
    }
    if let Some(encoding) = &options.encoding {
        config.data.encoding = encoding.clone();
    }
    config.validate()?;
    // Rank 0 prepares the corpus (once, for every rank), the others then find it prepared.
    let cache = options.cache_dir.as_deref();
    if !ranks.is_writer() {
        ranks.barrier();
    }
    let (corpus, _) = crate::data::prepare_corpus_saying(&config, cache, ranks.is_writer())?;
    if ranks.is_writer() {
        ranks.barrier();
    }
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
    train_on(options, Arc::new(OneProcess))
}

/// [`train`] as one of the `ranks` of a run across processes (MPI: see `MpiRanks` with the
/// `mpi` feature): every rank runs a contiguous block of each minibatch's parallel streams (and
/// `options.devices` cut that block further), the gradients are summed with one all-reduce per
/// step, clipped and applied the same way on every rank; validation is split the same way and
/// summed; rank 0 alone writes the artifacts and prints. Every rank gets the same report.
///
/// # Errors
/// As [`train`]; also more ranks than `data.batch_size`, a rank's rows fewer than its devices,
/// or `overlapping` sampling (its last minibatch is smaller) across ranks. A rank that fails
/// returns its error while the others wait in a collective: the caller ends the run
/// ([`Ranks::abort`]).
pub fn train_on(options: &TrainOptions, ranks: Arc<dyn Ranks>) -> Result<TrainReport, TrainError> {
    let started = std::time::Instant::now();
    let writer = ranks.is_writer();
    let Prepared {
        config,
        corpus,
        plan,
    } = prepare(options, &*ranks)?;
    if ranks.size() > 1 {
        let batch = config.data.batch_size;
        if ranks.size() > batch {
            return Err(TrainError::Invalid {
                field: "data.batch_size".to_owned(),
                value: batch.to_string(),
                expected: format!(
                    "each of the {} ranks runs at least one of the minibatch's parallel \
                     streams; start at most {batch} ranks or raise data.batch_size",
                    ranks.size()
                ),
            });
        }
        let mine = crate::ranks::rows_of(batch, ranks.rank(), ranks.size()).len();
        if options.devices.len() > mine {
            return Err(TrainError::Invalid {
                field: "train.devices".to_owned(),
                value: format!("{} devices", options.devices.len()),
                expected: format!(
                    "rank {} runs {mine} of the data.batch_size = {batch} streams, fewer than \
                     its devices; use fewer devices or ranks, or raise data.batch_size",
                    ranks.rank()
                ),
            });
        }
        if config.data.sampling == rnnlm_data::Sampling::Overlapping {
            return Err(TrainError::Invalid {
                field: "data.sampling".to_owned(),
                value: "\"overlapping\"".to_owned(),
                expected: "across ranks, \"random\" or \"sequential\": overlapping sampling's \
                           last minibatch is smaller than data.batch_size and cannot be cut \
                           between the ranks"
                    .to_owned(),
            });
        }
    }
    let parallel: Vec<Device> = options
        .devices
        .iter()
        .map(|d| d.clone().autodiff())
        .collect();
    if parallel.len() > config.data.batch_size {
        return Err(TrainError::Invalid {
            field: "train.devices".to_owned(),
            value: format!("{} devices", parallel.len()),
            expected: format!(
                "at most data.batch_size = {} devices, each running at least one of the \
                 minibatch's parallel streams; use fewer devices or raise data.batch_size",
                config.data.batch_size
            ),
        });
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
    // Rank 0 alone holds it and writes; the others read its checkpoints once it has claimed
    // the directory.
    let _lock = if writer {
        let lock = lock_artifacts(&artifacts)?;
        claim_artifacts(&artifacts, &config, &corpus.vocab, options.resume)?;
        for share in &corpus.shares {
            println!(
                "data: {}: {} tokens, {} for training, {} for validation",
                share.name, share.tokens, share.train, share.valid
            );
        }
        write_shares(&artifacts.join(files::DATA), &corpus.shares)?;
        if ranks.size() > 1 {
            println!(
                "ranks: {} processes, each running {} to {} of the {} streams",
                ranks.size(),
                config.data.batch_size / ranks.size(),
                config.data.batch_size.div_ceil(ranks.size()),
                config.data.batch_size
            );
        }
        Some(lock)
    } else {
        None
    };
    ranks.barrier();
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
    let reduce_seconds = Arc::new(Mutex::new(ReduceTime::default()));
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
        print_epochs: options.progress == Progress::Lines && writer,
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
        // Under a launcher, stdout is a terminal the launcher forwards into its log: lines.
        terminal: std::io::stdout().is_terminal() && ranks.size() == 1,
        resume: resume_state.clone(),
        next_key: crate::checkpoint::next_checkpoint_key(&artifacts),
        clock,
        last_checkpoint: last_checkpoint.clone(),
        ranks: ranks.clone(),
        reduce_seconds: reduce_seconds.clone(),
    };

    let checkpoints = checkpoint_dir(&artifacts);
    let training = SupervisedTraining::new(
        &artifacts,
        plan.train_shard_loader(1, &device),
        plan.valid_loader(&device.clone().inner()),
    )
    .metrics((LossMetric::new(), PerplexityMetric::new()))
    .num_epochs(config.train.epochs);
    let files = |name| AtomicFileCheckpointer::new(&checkpoints, name);
    let training = if writer {
        training.with_custom_checkpointers(files("model"), files("optim"), files("scheduler"))
    } else {
        let read = |name| ReadOnlyCheckpointer(files(name));
        training.with_custom_checkpointers(read("model"), read("optim"), read("scheduler"))
    };
    let mut training = training
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
            return Err(ArtifactsError::Finished {
                dir: artifacts.clone(),
                epochs: config.train.epochs,
            }
            .into());
        }
        let spent = state.seconds() / 60.0;
        if config.train.max_minutes > 0.0 && spent >= config.train.max_minutes {
            return Err(ArtifactsError::BudgetSpent {
                dir: artifacts.clone(),
                spent,
                budget: config.train.max_minutes,
            }
            .into());
        }
        let done: usize = (1..=state.epoch)
            .map(|e| plan.train_epoch(e).len())
            .sum::<usize>()
            + state.partial.as_ref().map_or(0, |p| p.steps);
        if config.train.max_steps > 0 && done >= config.train.max_steps {
            return Err(ArtifactsError::StepsDone {
                dir: artifacts.clone(),
                done,
                max_steps: config.train.max_steps,
            }
            .into());
        }
        if let Some(partial) = &state.partial
            && partial.of != plan.train_epoch(state.epoch + 1).len()
        {
            return Err(ArtifactsError::CorpusChanged {
                dir: artifacts.clone(),
                epoch: state.epoch + 1,
                was: partial.of,
                now: plan.train_epoch(state.epoch + 1).len(),
            }
            .into());
        }
        if writer {
            println!(
                "resuming after {} from {}",
                state.position(),
                checkpoints.display()
            );
        }
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
    let stopped = stopped.lock().expect("stop lock").take();
    let reduce = *reduce_seconds.lock().expect("reduce lock");
    if !writer {
        return Ok(TrainReport {
            history,
            resumed_from,
            model,
            artifacts,
            held_samples: Vec::new(),
            stopped,
        });
    }
    if reduce.steps > 0 {
        let bytes = 4 * (model.num_params() + 4);
        println!(
            "all-reduce: {} steps, {:.2} ms a step on average, {:.1} kB a step across {} ranks",
            reduce.steps,
            1e3 * reduce.seconds / reduce.steps as f64,
            bytes as f64 / 1e3,
            ranks.size()
        );
    }
    save_model(&artifacts.join(files::MODEL), &model)?;
    write_metrics_csv(&artifacts.join(files::METRICS), &history)?;
    plot_perplexity(&artifacts.join(files::PLOT), &history)?;
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
