//! The generation engine: a stack of recurrent layers with an input table and an output layer,
//! on a host copy of the weights, stepped one token at a time.
//!
//! Through tensors, a generation step is a dozen small operations per layer, each with its
//! allocation and dispatch; here a token's input projection is a row of a table computed once,
//! and a step costs one product per layer and the output layer. The units of every layer are
//! split between threads that stay up for the whole text (each part's weights stay in its
//! core's cache from one token to the next) and meet at a spin barrier after each layer.

use std::cell::UnsafeCell;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cell::{Cell, CellKind, ForwardStep, HiddenWeights, Scratch, select_units};
use crate::gemm::{PackedB, gemm};
use crate::math::{Isa, Kernel, run};
use crate::shared::{SpinBarrier, split};

/// The weights of a stack of layers with its input and output, row-major, as a language model
/// holds them; what [`Decoder::new`] packs.
#[derive(Clone, Debug)]
pub struct StackWeights {
    /// The recurrence of every layer.
    pub cell: CellKind,
    /// Units of every layer.
    pub hidden: usize,
    /// Tokens in the vocabulary: the width of a row of logits, and of the one-hot input.
    pub vocab: usize,
    /// The layers, input side first.
    pub layers: Vec<LayerWeights>,
    /// An embedding table `[vocab, dim]` and `dim` in front of the first layer; `None` for
    /// one-hot tokens (the first layer's `W_x` is then `[vocab, gates·hidden]`).
    pub embedding: Option<(Vec<f32>, usize)>,
    /// `W_q` `[hidden, vocab]`.
    pub output_weight: Vec<f32>,
    /// `b_q` `[vocab]`.
    pub output_bias: Vec<f32>,
}

/// One layer's weights.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    /// `W_x` `[input, gates·hidden]`.
    pub input_weight: Vec<f32>,
    /// Everything added to the input projection, `[gates·hidden]` (the LSTM's two biases
    /// summed).
    pub input_bias: Vec<f32>,
    /// `W_h` `[hidden, gates·hidden]`.
    pub hidden_weight: Vec<f32>,
    /// PyTorch's GRU: `b_hh` `[gates·hidden]`; empty otherwise.
    pub hidden_bias: Vec<f32>,
}

/// How a layer's input projection `[batch, width]` is formed (for a part's units).
#[derive(Clone, Debug)]
enum Projection {
    /// First layer: a table `[vocab, width]` holding each token's projection with the input
    /// biases added (for a model with an embedding, `embedding · W_x + b`).
    Table(Vec<f32>),
    /// Layers above: the layer below's output times `W_x` `[hidden, width]`, plus `b`.
    Dense { weight: PackedB, bias: Vec<f32> },
}

/// A layer's weights for the units of one part.
#[derive(Clone, Debug)]
struct PartLayer {
    projection: Projection,
    hidden: HiddenWeights,
}

/// A contiguous share of every layer's units and the weights that compute them: one thread's
/// work in a step. Its weights (for the chapter's 2-layer LSTM, half of 3 MB) stay in that
/// core's cache from one token to the next, where all of them would not.
#[derive(Clone, Debug)]
struct Part {
    units: Range<usize>,
    layers: Vec<PartLayer>,
}

/// A [`StackWeights`] packed for stepping (see the [module](self) documentation).
///
/// The units of every layer are split between up to as many threads as the machine has
/// (`RNNLM_THREADS` when set), each computing its units of a layer from the whole state below
/// and meeting the others before the next layer; d2l's GRU, whose candidate needs every unit's
/// reset gate, and layers of fewer than 64 units a thread run on one. The results do not depend
/// on the split: each unit is one thread's sum over the state in a fixed order.
#[derive(Clone, Debug)]
pub struct Decoder {
    cell: CellKind,
    vocab: usize,
    hidden: usize,
    layers: usize,
    parts: Vec<Part>,
    /// `W_hq` `[hidden, vocab]`.
    output_weight: PackedB,
    /// `b_q` `[vocab]`.
    output_bias: Vec<f32>,
}

/// The recurrent state of a batch: `hidden[l]` (and `cell[l]` for an LSTM) is
/// `[batch, hidden]`, row-major, for layer `l`.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeState {
    /// Rows in the batch.
    pub batch: usize,
    /// Per layer, `[batch, hidden]`.
    pub hidden: Vec<Vec<f32>>,
    /// Per layer, `[batch, hidden]`; empty unless the core is an LSTM.
    pub cell: Vec<Vec<f32>>,
}

impl Decoder {
    /// Packs `weights`, with the units split between [`crate::threads`] threads. The first
    /// layer's table is computed here once: `W_x + b` for one-hot tokens, `embedding · W_x + b`
    /// `[vocab, gates·hidden]` with an embedding.
    ///
    /// # Panics
    /// If the weights' lengths do not fit their sizes.
    pub fn new(weights: &StackWeights) -> Self {
        Self::with_parts(weights, crate::threads())
    }

    /// [`Decoder::new`] with the units split into at most `parts` parts: for tests that compare
    /// splits.
    #[doc(hidden)]
    pub fn with_parts(weights: &StackWeights, parts: usize) -> Self {
        crate::dispatch!(weights.cell, |cell| Self::for_cell(cell, weights, parts))
    }

    fn for_cell<C: Cell>(cell: C, weights: &StackWeights, parts: usize) -> Self {
        let (hidden, vocab) = (weights.hidden, weights.vocab);
        let gates = C::GATES;
        let width = gates * hidden;
        check_weights(weights, width);
        let isa = Isa::detect();
        // At least 64 units a part: below that, meeting at every layer costs more than it saves.
        let parts = if C::SPLITS_UNITS {
            parts.clamp(1, (hidden / 64).max(1))
        } else {
            1
        };
        // The first layer's projection of every token, whole: [vocab, gates · hidden].
        let first = &weights.layers[0];
        let mut table: Vec<f32> = first.input_bias.repeat(vocab);
        match &weights.embedding {
            Some((embedding, dim)) => {
                let weight = PackedB::new(&first.input_weight, *dim, width, width);
                gemm(isa, &mut table, width, embedding, *dim, vocab, &weight);
            }
            None => {
                for (row, x) in table.iter_mut().zip(&first.input_weight) {
                    *row += x;
                }
            }
        }
        let parts = (0..parts)
            .map(|part| {
                let units = split(hidden, parts, part);
                let all = units.len() == hidden;
                let share = |m: &[f32]| select_units(m, hidden, gates, &units);
                let layers = weights
                    .layers
                    .iter()
                    .enumerate()
                    .map(|(index, layer)| {
                        let sub_width = gates * units.len();
                        let projection = if index == 0 {
                            Projection::Table(share(&table))
                        } else {
                            Projection::Dense {
                                weight: PackedB::new(
                                    &share(&layer.input_weight),
                                    hidden,
                                    sub_width,
                                    sub_width,
                                ),
                                bias: share(&layer.input_bias),
                            }
                        };
                        let hidden_weights = if all {
                            cell.pack(&layer.hidden_weight, &layer.hidden_bias, hidden, 1)
                        } else {
                            cell.pack_units(
                                &layer.hidden_weight,
                                &layer.hidden_bias,
                                hidden,
                                units.clone(),
                            )
                        };
                        PartLayer {
                            projection,
                            hidden: hidden_weights,
                        }
                    })
                    .collect();
                Part { units, layers }
            })
            .collect();
        Self {
            cell: weights.cell,
            vocab,
            hidden,
            layers: weights.layers.len(),
            parts,
            output_weight: PackedB::new(&weights.output_weight, hidden, vocab, vocab),
            output_bias: weights.output_bias.clone(),
        }
    }

    /// Vocabulary size: the width of a row of logits.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// A zero state for `batch` rows.
    pub fn begin_state(&self, batch: usize) -> DecodeState {
        let zeros = || vec![vec![0.0; batch * self.hidden]; self.layers];
        DecodeState {
            batch,
            hidden: zeros(),
            cell: if self.cell.has_cell() {
                zeros()
            } else {
                Vec::new()
            },
        }
    }

    /// Units of every layer.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers
    }

    /// One step for a batch: feeds `tokens` (one per row of `state`), updates `state` and writes
    /// the next-token logits `[batch, vocab]` into `logits`. (To run many steps,
    /// [`Decoder::session`] keeps the threads up between them.)
    ///
    /// # Panics
    /// If the lengths disagree or a token is outside the vocabulary.
    pub fn step(&self, tokens: &[u32], state: &mut DecodeState, logits: &mut Vec<f32>) {
        self.session(state.batch, |session| session.step(tokens, state, logits));
    }

    /// [`Decoder::step`] with the loops compiled for `isa` whatever more the CPU has: the paths
    /// other CPUs take, so that tests on this one cover them.
    ///
    /// # Panics
    /// If this CPU does not run `isa`, or as [`Decoder::step`].
    #[doc(hidden)]
    pub fn step_with(
        &self,
        tokens: &[u32],
        state: &mut DecodeState,
        logits: &mut Vec<f32>,
        isa: Isa,
    ) {
        assert!(
            isa.supported(),
            "Decoder::step_with: this CPU does not run {isa:?}"
        );
        self.with_team(state.batch, isa, |team| team.step(tokens, state, logits));
    }

    /// Warms up on every prefix, token by token: the state after each (batch rows in prefix
    /// order; the lengths may differ, since rows are independent) and the logits after each
    /// prefix's last token, `[batch, vocab]`.
    ///
    /// # Panics
    /// If a prefix is empty or holds a token outside the vocabulary.
    pub fn warm_up(&self, prefixes: &[Vec<u32>]) -> (DecodeState, Vec<f32>) {
        assert!(
            prefixes.iter().all(|p| !p.is_empty()),
            "Decoder::warm_up: a prefix is empty; give at least one token"
        );
        let batch = prefixes.len();
        let mut state = self.begin_state(batch);
        let mut last = Vec::with_capacity(batch * self.vocab);
        let mut logits = Vec::new();
        self.session(1, |session| {
            for (row, prefix) in prefixes.iter().enumerate() {
                let mut alone = self.begin_state(1);
                for &token in prefix {
                    session.step(&[token], &mut alone, &mut logits);
                }
                let h = self.hidden;
                for (layer, hidden) in alone.hidden.iter().enumerate() {
                    state.hidden[layer][row * h..(row + 1) * h].copy_from_slice(hidden);
                }
                for (layer, cell) in alone.cell.iter().enumerate() {
                    state.cell[layer][row * h..(row + 1) * h].copy_from_slice(cell);
                }
                last.extend_from_slice(&logits);
            }
        });
        (state, last)
    }

    /// Runs `work` with a [`Session`] of steps for `batch` rows: the threads of the other parts
    /// stay up, waiting at the barrier between steps, until `work` returns.
    pub fn session<R>(&self, batch: usize, work: impl FnOnce(&Session<'_, '_>) -> R) -> R {
        self.with_team(batch, Isa::detect(), |team| work(&Session(team)))
    }

    fn with_team<R>(&self, batch: usize, isa: Isa, work: impl FnOnce(&Team<'_>) -> R) -> R {
        let team = Team::new(self, batch, isa);
        // The helpers are released even if `work` panics.
        struct Finish<'a, 'b>(&'a Team<'b>);
        impl Drop for Finish<'_, '_> {
            fn drop(&mut self) {
                self.0.finish();
            }
        }
        crate::pool::run_beside(
            self.parts.len(),
            || {
                let _finish = Finish(&team);
                work(&team)
            },
            &|part| team.serve(part),
        )
    }
}

/// Steps of a [`Decoder`] for a fixed batch, the threads kept up between them.
pub struct Session<'t, 'a>(&'t Team<'a>);

impl Session<'_, '_> {
    /// One step: as [`Decoder::step`], for a state of the session's batch.
    ///
    /// # Panics
    /// If the lengths disagree or a token is outside the vocabulary.
    pub fn step(&self, tokens: &[u32], state: &mut DecodeState, logits: &mut Vec<f32>) {
        self.0.step(tokens, state, logits);
    }
}

/// The buffers of one step, shared by the parts: the main thread fills `tokens`, `old` and
/// `cell` before the step starts; between barriers each part writes only its own units (its
/// columns of `new[l]` and `cell[l]`) and reads whole rows only of what the barrier before
/// completed.
struct Team<'a> {
    lm: &'a Decoder,
    batch: usize,
    isa: Isa,
    barrier: SpinBarrier,
    done: AtomicBool,
    tokens: Buffer<u32>,
    /// Per layer, `h` before the step `[batch, hidden]`.
    old: Vec<Buffer<f32>>,
    /// Per layer, `h` after the step.
    new: Vec<Buffer<f32>>,
    /// Per layer (LSTM), `c`, each part updating its units in place.
    cell: Vec<Buffer<f32>>,
}

/// A buffer written by several threads in disjoint places between barriers.
struct Buffer<T>(UnsafeCell<Vec<T>>);

// SAFETY: every access follows the protocol of `Team`: disjoint writes between barriers, reads
// of a region only after the barrier that completed it.
unsafe impl<T: Send> Sync for Buffer<T> {}

impl<T: Copy + Default> Buffer<T> {
    fn new(len: usize) -> Self {
        Self(UnsafeCell::new(vec![T::default(); len]))
    }

    fn ptr(&self) -> *mut T {
        // SAFETY: the Vec itself is never resized after creation; only elements are accessed.
        unsafe { (*self.0.get()).as_mut_ptr() }
    }

    fn len(&self) -> usize {
        // SAFETY: as above.
        unsafe { (*self.0.get()).len() }
    }

    /// The whole buffer for reading.
    ///
    /// # Safety
    /// No thread may write any of it meanwhile.
    unsafe fn read(&self) -> &[T] {
        // SAFETY: forwarded from the caller.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len()) }
    }

    /// The whole buffer for writing.
    ///
    /// # Safety
    /// No other thread may touch any of it meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn write(&self) -> &mut [T] {
        // SAFETY: forwarded from the caller.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len()) }
    }
}

impl<'a> Team<'a> {
    fn new(lm: &'a Decoder, batch: usize, isa: Isa) -> Self {
        let state = || {
            (0..lm.layers)
                .map(|_| Buffer::new(batch * lm.hidden))
                .collect()
        };
        Self {
            lm,
            batch,
            isa,
            barrier: SpinBarrier::new(lm.parts.len()),
            done: AtomicBool::new(false),
            tokens: Buffer::new(batch),
            old: state(),
            new: state(),
            cell: if lm.cell.has_cell() {
                state()
            } else {
                Vec::new()
            },
        }
    }

    /// A helper's loop: wait for a step (or the end), compute this part of every layer.
    fn serve(&self, part: usize) {
        let mut scratch = PartScratch::new(self.lm, part, self.batch);
        loop {
            self.barrier.wait();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            self.layers(part, &mut scratch);
        }
    }

    /// Releases the helpers waiting for a step.
    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.barrier.wait();
    }

    /// Every layer for this part's units, meeting the other parts after each.
    fn layers(&self, part: usize, scratch: &mut PartScratch) {
        for layer in 0..self.lm.layers {
            run(
                self.isa,
                PartStep {
                    team: self,
                    part,
                    layer,
                    scratch: &mut *scratch,
                },
            );
            self.barrier.wait();
        }
    }

    /// One token per row of `state` through every layer and the output layer (the main thread's
    /// side: part 0).
    fn step(&self, tokens: &[u32], state: &mut DecodeState, logits: &mut Vec<f32>) {
        let (lm, batch) = (self.lm, self.batch);
        assert_eq!(
            tokens.len(),
            batch,
            "Decoder::step: {} tokens for a state of {batch} rows",
            tokens.len()
        );
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= lm.vocab) {
            panic!(
                "Decoder::step: token id {bad}, expected ids in 0..{} (the vocabulary size)",
                lm.vocab
            );
        }
        let per_layer = batch * lm.hidden;
        assert!(
            state.batch == batch
                && state.hidden.len() == lm.layers
                && state.hidden.iter().all(|h| h.len() == per_layer)
                && (!lm.cell.has_cell()
                    || state.cell.len() == lm.layers
                        && state.cell.iter().all(|c| c.len() == per_layer)),
            "Decoder::step: the state does not hold [batch = {batch}, hidden = {}] per layer for \
             {} layers (use begin_state or state_from)",
            lm.hidden,
            lm.layers
        );
        // SAFETY: between steps no helper touches the buffers (they wait at the barrier).
        unsafe {
            self.tokens.write().copy_from_slice(tokens);
            for (buffer, h) in self.old.iter().zip(&state.hidden) {
                buffer.write().copy_from_slice(h);
            }
            for (buffer, c) in self.cell.iter().zip(&state.cell) {
                buffer.write().copy_from_slice(c);
            }
        }
        let mut scratch = PartScratch::new(lm, 0, batch);
        self.barrier.wait();
        self.layers(0, &mut scratch);
        // Every part has passed the last layer's barrier and waits for the next step.
        // SAFETY: as above.
        unsafe {
            for (h, buffer) in state.hidden.iter_mut().zip(&self.new) {
                h.copy_from_slice(buffer.read());
            }
            for (c, buffer) in state.cell.iter_mut().zip(&self.cell) {
                c.copy_from_slice(buffer.read());
            }
        }
        logits.clear();
        logits.extend(lm.output_bias.iter().cycle().take(batch * lm.vocab));
        let top = state.hidden.last().expect("a core has a layer");
        gemm(
            self.isa,
            logits,
            lm.vocab,
            top,
            lm.hidden,
            batch,
            &lm.output_weight,
        );
    }
}

/// One part's work space for a step: its units' slices of the gates, states and scratch.
struct PartScratch {
    gates: Vec<f32>,
    h_prev_units: Vec<f32>,
    cell_units: Vec<f32>,
    out_units: Vec<f32>,
    extra_units: Vec<f32>,
    step: Scratch,
}

impl PartScratch {
    fn new(lm: &Decoder, part: usize, batch: usize) -> Self {
        let share = lm.parts[part].units.len();
        Self {
            gates: vec![0.0; batch * lm.cell.gates() * share],
            h_prev_units: vec![0.0; batch * share],
            cell_units: vec![0.0; if lm.cell.has_cell() { batch * share } else { 0 }],
            out_units: vec![0.0; batch * share],
            extra_units: vec![0.0; batch * share],
            step: Scratch::default(),
        }
    }
}

/// One part's units of one layer: project, step, write its columns of `h` (and `c`).
struct PartStep<'t, 'a> {
    team: &'t Team<'a>,
    part: usize,
    layer: usize,
    scratch: &'t mut PartScratch,
}

impl Kernel for PartStep<'_, '_> {
    #[inline(always)]
    fn run<const FMA: bool>(self) {
        let Self {
            team,
            part,
            layer,
            scratch,
        } = self;
        let (lm, batch, isa) = (team.lm, team.batch, team.isa);
        let (h, units) = (lm.hidden, lm.parts[part].units.clone());
        let share = units.len();
        let weights = &lm.parts[part].layers[layer];
        let width = lm.cell.gates() * share;
        // SAFETY (reads): `tokens` and `old` are written only between steps; `new[layer - 1]`
        // was completed by the barrier before this layer. Writes: only this part's columns of
        // `new[layer]` and `cell[layer]`, which no other part reads or writes in this layer.
        let (tokens, old) = unsafe { (team.tokens.read(), team.old[layer].read()) };
        match &weights.projection {
            Projection::Table(table) => {
                for (row, &token) in scratch.gates.chunks_exact_mut(width).zip(tokens) {
                    let t = token as usize;
                    row.copy_from_slice(&table[t * width..(t + 1) * width]);
                }
            }
            Projection::Dense { weight, bias } => {
                for row in scratch.gates.chunks_exact_mut(width) {
                    row.copy_from_slice(bias);
                }
                // SAFETY: see above.
                let below = unsafe { team.new[layer - 1].read() };
                gemm(isa, &mut scratch.gates, width, below, h, batch, weight);
            }
        }
        let gather = |from: &[f32], to: &mut [f32]| {
            for (dst, src) in to.chunks_exact_mut(share).zip(from.chunks_exact(h)) {
                dst.copy_from_slice(&src[units.clone()]);
            }
        };
        gather(old, &mut scratch.h_prev_units);
        let cell_ptr = team.cell.get(layer).map(|c| c.ptr());
        if let Some(cell) = cell_ptr {
            // SAFETY: this part's columns of `cell[layer]` are its own in this layer.
            let cell = unsafe { std::slice::from_raw_parts(cell, batch * h) };
            gather(cell, &mut scratch.cell_units);
        }
        let step = ForwardStep {
            gates: &mut scratch.gates,
            h_prev: old,
            h_prev_units: &scratch.h_prev_units,
            cell: &mut scratch.cell_units,
            h: &mut scratch.out_units,
            extra: &mut scratch.extra_units,
        };
        crate::dispatch!(lm.cell, |cell| cell.forward::<FMA>(
            isa,
            &weights.hidden,
            batch,
            step,
            &mut scratch.step
        ));
        let scatter = |from: &[f32], to: *mut f32| {
            for (b, src) in from.chunks_exact(share).enumerate() {
                // SAFETY: row b's columns `units` of a [batch, h] buffer belong to this part.
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(to.add(b * h + units.start), share) };
                dst.copy_from_slice(src);
            }
        };
        scatter(&scratch.out_units, team.new[layer].ptr());
        if let Some(cell) = cell_ptr {
            scatter(&scratch.cell_units, cell);
        }
    }
}

/// Panics, naming the weight, unless every length fits the sizes.
fn check_weights(weights: &StackWeights, width: usize) {
    let StackWeights { hidden, vocab, .. } = *weights;
    assert!(!weights.layers.is_empty(), "StackWeights: no layer");
    let expect = |what: String, len: usize, expected: usize, shape: String| {
        assert_eq!(
            len, expected,
            "StackWeights: {what} holds {len} values, expected {shape} = {expected}"
        );
    };
    let first_input = match &weights.embedding {
        Some((table, dim)) => {
            expect(
                "embedding".into(),
                table.len(),
                vocab * dim,
                format!("[vocab, dim] = [{vocab}, {dim}]"),
            );
            *dim
        }
        None => vocab,
    };
    for (l, layer) in weights.layers.iter().enumerate() {
        let input = if l == 0 { first_input } else { hidden };
        expect(
            format!("layers[{l}].input_weight"),
            layer.input_weight.len(),
            input * width,
            format!("[{input}, {width}]"),
        );
        expect(
            format!("layers[{l}].input_bias"),
            layer.input_bias.len(),
            width,
            format!("[{width}]"),
        );
        expect(
            format!("layers[{l}].hidden_weight"),
            layer.hidden_weight.len(),
            hidden * width,
            format!("[{hidden}, {width}]"),
        );
        if !layer.hidden_bias.is_empty() {
            expect(
                format!("layers[{l}].hidden_bias"),
                layer.hidden_bias.len(),
                width,
                format!("[{width}]"),
            );
        }
    }
    expect(
        "output_weight".into(),
        weights.output_weight.len(),
        hidden * vocab,
        format!("[{hidden}, {vocab}]"),
    );
    expect(
        "output_bias".into(),
        weights.output_bias.len(),
        vocab,
        format!("[{vocab}]"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Activation;
    use crate::cell::KINDS;
    use crate::scan::{self, Plan, Projected, ScanInputs, ScanShape};
    use crate::test_support::{isas, values};

    /// `a [rows, inner] · b [inner, cols]`, the plain triple loop.
    fn matmul(a: &[f32], b: &[f32], rows: usize, inner: usize, cols: usize) -> Vec<f32> {
        let mut out = vec![0.0; rows * cols];
        for r in 0..rows {
            for k in 0..inner {
                let x = a[r * inner + k];
                for c in 0..cols {
                    out[r * cols + c] += x * b[k * cols + c];
                }
            }
        }
        out
    }

    fn stack(
        kind: CellKind,
        hidden: usize,
        layers: usize,
        embedding: Option<usize>,
    ) -> StackWeights {
        let (vocab, width) = (13, kind.gates() * hidden);
        // ReLU grows without a bound: keep its weights small.
        let scale = if matches!(kind, CellKind::Rnn(Activation::Relu, _)) {
            0.15
        } else {
            0.5
        };
        let first_input = embedding.unwrap_or(vocab);
        StackWeights {
            cell: kind,
            hidden,
            vocab,
            layers: (0..layers)
                .map(|l| {
                    let input = if l == 0 { first_input } else { hidden };
                    let seed = 10 * l as u64;
                    LayerWeights {
                        input_weight: values(input * width, seed + 1, scale),
                        input_bias: values(width, seed + 2, 0.3),
                        hidden_weight: values(hidden * width, seed + 3, scale),
                        hidden_bias: if kind.has_hidden_bias() {
                            values(width, seed + 4, 0.3)
                        } else {
                            Vec::new()
                        },
                    }
                })
                .collect(),
            embedding: embedding.map(|dim| (values(vocab * dim, 99, 1.0), dim)),
            output_weight: values(hidden * vocab, 98, 0.5),
            output_bias: values(vocab, 97, 0.2),
        }
    }

    /// Every step's logits `[steps, batch, vocab]` and the final state, by the scan of each
    /// layer over the whole sequence and plain products: the reference a decoder must equal.
    fn reference(weights: &StackWeights, tokens: &[Vec<u32>]) -> (Vec<f32>, DecodeState) {
        let (steps, batch) = (tokens.len(), tokens[0].len());
        let (hidden, vocab) = (weights.hidden, weights.vocab);
        let width = weights.cell.gates() * hidden;
        let mut below: Vec<f32> = tokens
            .iter()
            .flatten()
            .flat_map(|&t| match &weights.embedding {
                Some((table, dim)) => table[t as usize * dim..(t as usize + 1) * dim].to_vec(),
                None => (0..vocab)
                    .map(|v| f32::from(u8::from(v == t as usize)))
                    .collect(),
            })
            .collect();
        let mut input = weights.embedding.as_ref().map_or(vocab, |(_, dim)| *dim);
        let mut state = DecodeState {
            batch,
            hidden: Vec::new(),
            cell: Vec::new(),
        };
        for layer in &weights.layers {
            let projected = matmul(&below, &layer.input_weight, steps * batch, input, width);
            let zeros = vec![0.0; batch * hidden];
            let out = scan::forward(
                weights.cell,
                ScanShape {
                    steps,
                    batch,
                    hidden,
                },
                Projected::Borrowed(&projected),
                ScanInputs {
                    input_bias: &layer.input_bias,
                    h0: &zeros,
                    c0: if weights.cell.has_cell() { &zeros } else { &[] },
                    weight: &layer.hidden_weight,
                    hidden_bias: &layer.hidden_bias,
                    order: Default::default(),
                },
                false,
                Plan::default(),
            );
            let block = batch * hidden;
            let every_h = &out.output[..steps * block];
            state
                .hidden
                .push(out.output[steps * block..(steps + 1) * block].to_vec());
            if weights.cell.has_cell() {
                state.cell.push(out.output[(steps + 1) * block..].to_vec());
            }
            below = every_h.to_vec();
            input = hidden;
        }
        let mut logits = matmul(&below, &weights.output_weight, steps * batch, hidden, vocab);
        for row in logits.chunks_exact_mut(vocab) {
            for (x, b) in row.iter_mut().zip(&weights.output_bias) {
                *x += b;
            }
        }
        (logits, state)
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Token columns `[steps][batch]` from a fixed pattern.
    fn tokens(steps: usize, batch: usize) -> Vec<Vec<u32>> {
        (0..steps)
            .map(|t| {
                (0..batch)
                    .map(|b| ((t * 5 + b * 3 + 1) % 13) as u32)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn steps_equal_the_scan_of_every_layer() {
        let supported = isas();
        for kind in KINDS {
            for (layers, embedding) in [(1, None), (3, None), (2, Some(5))] {
                let weights = stack(kind, 21, layers, embedding);
                let columns = tokens(6, 3);
                let (want, want_state) = reference(&weights, &columns);
                let decoder = Decoder::new(&weights);
                for &isa in &supported {
                    let name = format!("{kind:?}, {layers} layers, {embedding:?} ({isa:?})");
                    let mut state = decoder.begin_state(3);
                    let mut logits = Vec::new();
                    for (t, column) in columns.iter().enumerate() {
                        decoder.step_with(column, &mut state, &mut logits, isa);
                        let expected = &want[t * 3 * 13..(t + 1) * 3 * 13];
                        let diff = max_diff(&logits, expected);
                        assert!(diff < 2e-5, "{name}: step {t}: logits differ by {diff}");
                    }
                    for (l, (h, want)) in state.hidden.iter().zip(&want_state.hidden).enumerate() {
                        let diff = max_diff(h, want);
                        assert!(diff < 2e-5, "{name}: layer {l}: h differs by {diff}");
                    }
                    for (l, (c, want)) in state.cell.iter().zip(&want_state.cell).enumerate() {
                        let diff = max_diff(c, want);
                        assert!(diff < 2e-5, "{name}: layer {l}: c differs by {diff}");
                    }
                }
            }
        }
    }

    #[test]
    fn warm_up_runs_every_prefix_alone() {
        let weights = stack(CellKind::Lstm(crate::cell::Clip::NONE), 16, 2, None);
        let decoder = Decoder::new(&weights);
        let prefixes = vec![vec![1, 2, 3], vec![4], vec![12, 0, 5, 5, 9]];
        let (state, logits) = decoder.warm_up(&prefixes);
        for (row, prefix) in prefixes.iter().enumerate() {
            let columns: Vec<Vec<u32>> = prefix.iter().map(|&t| vec![t]).collect();
            let (want, want_state) = reference(&weights, &columns);
            let last = &want[(prefix.len() - 1) * 13..];
            assert!(
                max_diff(&logits[row * 13..(row + 1) * 13], last) < 2e-5,
                "row {row}"
            );
            for (h, want) in state.hidden.iter().zip(&want_state.hidden) {
                assert!(
                    max_diff(&h[row * 16..(row + 1) * 16], want) < 2e-5,
                    "row {row}"
                );
            }
        }
    }

    #[test]
    fn splitting_the_units_between_threads_changes_no_bit() {
        // 192 units: up to three parts of 64; d2l's GRU always runs as one.
        for kind in KINDS {
            let weights = stack(kind, 192, 2, None);
            let runs: Vec<(Vec<f32>, DecodeState)> = [1, 2, 3]
                .into_iter()
                .map(|parts| {
                    let decoder = Decoder::with_parts(&weights, parts);
                    let mut state = decoder.begin_state(2);
                    let mut logits = Vec::new();
                    decoder.session(2, |session| {
                        for column in tokens(5, 2) {
                            session.step(&column, &mut state, &mut logits);
                        }
                    });
                    (logits, state)
                })
                .collect();
            assert!(
                runs[1] == runs[0] && runs[2] == runs[0],
                "{kind:?}: the splits differ"
            );
        }
    }

    #[test]
    #[should_panic(
        expected = "Decoder::step: token id 13, expected ids in 0..13 (the vocabulary size)"
    )]
    fn a_token_outside_the_vocabulary_is_named() {
        let decoder = Decoder::new(&stack(CellKind::Gru(crate::cell::Clip::NONE), 8, 1, None));
        let mut state = decoder.begin_state(2);
        decoder.step(&[1, 13], &mut state, &mut Vec::new());
    }

    #[test]
    #[should_panic(expected = "Decoder::step: 1 tokens for a state of 2 rows")]
    fn a_batch_mismatch_is_named() {
        let decoder = Decoder::new(&stack(
            CellKind::Rnn(Activation::Tanh, crate::cell::Clip::NONE),
            8,
            1,
            None,
        ));
        let mut state = decoder.begin_state(2);
        decoder.step(&[1], &mut state, &mut Vec::new());
    }

    #[test]
    #[should_panic(
        expected = "StackWeights: layers[1].hidden_weight holds 63 values, expected [8, 8] = 64"
    )]
    fn weights_of_the_wrong_length_are_named() {
        let mut weights = stack(
            CellKind::Rnn(Activation::Tanh, crate::cell::Clip::NONE),
            8,
            2,
            None,
        );
        weights.layers[1].hidden_weight.pop();
        Decoder::new(&weights);
    }
}
