//! `rnnlm`: train, evaluate and sample character-level RNN language models on Burn.

mod bench;
mod device;
mod export;
mod generate;
mod import;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rnnlm_train::{Progress, TrainOptions};

#[derive(Parser, Debug)]
#[command(
    name = "rnnlm",
    version,
    about = "Character-level RNN language models (d2l's RNN chapter) on Burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Run each recurrent layer's time loop as one fused operation where the backend has it
    /// (`on`, the default: flex, ndarray, tch on its CPU, wgpu, cuda, cpu), or as per-step tensor operations everywhere
    /// (`off`, for comparisons and debugging; also `RNNLM_FUSED=off`). Both give the same
    /// numbers, to float rounding.
    #[arg(long, global = true, value_enum)]
    fused: Option<Fused>,
}

/// `--which`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum WhichArg {
    Best,
    Last,
}

impl From<WhichArg> for rnnlm_train::Which {
    fn from(which: WhichArg) -> Self {
        match which {
            WhichArg::Best => rnnlm_train::Which::Best,
            WhichArg::Last => rnnlm_train::Which::Last,
        }
    }
}

/// `--fused`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Fused {
    On,
    Off,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model as an experiment file describes; writes checkpoints, metrics and a plot.
    Train {
        /// Experiment file (TOML), e.g. configs/quick.toml.
        #[arg(long)]
        config: PathBuf,
        /// Train on this text file instead of the experiment's corpus (default: The Time
        /// Machine, downloaded once and checked by sha1). Repeat it for several corpora (one
        /// vocabulary; each keeps its end for validation); a directory stands for the *.txt
        /// files in it.
        #[arg(long)]
        data: Vec<PathBuf>,
        /// The corpus files' encoding (default: the experiment's data.encoding, utf-8), e.g.
        /// windows-1252 or latin-1.
        #[arg(long)]
        encoding: Option<String>,
        /// Backend: flex, ndarray, wgpu, tch, cpu or cuda (those compiled in).
        #[arg(long, default_value_t = device::default_name().to_owned())]
        device: String,
        /// Directory for the run's files; must be new or empty unless --resume.
        #[arg(long, default_value = "artifacts")]
        artifacts: PathBuf,
        /// Continue the run in --artifacts from its last complete checkpoint.
        #[arg(long)]
        resume: bool,
        /// Override a config value, e.g. --set optimizer.lr=0.5 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Data-parallel training on these devices (comma-separated, e.g. cuda:0,cuda:1 or
        /// flex,flex), each running its share of the minibatch's streams; overrides the
        /// experiment's train.devices. --device is then unused.
        #[arg(long, value_delimiter = ',')]
        devices: Vec<String>,
        /// Where The Time Machine is cached (default: $RNNLM_CACHE_DIR or ~/.cache/rnnlm).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// A time budget in minutes, checked every minibatch: training stops (with a checkpoint
        /// there) once it is spent (the experiment's train.max_minutes; a resumed run counts its
        /// earlier time).
        #[arg(long)]
        max_minutes: Option<f64>,
    },
    /// Read, clean, count and encode the experiment's corpus into a prepared token file, with
    /// progress, so that `train` starts at once (train prepares on first use otherwise, and
    /// reuses a prepared file while its sources and options are unchanged).
    Prepare {
        /// Experiment file (TOML): its [data] table names the corpus and the preprocessing.
        #[arg(long)]
        config: PathBuf,
        /// Prepare these text files (or directories of *.txt files) instead of the
        /// experiment's corpus, as `train --data` does.
        #[arg(long)]
        data: Vec<PathBuf>,
        /// The corpus files' encoding (default: the experiment's data.encoding).
        #[arg(long)]
        encoding: Option<String>,
        /// Override a config value, e.g. --set data.min_freq=2 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Where The Time Machine and the prepared files are cached (default: $RNNLM_CACHE_DIR
        /// or ~/.cache/rnnlm).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Turn PyTorch weights (nn.RNN, nn.GRU or nn.LSTM with an nn.Linear head, from a .pt or
    /// .safetensors file) or d2l's scratch RNN parameters, plus a vocabulary, into a checkpoint
    /// directory that `generate` and `eval` read.
    Import(import::Args),
    /// Write a checkpoint's model as PyTorch weights: the state dict of nn.RNN/nn.GRU/nn.LSTM +
    /// nn.Linear (+ nn.Embedding) in a .pt file (torch.load) or a .safetensors file, with
    /// vocab.json and config.json (the modules to build) beside it.
    Export(export::Args),
    /// Throughput of d2l's models (rnn-scratch 512, gru 256, lstm 256, deep-lstm 2x256; batch
    /// 32, 35 steps, vocabulary 28) on each backend: training and validation tokens/s, greedy
    /// generation chars/s with batch 1 and 32, peak memory. Figures for comparisons run in one
    /// session, not absolute truths: see scripts/bench-vs-pytorch.sh.
    Bench(bench::Args),
    /// List the backends this binary was built with and check that each one runs here (a
    /// missing driver or library is reported with what to install).
    Backends,
    /// Perplexity and bits per character of a trained model on texts: one row per file, then
    /// the total over all of them.
    Eval {
        /// A training run's artifacts directory.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Text to score (repeatable; a directory stands for the *.txt files in it).
        #[arg(long, required = true)]
        data: Vec<PathBuf>,
        /// The files' encoding (default: the checkpoint's data.encoding), e.g. windows-1252.
        #[arg(long)]
        encoding: Option<String>,
        /// Backend (see `train --help`).
        #[arg(long, default_value_t = device::default_name().to_owned())]
        device: String,
        /// Parallel streams each text is cut into (at least 1).
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
        streams: u64,
        /// Which model of the run: the best by validation perplexity (model-best.bpk, where
        /// the run kept one) or the last.
        #[arg(long, value_enum, default_value_t = WhichArg::Best)]
        which: WhichArg,
        /// Where the texts' prepared token files are cached (default: $RNNLM_CACHE_DIR or
        /// ~/.cache/rnnlm): each text is encoded once, streaming, and read from the map.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Continue a prefix with a trained model, streaming the text as it is produced.
    ///
    /// The prefix is encoded with the checkpoint's own preprocessing and vocabulary (characters
    /// it does not know become <unk>, with a warning). An empty prefix is an error: give at least
    /// one character. Several --prefix flags (or --prompts) run as one batch and are printed one
    /// per line when done; a single prefix streams.
    Generate {
        /// A training run's artifacts directory.
        #[arg(long)]
        checkpoint: PathBuf,
        #[command(flatten)]
        request: generate::Request,
        /// Backend (see `train --help`).
        #[arg(long, default_value_t = device::default_name().to_owned())]
        device: String,
        /// Which model of the run: the best by validation perplexity (model-best.bpk, where
        /// the run kept one) or the last.
        #[arg(long, value_enum, default_value_t = WhichArg::Best)]
        which: WhichArg,
    },
}

fn main() -> ExitCode {
    // The fused scan sets this itself on its first call; the composite path (other backends,
    // --fused off) gains from it too. RNNLM_MALLOC_DEFAULTS=1 leaves glibc alone, to measure
    // what the setting gives.
    rnnlm::fused::keep_freed_memory_unless_told_not_to();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The processes this run spans: one, or the ranks `mpirun` (or `srun`) started, which takes a
/// build with the `mpi` feature.
fn ranks() -> anyhow::Result<std::sync::Arc<dyn rnnlm_train::Ranks>> {
    match rnnlm_train::launched_ranks() {
        None => Ok(std::sync::Arc::new(rnnlm_train::OneProcess)),
        #[cfg(feature = "mpi")]
        Some(_) => Ok(std::sync::Arc::new(rnnlm_train::MpiRanks::new()?)),
        #[cfg(not(feature = "mpi"))]
        Some(ranks) => Err(rnnlm_train::require_mpi_build(ranks).into()),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(fused) = cli.fused {
        rnnlm::fused::set_mode(match fused {
            Fused::On => rnnlm::fused::Mode::Fused,
            Fused::Off => rnnlm::fused::Mode::Composite,
        });
    }
    match cli.command {
        Command::Train {
            config,
            data,
            encoding,
            device,
            artifacts,
            resume,
            mut overrides,
            devices,
            cache_dir,
            max_minutes,
        } => {
            if let Some(minutes) = max_minutes {
                overrides.push(format!("train.max_minutes={minutes:?}"));
            }
            if !devices.is_empty() {
                let quoted: Vec<String> = devices.iter().map(|d| format!("{d:?}")).collect();
                overrides.push(format!("train.devices=[{}]", quoted.join(", ")));
            }
            // The experiment names the data-parallel devices; resolve them before training so a
            // backend that is not compiled in is reported up front.
            let experiment = rnnlm_train::ExperimentConfig::load(&config, &overrides)?;
            experiment.validate()?;
            let devices = experiment
                .train
                .devices
                .iter()
                .map(|name| {
                    device::by_name(name).with_context(|| format!("train.devices: {name:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let device = device::by_name(&device)?;
            let dashboard = cfg!(feature = "tui")
                && std::io::stdout().is_terminal()
                && std::env::var_os("CI").is_none();
            let interrupter = burn::train::Interrupter::new();
            let on_signal = interrupter.clone();
            // Ctrl-C, SIGTERM (a scheduler's or `kill`'s) and SIGHUP all stop after the current
            // minibatch, with a checkpoint there.
            ctrlc::set_handler(move || {
                on_signal.stop(Some("interrupted by a signal (Ctrl-C, SIGTERM)"))
            })
            .context("installing the signal handler")?;
            let options = TrainOptions {
                config,
                overrides,
                data,
                encoding,
                artifacts,
                resume,
                device,
                devices,
                cache_dir,
                progress: if dashboard {
                    Progress::Dashboard
                } else {
                    Progress::Lines
                },
                interrupter: Some(interrupter),
            };
            let ranks = ranks()?;
            let report = match rnnlm_train::train_on(&options, ranks.clone()) {
                Ok(report) => report,
                // Every rank stops at the same minibatch for these (the step's all-reduce
                // carries the stop flags and the loss): each ends on its own, rank 0 says why.
                Err(
                    error @ (rnnlm_train::TrainError::Interrupted { .. }
                    | rnnlm_train::TrainError::NonFinite { .. }),
                ) => {
                    if !ranks.is_writer() {
                        // The last handle: MPI is finalised before the process ends.
                        drop(ranks);
                        std::process::exit(1);
                    }
                    return Err(error.into());
                }
                // The other ranks wait in a collective for this one: end them all, saying which
                // rank failed and why.
                Err(error) if ranks.size() > 1 => {
                    eprintln!(
                        "error on rank {} of {}: {error:#}",
                        ranks.rank(),
                        ranks.size()
                    );
                    ranks.abort(1)
                }
                Err(error) => return Err(error.into()),
            };
            if !ranks.is_writer() {
                return Ok(());
            }
            for sample in &report.held_samples {
                println!("{sample}");
            }
            if let Some(reason) = &report.stopped {
                println!("stopped early: {reason}");
            }
            let (Some(first), Some(last)) = (report.history.first(), report.history.last()) else {
                println!(
                    "done: stopped inside the first epoch (no epoch's metrics yet); the model and \
                     a checkpoint are in {}",
                    report.artifacts.display()
                );
                return Ok(());
            };
            println!(
                "done: train perplexity {:.3} -> {:.3}{}; files in {}",
                first.train_perplexity,
                last.train_perplexity,
                last.valid_perplexity
                    .map(|p| format!(", validation {p:.3}"))
                    .unwrap_or_default(),
                report.artifacts.display()
            );
            Ok(())
        }
        Command::Prepare {
            config,
            data,
            encoding,
            overrides,
            cache_dir,
        } => {
            let mut experiment = rnnlm_train::ExperimentConfig::load(&config, &overrides)?;
            if !data.is_empty() {
                experiment.data.file = None;
                experiment.data.files = data;
            }
            if let Some(encoding) = encoding {
                experiment.data.encoding = encoding;
            }
            experiment.validate()?;
            let (corpus, _) = rnnlm_train::prepare_corpus(&experiment, cache_dir.as_deref())?;
            let size = std::fs::metadata(&corpus.path)
                .map(|m| m.len())
                .unwrap_or(0);
            println!(
                "{}: {} tokens for training, {} for validation, vocabulary of {} as {:?} ids; {:.1} MB",
                corpus.path.display(),
                corpus.train.len(),
                corpus.valid.len(),
                corpus.vocab.len(),
                corpus.train.width(),
                size as f64 / 1e6
            );
            Ok(())
        }
        Command::Generate {
            checkpoint,
            request,
            device,
            which,
        } => {
            let device = device::by_name(&device)?;
            let loaded = rnnlm_train::load_model_as(&checkpoint, which.into(), &device)?;
            generate::run(&loaded, &request, &device)
        }
        Command::Import(args) => import::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Backends => {
            device::report();
            Ok(())
        }
        Command::Eval {
            checkpoint,
            data,
            encoding,
            device,
            streams,
            which,
            cache_dir,
        } => {
            let device = device::by_name(&device)?;
            let loaded = rnnlm_train::load_model_as(&checkpoint, which.into(), &device)?;
            let encoding = encoding.unwrap_or_else(|| loaded.config.data.encoding.clone());
            let unit = match loaded.config.data.level {
                rnnlm_data::TokenLevel::Char => "character",
                rnnlm_data::TokenLevel::Word => "word",
            };
            let files = rnnlm_data::text_files(&data)?;
            let (mut tokens, mut bits, mut unknown_tokens) = (0usize, 0.0f64, 0usize);
            for file in &files {
                let result = rnnlm_train::evaluate_file(
                    &loaded,
                    file,
                    &encoding,
                    streams as usize,
                    &device,
                    cache_dir.as_deref(),
                )
                .with_context(|| format!("scoring {}", file.display()))?;
                let unknown: usize = result.unknown.iter().map(|(_, n)| n).sum();
                if unknown > 0 {
                    let listed: Vec<String> = result
                        .unknown
                        .iter()
                        .take(20)
                        .map(|(t, n)| format!("{t:?} x{n}"))
                        .collect();
                    eprintln!(
                        "warning: {unknown} tokens of {} are not in the model's vocabulary and were scored as <unk>: {}",
                        file.display(),
                        listed.join(", ")
                    );
                }
                println!(
                    "{}: {} tokens, {unknown} unknown, perplexity {:.4}, {:.4} bits per {unit}",
                    file.display(),
                    result.tokens,
                    result.perplexity,
                    result.bits_per_token,
                );
                tokens += result.tokens;
                bits += result.bits_per_token * result.tokens as f64;
                unknown_tokens += unknown;
            }
            if files.len() > 1 {
                let mean = bits / tokens as f64;
                println!(
                    "total: {tokens} tokens, {unknown_tokens} unknown, perplexity {:.4}, {mean:.4} bits per {unit}",
                    mean.exp2()
                );
            }
            println!("(model: {})", loaded.weights.display());
            Ok(())
        }
    }
}
