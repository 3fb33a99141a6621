//! Finite-difference gradient checks: every parameter entry of a small two-layer language model
//! of each kind, through the one-hot gather (and the embedding), every cell and the output layer.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLoss;
use burn::prelude::*;
use rnnlm::{CellKind, RnnLm, RnnLmConfig, WeightInit};
use rnnlm_tests::{Nudge, device, ids, values};

const VOCAB: usize = 5;
const BATCH: usize = 2;
const STEPS: usize = 4;

fn loss(model: &RnnLm, x: Tensor<2, Int>, y: Tensor<2, Int>) -> Tensor<1> {
    let device = x.device();
    let (logits, _) = model.forward(x, model.begin_state(BATCH, &device));
    CrossEntropyLoss::new(None, &device).forward(
        logits.reshape([BATCH * STEPS, VOCAB]),
        y.reshape([BATCH * STEPS]),
    )
}

fn check(config: RnnLmConfig) {
    let ad = device().autodiff();
    let model = config.init(&ad);
    let xs = [0i64, 3, 1, 4, 2, 2, 0, 1];
    let ys = [3i64, 1, 4, 2, 2, 0, 1, 3];
    let grads = loss(
        &model,
        ids(&xs, [BATCH, STEPS], &ad),
        ids(&ys, [BATCH, STEPS], &ad),
    )
    .backward();
    let analytic_grads = rnnlm_tests::param_grads(&model, &grads);

    let plain = model.valid();
    let dev = device();
    let (x, y) = (
        ids(&xs, [BATCH, STEPS], &dev),
        ids(&ys, [BATCH, STEPS], &dev),
    );
    let eval = |m: RnnLm| values(loss(&m, x.clone(), y.clone()))[0] as f64;
    let eps = 5e-3f32;
    let (mut checked, mut largest) = (0, 0.0f32);
    for (id, grads) in &analytic_grads {
        for (index, &grad) in grads.iter().enumerate() {
            let plus = eval(plain.clone().map(&mut Nudge {
                id: *id,
                index,
                delta: eps,
            }));
            let minus = eval(plain.clone().map(&mut Nudge {
                id: *id,
                index,
                delta: -eps,
            }));
            let numeric = (plus - minus) / (2.0 * eps as f64);
            let analytic = grad as f64;
            assert!(
                (analytic - numeric).abs() <= 1e-3 + 2e-2 * numeric.abs(),
                "{:?}: parameter {id} entry {index}: analytic {analytic}, finite difference {numeric}",
                config.kind
            );
            checked += 1;
            largest = largest.max(grad.abs());
        }
    }
    assert_eq!(checked, plain.num_params(), "every parameter entry checked");
    assert!(
        largest > 1e-2,
        "gradients too small to prove anything: {largest}"
    );
}

fn config(kind: CellKind) -> RnnLmConfig {
    // Larger weights than d2l's sigma = 0.01, so every path carries a visible gradient.
    RnnLmConfig::new(kind, VOCAB, 3)
        .with_num_layers(2)
        .with_init(WeightInit::Normal { sigma: 0.5 })
}

#[test]
fn rnn_scratch_gradients_match_finite_differences() {
    check(config(CellKind::RnnScratch));
}

#[test]
fn gru_gradients_match_finite_differences() {
    check(config(CellKind::Gru));
    check(config(CellKind::Gru).with_gru_formula(rnnlm::GruFormula::D2l));
}

#[test]
fn lstm_gradients_match_finite_differences() {
    check(config(CellKind::Lstm));
}

#[test]
fn embedding_gradients_match_finite_differences() {
    check(config(CellKind::Lstm).with_embedding(2));
}
