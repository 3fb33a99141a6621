//! Each cell against hand-computed numbers and the scalar reference on a tiny case
//! (input 3, hidden 2, batch 2, 3 steps, one and two layers).

use burn::module::Param;
use burn::prelude::*;
use rnnlm::{
    Activation, DeepLstmConfig, GruConfig, GruFormula, Recurrent, RnnScratchConfig, WeightInit,
};
use rnnlm_tests::{device, floats, values};

use crate::reference::{self, Weights};

const INPUT: usize = 3;
const HIDDEN: usize = 2;
const BATCH: usize = 2;
const STEPS: usize = 3;

/// Deterministic, irregular numbers in [-0.9, 0.9]: no symmetry for a wrong formula to hide in.
fn numbers(seed: usize, len: usize) -> Vec<f64> {
    (0..len)
        .map(|i| 0.9 * ((seed * 131 + i * 71) as f64 * 0.7311).sin())
        .collect()
}

fn weights(seed: usize, input: usize, gates: usize, hidden_bias: bool) -> Weights {
    let width = gates * HIDDEN;
    Weights {
        input: numbers(seed, input * width),
        input_bias: numbers(seed + 1, width),
        hidden: numbers(seed + 2, HIDDEN * width),
        hidden_bias: hidden_bias.then(|| numbers(seed + 3, width)),
    }
}

fn param2(values: &[f64], rows: usize, cols: usize) -> Param<Tensor<2>> {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Param::from_tensor(floats(&v, [rows, cols], &device()))
}

fn param1(values: &[f64]) -> Param<Tensor<1>> {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Param::from_tensor(floats(&v, [v.len()], &device()))
}

/// Inputs `[batch, steps, input]` as nested vectors and as a tensor.
fn inputs() -> (Vec<Vec<Vec<f64>>>, Tensor<3>) {
    let flat = numbers(99, BATCH * STEPS * INPUT);
    let nested = (0..BATCH)
        .map(|b| {
            (0..STEPS)
                .map(|t| flat[(b * STEPS + t) * INPUT..][..INPUT].to_vec())
                .collect()
        })
        .collect();
    let f32s: Vec<f32> = flat.iter().map(|&x| x as f32).collect();
    (nested, floats(&f32s, [BATCH, STEPS, INPUT], &device()))
}

/// Runs `step` over a stack of layers for every sequence; returns outputs `[batch][steps][hidden]`
/// and the final `(h, c)` per layer and sequence.
#[allow(clippy::type_complexity)]
fn reference_run(
    layers: usize,
    step: impl Fn(usize, &[f64], &[f64], &[f64]) -> (Vec<f64>, Vec<f64>),
) -> (Vec<Vec<Vec<f64>>>, Vec<Vec<(Vec<f64>, Vec<f64>)>>) {
    let (xs, _) = inputs();
    let mut outputs = Vec::new();
    let mut finals = vec![Vec::new(); layers];
    for sequence in xs {
        let mut seq = sequence;
        for (layer, finals) in finals.iter_mut().enumerate() {
            let (mut h, mut c) = (vec![0.0; HIDDEN], vec![0.0; HIDDEN]);
            seq = seq
                .iter()
                .map(|x| {
                    (h, c) = step(layer, x, &h, &c);
                    h.clone()
                })
                .collect();
            finals.push((h, c));
        }
        outputs.push(seq);
    }
    (outputs, finals)
}

fn assert_close(actual: Vec<f32>, expected: impl IntoIterator<Item = f64>, what: &str) {
    let expected: Vec<f64> = expected.into_iter().collect();
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert!(
            (*a as f64 - e).abs() < 1e-5,
            "{what}[{i}]: got {a}, expected {e}"
        );
    }
}

fn check_against_reference<R: Recurrent>(
    core: &R,
    layers: usize,
    step: impl Fn(usize, &[f64], &[f64], &[f64]) -> (Vec<f64>, Vec<f64>),
    with_cell: bool,
) {
    let (_, x) = inputs();
    let (outputs, state) = core.forward(x, core.begin_state(BATCH, &device()));
    let (expected, finals) = reference_run(layers, step);
    assert_close(
        values(outputs),
        expected.into_iter().flatten().flatten(),
        "outputs",
    );
    let hidden = finals
        .iter()
        .flat_map(|l| l.iter().flat_map(|(h, _)| h.clone()));
    assert_close(values(state.hidden), hidden, "state.hidden");
    if with_cell {
        let cell = finals
            .iter()
            .flat_map(|l| l.iter().flat_map(|(_, c)| c.clone()));
        assert_close(
            values(state.cell.expect("LSTM state has a cell")),
            cell,
            "state.cell",
        );
    }
}

#[test]
fn rnn_scratch_matches_numbers_worked_by_hand() {
    // W_xh = [[0.5, -0.25], [0.1, 0.2], [0, 0.3]], W_hh = [[0.4, 0.1], [-0.2, 0.3]], b = [0.1, 0.2]
    // x1 = e0: h1 = tanh([0.5 + 0.1, -0.25 + 0.2]) = tanh([0.6, -0.05])
    // x2 = e1: h2 = tanh([0.1, 0.2] + h1 W_hh + b) = tanh([0.42481150, 0.43871744])
    let dev = device();
    let mut rnn = RnnScratchConfig::new(3, 2).init(&dev);
    rnn.layers[0].w_xh = param2(&[0.5, -0.25, 0.1, 0.2, 0.0, 0.3], 3, 2);
    rnn.layers[0].w_hh = param2(&[0.4, 0.1, -0.2, 0.3], 2, 2);
    rnn.layers[0].b_h = Some(param1(&[0.1, 0.2]));
    let x = floats(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [1, 2, 3], &dev);
    let (outputs, state) = rnn.forward(x, rnn.begin_state(1, &dev));
    let expected = [0.537_049_57, -0.049_958_375, 0.400_976_1, 0.412_580_77];
    assert_close(values(outputs), expected, "outputs");
    assert_close(values(state.hidden), expected[2..].to_vec(), "state.hidden");
}

#[test]
fn rnn_scratch_matches_reference() {
    for (activation, relu) in [(Activation::Tanh, false), (Activation::Relu, true)] {
        for layers in [1, 2] {
            let ws: Vec<Weights> = (0..layers)
                .map(|l| weights(10 * l, if l == 0 { INPUT } else { HIDDEN }, 1, false))
                .collect();
            let mut rnn = RnnScratchConfig::new(INPUT, HIDDEN)
                .with_num_layers(layers)
                .with_activation(activation)
                .init(&device());
            for (layer, w) in rnn.layers.iter_mut().zip(&ws) {
                layer.w_xh = param2(&w.input, w.input.len() / HIDDEN, HIDDEN);
                layer.w_hh = param2(&w.hidden, HIDDEN, HIDDEN);
                layer.b_h = Some(param1(&w.input_bias));
            }
            check_against_reference(
                &rnn,
                layers,
                |l, x, h, c| (reference::rnn_step(&ws[l], x, h, relu), c.to_vec()),
                false,
            );
        }
    }
}

fn gru_with(formula: GruFormula, ws: &[Weights]) -> rnnlm::Gru {
    let mut gru = GruConfig::new(INPUT, HIDDEN)
        .with_num_layers(ws.len())
        .with_formula(formula)
        .init(&device());
    for (layer, w) in gru.layers.iter_mut().zip(ws) {
        layer.input_weight = param2(&w.input, w.input.len() / (3 * HIDDEN), 3 * HIDDEN);
        layer.input_bias = Some(param1(&w.input_bias));
        layer.hidden_weight = param2(&w.hidden, HIDDEN, 3 * HIDDEN);
        layer.hidden_bias = w.hidden_bias.as_deref().map(param1);
    }
    gru
}

#[test]
fn gru_matches_reference_for_both_formulas() {
    for (formula, d2l) in [(GruFormula::PyTorch, false), (GruFormula::D2l, true)] {
        for layers in [1, 2] {
            let ws: Vec<Weights> = (0..layers)
                .map(|l| weights(20 + 10 * l, if l == 0 { INPUT } else { HIDDEN }, 3, !d2l))
                .collect();
            let gru = gru_with(formula, &ws);
            assert_eq!(
                gru.layers[0].hidden_bias.is_some(),
                !d2l,
                "only PyTorch's GRU has b_h"
            );
            check_against_reference(
                &gru,
                layers,
                |l, x, h, c| (reference::gru_step(&ws[l], x, h, d2l), c.to_vec()),
                false,
            );
        }
    }
}

#[test]
fn gru_formulas_differ() {
    // Same weights (hidden bias zero so both formulas see the same parameters): the place of the
    // reset gate must change the result, or one of the two formulas is not what runs.
    let mut ws = vec![weights(40, INPUT, 3, true)];
    ws[0].hidden_bias = Some(vec![0.0; 3 * HIDDEN]);
    let (_, x) = inputs();
    let pytorch = gru_with(GruFormula::PyTorch, &ws);
    ws[0].hidden_bias = None;
    let d2l = gru_with(GruFormula::D2l, &ws);
    let (a, _) = pytorch.forward(x.clone(), pytorch.begin_state(BATCH, &device()));
    let (b, _) = d2l.forward(x, d2l.begin_state(BATCH, &device()));
    assert!(rnnlm_tests::max_abs_diff(a, b) > 1e-3);
}

#[test]
fn lstm_matches_reference() {
    for layers in [1, 2] {
        let ws: Vec<Weights> = (0..layers)
            .map(|l| weights(50 + 10 * l, if l == 0 { INPUT } else { HIDDEN }, 4, false))
            .collect();
        let mut lstm = DeepLstmConfig::new(INPUT, HIDDEN)
            .with_num_layers(layers)
            .init(&device());
        for (layer, w) in lstm.layers.iter_mut().zip(&ws) {
            layer.input_weight = param2(&w.input, w.input.len() / (4 * HIDDEN), 4 * HIDDEN);
            layer.hidden_weight = param2(&w.hidden, HIDDEN, 4 * HIDDEN);
            // The reference has one bias; split it unevenly so both vectors matter.
            let half: Vec<f64> = w.input_bias.iter().map(|b| b * 0.3).collect();
            let rest: Vec<f64> = w.input_bias.iter().map(|b| b * 0.7).collect();
            layer.input_bias = Some(param1(&half));
            layer.hidden_bias = Some(param1(&rest));
        }
        check_against_reference(
            &lstm,
            layers,
            |l, x, h, c| reference::lstm_step(&ws[l], x, h, c),
            true,
        );
    }
}

#[test]
fn step_equals_one_step_forward() {
    let dev = device();
    let lstm = DeepLstmConfig::new(INPUT, HIDDEN)
        .with_num_layers(2)
        .init(&dev);
    let (_, x) = inputs();
    let first = x.narrow(1, 0, 1);
    let (out_seq, state_seq) = lstm.forward(first.clone(), lstm.begin_state(BATCH, &dev));
    let (out_step, state_step) = lstm.step(first.squeeze_dim(1), lstm.begin_state(BATCH, &dev));
    assert_eq!(values(out_seq), values(out_step));
    assert_eq!(values(state_seq.hidden), values(state_step.hidden));
}

#[test]
fn default_initialisations_follow_d2l_and_pytorch() {
    let dev = device();
    // d2l: N(0, 0.01²) weights, zero biases.
    let rnn = RnnScratchConfig::new(64, 512).init(&dev);
    let w = values(rnn.layers[0].w_hh.val());
    let mean = w.iter().sum::<f32>() / w.len() as f32;
    let std = (w.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / w.len() as f32).sqrt();
    assert!(
        mean.abs() < 1e-3 && (std - 0.01).abs() < 5e-4,
        "mean {mean}, std {std}"
    );
    assert!(
        values(rnn.layers[0].b_h.as_ref().unwrap().val())
            .iter()
            .all(|&b| b == 0.0)
    );
    // Configurable sigma.
    let rnn = RnnScratchConfig::new(8, 64)
        .with_init(WeightInit::Normal { sigma: 0.5 })
        .init(&dev);
    let w = values(rnn.layers[0].w_hh.val());
    let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
    assert!((std - 0.5).abs() < 0.05, "std {std}");
    // PyTorch: U(-1/√H, 1/√H).
    let gru = GruConfig::new(8, 64).init(&dev);
    let k = 1.0 / 8.0;
    let w = values(gru.layers[0].hidden_weight.val());
    assert!(w.iter().all(|v| v.abs() <= k));
    assert!(w.iter().any(|v| v.abs() > 0.9 * k));
}
