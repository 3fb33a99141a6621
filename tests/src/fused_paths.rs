//! The fused and composite paths of every core, side by side on one device: the comparison
//! the models tests run on the default backend and the cross-backend suite on each CubeCL one.

use std::collections::HashMap;

use burn::module::ParamId;
use burn::prelude::*;
use rnnlm::fused::{Mode, with_mode};
use rnnlm::{
    Activation, DeepLstmConfig, GruConfig, GruFormula, Recurrent, RecurrentCore, RecurrentState,
    RnnScratchConfig, SequenceInput, WeightInit,
};

use crate::{max_diff, param_grads, pattern_tensor as tensor, values};

pub const INPUT: usize = 6;
/// Not a multiple of the vector width, so the kernels meet partial blocks.
pub const HIDDEN: usize = 13;

/// Every core kind with `layers` layers, weights large enough that the gates work away from
/// their linear middle.
pub fn cores(layers: usize, dev: &Device) -> Vec<(&'static str, RecurrentCore)> {
    let init = WeightInit::Normal { sigma: 0.5 };
    let mut no_hidden_bias = GruConfig::new(INPUT, HIDDEN)
        .with_num_layers(layers)
        .with_init(init)
        .init(dev);
    for layer in &mut no_hidden_bias.layers {
        layer.hidden_bias = None;
    }
    vec![
        (
            "rnn-scratch tanh",
            RecurrentCore::RnnScratch(
                RnnScratchConfig::new(INPUT, HIDDEN)
                    .with_num_layers(layers)
                    .with_init(init)
                    .init(dev),
            ),
        ),
        (
            "rnn-scratch relu",
            RecurrentCore::RnnScratch(
                RnnScratchConfig::new(INPUT, HIDDEN)
                    .with_num_layers(layers)
                    .with_activation(Activation::Relu)
                    .with_init(WeightInit::Normal { sigma: 0.2 })
                    .init(dev),
            ),
        ),
        (
            "gru (PyTorch)",
            RecurrentCore::Gru(
                GruConfig::new(INPUT, HIDDEN)
                    .with_num_layers(layers)
                    .with_init(init)
                    .init(dev),
            ),
        ),
        ("gru (PyTorch) without b_hh", RecurrentCore::Gru(no_hidden_bias)),
        (
            "gru (d2l)",
            RecurrentCore::Gru(
                GruConfig::new(INPUT, HIDDEN)
                    .with_num_layers(layers)
                    .with_formula(GruFormula::D2l)
                    .with_init(init)
                    .init(dev),
            ),
        ),
        (
            "lstm",
            RecurrentCore::Lstm(
                DeepLstmConfig::new(INPUT, HIDDEN)
                    .with_num_layers(layers)
                    .with_init(init)
                    .init(dev),
            ),
        ),
    ]
}

/// How the input reaches the core.
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// A contiguous `[batch, steps, input]` leaf.
    Contiguous,
    /// `[batch, input, steps]` with its last two dimensions swapped.
    Transposed,
    /// A slice of the feature dimension of a wider leaf.
    Narrowed,
    /// A contiguous `[steps, batch, input]` leaf through `forward_time_major`.
    TimeMajor,
    /// Token ids `[steps, batch]` through `forward_time_major` (no input gradient).
    OneHot,
}

/// What one pass gives: the outputs and final state, the gradients of every parameter, of the
/// input and of the initial state.
pub struct Pass {
    pub outputs: Vec<f32>,
    pub hidden: Vec<f32>,
    pub cell: Option<Vec<f32>>,
    pub grads: HashMap<ParamId, Vec<f32>>,
    pub d_input: Vec<f32>,
    pub d_h0: Vec<f32>,
    pub d_c0: Option<Vec<f32>>,
}

pub fn pass(core: &RecurrentCore, batch: usize, steps: usize, layout: Layout, mode: Mode, dev: &Device) -> Pass {
    let ad = dev.clone().autodiff();
    // The leaf whose gradient is compared, and the input as the core takes it.
    let (leaf, input) = match layout {
        Layout::Contiguous => {
            let leaf = tensor([batch, steps, INPUT], 1, 1.0, &ad).require_grad();
            (Some(leaf.clone()), SequenceInput::Dense(leaf))
        }
        Layout::Transposed => {
            let leaf = tensor([batch, INPUT, steps], 1, 1.0, &ad).require_grad();
            (Some(leaf.clone()), SequenceInput::Dense(leaf.swap_dims(1, 2)))
        }
        Layout::Narrowed => {
            let leaf = tensor([batch, steps, INPUT + 3], 1, 1.0, &ad).require_grad();
            (Some(leaf.clone()), SequenceInput::Dense(leaf.narrow(2, 2, INPUT)))
        }
        Layout::TimeMajor => {
            let leaf = tensor([steps, batch, INPUT], 1, 1.0, &ad).require_grad();
            (Some(leaf.clone()), SequenceInput::Dense(leaf))
        }
        Layout::OneHot => {
            let ids: Vec<i64> = (0..steps * batch).map(|i| ((i * 5 + 2) % INPUT) as i64).collect();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [steps, batch]), &ad);
            (None, SequenceInput::OneHot(ids))
        }
    };
    let layers = core.num_layers();
    let h0 = tensor([layers, batch, HIDDEN], 2, 0.8, &ad).require_grad();
    let c0 = core
        .has_cell()
        .then(|| tensor([layers, batch, HIDDEN], 3, 0.8, &ad).require_grad());
    let start = RecurrentState {
        hidden: h0.clone(),
        cell: c0.clone(),
    };
    let (outputs, end) = with_mode(mode, || match (layout, input) {
        (Layout::TimeMajor | Layout::OneHot, input) => {
            let (outputs, end) = core.forward_time_major(input, start);
            assert_eq!(outputs.dims(), [steps, batch, HIDDEN]);
            (outputs.swap_dims(0, 1), end)
        }
        (_, SequenceInput::Dense(x)) => core.forward(x, start),
        (_, SequenceInput::OneHot(_)) => unreachable!("token ids go through forward_time_major"),
    });
    assert_eq!(outputs.dims(), [batch, steps, HIDDEN]);
    // A loss that weighs every output and every part of the final state differently.
    let mut loss = (outputs.clone() * tensor([batch, steps, HIDDEN], 4, 1.0, &ad)).sum()
        + (end.hidden.clone() * tensor([layers, batch, HIDDEN], 5, 1.0, &ad)).sum();
    if let Some(cell) = &end.cell {
        loss = loss + (cell.clone() * tensor([layers, batch, HIDDEN], 6, 1.0, &ad)).sum();
    }
    let grads = loss.backward();
    Pass {
        outputs: values(outputs),
        hidden: values(end.hidden),
        cell: end.cell.map(values),
        grads: param_grads(core, &grads),
        d_input: leaf.map_or_else(Vec::new, |leaf| values(leaf.grad(&grads).expect("the input's gradient"))),
        d_h0: values(h0.grad(&grads).expect("h0's gradient")),
        d_c0: c0.map(|c0| values(c0.grad(&grads).expect("c0's gradient"))),
    }
}

/// `got` within `tolerance` of `want`, relative to `want`'s largest magnitude (absolute below 1).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tolerance: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let bound = tolerance * want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    let diff = max_diff(got, want);
    assert!(diff <= bound, "{what}: fused and composite differ by {diff} (bound {bound})");
}


/// The shapes every comparison runs: 1 to 3 layers, batch 1 and steps 1, every input layout.
pub fn shapes() -> Vec<(usize, usize, usize, Layout)> {
    vec![
        (1, 5, 1, Layout::Contiguous),
        (2, 4, 6, Layout::Transposed),
        (3, 3, 5, Layout::Narrowed),
        (2, 1, 7, Layout::Contiguous),
        (1, 2, 1, Layout::Narrowed),
        (2, 3, 4, Layout::TimeMajor),
        (1, 1, 1, Layout::TimeMajor),
        (3, 3, 5, Layout::OneHot),
        (1, 1, 3, Layout::OneHot),
    ]
}

/// Every core of [`cores`] at every one of [`shapes`] on `dev`: the fused path's outputs, final
/// states and gradients (of every parameter, the input and the initial state) against the
/// composite path's, within `tolerance` (relative to the largest magnitude, see
/// [`assert_close`]).
pub fn fused_equals_composite(dev: &Device, tolerance: f32) {
    for (layers, batch, steps, layout) in shapes() {
        for (name, core) in cores(layers, &dev.clone().autodiff()) {
            let name = format!("{name}, {layers} layers, batch {batch}, steps {steps}, {layout:?}");
            let fused = pass(&core, batch, steps, layout, Mode::Fused, dev);
            let composite = pass(&core, batch, steps, layout, Mode::Composite, dev);
            assert_close(&format!("{name}: outputs"), &fused.outputs, &composite.outputs, tolerance);
            assert_close(&format!("{name}: final h"), &fused.hidden, &composite.hidden, tolerance);
            if let (Some(got), Some(want)) = (&fused.cell, &composite.cell) {
                assert_close(&format!("{name}: final c"), got, want, tolerance);
            }
            assert_eq!(
                fused.grads.len(),
                composite.grads.len(),
                "{name}: parameters with a gradient"
            );
            for (id, want) in &composite.grads {
                let got = fused.grads.get(id).unwrap_or_else(|| {
                    panic!("{name}: parameter {id} has no gradient through the fused scan")
                });
                assert_close(&format!("{name}: gradient of parameter {id}"), got, want, tolerance);
            }
            assert_close(&format!("{name}: input gradient"), &fused.d_input, &composite.d_input, tolerance);
            assert_close(&format!("{name}: h0 gradient"), &fused.d_h0, &composite.d_h0, tolerance);
            if let (Some(got), Some(want)) = (&fused.d_c0, &composite.d_c0) {
                assert_close(&format!("{name}: c0 gradient"), got, want, tolerance);
            }
        }
    }
}

/// A bidirectional core of every kind, `layers` layers.
pub fn bidirectional_cores(layers: usize, dev: &Device) -> Vec<(&'static str, RecurrentCore)> {
    let init = WeightInit::Normal { sigma: 0.5 };
    vec![
        (
            "rnn-scratch relu",
            RecurrentCore::RnnScratch(
                RnnScratchConfig::new(INPUT, HIDDEN)
                    .with_num_layers(layers)
                    .with_activation(Activation::Relu)
                    .with_init(WeightInit::Normal { sigma: 0.2 })
                    .with_bidirectional(true)
                    .init(dev),
            ),
        ),
        (
            "gru (PyTorch)",
            RecurrentCore::Gru(
                GruConfig::new(INPUT, HIDDEN).with_num_layers(layers).with_init(init).with_bidirectional(true).init(dev),
            ),
        ),
        (
            "gru (d2l)",
            RecurrentCore::Gru(
                GruConfig::new(INPUT, HIDDEN)
                    .with_num_layers(layers)
                    .with_formula(GruFormula::D2l)
                    .with_init(init)
                    .with_bidirectional(true)
                    .init(dev),
            ),
        ),
        (
            "lstm",
            RecurrentCore::Lstm(
                DeepLstmConfig::new(INPUT, HIDDEN).with_num_layers(layers).with_init(init).with_bidirectional(true).init(dev),
            ),
        ),
    ]
}

/// One pass of a padded batch (`lengths` in `1..=steps`, unsorted) through `forward_padded`.
pub fn padded_pass(core: &RecurrentCore, lengths: &[usize], steps: usize, mode: Mode, dev: &Device) -> Pass {
    let ad = dev.clone().autodiff();
    let batch = lengths.len();
    let entries = core.num_layers() * core.num_directions();
    let width = core.output_size();
    let x = tensor([batch, steps, INPUT], 5, 1.0, &ad).require_grad();
    let h0 = tensor([entries, batch, HIDDEN], 6, 0.8, &ad).require_grad();
    let c0 = core.has_cell().then(|| tensor([entries, batch, HIDDEN], 7, 0.8, &ad).require_grad());
    let start = RecurrentState { hidden: h0.clone(), cell: c0.clone() };
    let (outputs, end) = with_mode(mode, || core.forward_padded(x.clone(), lengths, start))
        .expect("lengths in 1..=steps");
    let mut loss = (outputs.clone() * tensor([batch, steps, width], 8, 1.0, &ad)).sum()
        + (end.hidden.clone() * tensor([entries, batch, HIDDEN], 9, 1.0, &ad)).sum();
    if let Some(cell) = &end.cell {
        loss = loss + (cell.clone() * tensor([entries, batch, HIDDEN], 10, 1.0, &ad)).sum();
    }
    let grads = loss.backward();
    Pass {
        outputs: values(outputs),
        hidden: values(end.hidden),
        cell: end.cell.map(values),
        grads: param_grads(core, &grads),
        d_input: values(x.grad(&grads).expect("the input's gradient")),
        d_h0: values(h0.grad(&grads).expect("h0's gradient")),
        d_c0: c0.map(|c0| values(c0.grad(&grads).expect("c0's gradient"))),
    }
}

/// `got` against `want`, every part of a pass.
pub fn assert_same_pass(what: &str, got: &Pass, want: &Pass, tolerance: f32) {
    assert_close(&format!("{what}: outputs"), &got.outputs, &want.outputs, tolerance);
    assert_close(&format!("{what}: final h"), &got.hidden, &want.hidden, tolerance);
    if let (Some(got), Some(want)) = (&got.cell, &want.cell) {
        assert_close(&format!("{what}: final c"), got, want, tolerance);
    }
    assert_eq!(got.grads.len(), want.grads.len(), "{what}: parameters with a gradient");
    for (id, want) in &want.grads {
        let got = got.grads.get(id).unwrap_or_else(|| panic!("{what}: parameter {id} has no gradient"));
        assert_close(&format!("{what}: gradient of parameter {id}"), got, want, tolerance);
    }
    assert_close(&format!("{what}: input gradient"), &got.d_input, &want.d_input, tolerance);
    assert_close(&format!("{what}: h0 gradient"), &got.d_h0, &want.d_h0, tolerance);
    if let (Some(got), Some(want)) = (&got.d_c0, &want.d_c0) {
        assert_close(&format!("{what}: c0 gradient"), got, want, tolerance);
    }
}

/// Bidirectional cores of every kind (1 and 2 layers) on padded batches, unsorted lengths and
/// a batch of one row of one step: fused against composite on `dev`.
pub fn padded_fused_equals_composite(dev: &Device, tolerance: f32) {
    let cases: [(usize, &[usize], usize); 3] = [(2, &[2, 5, 5, 3], 5), (1, &[1], 1), (1, &[3, 1], 4)];
    for (layers, lengths, steps) in cases {
        for (name, core) in bidirectional_cores(layers, &dev.clone().autodiff()) {
            let fused = padded_pass(&core, lengths, steps, Mode::Fused, dev);
            let composite = padded_pass(&core, lengths, steps, Mode::Composite, dev);
            let what = format!("{name}, {layers} layers, lengths {lengths:?} of {steps}");
            assert_same_pass(&what, &fused, &composite, tolerance);
        }
    }
}
