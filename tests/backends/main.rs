//! Cross-backend equivalence: on every backend compiled into this binary, the same weights give
//! the same logits and states, and one training step (global-norm clipping included) gives the
//! same updated weights, as on flex (the reference), to 1e-4.
//!
//! It needs a second backend to compare with, so it is built only with one of the backend
//! features besides flex, e.g.:
//! `cargo test --release -p rnnlm-tests --features ndarray --test backends`
//! (add `wgpu`, `tch` and `cpu` with what `scripts/backend-env.sh` installs; see the README's
//! backends). With flex alone (the README's test command) the binary holds no test: there is
//! nothing to compare. `rnnlm train` itself runs on every backend in the CLI's test of the same
//! name (`crates/rnnlm-cli/tests/backends.rs`), built in the same cargo invocation in CI.
#![cfg(any(
    feature = "ndarray",
    feature = "wgpu",
    feature = "tch",
    feature = "cpu",
    feature = "cuda"
))]

use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig};
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use rnnlm::{CellKind, GruFormula, RnnLm, RnnLmConfig, WeightInit};
use rnnlm_tests::{compiled_backends, ids, max_diff, parameters, values};
use rnnlm_train::{clip_grad_global_norm, sequence_loss};

mod pytorch_export;

const TOLERANCE: f32 = 1e-4;

/// The tests of this file take turns: a device's random generator is global to it, and one
/// test's model initialisation would otherwise draw between another's seed and its dropout
/// masks.
fn turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn configs() -> Vec<(&'static str, RnnLmConfig)> {
    vec![
        (
            "rnn-scratch",
            RnnLmConfig::new(CellKind::RnnScratch, 11, 16)
                .with_num_layers(2)
                .with_init(WeightInit::Normal { sigma: 0.3 }),
        ),
        (
            "gru",
            RnnLmConfig::new(CellKind::Gru, 11, 16).with_num_layers(2),
        ),
        (
            "gru-d2l",
            RnnLmConfig::new(CellKind::Gru, 11, 16).with_gru_formula(GruFormula::D2l),
        ),
        (
            "lstm",
            RnnLmConfig::new(CellKind::Lstm, 11, 16).with_num_layers(2),
        ),
        (
            "lstm-embedding",
            RnnLmConfig::new(CellKind::Lstm, 11, 16).with_embedding(6),
        ),
    ]
}

/// The reference model's weights, as bytes any device can load.
fn weights(config: &RnnLmConfig) -> Vec<u8> {
    let flex = Device::flex();
    flex.seed(3);
    let model = config.init(&flex);
    model
        .into_record()
        .into_bytes()
        .expect("a record serialises")
        .to_vec()
}

fn load(config: &RnnLmConfig, bytes: &[u8], device: &Device) -> RnnLm {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec())).expect("record");
    config.init(device).load_record(record)
}

const X: [i64; 12] = [1, 5, 2, 9, 10, 0, 3, 3, 7, 8, 4, 6];
const Y: [i64; 12] = [5, 2, 9, 10, 0, 3, 3, 7, 8, 4, 6, 1];

/// Logits `[2, 6, 11]`, final hidden and cell states, as host values.
fn forward(model: &RnnLm, device: &Device) -> Vec<Vec<f32>> {
    let (logits, state) = model.forward(ids(&X, [2, 6], device), model.begin_state(2, device));
    let mut out = vec![values(logits), values(state.hidden)];
    if let Some(cell) = state.cell {
        out.push(values(cell));
    }
    out
}

/// Weights after one SGD step (lr 1) on the clipped gradient, and the gradient's norm.
fn train_step(config: &RnnLmConfig, bytes: &[u8], device: &Device, theta: f32) -> (Vec<f32>, f32) {
    let ad = device.clone().autodiff();
    let model = load(config, bytes, &ad);
    let (logits, _) = model.forward(ids(&X, [2, 6], &ad), model.begin_state(2, &ad));
    let loss = sequence_loss(logits, ids(&Y, [2, 6], &ad));
    let mut grads = GradientsParams::from_grads(loss.backward(), &model);
    let norm = clip_grad_global_norm(&model, &mut grads, theta);
    let mut optimizer = SgdConfig::new().init();
    let model = optimizer.step(1.0, model, grads);
    (parameters(&model.valid()), norm)
}

#[test]
fn the_same_weights_give_the_same_logits_and_states_on_every_backend() {
    let _turn = turn();
    for (kind, config) in configs() {
        let bytes = weights(&config);
        let flex = Device::flex();
        let reference = forward(&load(&config, &bytes, &flex), &flex);
        for (name, device) in compiled_backends() {
            let got = forward(&load(&config, &bytes, &device), &device);
            for (what, (a, b)) in ["logits", "hidden", "cell"]
                .iter()
                .zip(reference.iter().zip(&got))
            {
                let diff = max_diff(a, b);
                assert!(
                    diff < TOLERANCE,
                    "{kind} on {name}: {what} differ from flex by {diff}"
                );
            }
        }
    }
}

#[test]
fn one_clipped_training_step_gives_the_same_weights_on_every_backend() {
    let _turn = turn();
    let theta = 0.05;
    for (kind, config) in configs() {
        let bytes = weights(&config);
        let flex = Device::flex();
        let (reference, norm) = train_step(&config, &bytes, &flex, theta);
        assert!(
            norm > theta,
            "{kind}: theta {theta} must be small enough to clip (norm {norm})"
        );
        for (name, device) in compiled_backends() {
            let (got, got_norm) = train_step(&config, &bytes, &device, theta);
            assert!(
                (got_norm - norm).abs() < TOLERANCE * norm.max(1.0),
                "{kind} on {name}: gradient norm {got_norm}, flex {norm}"
            );
            let diff = max_diff(&reference, &got);
            assert!(
                diff < TOLERANCE,
                "{kind} on {name}: updated weights differ from flex by {diff}"
            );
        }
    }
}

/// LibTorch's CPU device runs the fused layers (its tensors read in place by the host
/// kernels); its GPU devices keep the tensor operations, and `status` says why. A device handle
/// needs no driver, so the CUDA case is checked here without a GPU.
#[test]
#[cfg(feature = "tch")]
#[allow(deprecated)]
fn libtorch_runs_fused_on_its_cpu_and_says_why_not_on_a_gpu() {
    use rnnlm::fused::{Status, status};
    let _turn = turn();
    assert_eq!(status(&Device::libtorch()), Status::Active);
    assert_eq!(status(&Device::libtorch().autodiff()), Status::Active);
    let gpu = status(&Device::libtorch_cuda(0));
    assert_eq!(gpu, Status::HostOnly);
    assert!(gpu.to_string().contains("host memory"), "{gpu}");
}

/// The CubeCL backends compiled in (wgpu, cpu, cuda), by name.
#[cfg(any(feature = "wgpu", feature = "cpu", feature = "cuda"))]
fn cube_backends() -> Vec<(&'static str, Device)> {
    compiled_backends()
        .into_iter()
        .filter(|(name, _)| matches!(*name, "wgpu" | "cpu" | "cuda"))
        .collect()
}

/// On every CubeCL backend (in CI: wgpu on lavapipe), the fused layer (its CubeCL kernels) against
/// the same backend's composite tensor operations: every cell, 1 to 3 layers, batch 1 and steps
/// 1, every input layout; bidirectional cores on padded batches. Outputs, final states and the
/// gradients of every parameter, of the input and of the initial state, to 1e-4.
#[test]
#[cfg(any(feature = "wgpu", feature = "cpu", feature = "cuda"))]
fn the_fused_layer_equals_the_composite_path_on_cubecl_backends() {
    use rnnlm_tests::fused_paths;
    let _turn = turn();
    for (name, device) in cube_backends() {
        let status = rnnlm::fused::status(&device.clone().autodiff());
        assert!(
            rnnlm::fused::is_active(&device.clone().autodiff()),
            "{name}: {status}"
        );
        fused_paths::fused_equals_composite(&device, TOLERANCE);
        fused_paths::padded_fused_equals_composite(&device, TOLERANCE);
    }
}

/// On every CubeCL backend, the operation's gradients (every float input, every cell with and
/// without a clip, dense, batch-first, one-hot, reversed over a padded batch) against central
/// differences of its loss.
#[test]
#[cfg(any(feature = "wgpu", feature = "cpu", feature = "cuda"))]
fn the_fused_layers_gradients_match_finite_differences_on_cubecl_backends() {
    let _turn = turn();
    for (_, device) in cube_backends() {
        rnnlm_tests::fused_paths::operation_matches_finite_differences(&device);
    }
}

/// A clipped training run (truncated BPTT: the state carried, detached, across minibatches; SGD
/// on the globally clipped gradient) of `epochs` epochs over a fixed corpus: every epoch's
/// mean loss, then the final weights.
fn training_run(
    config: &RnnLmConfig,
    bytes: &[u8],
    device: &Device,
    epochs: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (batch, steps, minibatches) = (2, 6, 4);
    let vocab = config.vocab_size as i64;
    let corpus: Vec<i64> = (0..(batch * steps * minibatches + 1) as i64)
        .map(|i| (i * 7 + 3 + i / 5) % vocab)
        .collect();
    // Sequential partitioning: row b reads the corpus from b·(steps·minibatches) on.
    let span = steps * minibatches;
    let window = |offset: usize, shift: usize| -> Vec<i64> {
        (0..batch)
            .flat_map(|b| (0..steps).map(move |t| b * span + offset + t + shift))
            .map(|i| corpus[i.min(corpus.len() - 1)])
            .collect()
    };
    let ad = device.clone().autodiff();
    let mut model = load(config, bytes, &ad);
    let mut optimizer = SgdConfig::new().init();
    let mut losses = Vec::new();
    for _ in 0..epochs {
        let mut state = model.begin_state(batch, &ad);
        let mut total = 0.0;
        for m in 0..minibatches {
            let (x, y) = (window(m * steps, 0), window(m * steps, 1));
            let (logits, next) = model.forward(ids(&x, [batch, steps], &ad), state);
            state = next.detach();
            let loss = sequence_loss(logits, ids(&y, [batch, steps], &ad));
            total += loss.clone().into_scalar::<f32>();
            let mut grads = GradientsParams::from_grads(loss.backward(), &model);
            clip_grad_global_norm(&model, &mut grads, 1.0);
            model = optimizer.step(0.5, model, grads);
        }
        losses.push(total / minibatches as f32);
    }
    (losses, parameters(&model.valid()))
}

/// On every backend, with the fused layers (the host kernels on ndarray and tch, the CubeCL ones
/// on wgpu, cpu and cuda): a clipped training run of three epochs from the same weights as on
/// flex gives flex's loss epoch by epoch and flex's final weights (1e-4).
#[test]
fn a_clipped_training_run_follows_flex_epoch_by_epoch_on_every_backend() {
    let _turn = turn();
    for (kind, config) in configs() {
        let bytes = weights(&config);
        let (want_losses, want_weights) = training_run(&config, &bytes, &Device::flex(), 3);
        for (name, device) in compiled_backends()
            .into_iter()
            .filter(|(name, _)| *name != "flex")
        {
            assert!(
                rnnlm::fused::is_active(&device.clone().autodiff()),
                "{name}: the fused layers run"
            );
            let (losses, weights) = training_run(&config, &bytes, &device, 3);
            for (epoch, (got, want)) in losses.iter().zip(&want_losses).enumerate() {
                assert!(
                    (got - want).abs() <= TOLERANCE * want.abs().max(1.0),
                    "{kind} on {name}: epoch {} loss {got}, flex {want}",
                    epoch + 1
                );
            }
            let diff = max_diff(&weights, &want_weights);
            assert!(
                diff < TOLERANCE,
                "{kind} on {name}: final weights differ from flex by {diff}"
            );
            eprintln!(
                "{kind} on {name}: epoch losses {losses:?} (flex {want_losses:?}), weights within {diff:.1e}"
            );
        }
    }
}

/// On every backend, dropout between the fused layers draws the masks the composite layers
/// draw with the same seed: the same loss and gradients (1e-4).
#[test]
fn fused_and_composite_layers_draw_the_same_dropout_masks_on_every_backend() {
    let _turn = turn();
    for (_, device) in compiled_backends() {
        rnnlm_tests::fused_paths::dropout_masks_agree(&device, TOLERANCE);
    }
}
