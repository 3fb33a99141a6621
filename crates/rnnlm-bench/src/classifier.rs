//! Throughput of a Burn user's own model built on rnnlm's cores: the sequence classifier of the
//! PyTorch primer this project was built from (inputs `[batch, 28, 28]`, a 2-layer LSTM or GRU,
//! the top layer's output at the last step, a linear layer to 10 classes, cross-entropy, Adam
//! with learning rate 1e-3), trained through plain Burn autodiff: no part of rnnlm's trainer.
//! Its peer is `scripts/peer_classifier.py`; `scripts/bench-classifier-vs-pytorch.sh` runs the
//! two side by side.

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use rnnlm::{DeepLstmConfig, GruConfig, Recurrent, RecurrentCore};
use serde::Serialize;

use rnnlm_kernels::profile;

use crate::lm::{PhaseShare, median, peak_rss, phase_shares, reset_peak_rss};

/// The recurrent core of a [`ClassifierCase`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierCell {
    /// [`rnnlm::DeepLstm`] (PyTorch's `nn.LSTM`).
    Lstm,
    /// [`rnnlm::Gru`] with PyTorch's formula (`nn.GRU`).
    Gru,
}

/// One shape of the classifier benchmark.
#[derive(Clone, Debug)]
pub struct ClassifierCase {
    /// Its name on the command line (`lstm-256`).
    pub name: &'static str,
    /// The core.
    pub cell: ClassifierCell,
    /// Units per layer.
    pub hidden: usize,
    /// Stacked layers.
    pub layers: usize,
    /// Sequences per minibatch.
    pub batch_size: usize,
    /// Whether every layer also reads the sequence backwards.
    pub bidirectional: bool,
    /// The shortest sequence of a batch of random lengths `shortest..=28` (PyTorch's packed
    /// sequences; the head reads each row's final state), or `None`: every row 28 steps, the
    /// head reading the top layer's last output.
    pub shortest: Option<usize>,
}

/// Steps per sequence and features per step: the primer's 28 x 28 images read row by row.
pub const CLASSIFIER_STEPS: usize = 28;
/// Features per step.
pub const CLASSIFIER_FEATURES: usize = 28;
/// Classes of the linear head.
pub const CLASSIFIER_CLASSES: usize = 10;

/// The primer's classifier (2-layer LSTM 256, batch 128), the same with a GRU, a 2-layer LSTM
/// 512 with batch 32, and a bidirectional 2-layer LSTM 256 on batches of random lengths
/// `14..=28` (`bilstm-256-packed`, PyTorch's `pack_padded_sequence`).
pub fn classifier_cases() -> Vec<ClassifierCase> {
    let case = |name, cell, hidden, batch_size| ClassifierCase {
        name,
        cell,
        hidden,
        layers: 2,
        batch_size,
        bidirectional: false,
        shortest: None,
    };
    vec![
        case("lstm-256", ClassifierCell::Lstm, 256, 128),
        case("gru-256", ClassifierCell::Gru, 256, 128),
        case("lstm-512", ClassifierCell::Lstm, 512, 32),
        ClassifierCase {
            bidirectional: true,
            shortest: Some(14),
            ..case("bilstm-256-packed", ClassifierCell::Lstm, 256, 128)
        },
    ]
}

/// The user's model: a core, the top layer's output at the last step, a linear head.
#[derive(Module, Debug)]
struct Classifier {
    core: RecurrentCore,
    head: Linear,
}

impl Classifier {
    fn new(case: &ClassifierCase, device: &Device) -> Self {
        let core = match case.cell {
            ClassifierCell::Lstm => RecurrentCore::Lstm(
                DeepLstmConfig::new(CLASSIFIER_FEATURES, case.hidden)
                    .with_num_layers(case.layers)
                    .with_bidirectional(case.bidirectional)
                    .init(device),
            ),
            ClassifierCell::Gru => RecurrentCore::Gru(
                GruConfig::new(CLASSIFIER_FEATURES, case.hidden)
                    .with_num_layers(case.layers)
                    .with_bidirectional(case.bidirectional)
                    .init(device),
            ),
        };
        Self {
            head: LinearConfig::new(core.output_size(), CLASSIFIER_CLASSES).init(device),
            core,
        }
    }

    /// `inputs [batch, steps, features]` -> `logits [batch, classes]`: from the last step's
    /// output, or with `lengths`, from every row's final state (both directions'), as a
    /// PyTorch model on packed sequences reads `h_n`.
    fn forward(&self, inputs: Tensor<3>, lengths: Option<&[usize]>) -> Tensor<2> {
        let [batch, steps, _] = inputs.dims();
        let Some(lengths) = lengths else {
            let (outputs, _) = self.core.forward(inputs, None);
            let width = self.core.output_size();
            return self
                .head
                .forward(outputs.narrow(1, steps - 1, 1).reshape([batch, width]));
        };
        let (_, state) = self
            .core
            .forward_padded(inputs, lengths, None)
            .expect("the benchmark's lengths lie in 1..=steps");
        self.head
            .forward(state.top_layer_hidden(self.core.num_directions()))
    }
}

/// `batch` lengths drawn uniformly from `shortest..=CLASSIFIER_STEPS` (xorshift from `seed`).
fn random_lengths(batch: usize, shortest: usize, seed: u64) -> Vec<usize> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let span = (CLASSIFIER_STEPS - shortest + 1) as u64;
    (0..batch)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shortest + (state % span) as usize
        })
        .collect()
}

/// The figures of one case on one device; rates are medians over the timed steps.
#[derive(Clone, Debug, Serialize)]
pub struct ClassifierResult {
    /// Case name.
    pub case: String,
    /// Device name as given.
    pub device: String,
    /// The core.
    pub cell: ClassifierCell,
    /// Units per layer.
    pub hidden: usize,
    /// Stacked layers.
    pub layers: usize,
    /// Sequences per minibatch.
    pub batch_size: usize,
    /// Whether every layer also read the sequences backwards.
    pub bidirectional: bool,
    /// The shortest sequence of the batches' random lengths (`None`: all 28 steps).
    pub shortest: Option<usize>,
    /// Whether the layers ran as fused scans ([`rnnlm::fused::is_active`]).
    pub fused: bool,
    /// Whether glibc's malloc kept freed memory in this process
    /// ([`rnnlm::fused::keep_freed_memory`], which the first fused scan calls; not with
    /// `RNNLM_MALLOC_DEFAULTS=1`).
    pub freed_memory_kept: bool,
    /// Training: forward, loss, backward and Adam's update, sequences per second.
    pub samples_per_s: f64,
    /// The same in time steps (sequences x 28) per second.
    pub tokens_per_s: f64,
    /// Median training step, milliseconds.
    pub step_ms_median: f64,
    /// Peak resident memory of the process while this case ran (Linux; 0 elsewhere).
    pub peak_rss_bytes: u64,
    /// With profiling: milliseconds per timed step in each phase (the fused kernels' passes,
    /// the optimizer's update, then the rest: Burn's operations), as in
    /// [`BenchResult::train_profile`](crate::BenchResult::train_profile).
    pub train_profile: Vec<PhaseShare>,
}

/// Trains the classifier of `case` on `device` (autodiff is added here) for `warmup` untimed
/// and `steps` timed minibatches of random inputs and labels (four batches, cycled: only the
/// speed means something), with the fused scan or not as `mode` says; `profile_steps` records
/// where the timed steps spend their time.
// Each argument is one of the benchmark grid's axes or settings, named at every call site.
#[allow(clippy::too_many_arguments)]
pub fn run_classifier_bench(
    case: &ClassifierCase,
    device_name: &str,
    device: &Device,
    steps: usize,
    warmup: usize,
    seed: u64,
    mode: rnnlm::fused::Mode,
    profile_steps: bool,
) -> ClassifierResult {
    rnnlm::fused::with_mode(mode, || {
        reset_peak_rss();
        let ad = device.clone().autodiff();
        ad.seed(seed);
        let mut model = Classifier::new(case, &ad);
        let mut optimizer = AdamConfig::new().init();
        let loss_fn = CrossEntropyLossConfig::new().init(&ad);
        let batch = case.batch_size;
        let batches: Vec<(Tensor<3>, Tensor<1, Int>, Option<Vec<usize>>)> = (0..4u64)
            .map(|index| {
                let x = Tensor::random(
                    [batch, CLASSIFIER_STEPS, CLASSIFIER_FEATURES],
                    Distribution::Normal(0.0, 1.0),
                    &ad,
                );
                let y = Tensor::<1, Int>::random(
                    [batch],
                    Distribution::Uniform(0.0, CLASSIFIER_CLASSES as f64),
                    &ad,
                );
                let lengths = case
                    .shortest
                    .map(|shortest| random_lengths(batch, shortest, seed + index));
                (x, y, lengths)
            })
            .collect();
        let mut seconds = Vec::with_capacity(steps);
        for step in 0..warmup + steps {
            if profile_steps && step == warmup {
                let _ = profile::take();
                profile::enable(true);
            }
            let (x, y, lengths) = batches[step % batches.len()].clone();
            let started = Instant::now();
            let loss = loss_fn.forward(model.forward(x, lengths.as_deref()), y);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = profile::timed("optimizer step", || {
                let model = optimizer.step(1e-3, model, grads);
                // Wait for the update, so a lazy backend's queue is not carried into the next
                // step.
                let _ = model
                    .head
                    .weight
                    .val()
                    .narrow(0, 0, 1)
                    .sum()
                    .into_scalar::<f32>();
                model
            });
            if step >= warmup {
                seconds.push(started.elapsed().as_secs_f64());
            }
        }
        let train_profile = if profile_steps {
            profile::enable(false);
            phase_shares(&seconds, steps)
        } else {
            Vec::new()
        };
        let step = median(seconds);
        let samples_per_s = if step > 0.0 { batch as f64 / step } else { 0.0 };
        ClassifierResult {
            case: case.name.to_owned(),
            device: device_name.to_owned(),
            cell: case.cell,
            hidden: case.hidden,
            layers: case.layers,
            batch_size: batch,
            bidirectional: case.bidirectional,
            shortest: case.shortest,
            fused: rnnlm::fused::is_active(device),
            freed_memory_kept: rnnlm::fused::freed_memory_kept(),
            samples_per_s,
            tokens_per_s: samples_per_s * CLASSIFIER_STEPS as f64,
            step_ms_median: step * 1e3,
            peak_rss_bytes: peak_rss(),
            train_profile,
        }
    })
}
