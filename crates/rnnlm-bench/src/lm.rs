//! Throughput of the d2l models on a device: training, validation, greedy generation, memory.
//!
//! The figures are for side-by-side comparisons run in one session (see
//! `scripts/bench-vs-pytorch.sh`), never for tests: the machines are shared and noisy.

use std::time::Instant;

use burn::optim::SgdConfig;
use burn::prelude::*;
use rnnlm::{CellKind, RnnLm, RnnLmConfig};
use rnnlm_kernels::profile;
use serde::Serialize;

use rnnlm_data::SequenceBatch;
use rnnlm_train::{TrainableLm, clip_grad_global_norm, sequence_loss};

/// One benchmarked model: d2l's settings for the chapter's experiments.
#[derive(Clone, Debug)]
pub struct BenchModel {
    /// Its name on the command line.
    pub name: &'static str,
    /// The model (vocabulary 28, one-hot input, as d2l on The Time Machine).
    pub config: RnnLmConfig,
    /// The same model in `../shared/peers/pytorch/d2l_charlm.py --model`.
    pub peer: &'static str,
}

/// Vocabulary size of The Time Machine under d2l's preprocessing.
pub const BENCH_VOCAB: usize = 28;

/// The models `rnnlm bench` knows: rnn-scratch 512, gru 256, lstm 256, deep-lstm 2 x 256.
pub fn bench_models() -> Vec<BenchModel> {
    let model =
        |kind, hidden, layers| RnnLmConfig::new(kind, BENCH_VOCAB, hidden).with_num_layers(layers);
    vec![
        BenchModel {
            name: "rnn-scratch",
            config: model(CellKind::RnnScratch, 512, 1),
            peer: "rnn_scratch",
        },
        BenchModel {
            name: "gru",
            config: model(CellKind::Gru, 256, 1),
            peer: "gru",
        },
        BenchModel {
            name: "lstm",
            config: model(CellKind::Lstm, 256, 1),
            peer: "lstm",
        },
        BenchModel {
            name: "deep-lstm",
            config: model(CellKind::Lstm, 256, 2),
            peer: "lstm2",
        },
    ]
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Sequences per minibatch (d2l: 32).
    pub batch_size: usize,
    /// Time steps per minibatch (d2l: 35).
    pub num_steps: usize,
    /// Timed training steps (after the warm-up).
    pub steps: usize,
    /// Untimed steps first (allocator, caches, autotuning).
    pub warmup: usize,
    /// Characters generated per timed generation run.
    pub gen_chars: usize,
    /// Seed of the weights and the token ids.
    pub seed: u64,
    /// Whether the fused scan runs where it can ([`rnnlm::fused::Mode::Fused`]), or the
    /// composite path everywhere.
    pub mode: rnnlm::fused::Mode,
    /// Which measurements to take; the others are reported as 0 (for profiling one of them).
    pub phases: Phases,
    /// Record where the timed training steps spend their time ([`BenchResult::train_profile`]).
    pub profile: bool,
}

/// The measurements of [`run_bench`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phases {
    /// Training steps.
    pub train: bool,
    /// Validation passes.
    pub valid: bool,
    /// Greedy generation with batch 1 and 32.
    pub generate: bool,
}

impl Default for Phases {
    fn default() -> Self {
        Self {
            train: true,
            valid: true,
            generate: true,
        }
    }
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            num_steps: 35,
            steps: 20,
            warmup: 3,
            gen_chars: 500,
            seed: 0,
            mode: rnnlm::fused::Mode::Fused,
            phases: Phases::default(),
            profile: false,
        }
    }
}

/// The figures for one model on one device. Rates are medians over the timed repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    /// Model name.
    pub model: String,
    /// Its recurrent core: `rnn-scratch`, `gru` or `lstm`.
    pub cell: String,
    /// Width of every layer.
    pub hidden_size: usize,
    /// Stacked layers.
    pub num_layers: usize,
    /// Device name as given.
    pub device: String,
    /// Minibatch shape.
    pub batch_size: usize,
    /// Minibatch shape.
    pub num_steps: usize,
    /// Whether the layers ran as fused scans (`true`) or per-step tensor operations, as
    /// [`rnnlm::fused::status`] said for the device and the mode.
    pub fused: bool,
    /// Training: forward, backward, global-norm clipping and an SGD update, tokens per second.
    pub train_tokens_per_s: f64,
    /// Median training step.
    pub train_step_ms: f64,
    /// FLOP rate of training, counting the dense-equivalent work PyTorch does (one-hot input
    /// as a matmul; backward twice the forward).
    pub train_gflop_per_s: f64,
    /// Dense-equivalent training FLOP per token.
    pub train_flop_per_token: f64,
    /// Validation (forward and loss, no autodiff), tokens per second.
    pub valid_tokens_per_s: f64,
    /// Greedy generation of one sequence, characters per second.
    pub gen_chars_per_s_batch1: f64,
    /// Greedy generation of 32 sequences at once, characters per second (all sequences).
    pub gen_chars_per_s_batch32: f64,
    /// Peak resident memory of the process while this model ran (Linux; 0 elsewhere).
    pub peak_rss_bytes: u64,
    /// With [`BenchOptions::profile`]: milliseconds per timed training step in each phase, in
    /// the order they first run (the fused kernels' phases, see `rnnlm_kernels::profile`, the
    /// clipping and the optimizer's update), then the rest of the step (Burn's operations);
    /// empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub train_profile: Vec<PhaseShare>,
}

/// One phase of a training step in [`BenchResult::train_profile`].
#[derive(Clone, Debug, Serialize)]
pub struct PhaseShare {
    /// What ran.
    pub phase: String,
    /// Mean wall time per training step, in milliseconds.
    pub ms_per_step: f64,
}

/// Dense-equivalent FLOP per training token: three times the forward's matmuls (the backward
/// costs two), with the one-hot input counted as a `[vocab, gates·hidden]` matmul.
pub fn train_flop_per_token(config: &RnnLmConfig) -> f64 {
    let gates = match config.kind {
        CellKind::RnnScratch => 1,
        CellKind::Gru => 3,
        CellKind::Lstm => 4,
    } as f64;
    let h = config.hidden_size as f64;
    let mut forward = 0.0;
    for layer in 0..config.num_layers {
        let input = if layer == 0 {
            config.core_input_size() as f64
        } else {
            h
        };
        forward += 2.0 * gates * h * (input + h);
    }
    forward += 2.0 * h * config.vocab_size as f64;
    3.0 * forward
}

/// The recorded phases per timed step (taking them), then what the rest of the step took:
/// Burn's own operations, between the kernels.
pub(crate) fn phase_shares(step_seconds: &[f64], steps: usize) -> Vec<PhaseShare> {
    let per_step = |seconds: f64| seconds * 1e3 / steps.max(1) as f64;
    let mut shares: Vec<PhaseShare> = profile::take()
        .into_iter()
        .map(|time| PhaseShare {
            phase: time.phase.to_string(),
            ms_per_step: per_step(time.total.as_secs_f64()),
        })
        .collect();
    let recorded: f64 = shares.iter().map(|share| share.ms_per_step).sum();
    let total = per_step(step_seconds.iter().sum());
    shares.push(PhaseShare {
        phase: "Burn's operations (the rest of the step)".to_owned(),
        ms_per_step: (total - recorded).max(0.0),
    });
    shares
}

/// `tokens` over the median of `seconds`; 0 for a phase that did not run.
fn rate_of(tokens: f64, seconds: &[f64]) -> f64 {
    if seconds.is_empty() {
        0.0
    } else {
        tokens / median(seconds.to_vec())
    }
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Deterministic token ids `[rows, cols]` in `0..vocab`.
fn token_ids(seed: u64, rows: usize, cols: usize, vocab: usize) -> Vec<i64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..rows * cols)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % vocab as u64) as i64
        })
        .collect()
}

/// Resets the kernel's peak-RSS counter of this process (Linux), so the next reading covers
/// what runs from here on.
pub(crate) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub(crate) fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Runs every measurement for `model` on `device` (without autodiff; it is added for training).
pub fn run_bench(
    model: &BenchModel,
    device_name: &str,
    device: &Device,
    options: &BenchOptions,
) -> BenchResult {
    rnnlm::fused::with_mode(options.mode, || {
        run_lm_bench(model, device_name, device, options)
    })
}

fn run_lm_bench(
    model: &BenchModel,
    device_name: &str,
    device: &Device,
    options: &BenchOptions,
) -> BenchResult {
    let (b, t, vocab) = (
        options.batch_size,
        options.num_steps,
        model.config.vocab_size,
    );
    let tokens = (b * t) as f64;
    reset_peak_rss();

    // Training.
    let ad = device.clone().autodiff();
    ad.seed(options.seed);
    let mut lm: RnnLm = model.config.init(&ad);
    let mut optimizer = SgdConfig::new().init();
    let batches: Vec<(Tensor<2, Int>, Tensor<2, Int>)> = (0..4)
        .map(|i| {
            let ids = |salt| {
                Tensor::from_data(
                    TensorData::new(token_ids(options.seed + 2 * i + salt, b, t, vocab), [b, t]),
                    &ad,
                )
            };
            (ids(0), ids(1))
        })
        .collect();
    let timed = |on: bool| {
        if on {
            options.warmup + options.steps
        } else {
            0
        }
    };
    let mut state = lm.begin_state(b, &ad);
    let mut step_seconds = Vec::with_capacity(options.steps);
    for step in 0..timed(options.phases.train) {
        if options.profile && step == options.warmup {
            let _ = profile::take();
            profile::enable(true);
        }
        let (x, y) = batches[step % batches.len()].clone();
        let started = Instant::now();
        let pass =
            TrainableLm::new(lm.clone()).train_pass(SequenceBatch { x, y }, Some(state), 1.0);
        state = pass.state;
        let mut grads = pass.grads;
        profile::timed("clip by the global norm", || {
            clip_grad_global_norm(&lm, &mut grads, 1.0)
        });
        lm = profile::timed("optimizer step", || {
            let lm = optimizer.step(0.1, lm, grads);
            // Wait for the update too, so a lazy backend's queue is not carried into the next
            // step.
            let _ = lm.output.b_q.val().narrow(0, 0, 1).into_scalar::<f32>();
            lm
        });
        if step >= options.warmup {
            step_seconds.push(started.elapsed().as_secs_f64());
        }
    }
    let train_profile = if options.profile {
        profile::enable(false);
        phase_shares(&step_seconds, options.steps)
    } else {
        Vec::new()
    };
    let train_rate = rate_of(tokens, &step_seconds);
    let train_step = median(step_seconds);

    // Validation: forward and loss without autodiff (as the trainer validates).
    let lm = lm.valid();
    let valid_batches: Vec<(Tensor<2, Int>, Tensor<2, Int>)> = batches
        .iter()
        .map(|(x, y)| (x.clone().to_device(device), y.clone().to_device(device)))
        .collect();
    let mut state = lm.begin_state(b, device);
    let mut valid_seconds = Vec::with_capacity(options.steps);
    for step in 0..timed(options.phases.valid) {
        let (x, y) = valid_batches[step % valid_batches.len()].clone();
        let started = Instant::now();
        let (logits, next) = lm.forward(x, state);
        state = next;
        let _ = sequence_loss(logits, y).into_scalar::<f32>();
        if step >= options.warmup {
            valid_seconds.push(started.elapsed().as_secs_f64());
        }
    }

    // Greedy generation after a 14-token prefix ("time traveller"), batch 1 and batch 32.
    let prefix: Vec<u32> = token_ids(options.seed + 99, 1, 14, vocab)
        .into_iter()
        .map(|id| id as u32)
        .collect();
    let gen_rate = |batch: usize| {
        let prefixes = vec![prefix.clone(); batch];
        let run = |len: usize| {
            let started = Instant::now();
            let _ = rnnlm::sample::generate(
                &lm,
                &prefixes,
                len,
                &rnnlm::sample::Decoding::Greedy,
                device,
                |_| std::ops::ControlFlow::Continue(()),
            );
            started.elapsed().as_secs_f64()
        };
        run(20); // warm-up
        let rates: Vec<f64> = (0..3)
            .map(|_| (batch * options.gen_chars) as f64 / run(options.gen_chars))
            .collect();
        median(rates)
    };
    let (gen1, gen32) = if options.phases.generate {
        (gen_rate(1), gen_rate(32))
    } else {
        (0.0, 0.0)
    };

    let flop = train_flop_per_token(&model.config);
    BenchResult {
        model: model.name.to_owned(),
        cell: model.config.kind.to_string(),
        hidden_size: model.config.hidden_size,
        num_layers: model.config.num_layers,
        device: device_name.to_owned(),
        batch_size: b,
        num_steps: t,
        train_tokens_per_s: train_rate,
        train_step_ms: if train_rate > 0.0 {
            train_step * 1e3
        } else {
            0.0
        },
        train_gflop_per_s: train_rate * flop / 1e9,
        train_flop_per_token: flop,
        valid_tokens_per_s: rate_of(tokens, &valid_seconds),
        fused: rnnlm::fused::is_active(device),
        gen_chars_per_s_batch1: gen1,
        gen_chars_per_s_batch32: gen32,
        peak_rss_bytes: peak_rss(),
        train_profile,
    }
}
