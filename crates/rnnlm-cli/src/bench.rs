//! `rnnlm bench`: throughput per model and backend, as a table or as JSON.

use anyhow::bail;
use rnnlm_bench::{BenchOptions, Phases, bench_models, run_bench};

use crate::device;

/// What `rnnlm bench` takes.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// rnn-scratch, gru, lstm, deep-lstm, or all.
    #[arg(long, default_value = "all")]
    model: String,
    /// A backend compiled in; all of them when absent.
    #[arg(long)]
    device: Option<String>,
    /// Width of every layer, instead of the model's own (a sweep over sizes:
    /// scripts/sweep.sh).
    #[arg(long)]
    hidden: Option<usize>,
    /// Stacked layers, instead of the model's own.
    #[arg(long)]
    layers: Option<usize>,
    /// Sequences per training and validation minibatch (generation runs batch 1 and 32).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Time steps per minibatch.
    #[arg(long, default_value_t = 35)]
    num_steps: usize,
    /// Instead of the models, the machine's roof: the best rate of a 2048 x 2048 float32
    /// product by the `gemm` crate and by the kernels' own micro-kernel, on the kernels'
    /// threads (`RNNLM_THREADS`), what the benchmarks quote their GFLOP/s as a share of.
    #[arg(long)]
    roof: bool,
    /// Timed training and validation steps (after the warm-up).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Characters per timed generation run.
    #[arg(long, default_value_t = 500)]
    gen_chars: usize,
    /// Take only these measurements (comma-separated: train, valid, gen); the others print as
    /// 0. For profiling one of them.
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Phase>,
    /// Also print where a training step spends its time, phase by phase (the fused kernels'
    /// passes, the clipping, the optimizer's update, the rest: Burn's operations), in
    /// `train_profile` with --json.
    #[arg(long)]
    profile: bool,
    /// One JSON object per model and backend, one per line.
    #[arg(long)]
    json: bool,
    /// Instead of the language models, a Burn user's own model on rnnlm's cores: the primer's
    /// sequence classifier (`[batch, 28, 28]` -> 2-layer core -> last step -> Linear 10, Adam
    /// 1e-3, plain Burn autodiff): lstm-256 (batch 128), gru-256 (batch 128), lstm-512
    /// (batch 32), bilstm-256-packed (bidirectional, batch 128 of random lengths 14..=28, the
    /// head on every row's final state), or all. Its peer is scripts/peer_classifier.py.
    #[arg(long, value_name = "CASE")]
    classifier: Option<String>,
}

/// A measurement of `rnnlm bench`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Training steps.
    Train,
    /// Validation passes.
    Valid,
    /// Greedy generation with batch 1 and 32.
    Gen,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.roof {
        return run_roof(args);
    }
    if let Some(name) = &args.classifier {
        return run_classifier(args, name);
    }
    for (flag, value) in [
        ("--hidden", args.hidden),
        ("--layers", args.layers),
        ("--batch-size", Some(args.batch_size)),
        ("--num-steps", Some(args.num_steps)),
    ] {
        if value == Some(0) {
            bail!("{flag} 0: must be at least 1");
        }
    }
    let models: Vec<_> = bench_models()
        .into_iter()
        .filter(|m| args.model == "all" || m.name == args.model)
        .map(|mut m| {
            m.config.hidden_size = args.hidden.unwrap_or(m.config.hidden_size);
            m.config.num_layers = args.layers.unwrap_or(m.config.num_layers);
            m
        })
        .collect();
    if models.is_empty() {
        let names: Vec<&str> = bench_models().iter().map(|m| m.name).collect();
        bail!(
            "unknown --model {:?}: choose one of {} or all",
            args.model,
            names.join(", ")
        );
    }
    if args.steps == 0 || args.gen_chars == 0 {
        bail!("--steps and --gen-chars must be at least 1");
    }
    let devices = devices(args);
    let options = BenchOptions {
        batch_size: args.batch_size,
        num_steps: args.num_steps,
        steps: args.steps,
        warmup: args.warmup,
        gen_chars: args.gen_chars,
        mode: rnnlm::fused::mode(),
        phases: if args.only.is_empty() {
            Phases::default()
        } else {
            Phases {
                train: args.only.contains(&Phase::Train),
                valid: args.only.contains(&Phase::Valid),
                generate: args.only.contains(&Phase::Gen),
            }
        },
        profile: args.profile,
        ..BenchOptions::default()
    };
    if !args.json {
        println!(
            "{:<22} {:<8} {:<9} {:>12} {:>9} {:>12} {:>12} {:>12} {:>9}",
            "model hidden x layers",
            "device",
            "layers",
            "train tok/s",
            "GFLOP/s",
            "valid tok/s",
            "gen b1 ch/s",
            "gen b32 ch/s",
            "peak MB"
        );
    }
    for name in &devices {
        let device = device::by_name(name)?;
        for model in &models {
            let result = run_bench(model, name, &device, &options);
            if args.json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                println!(
                    "{:<22} {:<8} {:<9} {:>12.0} {:>9.1} {:>12.0} {:>12.0} {:>12.0} {:>9.0}",
                    format!(
                        "{} {}x{}",
                        result.model, result.hidden_size, result.num_layers
                    ),
                    result.device,
                    if result.fused { "fused" } else { "composite" },
                    result.train_tokens_per_s,
                    result.train_gflop_per_s,
                    result.valid_tokens_per_s,
                    result.gen_chars_per_s_batch1,
                    result.gen_chars_per_s_batch32,
                    result.peak_rss_bytes as f64 / 1e6
                );
                print_profile(result.train_step_ms, &result.train_profile);
            }
        }
    }
    Ok(())
}

/// `rnnlm bench --roof`.
fn run_roof(args: &Args) -> anyhow::Result<()> {
    let roof = rnnlm_bench::measure_roof(2048, rnnlm::fused::threads(), 10);
    if args.json {
        let json = serde_json::json!({
            "size": roof.size,
            "threads": roof.threads,
            "gemm_crate_gflop_per_s": roof.gemm_crate,
            "ours_gflop_per_s": roof.ours,
            "roof_gflop_per_s": roof.best(),
            "max_difference": roof.max_difference,
        });
        println!("{json}");
    } else {
        println!(
            "roof ({0} x {0} float32 product, {1} threads): {2:.1} GFLOP/s (gemm crate {3:.1}, rnnlm-kernels {4:.1})",
            roof.size,
            roof.threads,
            roof.best(),
            roof.gemm_crate,
            roof.ours
        );
    }
    Ok(())
}

fn devices(args: &Args) -> Vec<String> {
    match &args.device {
        Some(name) => vec![name.clone()],
        None => device::compiled().iter().map(|s| s.to_string()).collect(),
    }
}

/// `rnnlm bench --classifier CASE`.
fn run_classifier(args: &Args, name: &str) -> anyhow::Result<()> {
    let cases: Vec<_> = rnnlm_bench::classifier_cases()
        .into_iter()
        .filter(|case| name == "all" || case.name == name)
        .collect();
    if cases.is_empty() {
        let names: Vec<&str> = rnnlm_bench::classifier_cases()
            .iter()
            .map(|case| case.name)
            .collect();
        bail!(
            "unknown --classifier {name:?}: choose one of {} or all",
            names.join(", ")
        );
    }
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if !args.json {
        println!(
            "{:<18} {:<8} {:<9} {:>6} {:>10} {:>11} {:>9} {:>8}",
            "case", "device", "layers", "batch", "samples/s", "step ms", "peak MB", "malloc"
        );
    }
    for device_name in devices(args) {
        let device = device::by_name(&device_name)?;
        for case in &cases {
            let result = rnnlm_bench::run_classifier_bench(
                case,
                &device_name,
                &device,
                args.steps,
                args.warmup,
                0,
                rnnlm::fused::mode(),
                args.profile,
            );
            if args.json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                println!(
                    "{:<18} {:<8} {:<9} {:>6} {:>10.1} {:>11.2} {:>9.0} {:>8}",
                    result.case,
                    result.device,
                    if result.fused { "fused" } else { "composite" },
                    result.batch_size,
                    result.samples_per_s,
                    result.step_ms_median,
                    result.peak_rss_bytes as f64 / 1e6,
                    if result.freed_memory_kept {
                        "kept"
                    } else {
                        "default"
                    },
                );
                print_profile(result.step_ms_median, &result.train_profile);
            }
        }
    }
    Ok(())
}

/// The phases of a training step (`--profile`), each in ms and as a share of the median step.
fn print_profile(step_ms: f64, phases: &[rnnlm_bench::PhaseShare]) {
    if phases.is_empty() {
        return;
    }
    println!("  training step {step_ms:.2} ms (median), by phase (mean):");
    for share in phases {
        println!(
            "    {:<42} {:>7.3} ms {:>5.1}%",
            share.phase,
            share.ms_per_step,
            100.0 * share.ms_per_step / step_ms
        );
    }
}
