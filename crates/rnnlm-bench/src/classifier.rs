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
}

/// Steps per sequence and features per step: the primer's 28 x 28 images read row by row.
pub const CLASSIFIER_STEPS: usize = 28;
/// Features per step.
pub const CLASSIFIER_FEATURES: usize = 28;
/// Classes of the linear head.
pub const CLASSIFIER_CLASSES: usize = 10;

/// The primer's classifier (2-layer LSTM 256, batch 128), the same with a GRU, and a 2-layer
/// LSTM 512 with batch 32.
pub fn classifier_cases() -> Vec<ClassifierCase> {
    let case = |name, cell, hidden, batch_size| ClassifierCase {
        name,
        cell,
        hidden,
        layers: 2,
        batch_size,
    };
    vec![
        case("lstm-256", ClassifierCell::Lstm, 256, 128),
        case("gru-256", ClassifierCell::Gru, 256, 128),
        case("lstm-512", ClassifierCell::Lstm, 512, 32),
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
                    .init(device),
            ),
            ClassifierCell::Gru => RecurrentCore::Gru(
                GruConfig::new(CLASSIFIER_FEATURES, case.hidden)
                    .with_num_layers(case.layers)
                    .init(device),
            ),
        };
        Self {
            core,
            head: LinearConfig::new(case.hidden, CLASSIFIER_CLASSES).init(device),
        }
    }

    /// `inputs [batch, steps, features]` -> `logits [batch, classes]`.
    fn forward(&self, inputs: Tensor<3>) -> Tensor<2> {
        let [batch, steps, _] = inputs.dims();
        let start = self.core.begin_state(batch, &inputs.device());
        let (outputs, _) = self.core.forward(inputs, start);
        let hidden = self.core.hidden_size();
        self.head
            .forward(outputs.narrow(1, steps - 1, 1).reshape([batch, hidden]))
    }
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
        let batches: Vec<(Tensor<3>, Tensor<1, Int>)> = (0..4)
            .map(|_| {
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
                (x, y)
            })
            .collect();
        let mut seconds = Vec::with_capacity(steps);
        for step in 0..warmup + steps {
            if profile_steps && step == warmup {
                let _ = profile::take();
                profile::enable(true);
            }
            let (x, y) = batches[step % batches.len()].clone();
            let started = Instant::now();
            let loss = loss_fn.forward(model.forward(x), y);
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
