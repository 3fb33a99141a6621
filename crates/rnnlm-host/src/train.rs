//! A training step's forward and backward pass on the host: the mean cross-entropy of an
//! [`RnnLm`] on one minibatch and its gradient with respect to every parameter, computed by
//! hand-written loops instead of Burn's autodiff graph.
//!
//! Through Burn, one step of the time loop is a dozen small tensor operations, each recorded on
//! the autodiff tape and replayed backwards; for the chapter's models (batch 32, hidden 256-512)
//! that bookkeeping, not arithmetic, sets the speed on a CPU. Here each layer runs its whole
//! sequence in one loop over time per thread: the batch's rows are split between threads (rows
//! are independent in the recurrence, so the threads never wait for each other inside the
//! loop), each step is one product of the state with the packed `[hidden, gates·hidden]` weight
//! and a pass over the gates, and what the backward pass needs (the gate activations, the cells)
//! is kept from the forward pass (a one-hot first layer's projection is gathered from `W_x`'s
//! rows by the loop's threads as they go). The output layer, the loss and their gradients run
//! in fixed pieces of the rows, each piece's logits in cache for its products. The weight
//! gradients are then one large product per weight over all steps at once. The threads are
//! [`crate::pool`]'s, which stay awake between these parallel parts; [`crate::profile`] times
//! the phases.
//!
//! The results equal Burn's autodiff to float rounding (a different summation order); the tests
//! compare losses, logits, states and every gradient with the tensor path for every cell, and
//! check the gradients against finite differences. Dropout between layers draws its masks from
//! the model's device exactly as [`burn::nn::Dropout`] does, so with the same seed both paths
//! drop the same units.

use burn::module::ParamId;
use burn::prelude::*;
use burn::tensor::Distribution;

use rnnlm::{Activation, RecurrentState, RnnLm};

use crate::cell::{Cell, HiddenWeights, StepScratch, step};
use crate::math::{
    Isa, SharedMut, View, filled_in_parallel, gemm, gemm_large, gemm_single, parallel, split,
};
use crate::profile::timed;
use crate::weights::{Layer, Weights, host};

/// The gradient of one parameter, as a tensor of the parameter's shape.
#[derive(Clone, Debug)]
pub enum ParamGrad {
    /// A bias: `[len]`.
    Vector(Tensor<1>),
    /// A weight matrix: `[rows, cols]`.
    Matrix(Tensor<2>),
}

/// What [`backward`] returns.
#[derive(Clone, Debug)]
pub struct HostBackward {
    /// Mean cross-entropy over every position: `[1]`.
    pub loss: Tensor<1>,
    /// Next-token logits `[batch, steps, vocab]`, as [`RnnLm::forward`] returns them.
    pub logits: Tensor<3>,
    /// The state after the last step, `[num_layers, batch, hidden]` per tensor, without a graph.
    pub state: RecurrentState,
    /// The gradient of `scale · loss` for every parameter, by parameter id (on an autodiff
    /// device, frozen parameters are left out, as autodiff leaves them).
    pub grads: Vec<(ParamId, ParamGrad)>,
}

fn host_ids(tensor: Tensor<2, Int>) -> Vec<i64> {
    tensor
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("int tensor")
}

/// What a layer's forward pass keeps for its backward pass.
struct Tape {
    /// Outputs `h_t`, `[steps · batch, hidden]`.
    outputs: Vec<f32>,
    /// Gate activations `[steps · batch, width]`: LSTM `i f g o`, GRU `r z n`; empty for RNN.
    gates: Vec<f32>,
    /// LSTM: the cells `c_t`; PyTorch's GRU: `h W_hn + b_hn`; d2l's GRU: `r ⊙ h_{t-1}`.
    /// `[steps · batch, hidden]`, empty for RNN.
    extra: Vec<f32>,
    /// Initial state `[batch, hidden]`.
    h0: Vec<f32>,
    c0: Vec<f32>,
}

/// The sizes of one minibatch's computation and how it runs.
#[derive(Clone, Copy)]
struct Plan {
    steps: usize,
    batch: usize,
    hidden: usize,
    cell: Cell,
    threads: usize,
    isa: Isa,
}

impl Plan {
    fn rows(&self) -> usize {
        self.steps * self.batch
    }

    fn width(&self) -> usize {
        self.cell.gates() * self.hidden
    }
}

/// How many threads the host engines use: the machine's parallelism, or `RNNLM_THREADS` when set
/// (at least 1).
pub(crate) fn default_threads() -> usize {
    std::env::var("RNNLM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// The mean cross-entropy of `tokens` against `targets` and its gradient for every
/// parameter, computed on the host (see the [crate](crate) documentation): what
/// [`RnnLm::forward`], the loss and `backward()` give through Burn's autodiff, several
/// times faster on CPU backends.
///
/// - `tokens`, `targets`: `[batch, steps]`, ids in `0..vocab_size`
/// - `state`: from [`RnnLm::begin_state`] or a previous step,
///   `[num_layers, batch, hidden]` per tensor
/// - `scale`: the gradients are those of `scale · loss` (a shard's share of a minibatch)
///
/// The loss, logits, state and gradients are created on `device` (give the training device
/// without autodiff: gradients are plain tensors, as `GradientsParams` holds them). Dropout
/// masks are drawn from the model's device as [`burn::nn::Dropout`] draws them, when the
/// model is on an autodiff device and training.
///
/// # Panics
/// On an id outside the vocabulary or a state of the wrong shape, naming what was expected.
pub fn backward(
    model: &RnnLm,
    tokens: Tensor<2, Int>,
    targets: Tensor<2, Int>,
    state: RecurrentState,
    scale: f32,
    device: &Device,
) -> HostBackward {
    backward_with(
        model,
        tokens,
        targets,
        state,
        scale,
        device,
        Isa::detect(),
        None,
    )
}

/// [`backward`] on `threads` threads (the engine's choice when `None`) with the loops compiled
/// for `isa` whatever more the CPU has: the paths other CPUs take, so that tests on this one
/// cover them. (The large products are the gemm crate's, which chooses for itself.)
///
/// # Panics
/// If this CPU does not run `isa`.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn backward_tuned(
    model: &RnnLm,
    tokens: Tensor<2, Int>,
    targets: Tensor<2, Int>,
    state: RecurrentState,
    scale: f32,
    device: &Device,
    threads: Option<usize>,
    isa: Isa,
) -> HostBackward {
    assert!(
        isa.supported(),
        "backward_tuned: this CPU does not run {isa:?}"
    );
    backward_with(model, tokens, targets, state, scale, device, isa, threads)
}

/// [`RnnLm::forward`] on the host, without a graph: next-token logits
/// `[batch, steps, vocab]` and the state after the last step, created on `device`. What
/// validation and evaluation need from a CPU backend, in one pass per layer (no dropout:
/// this is inference).
///
/// # Panics
/// As [`RnnLm::forward`].
pub fn forward(
    model: &RnnLm,
    tokens: Tensor<2, Int>,
    state: RecurrentState,
    device: &Device,
) -> (Tensor<3>, RecurrentState) {
    let batch = HostBatch::read(
        model,
        "rnnlm_host::forward",
        tokens,
        state,
        Isa::detect(),
        None,
    );
    let tapes = forward_pass(&batch, &[]).tapes;
    let logits = output_logits(&batch, &tapes);
    (
        batch.logits_tensor(&logits, device),
        batch.state_tensor(&tapes, device),
    )
}

#[allow(clippy::too_many_arguments)]
fn backward_with(
    model: &RnnLm,
    tokens: Tensor<2, Int>,
    targets: Tensor<2, Int>,
    state: RecurrentState,
    scale: f32,
    device: &Device,
    isa: Isa,
    threads: Option<usize>,
) -> HostBackward {
    const CALLER: &str = "rnnlm_host::backward";
    let dims = tokens.dims();
    assert_eq!(
        targets.dims(),
        dims,
        "{CALLER}: targets have shape {:?}, expected the tokens' [batch, steps] = {dims:?}",
        targets.dims(),
    );
    let batch = timed("read weights and batch", || {
        HostBatch::read(model, CALLER, tokens, state, isa, threads)
    });
    let Plan {
        steps,
        batch: rows_per_step,
        hidden,
        ..
    } = batch.plan;
    let targets = time_major(
        host_ids(targets),
        dims,
        batch.weights.vocab,
        CALLER,
        "targets",
    );
    // Masks as Dropout draws them: one Bernoulli(keep) tensor per layer output but the last,
    // [steps, batch, hidden], in layer order, scaled by 1 / keep.
    let model_device = model.output.b_q.val().device();
    let (layers, dropout) = (batch.weights.layers.len(), batch.weights.dropout);
    let keep = 1.0 - dropout;
    let masks: Vec<Vec<f32>> = if dropout > 0.0 && model_device.is_autodiff() {
        (0..layers - 1)
            .map(|_| {
                let mask = Tensor::<3>::random(
                    [steps, rows_per_step, hidden],
                    Distribution::Bernoulli(keep),
                    &model_device,
                );
                host(mask).into_iter().map(|m| m / keep as f32).collect()
            })
            .collect()
    } else {
        Vec::new()
    };

    let forward = forward_pass(&batch, &masks);
    let OutputPass {
        logits,
        loss,
        grads: output_grads,
    } = timed("output layer and loss", || {
        output_pass(&batch, &forward.tapes, &targets, scale)
    });
    let grads = backward_pass(&batch, &forward, output_grads, &masks, device);
    timed("results to tensors", || HostBackward {
        loss: Tensor::from_data(TensorData::new(vec![loss as f32], [1]), device),
        logits: batch.logits_tensor(&logits, device),
        state: batch.state_tensor(&forward.tapes, device),
        grads,
    })
}

/// `ids` `[batch, steps]` (row-major) as time-major rows `t · batch + b`, each checked against
/// the vocabulary.
fn time_major(
    ids: Vec<i64>,
    [batch, steps]: [usize; 2],
    vocab: usize,
    caller: &str,
    what: &str,
) -> Vec<usize> {
    let mut out = vec![0usize; ids.len()];
    for b in 0..batch {
        for t in 0..steps {
            let id = ids[b * steps + t];
            assert!(
                (0..vocab as i64).contains(&id),
                "{caller}: {what} hold token id {id}, expected ids in 0..{vocab} (the vocabulary size)"
            );
            out[t * batch + b] = id as usize;
        }
    }
    out
}

/// A minibatch on the host with the model's weights: what both passes read.
struct HostBatch {
    weights: Weights,
    plan: Plan,
    /// Time-major token ids.
    tokens: Vec<usize>,
    /// Per layer, `[batch, hidden]`.
    h0: Vec<Vec<f32>>,
    /// Per layer, `[batch, hidden]`; empty unless LSTM.
    c0: Vec<Vec<f32>>,
}

impl HostBatch {
    /// Reads the weights, the tokens `[batch, steps]` and the state, checking their shapes.
    fn read(
        model: &RnnLm,
        caller: &str,
        tokens: Tensor<2, Int>,
        state: RecurrentState,
        isa: Isa,
        threads: Option<usize>,
    ) -> Self {
        let weights = Weights::read(model);
        let dims @ [batch, steps] = tokens.dims();
        assert!(
            batch > 0 && steps > 0,
            "{caller}: tokens have shape [batch, steps] = {dims:?}, expected both at least 1"
        );
        let hidden = weights.hidden;
        let expected = [weights.layers.len(), batch, hidden];
        assert_eq!(
            state.hidden.dims(),
            expected,
            "{caller}: state.hidden has shape {:?}, expected [num_layers, batch, hidden] = {expected:?}",
            state.hidden.dims()
        );
        let has_cell = weights.cell == Cell::Lstm;
        assert_eq!(
            state.cell.is_some(),
            has_cell,
            "{caller}: the state {} a cell, this core {} one (use begin_state)",
            if state.cell.is_some() { "has" } else { "lacks" },
            if has_cell { "needs" } else { "has no" }
        );
        if let Some(cell) = &state.cell {
            assert_eq!(
                cell.dims(),
                expected,
                "{caller}: state.cell has shape {:?}, expected [num_layers, batch, hidden] = {expected:?}",
                cell.dims()
            );
        }
        let tokens = time_major(host_ids(tokens), dims, weights.vocab, caller, "tokens");
        let per_layer = |t: Tensor<3>| -> Vec<Vec<f32>> {
            host(t)
                .chunks(batch * hidden)
                .map(<[f32]>::to_vec)
                .collect()
        };
        let plan = Plan {
            steps,
            batch,
            hidden,
            cell: weights.cell,
            threads: threads.unwrap_or_else(default_threads).clamp(1, batch),
            isa,
        };
        Self {
            h0: per_layer(state.hidden),
            c0: state.cell.map(per_layer).unwrap_or_default(),
            weights,
            plan,
            tokens,
        }
    }

    /// Time-major logits `[steps · batch, vocab]` as a `[batch, steps, vocab]` tensor.
    fn logits_tensor(&self, logits: &[f32], device: &Device) -> Tensor<3> {
        let (steps, batch, vocab) = (self.plan.steps, self.plan.batch, self.weights.vocab);
        let mut out = vec![0.0f32; logits.len()];
        for t in 0..steps {
            for b in 0..batch {
                let from = (t * batch + b) * vocab;
                let to = (b * steps + t) * vocab;
                out[to..to + vocab].copy_from_slice(&logits[from..from + vocab]);
            }
        }
        Tensor::from_data(TensorData::new(out, [batch, steps, vocab]), device)
    }

    /// Every layer's state after the last step, `[num_layers, batch, hidden]` per tensor.
    fn state_tensor(&self, tapes: &[Tape], device: &Device) -> RecurrentState {
        let Plan {
            steps,
            batch,
            hidden,
            cell,
            ..
        } = self.plan;
        let last = (steps - 1) * batch * hidden..steps * batch * hidden;
        let shape = [tapes.len(), batch, hidden];
        let join = |part: fn(&Tape) -> &[f32]| {
            let values: Vec<f32> = tapes
                .iter()
                .flat_map(|t| part(t)[last.clone()].iter().copied())
                .collect();
            Tensor::<3>::from_data(TensorData::new(values, shape), device)
        };
        RecurrentState {
            hidden: join(|t| &t.outputs),
            cell: (cell == Cell::Lstm).then(|| join(|t| &t.extra)),
        }
    }
}

fn matrix(values: Vec<f32>, shape: [usize; 2], device: &Device) -> ParamGrad {
    ParamGrad::Matrix(Tensor::from_data(TensorData::new(values, shape), device))
}

fn vector(values: Vec<f32>, device: &Device) -> ParamGrad {
    let len = values.len();
    ParamGrad::Vector(Tensor::from_data(TensorData::new(values, [len]), device))
}

/// What the forward pass leaves for the backward pass.
struct Forward {
    tapes: Vec<Tape>,
    /// What each dense layer's projection multiplied, where it is not a tape's outputs: the
    /// embedded tokens, or the layer below's outputs through its dropout mask (`None`: the
    /// tokens of a one-hot first layer, or the outputs below as they are).
    inputs: Vec<Option<Vec<f32>>>,
}

impl Forward {
    /// What layer `l`'s projection multiplied (a dense layer).
    fn input(&self, l: usize) -> &[f32] {
        match &self.inputs[l] {
            Some(x) => x,
            None => &self.tapes[l - 1].outputs,
        }
    }
}

/// Every layer over the whole sequence, bottom up, with dropout `masks` between layers.
fn forward_pass(batch: &HostBatch, masks: &[Vec<f32>]) -> Forward {
    let (w, plan, tokens) = (&batch.weights, batch.plan, &batch.tokens);
    let rows = plan.rows();
    let mut inputs: Vec<Option<Vec<f32>>> = Vec::with_capacity(w.layers.len());
    inputs.push(w.embedding.as_ref().map(|(table, dim, _)| {
        let mut x = vec![0.0f32; rows * dim];
        for (row, &token) in tokens.iter().enumerate() {
            x[row * dim..(row + 1) * dim].copy_from_slice(&table[token * dim..(token + 1) * dim]);
        }
        x
    }));
    let mut tapes: Vec<Tape> = Vec::with_capacity(w.layers.len());
    for (l, layer) in w.layers.iter().enumerate() {
        if l > 0 {
            inputs.push(masks.get(l - 1).map(|mask| {
                tapes[l - 1]
                    .outputs
                    .iter()
                    .zip(mask)
                    .map(|(h, m)| h * m)
                    .collect()
            }));
        }
        let dense = |x: &[f32]| {
            timed("forward: input projections", || {
                Projection::Computed(project(layer, x, w.input_size(l), plan))
            })
        };
        let projection = match (&inputs[l], l) {
            (Some(x), _) => dense(x),
            (None, 0) => Projection::Gathered(tokens),
            (None, _) => dense(&tapes[l - 1].outputs),
        };
        let c0 = batch.c0.get(l).cloned().unwrap_or_default();
        tapes.push(forward_layer(
            layer,
            projection,
            plan,
            batch.h0[l].clone(),
            c0,
        ));
    }
    Forward { tapes, inputs }
}

/// The output layer on the top layer's outputs: time-major logits `[steps · batch, vocab]`.
fn output_logits(batch: &HostBatch, tapes: &[Tape]) -> Vec<f32> {
    let (w, plan) = (&batch.weights, batch.plan);
    let (rows, hidden, vocab) = (plan.rows(), plan.hidden, w.vocab);
    let top = &tapes[tapes.len() - 1].outputs;
    let mut logits: Vec<f32> = w.output_bias.repeat(rows);
    let (x, weight) = (View::rows(top, hidden), View::rows(&w.output_weight, vocab));
    gemm_large(
        &mut logits,
        vocab,
        rows,
        vocab,
        hidden,
        x,
        weight,
        plan.threads,
    );
    logits
}

/// The gradient of `scale · loss` for every parameter, top layer first, from the output
/// layer's pass.
fn backward_pass(
    batch: &HostBatch,
    forward: &Forward,
    output: OutputGrads,
    masks: &[Vec<f32>],
    device: &Device,
) -> Vec<(ParamId, ParamGrad)> {
    let (w, plan, tokens, tapes) = (&batch.weights, batch.plan, &batch.tokens, &forward.tapes);
    let (rows, hidden, width) = (plan.rows(), plan.hidden, plan.width());
    let mut grads = Vec::new();
    if let Some(id) = w.output_ids.0 {
        grads.push((id, matrix(output.d_weight, [hidden, w.vocab], device)));
    }
    if let Some(id) = w.output_ids.1 {
        grads.push((id, vector(output.d_bias, device)));
    }
    let mut d_outputs = output.d_outputs;

    for l in (0..w.layers.len()).rev() {
        let (layer, tape) = (&w.layers[l], &tapes[l]);
        let input_size = w.input_size(l);
        let LayerBackward {
            d_projected,
            d_hidden_gates,
            projected_sums,
            hidden_gates_sums,
        } = backward_layer(layer, tape, &d_outputs, plan);
        let ids = &layer.ids;
        // Every input-side bias (the LSTM's two) has the gradient `projected_sums`.
        for &id in &ids.input_biases {
            grads.push((id, vector(projected_sums.clone(), device)));
        }
        if let Some(id) = ids.hidden_bias {
            grads.push((id, vector(hidden_gates_sums, device)));
        }
        let one_hot = l == 0 && w.embedding.is_none();
        let input = (!one_hot).then(|| Rows::of(forward.input(l), input_size));
        let (input_grad, hidden_grad) = timed("backward: weight gradients", || {
            layer_weight_grads(
                plan,
                ids,
                input,
                tape,
                &d_projected,
                &d_hidden_gates,
                || {
                    // One-hot rows select rows of W_x: their gradient adds into those rows.
                    scatter_rows(&d_projected, width, tokens, w.vocab, plan.threads)
                },
            )
        });
        if let (Some(id), Some(g)) = (ids.input_weight, input_grad) {
            grads.push((id, matrix(g, [input_size, width], device)));
        }
        if let (Some(id), Some(g)) = (ids.hidden_weight, hidden_grad) {
            grads.push((id, matrix(g, [hidden, width], device)));
        }
        if one_hot {
            break;
        }
        // Gradient of the layer's input: the layer below's outputs (through dropout) or the
        // embedded tokens.
        let mut d_input = vec![0.0f32; rows * input_size];
        let (d, weight_t) = (
            View::rows(&d_projected, width),
            View::transposed(&layer.input_weight, width),
        );
        timed("backward: input gradients", || {
            gemm_large(
                &mut d_input,
                input_size,
                rows,
                input_size,
                width,
                d,
                weight_t,
                plan.threads,
            )
        });
        if l == 0 {
            if let Some((_, dim, Some(id))) = &w.embedding {
                grads.push((
                    *id,
                    matrix(
                        scatter_rows(&d_input, *dim, tokens, w.vocab, plan.threads),
                        [w.vocab, *dim],
                        device,
                    ),
                ));
            }
        } else {
            if let Some(mask) = masks.get(l - 1) {
                for (d, m) in d_input.iter_mut().zip(mask) {
                    *d *= m;
                }
            }
            d_outputs = d_input;
        }
    }
    grads
}

/// What the output layer gives.
struct OutputPass {
    /// Time-major logits `[rows, vocab]`.
    logits: Vec<f32>,
    /// The mean cross-entropy.
    loss: f64,
    grads: OutputGrads,
}

/// The output layer's gradients, for the backward pass.
struct OutputGrads {
    /// The gradient of the top layer's outputs `[rows, hidden]`.
    d_outputs: Vec<f32>,
    /// The gradients of `W_q` `[hidden, vocab]` and `b_q` `[vocab]`.
    d_weight: Vec<f32>,
    d_bias: Vec<f32>,
}

/// How many pieces of the rows [`output_pass`] works in, whatever the thread count, so that its
/// partial sums always add up in the same order.
const OUTPUT_PIECES: usize = 4;

/// The output layer, the softmax cross-entropy and their gradients (of `scale · loss`), in
/// [`OUTPUT_PIECES`] pieces of the rows shared out over the threads: each piece's logits, loss
/// and `d logits = (softmax - one-hot) / rows` stay in cache for the products that need them
/// (`dW_q`, `db_q` as per-piece partial sums, then added in piece order; `d outputs`).
fn output_pass(batch: &HostBatch, tapes: &[Tape], targets: &[usize], scale: f32) -> OutputPass {
    let (w, plan) = (&batch.weights, batch.plan);
    let (rows, hidden, vocab) = (plan.rows(), plan.hidden, w.vocab);
    let top = &tapes[tapes.len() - 1].outputs;
    let pieces = OUTPUT_PIECES.min(rows);
    let parts = plan.threads.clamp(1, pieces);
    let grad_scale = scale / rows as f32;
    let mut partial_weights = vec![0.0f32; pieces * hidden * vocab];
    let mut partial_biases = vec![0.0f32; pieces * vocab];
    let partial_losses = std::sync::Mutex::new(vec![0.0f64; pieces]);
    let (weights_out, biases_out) = (
        SharedMut(partial_weights.as_mut_ptr()),
        SharedMut(partial_biases.as_mut_ptr()),
    );
    let mut d_outputs = Vec::new();
    // SAFETY: the pieces cover every row, and each writes all of its rows of both buffers.
    let logits = unsafe {
        filled_in_parallel(rows * vocab, |logits| {
            d_outputs = filled_in_parallel(rows * hidden, |d_outputs| {
                let work = OutputPiece {
                    weights: w,
                    top,
                    targets,
                    rows,
                    pieces,
                    grad_scale,
                    logits,
                    d_outputs,
                    partial_weights: weights_out,
                    partial_biases: biases_out,
                };
                parallel(parts, |part| {
                    for piece in split(pieces, parts, part) {
                        let loss = work.run(piece);
                        partial_losses.lock().expect("no panic holds the lock")[piece] = loss;
                    }
                });
            })
        })
    };
    let in_order = |partials: &[f32], len: usize| {
        let mut sums = vec![0.0f32; len];
        for partial in partials.chunks_exact(len) {
            accumulate(&mut sums, partial);
        }
        sums
    };
    let losses = partial_losses
        .into_inner()
        .expect("no panic holds the lock");
    OutputPass {
        logits,
        loss: losses.iter().sum::<f64>() / rows as f64,
        grads: OutputGrads {
            d_outputs,
            d_weight: in_order(&partial_weights, hidden * vocab),
            d_bias: in_order(&partial_biases, vocab),
        },
    }
}

/// One piece of [`output_pass`]'s rows.
struct OutputPiece<'a> {
    weights: &'a Weights,
    /// The top layer's outputs `[rows, hidden]`.
    top: &'a [f32],
    targets: &'a [usize],
    rows: usize,
    pieces: usize,
    grad_scale: f32,
    /// `[rows, vocab]` and `[rows, hidden]`, written.
    logits: SharedMut,
    d_outputs: SharedMut,
    /// Per piece, `[hidden, vocab]` and `[vocab]`, zero on entry.
    partial_weights: SharedMut,
    partial_biases: SharedMut,
}

impl OutputPiece<'_> {
    /// Piece `piece`'s logits, `d outputs` and partial sums; its summed loss.
    fn run(&self, piece: usize) -> f64 {
        let w = self.weights;
        let (hidden, vocab) = (w.hidden, w.vocab);
        let at = split(self.rows, self.pieces, piece);
        let (first, n) = (at.start, at.len());
        let x = &self.top[first * hidden..(first + n) * hidden];
        // SAFETY: rows `at` of the outputs and this piece's partial sums are written by this
        // call alone (the caller runs each piece once).
        let (z, d_x, d_weight, d_bias) = unsafe {
            (
                self.logits.zeroed_slice(first * vocab, n * vocab),
                self.d_outputs.zeroed_slice(first * hidden, n * hidden),
                self.partial_weights
                    .slice(piece * hidden * vocab, hidden * vocab),
                self.partial_biases.slice(piece * vocab, vocab),
            )
        };
        for row in z.chunks_exact_mut(vocab) {
            row.copy_from_slice(&w.output_bias);
        }
        // SAFETY: each C below is one of the slices above, as long as its shape says.
        unsafe {
            gemm_single(
                z.as_mut_ptr(),
                vocab,
                [n, vocab, hidden],
                View::rows(x, hidden),
                View::rows(&w.output_weight, vocab),
            )
        };
        let mut d_logits = vec![0.0f32; n * vocab];
        let loss =
            softmax_cross_entropy(z, &self.targets[at], vocab, self.grad_scale, &mut d_logits);
        let d = View::rows(&d_logits, vocab);
        // SAFETY: as above.
        unsafe {
            gemm_single(
                d_x.as_mut_ptr(),
                hidden,
                [n, hidden, vocab],
                d,
                View::transposed(&w.output_weight, vocab),
            );
            gemm_single(
                d_weight.as_mut_ptr(),
                vocab,
                [hidden, vocab, n],
                View::transposed(x, hidden),
                d,
            );
        }
        for row in d_logits.chunks_exact(vocab) {
            accumulate(d_bias, row);
        }
        loss
    }
}

/// The summed cross-entropy of the rows of `logits` `[rows, vocab]` against `targets`, and
/// `d_logits = grad_scale · (softmax - one-hot)` for them.
fn softmax_cross_entropy(
    logits: &[f32],
    targets: &[usize],
    vocab: usize,
    grad_scale: f32,
    d_logits: &mut [f32],
) -> f64 {
    let mut loss = 0.0f64;
    for ((z, dz), &target) in logits
        .chunks_exact(vocab)
        .zip(d_logits.chunks_exact_mut(vocab))
        .zip(targets)
    {
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for (d, &v) in dz.iter_mut().zip(z) {
            *d = (v - max).exp();
            sum += *d;
        }
        loss += (sum.ln() + max - z[target]) as f64;
        let inv = grad_scale / sum;
        for d in dz.iter_mut() {
            *d *= inv;
        }
        dz[target] -= grad_scale;
    }
    loss
}

/// `[table_rows, width]`: each row of `g` `[rows, width]` added into row `index[row]`, as the
/// gradient of a gather; on `threads` threads, each over its own columns (so every sum runs in
/// row order, whatever the thread count).
fn scatter_rows(
    g: &[f32],
    width: usize,
    index: &[usize],
    table_rows: usize,
    threads: usize,
) -> Vec<f32> {
    let mut out = vec![0.0f32; table_rows * width];
    let table = SharedMut(out.as_mut_ptr());
    by_columns(width, threads, |columns| {
        for (row, &i) in g.chunks_exact(width).zip(index) {
            // SAFETY: these columns of the table are this thread's alone.
            let to = unsafe { table.slice(i * width + columns.start, columns.len()) };
            accumulate(to, &row[columns.clone()]);
        }
    });
    out
}

/// Runs `work` on `threads` threads (at most one per 64 columns), each with its own contiguous
/// range of `0..width`.
fn by_columns(width: usize, threads: usize, work: impl Fn(std::ops::Range<usize>) + Sync) {
    let parts = threads.clamp(1, width.div_ceil(64).max(1));
    parallel(parts, |part| work(split(width, parts, part)));
}

/// `[rows, width]`: the input projection of every step of the dense input `x`
/// `[rows, input_size]`, plus the input biases.
fn project(layer: &Layer, x: &[f32], input_size: usize, plan: Plan) -> Vec<f32> {
    let (rows, width) = (plan.rows(), plan.width());
    let mut projected = layer.input_bias.repeat(rows);
    let (x, weight) = (
        View::rows(x, input_size),
        View::rows(&layer.input_weight, width),
    );
    gemm_large(
        &mut projected,
        width,
        rows,
        width,
        input_size,
        x,
        weight,
        plan.threads,
    );
    projected
}

/// The rows of a layer's input or state over a minibatch, `[rows, width]`: those of `head`
/// (the initial state, for `h_{t-1}`), then those of `tail`.
#[derive(Clone, Copy)]
struct Rows<'a> {
    head: &'a [f32],
    tail: &'a [f32],
    width: usize,
}

impl<'a> Rows<'a> {
    fn of(values: &'a [f32], width: usize) -> Self {
        Self {
            head: &[],
            tail: values,
            width,
        }
    }
}

/// `[Σ widths, n]`: `[S_1 | S_2 | ..]ᵀ · G` over `rows` rows, the gradients of the weights
/// that multiplied each source `S_i` (a layer's input, its `h_{t-1}`) to give rows whose
/// gradient is `g` `[rows, n]`, stacked.
fn weight_grad(sources: &[Rows<'_>], g: &[f32], n: usize, rows: usize, plan: Plan) -> Vec<f32> {
    assert!(g.len() >= rows * n);
    let m: usize = sources.iter().map(|s| s.width).sum();
    let mut out = vec![0.0f32; m * n];
    let mut offset = 0;
    for source in sources {
        let w = source.width;
        let c = &mut out[offset * n..(offset + w) * n];
        // Sᵀ G = headᵀ G[head rows] + tailᵀ G[the rest].
        let head_rows = source.head.len() / w;
        for (part, first, count) in [
            (source.head, 0, head_rows),
            (source.tail, head_rows, rows - head_rows),
        ] {
            let (a, b) = (View::transposed(part, w), View::rows(&g[first * n..], n));
            gemm_large(c, n, w, n, count, a, b, plan.threads);
        }
        offset += w;
    }
    out
}

/// The sums of the columns of `g` `[rows, width]` (a bias gradient), on `threads` threads each
/// over its own columns, every sum in row order.
fn column_sums(g: &[f32], width: usize, threads: usize) -> Vec<f32> {
    let mut sums = vec![0.0f32; width];
    let out = SharedMut(sums.as_mut_ptr());
    by_columns(width, threads, |columns| {
        // SAFETY: these sums are this thread's alone.
        let sums = unsafe { out.slice(columns.start, columns.len()) };
        for row in g.chunks_exact(width) {
            accumulate(sums, &row[columns.clone()]);
        }
    });
    sums
}

/// A layer's `dW_x` `[input, width]` and `dW_h` `[hidden, width]` (each where its id asks for
/// it) from the gradients of the input projection `d_projected` and, for PyTorch's GRU, of
/// `h W_hh + b_hh`. `input` is the dense input (`None` for one-hot tokens, whose gradient
/// `one_hot` scatters); `dW_h` is `h_{t-1}ᵀ` times the gradient of `h W_h` (d2l's GRU: its
/// candidate block from `(r ⊙ h_{t-1})ᵀ`). Where both come from `d_projected`, one product
/// gives both.
#[allow(clippy::too_many_arguments)]
fn layer_weight_grads(
    plan: Plan,
    ids: &crate::weights::LayerIds,
    input: Option<Rows<'_>>,
    tape: &Tape,
    d_projected: &[f32],
    d_hidden_gates: &[f32],
    one_hot: impl FnOnce() -> Vec<f32>,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (rows, h, width) = (plan.rows(), plan.hidden, plan.width());
    let previous = Rows {
        head: &tape.h0,
        tail: &tape.outputs,
        width: h,
    };
    let (want_input, want_hidden) = (ids.input_weight.is_some(), ids.hidden_weight.is_some());
    let input_alone = |d: &[f32]| match input {
        Some(x) => weight_grad(&[x], d, width, rows, plan),
        None => one_hot(),
    };
    match plan.cell {
        Cell::Rnn(_) | Cell::Lstm => match (input, want_input, want_hidden) {
            (Some(x), true, true) => {
                let both = weight_grad(&[x, previous], d_projected, width, rows, plan);
                let (dx, dh) = both.split_at(x.width * width);
                (Some(dx.to_vec()), Some(dh.to_vec()))
            }
            _ => (
                want_input.then(|| input_alone(d_projected)),
                want_hidden.then(|| weight_grad(&[previous], d_projected, width, rows, plan)),
            ),
        },
        Cell::GruTorch => (
            want_input.then(|| input_alone(d_projected)),
            want_hidden.then(|| weight_grad(&[previous], d_hidden_gates, width, rows, plan)),
        ),
        Cell::GruD2l => {
            let hidden = want_hidden.then(|| {
                let take = |from: usize, cols: usize| -> Vec<f32> {
                    d_projected
                        .chunks_exact(width)
                        .flat_map(|row| row[from..from + cols].iter().copied())
                        .collect()
                };
                let rz = weight_grad(&[previous], &take(0, 2 * h), 2 * h, rows, plan);
                let reset_h = Rows::of(&tape.extra, h);
                let n = weight_grad(&[reset_h], &take(2 * h, h), h, rows, plan);
                let mut out = vec![0.0f32; h * width];
                for j in 0..h {
                    out[j * width..j * width + 2 * h]
                        .copy_from_slice(&rz[j * 2 * h..(j + 1) * 2 * h]);
                    out[j * width + 2 * h..(j + 1) * width].copy_from_slice(&n[j * h..(j + 1) * h]);
                }
                out
            });
            (want_input.then(|| input_alone(d_projected)), hidden)
        }
    }
}

/// A layer's input projection `[rows, width]` with its biases: computed for every step before
/// the time loop, or (one-hot tokens) gathered from the rows of `W_x` by the loop's threads, each
/// for its own rows just before the step that reads them.
enum Projection<'a> {
    Computed(Vec<f32>),
    /// The time-major token ids.
    Gathered(&'a [usize]),
}

fn forward_layer(
    layer: &Layer,
    projection: Projection<'_>,
    plan: Plan,
    h0: Vec<f32>,
    c0: Vec<f32>,
) -> Tape {
    let (rows, h) = (plan.rows(), plan.hidden);
    let weights = timed("forward: pack W_h", || {
        HiddenWeights::new(
            plan.cell,
            h,
            &layer.hidden_weight,
            layer.hidden_bias.clone(),
            plan.threads,
        )
    });
    let extra_len = if plan.cell.has_extra() { rows * h } else { 0 };
    let parts = plan.threads.min(plan.batch).max(1);
    // The outputs and extras of the loop over the gates at `gates_out`.
    let time_loops = |gates_out: SharedMut, gather: Option<&[usize]>| {
        let mut extra = Vec::new();
        // SAFETY: the parts cover every batch row, and each zeroes its rows of the outputs and
        // extras (and, gathering, of the gates) at every step before writing them.
        let outputs = unsafe {
            filled_in_parallel(rows * h, |outputs_out| {
                extra = filled_in_parallel(extra_len, |extra_out| {
                    parallel(parts, |part| {
                        let kernel = ForwardRows {
                            weights: &weights,
                            plan,
                            batch_rows: split(plan.batch, parts, part),
                            gather: gather.map(|tokens| (tokens, layer)),
                            h0: &h0,
                            c0: &c0,
                            outputs: outputs_out,
                            gates: gates_out,
                            extra: extra_out,
                        };
                        crate::math::run(plan.isa, kernel);
                    });
                });
            })
        };
        (outputs, extra)
    };
    // The projection becomes the gates in place.
    let (gates, (outputs, extra)) = timed("forward: time loops", || match projection {
        Projection::Computed(mut gates) => {
            let filled = time_loops(SharedMut(gates.as_mut_ptr()), None);
            (gates, filled)
        }
        Projection::Gathered(tokens) => {
            let mut filled = (Vec::new(), Vec::new());
            // SAFETY: the loop writes every row of the gates (see above).
            let gates = unsafe {
                filled_in_parallel(rows * plan.width(), |gates_out| {
                    filled = time_loops(gates_out, Some(tokens));
                })
            };
            (gates, filled)
        }
    });
    Tape {
        outputs,
        gates: if plan.cell.has_extra() {
            gates
        } else {
            Vec::new()
        },
        extra,
        h0,
        c0,
    }
}

/// One thread's share of a layer's forward loop: the batch rows `batch_rows` over every step.
struct ForwardRows<'a> {
    weights: &'a HiddenWeights,
    plan: Plan,
    batch_rows: std::ops::Range<usize>,
    /// The time-major tokens whose rows of the layer's `W_x` (plus its biases) are the
    /// projections, for the loop to write into `gates` (see [`Projection`]).
    gather: Option<(&'a [usize], &'a Layer)>,
    h0: &'a [f32],
    c0: &'a [f32],
    /// `[rows, hidden]`, written.
    outputs: SharedMut,
    /// `[rows, width]`: the projections on entry (or written first, gathering), the gate
    /// activations on return.
    gates: SharedMut,
    /// `[rows, hidden]`, written (see [`Tape::extra`]); empty for RNN.
    extra: SharedMut,
}

impl crate::math::Kernel for ForwardRows<'_> {
    #[inline(always)]
    fn run<const FMA: bool>(self) {
        let Plan {
            steps,
            batch,
            hidden: h,
            cell,
            isa,
            ..
        } = self.plan;
        let width = self.plan.width();
        let (start, nb) = (self.batch_rows.start, self.batch_rows.len());
        if nb == 0 {
            return;
        }
        let mut h_prev = self.h0[start * h..(start + nb) * h].to_vec();
        let mut c = if cell == Cell::Lstm {
            self.c0[start * h..(start + nb) * h].to_vec()
        } else {
            Vec::new()
        };
        let mut scratch = StepScratch::new(self.weights, nb);
        let extra_len = if cell.has_extra() { nb * h } else { 0 };
        for t in 0..steps {
            let row = t * batch + start;
            // SAFETY: rows `row .. row + nb` of every buffer belong to this thread's batch rows
            // at step t; no other thread touches them.
            let (gates, out, extra) = unsafe {
                (
                    if self.gather.is_some() {
                        self.gates.zeroed_slice(row * width, nb * width)
                    } else {
                        self.gates.slice(row * width, nb * width)
                    },
                    self.outputs.zeroed_slice(row * h, nb * h),
                    self.extra.zeroed_slice(row * h, extra_len),
                )
            };
            if let Some((tokens, layer)) = self.gather {
                for (projected, &token) in gates.chunks_exact_mut(width).zip(&tokens[row..row + nb])
                {
                    let weights = &layer.input_weight[token * width..(token + 1) * width];
                    for ((p, &x), &b) in projected.iter_mut().zip(weights).zip(&layer.input_bias) {
                        *p = x + b;
                    }
                }
            }
            step::<FMA>(
                isa,
                self.weights,
                nb,
                gates,
                &h_prev,
                &h_prev,
                &mut c,
                out,
                extra,
                &mut scratch,
            );
            h_prev.copy_from_slice(out);
        }
    }
}

/// What a layer's backward loop gives.
struct LayerBackward {
    /// The gradient of the input projection `[rows, width]`.
    d_projected: Vec<f32>,
    /// PyTorch's GRU: the gradient of `h W_hh + b_hh` `[rows, width]`; empty otherwise.
    d_hidden_gates: Vec<f32>,
    /// The column sums of `d_projected` `[width]`: the input biases' gradient.
    projected_sums: Vec<f32>,
    /// The column sums of `d_hidden_gates` `[width]` (PyTorch's GRU: `b_hh`'s gradient).
    hidden_gates_sums: Vec<f32>,
}

/// Adds `block` into `sums` element by element (equally long).
fn accumulate(sums: &mut [f32], block: &[f32]) {
    for (s, &v) in sums.iter_mut().zip(block) {
        *s += v;
    }
}

/// A layer's backward pass from the gradient of its outputs `[rows, hidden]`.
///
/// The bias gradients are summed while each step's gradient is still in cache: over the steps
/// for every batch row (each row is one thread's), then over the batch rows in order, so the
/// sums do not depend on the thread count (a separate pass over the megabytes of `dP` after the
/// loop took a twentieth of a GRU's minibatch).
fn backward_layer(layer: &Layer, tape: &Tape, d_outputs: &[f32], plan: Plan) -> LayerBackward {
    let (rows, width) = (plan.rows(), plan.width());
    let packed = timed("backward: pack W_h transposed", || {
        HiddenWeights::transposed(plan.cell, plan.hidden, &layer.hidden_weight, plan.threads)
    });
    let hidden_gates_len = if plan.cell == Cell::GruTorch {
        rows * width
    } else {
        0
    };
    let parts = plan.threads.min(plan.batch).max(1);
    let mut d_hidden_gates = Vec::new();
    let mut projected_sums = vec![0.0f32; plan.batch * width];
    let mut hidden_gates_sums = vec![
        0.0f32;
        if hidden_gates_len > 0 {
            plan.batch * width
        } else {
            0
        }
    ];
    let (projected_sums_out, hidden_gates_sums_out) = (
        SharedMut(projected_sums.as_mut_ptr()),
        SharedMut(hidden_gates_sums.as_mut_ptr()),
    );
    // SAFETY: the parts cover every batch row, and each zeroes its rows of both buffers at
    // every step before writing them.
    let d_projected = timed("backward: time loops", || unsafe {
        filled_in_parallel(rows * width, |projected_out| {
            d_hidden_gates = filled_in_parallel(hidden_gates_len, |hidden_gates_out| {
                parallel(parts, |part| {
                    let kernel = BackwardRows {
                        tape,
                        packed: &packed,
                        plan,
                        batch_rows: split(plan.batch, parts, part),
                        d_outputs,
                        d_projected: projected_out,
                        d_hidden_gates: hidden_gates_out,
                        projected_sums: projected_sums_out,
                        hidden_gates_sums: hidden_gates_sums_out,
                    };
                    crate::math::run(plan.isa, kernel);
                });
            });
        })
    });
    LayerBackward {
        d_projected,
        d_hidden_gates,
        // Over the batch rows in order (one thread: a few dozen rows).
        projected_sums: column_sums(&projected_sums, width, 1),
        hidden_gates_sums: column_sums(&hidden_gates_sums, width, 1),
    }
}

/// One thread's share of a layer's backward loop: its batch rows, last step first.
struct BackwardRows<'a> {
    tape: &'a Tape,
    /// The transposed hidden weights.
    packed: &'a HiddenWeights,
    plan: Plan,
    batch_rows: std::ops::Range<usize>,
    d_outputs: &'a [f32],
    d_projected: SharedMut,
    d_hidden_gates: SharedMut,
    /// `[batch, width]`: per batch row, the sum of its rows of `d_projected` over the steps.
    projected_sums: SharedMut,
    /// The same for `d_hidden_gates` (empty unless PyTorch's GRU).
    hidden_gates_sums: SharedMut,
}

impl<'a> crate::math::Kernel for BackwardRows<'a> {
    #[inline(always)]
    fn run<const FMA: bool>(self) {
        let Plan {
            steps,
            batch,
            hidden: h,
            cell,
            ..
        } = self.plan;
        let width = self.plan.width();
        let (start, nb) = (self.batch_rows.start, self.batch_rows.len());
        if nb == 0 {
            return;
        }
        let tape = self.tape;
        // The gradient reaching h_{t} (and c_t) from step t + 1; the final state gets none.
        let mut dh_next = vec![0.0f32; nb * h];
        let mut dc_next = vec![0.0f32; nb * h];
        let mut d_reset_h = vec![0.0f32; nb * h];
        let mut dh = vec![0.0f32; nb * h];
        // SAFETY: these batch rows of the sums are this thread's alone.
        let (projected_sums, hidden_gates_sums) = unsafe {
            (
                self.projected_sums.slice(start * width, nb * width),
                if cell == Cell::GruTorch {
                    self.hidden_gates_sums.slice(start * width, nb * width)
                } else {
                    &mut []
                },
            )
        };
        for t in (0..steps).rev() {
            let row = t * batch + start;
            let block = |buffer: &'a [f32], cols: usize| &buffer[row * cols..(row + nb) * cols];
            let previous = |buffer: &'a [f32], initial: &'a [f32]| {
                if t == 0 {
                    &initial[start * h..(start + nb) * h]
                } else {
                    &buffer[(row - batch) * h..(row - batch + nb) * h]
                }
            };
            // SAFETY: rows `row .. row + nb` belong to this thread's batch rows at step t.
            let dp = unsafe { self.d_projected.zeroed_slice(row * width, nb * width) };
            for ((d, &up), &next) in dh.iter_mut().zip(block(self.d_outputs, h)).zip(&dh_next) {
                *d = up + next;
            }
            // Each arm gives the left operand of the product for dh_{t-1} (the gradient of what
            // multiplied W_h: `dp`, or PyTorch's GRU's gradient of `h W_hh + b_hh`; d2l's
            // W_hrz reads the `r z` columns of `dp`), and whether it already wrote the direct
            // part of dh_{t-1} into `dh_next`.
            let (source, direct): (&[f32], bool) = match cell {
                Cell::Rnn(activation) => {
                    for ((d, &g), &out) in dp.iter_mut().zip(&dh).zip(block(&tape.outputs, h)) {
                        *d = match activation {
                            Activation::Tanh => g * (1.0 - out * out),
                            Activation::Relu if out > 0.0 => g,
                            Activation::Relu => 0.0,
                        };
                    }
                    (&*dp, false)
                }
                Cell::Lstm => {
                    let gates = block(&tape.gates, width);
                    let cells = block(&tape.extra, h);
                    let cells_prev = previous(&tape.extra, &tape.c0);
                    // Per row, slices of exactly `h` elements, so the loop vectorises.
                    for (((((g, d), c), cp), dhb), dcb) in gates
                        .chunks_exact(width)
                        .zip(dp.chunks_exact_mut(width))
                        .zip(cells.chunks_exact(h))
                        .zip(cells_prev.chunks_exact(h))
                        .zip(dh.chunks_exact(h))
                        .zip(dc_next.chunks_exact_mut(h))
                    {
                        let (i, rest) = g.split_at(h);
                        let (f, rest) = rest.split_at(h);
                        let (gg, o) = rest.split_at(h);
                        let (di, rest) = d.split_at_mut(h);
                        let (df, rest) = rest.split_at_mut(h);
                        let (dg, d_o) = rest.split_at_mut(h);
                        rows::lstm::<FMA>([i, f, gg, o], c, cp, dhb, dcb, [di, df, dg, d_o]);
                    }
                    (&*dp, false)
                }
                Cell::GruTorch => {
                    // SAFETY: as for `dp`.
                    let dhw = unsafe { self.d_hidden_gates.zeroed_slice(row * width, nb * width) };
                    let gates = block(&tape.gates, width);
                    let hwn = block(&tape.extra, h);
                    let hp = previous(&tape.outputs, &tape.h0);
                    for ((((((g, d), dw), hwnb), hpb), dhb), next) in gates
                        .chunks_exact(width)
                        .zip(dp.chunks_exact_mut(width))
                        .zip(dhw.chunks_exact_mut(width))
                        .zip(hwn.chunks_exact(h))
                        .zip(hp.chunks_exact(h))
                        .zip(dh.chunks_exact(h))
                        .zip(dh_next.chunks_exact_mut(h))
                    {
                        let (r, rest) = g.split_at(h);
                        let (z, n) = rest.split_at(h);
                        let (dr, rest) = d.split_at_mut(h);
                        let (dz, dn) = rest.split_at_mut(h);
                        let (dwr, rest) = dw.split_at_mut(h);
                        let (dwz, dwn) = rest.split_at_mut(h);
                        rows::gru_torch(
                            [r, z, n],
                            hwnb,
                            hpb,
                            dhb,
                            [dr, dz, dn],
                            [dwr, dwz, dwn],
                            next,
                        );
                    }
                    (&*dhw, true)
                }
                Cell::GruD2l => {
                    let gates = block(&tape.gates, width);
                    let hp = previous(&tape.outputs, &tape.h0);
                    for ((g, d), dhb) in gates
                        .chunks_exact(width)
                        .zip(dp.chunks_exact_mut(width))
                        .zip(dh.chunks_exact(h))
                    {
                        let (z, n) = g[h..].split_at(h);
                        rows::gru_d2l_candidate(z, n, dhb, &mut d[2 * h..]);
                    }
                    d_reset_h.fill(0.0);
                    let w_n = self
                        .packed
                        .candidate
                        .as_ref()
                        .expect("d2l's GRU packs W_hn");
                    gemm(
                        self.plan.isa,
                        &mut d_reset_h,
                        h,
                        &dp[2 * h..],
                        width,
                        nb,
                        w_n,
                    );
                    for (((((g, d), drh), hpb), dhb), next) in gates
                        .chunks_exact(width)
                        .zip(dp.chunks_exact_mut(width))
                        .zip(d_reset_h.chunks_exact(h))
                        .zip(hp.chunks_exact(h))
                        .zip(dh.chunks_exact(h))
                        .zip(dh_next.chunks_exact_mut(h))
                    {
                        let (r, rest) = g.split_at(h);
                        let (z, n) = rest.split_at(h);
                        let (dr, rest) = d.split_at_mut(h);
                        rows::gru_d2l_gates::<FMA>(
                            [r, z, n],
                            drh,
                            hpb,
                            dhb,
                            [dr, &mut rest[..h]],
                            next,
                        );
                    }
                    (&*dp, true)
                }
            };
            // dh_{t-1} = the direct part (if the arm wrote one) + source · W_hᵀ; none is needed
            // for the initial state (truncated BPTT stops there).
            if t > 0 {
                if !direct {
                    dh_next.fill(0.0);
                }
                gemm(
                    self.plan.isa,
                    &mut dh_next,
                    h,
                    source,
                    width,
                    nb,
                    &self.packed.main,
                );
            }
            accumulate(projected_sums, dp);
            if cell == Cell::GruTorch {
                accumulate(hidden_gates_sums, source);
            }
        }
    }
}

/// One row's backward gate arithmetic, each a function of its own so that every slice is a
/// separate argument the compiler knows does not overlap the others, and vectorises (see the
/// forward counterparts in `cell`).
mod rows {
    use crate::math::{madd, tanh};

    /// LSTM: from the gate activations `i f g o`, `c_t`, `c_{t-1}` and `dh`: the gate
    /// pre-activation gradients, and `dc` carried to step t - 1 (in place).
    #[inline(always)]
    pub fn lstm<const FMA: bool>(
        [i, f, g, o]: [&[f32]; 4],
        c: &[f32],
        c_prev: &[f32],
        dh: &[f32],
        dc_next: &mut [f32],
        [di, df, dg, d_o]: [&mut [f32]; 4],
    ) {
        let n = dh.len();
        let (i, f, g, o, c, c_prev, dc_next) = (
            &i[..n],
            &f[..n],
            &g[..n],
            &o[..n],
            &c[..n],
            &c_prev[..n],
            &mut dc_next[..n],
        );
        let (di, df, dg, d_o) = (&mut di[..n], &mut df[..n], &mut dg[..n], &mut d_o[..n]);
        for j in 0..n {
            let tc = tanh::<FMA>(c[j]);
            let dc = madd::<FMA>(dh[j] * o[j], 1.0 - tc * tc, dc_next[j]);
            dc_next[j] = dc * f[j];
            di[j] = dc * g[j] * i[j] * (1.0 - i[j]);
            df[j] = dc * c_prev[j] * f[j] * (1.0 - f[j]);
            dg[j] = dc * i[j] * (1.0 - g[j] * g[j]);
            d_o[j] = dh[j] * tc * o[j] * (1.0 - o[j]);
        }
    }

    /// PyTorch's GRU: from `r z n`, `h W_hn + b_hn`, `h_{t-1}` and `dh`: the gradients of the
    /// input-side pre-activations (`dp`), of `h W_hh + b_hh` (`dhw`), and the direct part of
    /// `dh_{t-1}` (`z ⊙ dh`).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn gru_torch(
        [r, z, n]: [&[f32]; 3],
        hwn: &[f32],
        h_prev: &[f32],
        dh: &[f32],
        [dr, dz, dn]: [&mut [f32]; 3],
        [dwr, dwz, dwn]: [&mut [f32]; 3],
        dh_prev: &mut [f32],
    ) {
        let len = dh.len();
        let (r, z, n, hwn, h_prev) = (&r[..len], &z[..len], &n[..len], &hwn[..len], &h_prev[..len]);
        let (dr, dz, dn) = (&mut dr[..len], &mut dz[..len], &mut dn[..len]);
        let (dwr, dwz, dwn, dh_prev) = (
            &mut dwr[..len],
            &mut dwz[..len],
            &mut dwn[..len],
            &mut dh_prev[..len],
        );
        for j in 0..len {
            let dnj = dh[j] * (1.0 - z[j]) * (1.0 - n[j] * n[j]);
            let drj = dnj * hwn[j] * r[j] * (1.0 - r[j]);
            let dzj = dh[j] * (h_prev[j] - n[j]) * z[j] * (1.0 - z[j]);
            (dr[j], dz[j], dn[j]) = (drj, dzj, dnj);
            (dwr[j], dwz[j], dwn[j]) = (drj, dzj, dnj * r[j]);
            dh_prev[j] = dh[j] * z[j];
        }
    }

    /// d2l's GRU, first: the candidate's pre-activation gradient.
    #[inline(always)]
    pub fn gru_d2l_candidate(z: &[f32], n: &[f32], dh: &[f32], dn: &mut [f32]) {
        let len = dh.len();
        let (z, n, dn) = (&z[..len], &n[..len], &mut dn[..len]);
        for j in 0..len {
            dn[j] = dh[j] * (1.0 - z[j]) * (1.0 - n[j] * n[j]);
        }
    }

    /// d2l's GRU, then, with `d_reset_h = dn W_hnᵀ`: the `r` and `z` gradients and the direct
    /// part of `dh_{t-1}`.
    #[inline(always)]
    pub fn gru_d2l_gates<const FMA: bool>(
        [r, z, n]: [&[f32]; 3],
        d_reset_h: &[f32],
        h_prev: &[f32],
        dh: &[f32],
        [dr, dz]: [&mut [f32]; 2],
        dh_prev: &mut [f32],
    ) {
        let len = dh.len();
        let (r, z, n, d_reset_h, h_prev) = (
            &r[..len],
            &z[..len],
            &n[..len],
            &d_reset_h[..len],
            &h_prev[..len],
        );
        let (dr, dz, dh_prev) = (&mut dr[..len], &mut dz[..len], &mut dh_prev[..len]);
        for j in 0..len {
            dr[j] = d_reset_h[j] * h_prev[j] * r[j] * (1.0 - r[j]);
            dz[j] = dh[j] * (h_prev[j] - n[j]) * z[j] * (1.0 - z[j]);
            dh_prev[j] = madd::<FMA>(dh[j], z[j], d_reset_h[j] * r[j]);
        }
    }
}
