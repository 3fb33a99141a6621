//! The fused scan (`rnnlm::fused`) against the composite tensor operations it stands in for:
//! every core, 1 to 3 layers, a non-zero initial state, batch 1 and steps 1, strided inputs;
//! the same outputs and final states, and through autodiff the same gradients of every
//! parameter, of the inputs and of the initial state. Then finite differences on the operation
//! itself, and its shape errors. (Dropout, which draws from the backend's global generator,
//! is compared in the determinism tests, which take turns.)

use burn::prelude::*;
use rnnlm::fused::{CellKind as ScanCell, Clip, LayerInput, LayerTensors, Mode, with_mode};
use rnnlm::{DeepLstmConfig, GruConfig, Recurrent};
use rnnlm_tests::{device, param_grads, pattern, pattern_tensor as tensor, values};

use rnnlm_tests::fused_paths::{self, HIDDEN, INPUT};

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    fused_paths::assert_close(what, got, want, 1e-5);
}

#[test]
fn fused_equals_composite_for_every_core_shape_and_layout() {
    let dev = device();
    assert!(
        rnnlm::fused::is_active(&dev.clone().autodiff()),
        "the tests' default backend runs the fused scan: {}",
        rnnlm::fused::status(&dev.clone().autodiff())
    );
    // Within rounding (1e-5 relative): the fused kernels sum in another order.
    fused_paths::fused_equals_composite(&dev, 1e-5);
}

/// A user's model through plain Burn autodiff, the primer's classifier in small: the last
/// step's output feeds a linear layer; the fused and composite paths give the same loss and
/// gradients, inference (no autodiff) the same logits.
#[test]
fn a_classifier_on_the_last_step_trains_the_same_through_both_paths() {
    let ad = device().autodiff();
    let (batch, steps, classes) = (4, 9, 3);
    let lstm = DeepLstmConfig::new(INPUT, HIDDEN).with_num_layers(2).init(&ad);
    let head = burn::nn::LinearConfig::new(HIDDEN, classes).init(&ad);
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2, 1, 2], [batch]), &ad);
    let run = |mode: Mode| {
        let x = tensor([batch, steps, INPUT], 7, 1.0, &ad);
        let state = lstm.begin_state(batch, &ad);
        let (outputs, _) = with_mode(mode, || lstm.forward(x, state));
        let last = outputs.narrow(1, steps - 1, 1).reshape([batch, HIDDEN]);
        let logits = head.forward(last);
        let loss = burn::nn::loss::CrossEntropyLossConfig::new()
            .init(&ad)
            .forward(logits, labels.clone());
        let value = loss.clone().into_scalar::<f32>();
        let grads = loss.backward();
        (value, param_grads(&lstm, &grads), param_grads(&head, &grads))
    };
    let (fused, fused_lstm, fused_head) = run(Mode::Fused);
    let (composite, composite_lstm, composite_head) = run(Mode::Composite);
    assert!((fused - composite).abs() <= 1e-5 * composite.abs(), "loss {fused} vs {composite}");
    assert_eq!(fused_lstm.len(), 2 * 4, "every LSTM parameter has a gradient");
    for (id, want) in composite_lstm.iter().chain(&composite_head) {
        let got = fused_lstm.get(id).or_else(|| fused_head.get(id)).unwrap();
        assert_close(&format!("parameter {id}"), got, want);
    }
    // Inference: the inner (non-autodiff) module.
    let inner = lstm.valid();
    let dev = device();
    let infer = |mode: Mode| {
        let x = tensor([batch, steps, INPUT], 7, 1.0, &dev);
        values(with_mode(mode, || inner.forward(x, inner.begin_state(batch, &dev))).0)
    };
    assert_close("inference outputs", &infer(Mode::Fused), &infer(Mode::Composite));
}

/// The inputs of one fused layer of `cell`, as plain values: a dense input (time-major or
/// batch-first) or token ids.
struct LayerCase {
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
}

/// The names of [`LayerCase::tensors`]' entries.
const LAYER_INPUTS: [&str; 7] = ["input", "input_weight", "input_bias", "h0", "c0", "weight", "hidden_bias"];

impl LayerCase {
    fn dense(cell: ScanCell, batch_first: bool) -> Self {
        let (steps, batch, hidden, features) = (4, 2, 5, 3);
        let width = cell.gates() * hidden;
        let scale = if matches!(cell, ScanCell::Rnn(rnnlm::fused::Activation::Relu, _)) { 0.3 } else { 0.7 };
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
            c0: if cell.has_cell() { pattern(batch * hidden, 14, 0.8) } else { Vec::new() },
            weight: pattern(hidden * width, 15, scale),
            hidden_bias: if cell.has_hidden_bias() { pattern(width, 16, 0.4) } else { Vec::new() },
        }
    }

    /// Token ids over a vocabulary of 6, one id repeated and one never used.
    fn one_hot(cell: ScanCell) -> Self {
        let vocab = 6;
        let mut case = Self::dense(cell, false);
        let width = cell.gates() * case.hidden;
        case.inputs = vocab;
        case.ids = (0..case.steps * case.batch).map(|i| ((i * 7) % (vocab - 1)) as i64).collect();
        case.input = Vec::new();
        case.input_weight = pattern(vocab * width, 10, 1.0);
        case
    }

    /// The operation's float inputs as tensors on `dev`, in the order of [`LAYER_INPUTS`]
    /// (absent ones `None`; every one 2-D, reshaped by [`loss`](Self::loss)).
    fn tensors(&self, dev: &Device) -> Vec<Option<Tensor<2>>> {
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
    fn loss(&self, inputs: &[Option<Tensor<2>>]) -> Tensor<1> {
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
                order: Default::default(),
            },
        )
        .unwrap_or_else(|_| panic!("the fused layer runs on the tests' backend"));
        let dims = out.dims();
        assert_eq!(dims, [self.steps + 1 + usize::from(self.cell.has_cell()), self.batch, self.hidden]);
        let weights = tensor(dims, 17, 1.0, &out.device());
        (out * weights).sum()
    }
}

/// The one-hot projection (`rnnlm::fused::gather_rows`): the rows of the table, and a table
/// gradient that sums repeated ids and leaves unused rows zero, as Burn's `select` gives.
#[test]
fn the_one_hot_gather_equals_select() {
    let ad = device().autodiff();
    let (vocab, width) = (7, 37);
    // Id 3 three times, id 6 never.
    let ids = [3, 0, 5, 3, 1, 2, 3, 4, 0];
    let run = |mode: Mode| {
        with_mode(mode, || {
            assert_eq!(rnnlm::fused::is_active(&ad), mode == Mode::Fused, "the path under test runs");
            let table = tensor([vocab, width], 21, 1.0, &ad).require_grad();
            let ids = Tensor::<1, Int>::from_data(TensorData::new(ids.to_vec(), [ids.len()]), &ad);
            let rows = rnnlm::fused::gather_rows(table.clone(), ids);
            assert_eq!(rows.dims(), [9, width]);
            let loss = (rows.clone() * tensor([9, width], 22, 1.0, &ad)).sum();
            let grads = loss.backward();
            (values(rows), values(table.grad(&grads).expect("the table's gradient")))
        })
    };
    let (rows, d_table) = run(Mode::Fused);
    let (want_rows, want_d_table) = run(Mode::Composite);
    assert_eq!(rows, want_rows, "gathered rows");
    assert_close("table gradient", &d_table, &want_d_table);
    assert!(d_table[6 * width..].iter().all(|&g| g == 0.0), "an unused id has no gradient");
}

/// Every float input's gradient against central differences of the loss, for every cell, on
/// a time-major and a batch-first dense input and on token ids.
#[test]
fn the_operations_gradients_match_finite_differences() {
    let ad = device().autodiff();
    let dev = device();
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
                let analytic = values(tensor.grad(&grads).unwrap_or_else(|| {
                    panic!("{cell:?}, {input} input: {name} has no gradient")
                }));
                // Central differences in f64 of the f32 loss, on a spread of entries.
                let base = case.tensors(&dev);
                let len = analytic.len();
                // Some ReLU pre-activation (and some clamped cell) lies within a step of 1e-3 of
                // its kink here: a step of 1e-4 stays on one side (and the f32 loss still
                // resolves it to 2e-3).
                let clip = match cell {
                    ScanCell::Rnn(_, clip) | ScanCell::Lstm(clip) | ScanCell::Gru(clip) | ScanCell::GruD2l(clip) => clip,
                };
                let kinked = matches!(cell, ScanCell::Rnn(rnnlm::fused::Activation::Relu, _)) || clip != Clip::NONE;
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

#[test]
#[should_panic(expected = "rnnlm_fused::try_layer: weight has shape [5, 16], expected [hidden, gates·hidden] = [5, 20]")]
fn a_weight_of_the_wrong_shape_is_named() {
    let dev = device();
    let case = LayerCase::dense(ScanCell::Lstm(Clip::NONE), false);
    let mut inputs = case.tensors(&dev);
    inputs[5] = Some(Tensor::zeros([5, 16], &dev));
    case.loss(&inputs);
}

#[test]
#[should_panic(expected = "rnnlm_fused::try_layer: input_weight has shape [4, 20], expected [features, gates·hidden] = [3, 20]")]
fn an_input_weight_of_the_wrong_shape_is_named() {
    let dev = device();
    let case = LayerCase::dense(ScanCell::Lstm(Clip::NONE), false);
    let mut inputs = case.tensors(&dev);
    inputs[1] = Some(Tensor::zeros([4, 20], &dev));
    case.loss(&inputs);
}

#[test]
#[should_panic(expected = "rnnlm_fused::try_layer: the LSTM needs c0 [batch, hidden]")]
fn an_lstm_without_a_cell_is_named() {
    let dev = device();
    let case = LayerCase::dense(ScanCell::Lstm(Clip::NONE), false);
    let mut inputs = case.tensors(&dev);
    inputs[4] = None;
    case.loss(&inputs);
}

/// The composite switch reaches the device's status, and the status names the fix.
#[test]
fn the_status_says_why_the_composite_path_runs() {
    let dev = device();
    assert_eq!(rnnlm::fused::status(&dev), rnnlm::fused::Status::Active);
    let forced = with_mode(Mode::Composite, || rnnlm::fused::status(&dev));
    assert_eq!(forced, rnnlm::fused::Status::Disabled);
    assert!(forced.to_string().contains("RNNLM_FUSED=off"), "{forced}");
    let missing = rnnlm::fused::Status::NotCompiled { feature: "flex" };
    assert!(missing.to_string().contains("rnnlm's `flex` feature"), "{missing}");
}

/// A program that never sets the allocator up gets what the CLI gets: the first fused scan
/// makes glibc keep freed memory (the tape would be page-faulted in again at every step).
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn the_first_fused_scan_keeps_freed_memory() {
    if std::env::var_os("RNNLM_MALLOC_DEFAULTS").is_some_and(|v| v == "1") {
        return;
    }
    let dev = device();
    let core = GruConfig::new(3, 4).init(&dev);
    let _ = core.forward(Tensor::zeros([2, 5, 3], &dev), core.begin_state(2, &dev));
    assert!(rnnlm::fused::freed_memory_kept());
}
