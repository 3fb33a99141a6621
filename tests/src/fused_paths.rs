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
use rnnlm::fused::{CellKind as ScanCell, Clip, LayerInput, LayerTensors, ScanOrder};
use rnnlm::{CellKind, RnnLmConfig};
use rnnlm_train::sequence_loss;

use crate::{ids, pattern};

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
        (
            "gru (PyTorch) without b_hh",
            RecurrentCore::Gru(no_hidden_bias),
        ),
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

pub fn pass(
    core: &RecurrentCore,
    batch: usize,
    steps: usize,
    layout: Layout,
    mode: Mode,
    dev: &Device,
) -> Pass {
    let ad = dev.clone().autodiff();
    // The leaf whose gradient is compared, and the input as the core takes it.
    let (leaf, input) = match layout {
        Layout::Contiguous => {
            let leaf = tensor([batch, steps, INPUT], 1, 1.0, &ad).require_grad();
            (Some(leaf.clone()), SequenceInput::Dense(leaf))
        }
        Layout::Transposed => {
            let leaf = tensor([batch, INPUT, steps], 1, 1.0, &ad).require_grad();
            (
                Some(leaf.clone()),
                SequenceInput::Dense(leaf.swap_dims(1, 2)),
            )
        }
        Layout::Narrowed => {
            let leaf = tensor([batch, steps, INPUT + 3], 1, 1.0, &ad).require_grad();
            (
                Some(leaf.clone()),
                SequenceInput::Dense(leaf.narrow(2, 2, INPUT)),
            )
        }
        Layout::TimeMajor => {
            let leaf = tensor([steps, batch, INPUT], 1, 1.0, &ad).require_grad();
            (Some(leaf.clone()), SequenceInput::Dense(leaf))
        }
        Layout::OneHot => {
            let ids: Vec<i64> = (0..steps * batch)
                .map(|i| ((i * 5 + 2) % INPUT) as i64)
                .collect();
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
        d_input: leaf.map_or_else(Vec::new, |leaf| {
            values(leaf.grad(&grads).expect("the input's gradient"))
        }),
        d_h0: values(h0.grad(&grads).expect("h0's gradient")),
        d_c0: c0.map(|c0| values(c0.grad(&grads).expect("c0's gradient"))),
    }
}

/// `got` within `tolerance` of `want`, relative to `want`'s largest magnitude (absolute below 1).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tolerance: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let bound = tolerance * want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    let diff = max_diff(got, want);
    assert!(
        diff <= bound,
        "{what}: fused and composite differ by {diff} (bound {bound})"
    );
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
            assert_close(
                &format!("{name}: outputs"),
                &fused.outputs,
                &composite.outputs,
                tolerance,
            );
            assert_close(
                &format!("{name}: final h"),
                &fused.hidden,
                &composite.hidden,
                tolerance,
            );
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
                assert_close(
                    &format!("{name}: gradient of parameter {id}"),
                    got,
                    want,
                    tolerance,
                );
            }
            assert_close(
                &format!("{name}: input gradient"),
                &fused.d_input,
                &composite.d_input,
                tolerance,
            );
            assert_close(
                &format!("{name}: h0 gradient"),
                &fused.d_h0,
                &composite.d_h0,
                tolerance,
            );
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
                GruConfig::new(INPUT, HIDDEN)
                    .with_num_layers(layers)
                    .with_init(init)
                    .with_bidirectional(true)
                    .init(dev),
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
                DeepLstmConfig::new(INPUT, HIDDEN)
                    .with_num_layers(layers)
                    .with_init(init)
                    .with_bidirectional(true)
                    .init(dev),
            ),
        ),
    ]
}

/// One pass of a padded batch (`lengths` in `1..=steps`, unsorted) through `forward_padded`.
pub fn padded_pass(
    core: &RecurrentCore,
    lengths: &[usize],
    steps: usize,
    mode: Mode,
    dev: &Device,
) -> Pass {
    let ad = dev.clone().autodiff();
    let batch = lengths.len();
    let entries = core.num_layers() * core.num_directions();
    let width = core.output_size();
    let x = tensor([batch, steps, INPUT], 5, 1.0, &ad).require_grad();
    let h0 = tensor([entries, batch, HIDDEN], 6, 0.8, &ad).require_grad();
    let c0 = core
        .has_cell()
        .then(|| tensor([entries, batch, HIDDEN], 7, 0.8, &ad).require_grad());
    let start = RecurrentState {
        hidden: h0.clone(),
        cell: c0.clone(),
    };
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
    assert_close(
        &format!("{what}: outputs"),
        &got.outputs,
        &want.outputs,
        tolerance,
    );
    assert_close(
        &format!("{what}: final h"),
        &got.hidden,
        &want.hidden,
        tolerance,
    );
    if let (Some(got), Some(want)) = (&got.cell, &want.cell) {
        assert_close(&format!("{what}: final c"), got, want, tolerance);
    }
    assert_eq!(
        got.grads.len(),
        want.grads.len(),
        "{what}: parameters with a gradient"
    );
    for (id, want) in &want.grads {
        let got = got
            .grads
            .get(id)
            .unwrap_or_else(|| panic!("{what}: parameter {id} has no gradient"));
        assert_close(
            &format!("{what}: gradient of parameter {id}"),
            got,
            want,
            tolerance,
        );
    }
    assert_close(
        &format!("{what}: input gradient"),
        &got.d_input,
        &want.d_input,
        tolerance,
    );
    assert_close(
        &format!("{what}: h0 gradient"),
        &got.d_h0,
        &want.d_h0,
        tolerance,
    );
    if let (Some(got), Some(want)) = (&got.d_c0, &want.d_c0) {
        assert_close(&format!("{what}: c0 gradient"), got, want, tolerance);
    }
}

/// Bidirectional cores of every kind (1 and 2 layers) on padded batches, unsorted lengths and
/// a batch of one row of one step: fused against composite on `dev`.
pub fn padded_fused_equals_composite(dev: &Device, tolerance: f32) {
    let cases: [(usize, &[usize], usize); 3] =
        [(2, &[2, 5, 5, 3], 5), (1, &[1], 1), (1, &[3, 1], 4)];
    for (layers, lengths, steps) in cases {
        for (name, core) in bidirectional_cores(layers, &dev.clone().autodiff()) {
            let fused = padded_pass(&core, lengths, steps, Mode::Fused, dev);
            let composite = padded_pass(&core, lengths, steps, Mode::Composite, dev);
            let what = format!("{name}, {layers} layers, lengths {lengths:?} of {steps}");
            assert_same_pass(&what, &fused, &composite, tolerance);
        }
    }
}

/// The inputs of one fused layer of `cell`, as plain values: a dense input (time-major or
/// batch-first) or token ids.
pub struct LayerCase {
    cell: ScanCell,
    steps: usize,
    batch: usize,
    hidden: usize,
    /// Features of a dense input, or the one-hot width.
    inputs: usize,
    /// Token ids `[steps · batch]` for a one-hot input; empty for a dense one.
    ids: Vec<i64>,
    /// A dense input read batch-first (`[batch, steps, features]` swapped), else time-major.
    batch_first: bool,
    input: Vec<f32>,
    input_weight: Vec<f32>,
    input_bias: Vec<f32>,
    h0: Vec<f32>,
    c0: Vec<f32>,
    weight: Vec<f32>,
    hidden_bias: Vec<f32>,
    /// The order of the steps and the rows' lengths.
    order: ScanOrder,
}

/// The names of [`LayerCase::tensors`]' entries.
pub const LAYER_INPUTS: [&str; 7] = [
    "input",
    "input_weight",
    "input_bias",
    "h0",
    "c0",
    "weight",
    "hidden_bias",
];

impl LayerCase {
    pub fn dense(cell: ScanCell, batch_first: bool) -> Self {
        let (steps, batch, hidden, features) = (4, 2, 5, 3);
        let width = cell.gates() * hidden;
        let scale = if matches!(cell, ScanCell::Rnn(rnnlm::fused::Activation::Relu, _)) {
            0.3
        } else {
            0.7
        };
        Self {
            cell,
            steps,
            batch,
            hidden,
            inputs: features,
            ids: Vec::new(),
            batch_first,
            input: pattern(steps * batch * features, 11, 1.0),
            input_weight: pattern(features * width, 10, 0.6),
            input_bias: pattern(width, 12, 0.4),
            h0: pattern(batch * hidden, 13, 0.8),
            c0: if cell.has_cell() {
                pattern(batch * hidden, 14, 0.8)
            } else {
                Vec::new()
            },
            weight: pattern(hidden * width, 15, scale),
            hidden_bias: if cell.has_hidden_bias() {
                pattern(width, 16, 0.4)
            } else {
                Vec::new()
            },
            order: ScanOrder::default(),
        }
    }

    /// Reversed (a bidirectional layer's backward direction), over rows of `lengths` steps.
    pub fn reversed(mut self, lengths: Vec<usize>) -> Self {
        self.order = ScanOrder {
            reverse: true,
            lengths,
        };
        self
    }

    /// Token ids over a vocabulary of 6, one id repeated and one never used.
    pub fn one_hot(cell: ScanCell) -> Self {
        let vocab = 6;
        let mut case = Self::dense(cell, false);
        let width = cell.gates() * case.hidden;
        case.inputs = vocab;
        case.ids = (0..case.steps * case.batch)
            .map(|i| ((i * 7) % (vocab - 1)) as i64)
            .collect();
        case.input = Vec::new();
        case.input_weight = pattern(vocab * width, 10, 1.0);
        case
    }

    /// The operation's float inputs as tensors on `dev`, in the order of [`LAYER_INPUTS`]
    /// (absent ones `None`; every one 2-D, reshaped by [`loss`](Self::loss)).
    pub fn tensors(&self, dev: &Device) -> Vec<Option<Tensor<2>>> {
        let width = self.cell.gates() * self.hidden;
        let make = |v: &Vec<f32>, shape: [usize; 2]| {
            (!v.is_empty()).then(|| Tensor::<2>::from_data(TensorData::new(v.clone(), shape), dev))
        };
        vec![
            make(&self.input, [self.steps * self.batch, self.inputs]),
            make(&self.input_weight, [self.inputs, width]),
            make(&self.input_bias, [1, width]),
            make(&self.h0, [self.batch, self.hidden]),
            make(&self.c0, [self.batch, self.hidden]),
            make(&self.weight, [self.hidden, width]),
            make(&self.hidden_bias, [1, width]),
        ]
    }

    /// A weighted sum of everything the layer returns.
    pub fn loss(&self, inputs: &[Option<Tensor<2>>]) -> Tensor<1> {
        let width = self.cell.gates() * self.hidden;
        let get = |i: usize| inputs[i].clone();
        let (steps, batch) = (self.steps, self.batch);
        let input = match get(0) {
            // Batch-first values, swapped to time-major: the operation reads them in place.
            Some(x) if self.batch_first => {
                LayerInput::Dense(x.reshape([batch, steps, self.inputs]).swap_dims(0, 1))
            }
            Some(x) => LayerInput::Dense(x.reshape([steps, batch, self.inputs])),
            None => {
                let ids = TensorData::new(self.ids.clone(), [steps, batch]);
                LayerInput::OneHot(Tensor::from_data(ids, &get(1).unwrap().device()))
            }
        };
        let input_weight = get(1).unwrap();
        let input_bias = get(2).unwrap().reshape([width]);
        let (h0, weight) = (get(3).unwrap(), get(5).unwrap());
        let c0 = get(4);
        let hidden_bias = get(6).map(|b| b.reshape([width]));
        let out = rnnlm::fused::try_layer(
            self.cell,
            LayerTensors {
                input,
                input_weight: &input_weight,
                input_bias: &input_bias,
                h0: &h0,
                c0: c0.as_ref(),
                weight: &weight,
                hidden_bias: hidden_bias.as_ref(),
                order: self.order.clone(),
            },
        )
        .unwrap_or_else(|_| panic!("the fused layer runs on the tests' backend"));
        let dims = out.dims();
        assert_eq!(
            dims,
            [
                self.steps + 1 + usize::from(self.cell.has_cell()),
                self.batch,
                self.hidden
            ]
        );
        let weights = tensor(dims, 17, 1.0, &out.device());
        (out * weights).sum()
    }
}

/// Every float input's gradient of the operation (`try_layer`) on `dev` against central
/// differences of the loss, for every cell with and without a clip, on a time-major and a
/// batch-first dense input, on token ids, and reversed over a padded batch.
pub fn operation_matches_finite_differences(dev: &Device) {
    let ad = dev.clone().autodiff();
    let dev = dev.clone();
    for cell in [
        ScanCell::Rnn(rnnlm::fused::Activation::Tanh, Clip::NONE),
        ScanCell::Rnn(rnnlm::fused::Activation::Relu, Clip::NONE),
        ScanCell::Lstm(Clip::NONE),
        ScanCell::Gru(Clip::NONE),
        ScanCell::GruD2l(Clip::NONE),
        // burn-nn's clip (the LSTM's cell, the others' hidden state), which the operation's
        // layers reach: both sides of the clamp.
        ScanCell::Rnn(rnnlm::fused::Activation::Tanh, Clip::new(0.3).unwrap()),
        ScanCell::Lstm(Clip::new(0.3).unwrap()),
        ScanCell::Gru(Clip::new(0.3).unwrap()),
        ScanCell::GruD2l(Clip::new(0.3).unwrap()),
    ] {
        for (input, case) in [
            ("time-major", LayerCase::dense(cell, false)),
            ("batch-first", LayerCase::dense(cell, true)),
            ("one-hot", LayerCase::one_hot(cell)),
            (
                "reversed, padded",
                LayerCase::dense(cell, false).reversed(vec![3, 4]),
            ),
        ] {
            let inputs: Vec<Option<Tensor<2>>> = case
                .tensors(&ad)
                .into_iter()
                .map(|t| t.map(Tensor::require_grad))
                .collect();
            let grads = case.loss(&inputs).backward();
            for (index, tensor) in inputs.iter().enumerate() {
                let Some(tensor) = tensor else { continue };
                let name = LAYER_INPUTS[index];
                let analytic =
                    values(tensor.grad(&grads).unwrap_or_else(|| {
                        panic!("{cell:?}, {input} input: {name} has no gradient")
                    }));
                // Central differences in f64 of the f32 loss, on a spread of entries.
                let base = case.tensors(&dev);
                let len = analytic.len();
                // Some ReLU pre-activation (and some clamped cell) lies within a step of 1e-3 of
                // its kink here: a step of 1e-4 stays on one side (and the f32 loss still
                // resolves it to 2e-3).
                let clip = cell.clip();
                let kinked = matches!(cell, ScanCell::Rnn(rnnlm::fused::Activation::Relu, _))
                    || clip != Clip::NONE;
                let eps = if kinked { 1e-4f32 } else { 1e-2 };
                for entry in (0..len).step_by(len.div_ceil(7).max(1)) {
                    let at = |delta: f32| {
                        let mut shifted = base.clone();
                        let tensor = shifted[index].take().unwrap();
                        let shape = tensor.dims();
                        let mut v = values(tensor);
                        v[entry] += delta;
                        shifted[index] = Some(Tensor::from_data(TensorData::new(v, shape), &dev));
                        f64::from(case.loss(&shifted).into_scalar::<f32>())
                    };
                    let numeric = (at(eps) - at(-eps)) / (2.0 * f64::from(eps));
                    let got = f64::from(analytic[entry]);
                    assert!(
                        (got - numeric).abs() <= 5e-3 + 1e-2 * numeric.abs(),
                        "{cell:?}, {input} input: d loss / d {name}[{entry}]: {got} by the \
                         backward pass, {numeric} by finite differences"
                    );
                }
            }
        }
    }
}

/// Dropout is Burn's own on both paths, so with the same seed the fused and the composite
/// layers on `dev` drop the same units: the same loss and gradients (within `tolerance`,
/// relative), of every parameter and of the initial state; another seed drops others. Seeds
/// `dev`'s generator: callers that share it take turns.
pub fn dropout_masks_agree(dev: &Device, tolerance: f32) {
    let ad = dev.clone().autodiff();
    let (batch, steps, vocab) = (4, 6, 9);
    let x: Vec<i64> = (0..(batch * steps) as i64)
        .map(|i| (i * 5 + 1) % vocab)
        .collect();
    let y: Vec<i64> = (0..(batch * steps) as i64)
        .map(|i| (i * 7 + 3) % vocab)
        .collect();
    for (name, config) in [
        (
            "lstm, 3 layers, dropout 0.3",
            RnnLmConfig::new(CellKind::Lstm, vocab as usize, 24)
                .with_num_layers(3)
                .with_dropout(0.3),
        ),
        (
            "gru (d2l), 2 layers, dropout 0.3",
            RnnLmConfig::new(CellKind::Gru, vocab as usize, 16)
                .with_num_layers(2)
                .with_gru_formula(rnnlm::GruFormula::D2l)
                .with_dropout(0.3),
        ),
        (
            "gru, 2 layers, dropout 0.5",
            RnnLmConfig::new(CellKind::Gru, vocab as usize, 16)
                .with_num_layers(2)
                .with_dropout(0.5),
        ),
        (
            "rnn-scratch, 2 layers, dropout 0.4",
            // d2l's N(0, 0.01²) weights make dropout's effect on the loss too small to see.
            RnnLmConfig::new(CellKind::RnnScratch, vocab as usize, 16)
                .with_num_layers(2)
                .with_dropout(0.4)
                .with_init(rnnlm::WeightInit::Normal { sigma: 0.3 }),
        ),
    ] {
        let model = config.init(&ad);
        let pass = |mode: Mode, seed: u64| {
            ad.seed(seed);
            let start = model.begin_state(batch, &ad);
            let h0 = start.hidden.clone().add_scalar(0.3).require_grad();
            let start = rnnlm::RecurrentState {
                hidden: h0.clone(),
                ..start
            };
            let (logits, _) = rnnlm::fused::with_mode(mode, || {
                model.forward(ids(&x, [batch, steps], &ad), start)
            });
            let loss = sequence_loss(logits, ids(&y, [batch, steps], &ad));
            let value = loss.clone().into_scalar::<f32>();
            let grads = loss.backward();
            let d_h0 = values(h0.grad(&grads).expect("the initial state's gradient"));
            (value, param_grads(&model, &grads), d_h0)
        };
        // Once each first, untimed: on a CubeCL backend with Burn's fusion, the first run of a
        // fused block may be autotuned, executing its random kernel (and drawing seeds) more
        // than once; after that every pass draws the same.
        pass(Mode::Fused, 3);
        pass(Mode::Composite, 3);
        let (fused, fused_grads, fused_h0) = pass(Mode::Fused, 3);
        let (composite, composite_grads, composite_h0) = pass(Mode::Composite, 3);
        assert!(
            (fused - composite).abs() <= tolerance * composite.abs(),
            "{name} on {dev:?}: loss {fused} fused, {composite} composite"
        );
        assert_eq!(
            fused_grads.len(),
            composite_grads.len(),
            "{name}: gradients"
        );
        for (id, grad) in &fused_grads {
            let want = &composite_grads[id];
            let diff = max_diff(grad, want);
            assert!(
                diff <= tolerance * want.iter().fold(1.0f32, |m, x| m.max(x.abs())),
                "{name}: parameter {id}: gradients differ by {diff}"
            );
        }
        let diff = max_diff(&fused_h0, &composite_h0);
        assert!(
            diff <= tolerance * composite_h0.iter().fold(1.0f32, |m, x| m.max(x.abs())),
            "{name}: initial-state gradients differ by {diff}"
        );
        // Another seed drops other units: the masks are really drawn. Other masks can give a
        // loss close to this one (8e-5 away on ndarray once), never the same to 1e-6: the same
        // masks would give the same loss to the last bit.
        let (other, _, _) = pass(Mode::Fused, 4);
        assert!(
            (other - fused).abs() > 1e-6 * fused.abs().max(1.0),
            "{name} on {dev:?}: the masks do not depend on the seed (loss {other} with seed 4, {fused} with seed 3)"
        );
    }
}
