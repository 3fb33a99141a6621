//! `rnnlm`: train, evaluate and sample character-level RNN language models on Burn.

mod bench;
mod device;
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
    /// (`on`, the default: flex and ndarray), or as per-step tensor operations everywhere
    /// (`off`, for comparisons and debugging; also `RNNLM_FUSED=off`). Both give the same
    /// numbers, to float rounding.
    #[arg(long, global = true, value_enum)]
    fused: Option<Fused>,
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
        /// Train on this UTF-8 text file instead of the experiment's corpus (default: The Time
        /// Machine, downloaded once and checked by sha1).
        #[arg(long)]
        data: Option<PathBuf>,
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
    },
    /// Turn PyTorch weights (nn.RNN, nn.GRU or nn.LSTM with an nn.Linear head, from a .pt or
    /// .safetensors file) or d2l's scratch RNN parameters, plus a vocabulary, into a checkpoint
    /// directory that `generate` and `eval` read.
    Import(import::Args),
    /// Throughput of d2l's models (rnn-scratch 512, gru 256, lstm 256, deep-lstm 2x256; batch
    /// 32, 35 steps, vocabulary 28) on each backend: training and validation tokens/s, greedy
    /// generation chars/s with batch 1 and 32, peak memory. Figures for comparisons run in one
    /// session, not absolute truths: see scripts/bench-vs-pytorch.sh.
    Bench(bench::Args),
    /// List the backends this binary was built with and check that each one runs here (a
    /// missing driver or library is reported with what to install).
    Backends,
    /// Perplexity and bits per character of a trained model on a text.
    Eval {
        /// A training run's artifacts directory.
        #[arg(long)]
        checkpoint: PathBuf,
        /// UTF-8 text to score.
        #[arg(long)]
        data: PathBuf,
        /// Backend (see `train --help`).
        #[arg(long, default_value_t = device::default_name().to_owned())]
        device: String,
        /// Parallel streams the text is cut into.
        #[arg(long, default_value_t = 32)]
        streams: usize,
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
            device,
            artifacts,
            resume,
            mut overrides,
            devices,
            cache_dir,
        } => {
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
            ctrlc::set_handler(move || on_signal.stop(Some("interrupted by Ctrl-C")))
                .context("installing the Ctrl-C handler")?;
            let options = TrainOptions {
                config,
                overrides,
                data,
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
            let report = rnnlm_train::train(&options)?;
            for sample in &report.held_samples {
                println!("{sample}");
            }
            let last = report.history.last().context("no epoch was run")?;
            let first = &report.history[0];
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
        Command::Generate {
            checkpoint,
            request,
            device,
        } => {
            let device = device::by_name(&device)?;
            let loaded = rnnlm_train::load_model(&checkpoint, &device)?;
            generate::run(&loaded, &request, &device)
        }
        Command::Import(args) => import::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Backends => {
            device::report();
            Ok(())
        }
        Command::Eval {
            checkpoint,
            data,
            device,
            streams,
        } => {
            let device = device::by_name(&device)?;
            let loaded = rnnlm_train::load_model(&checkpoint, &device)?;
            let text = rnnlm_data::read_text(&data)?;
            let result = rnnlm_train::evaluate(&loaded, &text, streams, &device)?;
            if !result.unknown.is_empty() {
                let total: usize = result.unknown.iter().map(|(_, n)| n).sum();
                let listed: Vec<String> = result
                    .unknown
                    .iter()
                    .take(20)
                    .map(|(t, n)| format!("{t:?} x{n}"))
                    .collect();
                eprintln!(
                    "warning: {total} tokens of {} are not in the model's vocabulary and were scored as <unk>: {}",
                    data.display(),
                    listed.join(", ")
                );
            }
            let unit = match loaded.config.data.level {
                rnnlm_data::TokenLevel::Char => "character",
                rnnlm_data::TokenLevel::Word => "word",
            };
            println!(
                "{}: perplexity {:.4}, {:.4} bits per {unit}, over {} tokens ({})",
                data.display(),
                result.perplexity,
                result.bits_per_token,
                result.tokens,
                loaded.weights.display()
            );
            Ok(())
        }
    }
}
