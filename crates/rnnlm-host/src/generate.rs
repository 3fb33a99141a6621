//! The generation engine: an [`RnnLm`] copied to host memory and stepped one token at a time.

use burn::prelude::*;

use std::ops::ControlFlow;

use rnnlm::sample::{Decoding, decode};
use rnnlm::{RecurrentState, RnnLm};

use crate::cell::{Cell, HiddenWeights, StepScratch, step};
use crate::math::{Isa, Kernel, PackedB, gemm, run};
use crate::weights::{Weights, host};

/// How a layer's input projection `[batch, width]` is formed.
#[derive(Clone, Debug)]
enum Projection {
    /// First layer: a table `[vocab, width]` holding each token's projection with the input
    /// biases added (for a model with an embedding, `embedding · W_x + b`).
    Table(Vec<f32>),
    /// Layers above: the layer below's output times `W_x` `[hidden, width]`, plus `b`.
    Dense { weight: PackedB, bias: Vec<f32> },
}

#[derive(Clone, Debug)]
struct HostLayer {
    projection: Projection,
    hidden: HiddenWeights,
}

/// An [`RnnLm`] copied to host memory for fast stepping; see the [crate](crate) documentation.
#[derive(Clone, Debug)]
pub struct HostLm {
    cell: Cell,
    vocab: usize,
    hidden: usize,
    layers: Vec<HostLayer>,
    /// `W_hq` `[hidden, vocab]`.
    output_weight: PackedB,
    /// `b_q` `[vocab]`.
    output_bias: Vec<f32>,
}

/// The recurrent state of a batch on the host: `hidden[l]` (and `cell[l]` for an LSTM) is
/// `[batch, hidden]`, row-major, for layer `l`.
#[derive(Clone, Debug, PartialEq)]
pub struct HostState {
    /// Rows in the batch.
    pub batch: usize,
    /// Per layer, `[batch, hidden]`.
    pub hidden: Vec<Vec<f32>>,
    /// Per layer, `[batch, hidden]`; empty unless the core is an LSTM.
    pub cell: Vec<Vec<f32>>,
}

impl HostLm {
    /// Copies `model`'s weights to host memory (one read-back per parameter) and packs them.
    /// For a model with an embedding, the first layer's table is `embedding · W_x`
    /// `[vocab, width]`, computed here once.
    pub fn new(model: &RnnLm) -> Self {
        let weights = Weights::read(model);
        let (cell, hidden, vocab) = (weights.cell, weights.hidden, weights.vocab);
        let width = cell.gates() * hidden;
        let isa = Isa::detect();
        let layers = weights
            .layers
            .iter()
            .enumerate()
            .map(|(index, layer)| {
                let projection = if index > 0 {
                    Projection::Dense {
                        weight: PackedB::new(&layer.input_weight, hidden, width, width),
                        bias: layer.input_bias.clone(),
                    }
                } else {
                    let mut table: Vec<f32> = layer.input_bias.repeat(vocab);
                    match &weights.embedding {
                        Some((embedding, dim, _)) => {
                            let weight = PackedB::new(&layer.input_weight, *dim, width, width);
                            gemm(isa, &mut table, width, embedding, *dim, vocab, &weight);
                        }
                        None => {
                            for (row, x) in table.iter_mut().zip(&layer.input_weight) {
                                *row += x;
                            }
                        }
                    }
                    Projection::Table(table)
                };
                HostLayer {
                    projection,
                    hidden: HiddenWeights::new(
                        cell,
                        hidden,
                        &layer.hidden_weight,
                        layer.hidden_bias.clone(),
                    ),
                }
            })
            .collect();
        Self {
            cell,
            vocab,
            hidden,
            layers,
            output_weight: PackedB::new(&weights.output_weight, hidden, vocab, vocab),
            output_bias: weights.output_bias,
        }
    }

    /// Vocabulary size: the width of a row of logits.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// A zero state for `batch` rows (as [`RnnLm::begin_state`]).
    pub fn begin_state(&self, batch: usize) -> HostState {
        let zeros = || vec![vec![0.0; batch * self.hidden]; self.layers.len()];
        HostState {
            batch,
            hidden: zeros(),
            cell: if self.cell == Cell::Lstm {
                zeros()
            } else {
                Vec::new()
            },
        }
    }

    /// The host copy of a tensor state (`hidden`, `cell`: `[num_layers, batch, hidden]`).
    pub fn state_from(&self, state: RecurrentState) -> HostState {
        let [layers, batch, hidden] = state.hidden.dims();
        assert_eq!(
            (layers, hidden),
            (self.layers.len(), self.hidden),
            "HostLm::state_from: state has [num_layers, batch, hidden] = {:?}, expected [{}, batch, {}]",
            state.hidden.dims(),
            self.layers.len(),
            self.hidden
        );
        let split = |t: Tensor<3>| -> Vec<Vec<f32>> {
            host(t)
                .chunks(batch * hidden)
                .map(<[f32]>::to_vec)
                .collect()
        };
        HostState {
            batch,
            hidden: split(state.hidden),
            cell: state.cell.map(split).unwrap_or_default(),
        }
    }

    /// The tensor form of `state` on `device` (`[num_layers, batch, hidden]`).
    pub fn state_to_tensor(&self, state: &HostState, device: &Device) -> RecurrentState {
        let shape = [self.layers.len(), state.batch, self.hidden];
        let join = |parts: &[Vec<f32>]| {
            Tensor::<3>::from_data(TensorData::new(parts.concat(), shape), device)
        };
        RecurrentState {
            hidden: join(&state.hidden),
            cell: (!state.cell.is_empty()).then(|| join(&state.cell)),
        }
    }

    /// One step for a batch: feeds `tokens` (one per row of `state`), updates `state` and writes
    /// the next-token logits `[batch, vocab]` into `logits`.
    ///
    /// # Panics
    /// If the lengths disagree or a token is outside the vocabulary.
    pub fn step(&self, tokens: &[u32], state: &mut HostState, logits: &mut Vec<f32>) {
        self.checked_step(tokens, state, logits, Isa::detect());
    }

    /// [`HostLm::step`] with the target's baseline instructions only, whatever the CPU has: the
    /// path other CPUs take, so that tests on this one cover it too.
    #[doc(hidden)]
    pub fn step_baseline(&self, tokens: &[u32], state: &mut HostState, logits: &mut Vec<f32>) {
        self.checked_step(tokens, state, logits, Isa::Baseline);
    }

    fn checked_step(&self, tokens: &[u32], state: &mut HostState, logits: &mut Vec<f32>, isa: Isa) {
        let batch = state.batch;
        assert_eq!(
            tokens.len(),
            batch,
            "HostLm::step: {} tokens for a state of {batch} rows",
            tokens.len()
        );
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.vocab) {
            panic!(
                "HostLm::step: token id {bad}, expected ids in 0..{} (the vocabulary size)",
                self.vocab
            );
        }
        let per_layer = batch * self.hidden;
        assert!(
            state.hidden.len() == self.layers.len()
                && state.hidden.iter().all(|h| h.len() == per_layer)
                && (self.cell != Cell::Lstm
                    || state.cell.len() == self.layers.len()
                        && state.cell.iter().all(|c| c.len() == per_layer)),
            "HostLm::step: the state does not hold [batch = {batch}, hidden = {}] per layer for \
             {} layers (use begin_state or state_from)",
            self.hidden,
            self.layers.len()
        );
        run(
            isa,
            TokenStep {
                lm: self,
                isa,
                tokens,
                state,
                logits,
            },
        );
    }
}

/// One token per row through every layer and the output layer.
struct TokenStep<'a> {
    lm: &'a HostLm,
    isa: Isa,
    tokens: &'a [u32],
    state: &'a mut HostState,
    logits: &'a mut Vec<f32>,
}

impl Kernel for TokenStep<'_> {
    #[inline(always)]
    fn run<const FMA: bool>(self) {
        let Self {
            lm,
            isa,
            tokens,
            state,
            logits,
        } = self;
        let (batch, h) = (state.batch, lm.hidden);
        let width = lm.cell.gates() * h;
        let mut gates = vec![0.0f32; batch * width];
        let mut previous = vec![0.0f32; batch * h];
        let mut extra = vec![0.0f32; batch * h];
        let mut scratch = StepScratch::new(&lm.layers[0].hidden, batch);
        for (index, layer) in lm.layers.iter().enumerate() {
            match &layer.projection {
                Projection::Table(table) => {
                    for (row, &token) in gates.chunks_exact_mut(width).zip(tokens) {
                        let t = token as usize;
                        row.copy_from_slice(&table[t * width..(t + 1) * width]);
                    }
                }
                Projection::Dense { weight, bias } => {
                    for row in gates.chunks_exact_mut(width) {
                        row.copy_from_slice(bias);
                    }
                    // `previous` still holds the layer below's new state (copied at its end).
                    gemm(isa, &mut gates, width, &previous, h, batch, weight);
                }
            }
            previous.copy_from_slice(&state.hidden[index]);
            let cell: &mut [f32] = match state.cell.get_mut(index) {
                Some(cell) => cell,
                None => &mut [],
            };
            step::<FMA>(
                isa,
                &layer.hidden,
                batch,
                &mut gates,
                &previous,
                cell,
                &mut state.hidden[index],
                &mut extra,
                &mut scratch,
            );
            // The layer above reads this layer's new state (dropout is off at inference).
            previous.copy_from_slice(&state.hidden[index]);
        }
        logits.clear();
        logits.extend(lm.output_bias.iter().cycle().take(batch * lm.vocab));
        let top = state.hidden.last().expect("a core has a layer");
        gemm(isa, logits, lm.vocab, top, h, batch, &lm.output_weight);
    }
}

/// [`rnnlm::sample::generate`] on a host copy of the model: the same choices from the same
/// logits (to float rounding), without a tensor operation per step. The prefixes are warmed up
/// token by token on the host as well.
///
/// # Panics
/// If a prefix is empty, holds an id outside the vocabulary, or `decoding` is invalid.
pub fn generate(
    model: &HostLm,
    prefixes: &[Vec<u32>],
    len: usize,
    decoding: &Decoding,
    on_step: impl FnMut(&[u32]) -> ControlFlow<()>,
) -> Vec<Vec<u32>> {
    if let Err(message) = decoding.validate() {
        panic!("rnnlm_host::generate: {message}");
    }
    assert!(
        !prefixes.is_empty(),
        "rnnlm_host::generate: no prefix given"
    );
    assert!(
        prefixes.iter().all(|p| !p.is_empty()),
        "rnnlm_host::generate: a prefix is empty; give at least one token"
    );
    if len == 0 {
        return vec![Vec::new(); prefixes.len()];
    }
    let batch = prefixes.len();
    let vocab = model.vocab_size();
    // Rows are independent, so each prefix warms up alone (lengths may differ) and the states
    // and last logits are then stacked in prefix order.
    let mut state = model.begin_state(batch);
    let mut first = Vec::with_capacity(batch * vocab);
    let mut logits = Vec::new();
    for (row, prefix) in prefixes.iter().enumerate() {
        let mut alone = model.begin_state(1);
        for &token in prefix {
            model.step(&[token], &mut alone, &mut logits);
        }
        let h = alone.hidden[0].len();
        for (layer, hidden) in alone.hidden.iter().enumerate() {
            state.hidden[layer][row * h..(row + 1) * h].copy_from_slice(hidden);
        }
        for (layer, cell) in alone.cell.iter().enumerate() {
            state.cell[layer][row * h..(row + 1) * h].copy_from_slice(cell);
        }
        first.extend_from_slice(&logits);
    }
    decode(batch, vocab, len, decoding, first, on_step, |step| {
        model.step(step, &mut state, &mut logits);
        logits.clone()
    })
}

/// [`rnnlm::sample::generate`] (Burn tensors on `device`) or [`generate`] (a host copy of the
/// weights, made once per call), as `engine` says.
///
/// # Panics
/// If a prefix is empty, holds an id outside the vocabulary, or `decoding` is invalid.
pub fn generate_with(
    engine: crate::Engine,
    model: &RnnLm,
    prefixes: &[Vec<u32>],
    len: usize,
    decoding: &Decoding,
    device: &Device,
    on_step: impl FnMut(&[u32]) -> ControlFlow<()>,
) -> Vec<Vec<u32>> {
    match engine {
        crate::Engine::Tensor => {
            rnnlm::sample::generate(model, prefixes, len, decoding, device, on_step)
        }
        crate::Engine::Host => generate(&HostLm::new(model), prefixes, len, decoding, on_step),
    }
}
