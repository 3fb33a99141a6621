//! The generation engine: an [`RnnLm`] copied to host memory and stepped one token at a time.

use burn::prelude::*;

use std::ops::ControlFlow;

use rnnlm::sample::{Decoding, decode};
use rnnlm::{RecurrentState, RnnLm};

use std::cell::UnsafeCell;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::cell::{Cell, HiddenWeights, StepScratch, select_units, step};
use crate::math::{Isa, Kernel, PackedB, gemm, run, split};
use crate::weights::{Weights, host};

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

/// An [`RnnLm`] copied to host memory for fast stepping; see the [crate](crate) documentation.
///
/// The units of every layer are split between up to as many threads as the machine has
/// (`RNNLM_THREADS` when set), each computing its units of a layer from the whole state below
/// and meeting the others before the next layer; d2l's GRU, whose candidate needs every unit's
/// reset gate, and layers of fewer than 64 units a thread run on one. The results do not depend
/// on the split: each unit is one thread's sum over the state in a fixed order.
#[derive(Clone, Debug)]
pub struct HostLm {
    cell: Cell,
    vocab: usize,
    hidden: usize,
    layers: usize,
    parts: Vec<Part>,
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
        Self::with_parts(model, crate::train::default_threads())
    }

    /// [`HostLm::new`] with the units split into at most `parts` parts (see [`HostLm`]): for
    /// tests that compare splits.
    #[doc(hidden)]
    pub fn with_parts(model: &RnnLm, parts: usize) -> Self {
        let weights = Weights::read(model);
        let (cell, hidden, vocab) = (weights.cell, weights.hidden, weights.vocab);
        let gates = cell.gates();
        let isa = Isa::detect();
        // At least 64 units a part: below that, meeting at every layer costs more than it saves.
        let parts = if cell == Cell::GruD2l {
            1
        } else {
            parts.clamp(1, (hidden / 64).max(1))
        };
        // The first layer's projection of every token, whole: [vocab, gates · hidden].
        let first = &weights.layers[0];
        let width = gates * hidden;
        let mut table: Vec<f32> = first.input_bias.repeat(vocab);
        match &weights.embedding {
            Some((embedding, dim, _)) => {
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
                            HiddenWeights::new(
                                cell,
                                hidden,
                                &layer.hidden_weight,
                                layer.hidden_bias.clone(),
                                1,
                            )
                        } else {
                            HiddenWeights::units(
                                cell,
                                hidden,
                                &layer.hidden_weight,
                                &layer.hidden_bias,
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
            cell,
            vocab,
            hidden,
            layers: weights.layers.len(),
            parts,
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
        let zeros = || vec![vec![0.0; batch * self.hidden]; self.layers];
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
            (self.layers, self.hidden),
            "HostLm::state_from: state has [num_layers, batch, hidden] = {:?}, expected [{}, batch, {}]",
            state.hidden.dims(),
            self.layers,
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
        let shape = [self.layers, state.batch, self.hidden];
        let join = |parts: &[Vec<f32>]| {
            Tensor::<3>::from_data(TensorData::new(parts.concat(), shape), device)
        };
        RecurrentState {
            hidden: join(&state.hidden),
            cell: (!state.cell.is_empty()).then(|| join(&state.cell)),
        }
    }

    /// One step for a batch: feeds `tokens` (one per row of `state`), updates `state` and writes
    /// the next-token logits `[batch, vocab]` into `logits`. (To run many steps, [`generate`]
    /// keeps the threads up between them.)
    ///
    /// # Panics
    /// If the lengths disagree or a token is outside the vocabulary.
    pub fn step(&self, tokens: &[u32], state: &mut HostState, logits: &mut Vec<f32>) {
        self.with_team(state.batch, Isa::detect(), |team| {
            team.step(tokens, state, logits)
        });
    }

    /// [`HostLm::step`] with the loops compiled for `isa` whatever more the CPU has: the paths
    /// other CPUs take, so that tests on this one cover them.
    ///
    /// # Panics
    /// If this CPU does not run `isa`, or as [`HostLm::step`].
    #[doc(hidden)]
    pub fn step_with(
        &self,
        tokens: &[u32],
        state: &mut HostState,
        logits: &mut Vec<f32>,
        isa: Isa,
    ) {
        assert!(
            isa.supported(),
            "HostLm::step_with: this CPU does not run {isa:?}"
        );
        self.with_team(state.batch, isa, |team| team.step(tokens, state, logits));
    }

    /// Runs `work` with a [`Team`] for `batch` rows: the threads of the other parts wait between
    /// steps until `work` returns.
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

/// A spin barrier for the parts of a step: they meet after every layer (a few microseconds of
/// work for batch 1), too often for a blocking barrier's sleep and wake-up.
struct SpinBarrier {
    parties: usize,
    waiting: AtomicUsize,
    generation: AtomicUsize,
}

impl SpinBarrier {
    fn new(parties: usize) -> Self {
        Self {
            parties,
            waiting: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
        }
    }

    fn wait(&self) {
        if self.parties == 1 {
            return;
        }
        let generation = self.generation.load(Ordering::Acquire);
        if self.waiting.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.waiting.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::AcqRel);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if spins < 20_000 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                // Between tokens the main thread chooses the next one (and the caller may do
                // anything): give the core away rather than spin for long.
                std::thread::yield_now();
            }
        }
    }
}

/// The buffers of one step, shared by the parts: the main thread fills `tokens`, `old` and
/// `cell` before the step starts; between barriers each part writes only its own units (its
/// columns of `new[l]` and `cell[l]`) and reads whole rows only of what the barrier before
/// completed.
struct Team<'a> {
    lm: &'a HostLm,
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
    fn new(lm: &'a HostLm, batch: usize, isa: Isa) -> Self {
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
            cell: if lm.cell == Cell::Lstm {
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
    fn step(&self, tokens: &[u32], state: &mut HostState, logits: &mut Vec<f32>) {
        let (lm, batch) = (self.lm, self.batch);
        assert_eq!(
            tokens.len(),
            batch,
            "HostLm::step: {} tokens for a state of {batch} rows",
            tokens.len()
        );
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= lm.vocab) {
            panic!(
                "HostLm::step: token id {bad}, expected ids in 0..{} (the vocabulary size)",
                lm.vocab
            );
        }
        let per_layer = batch * lm.hidden;
        assert!(
            state.batch == batch
                && state.hidden.len() == lm.layers
                && state.hidden.iter().all(|h| h.len() == per_layer)
                && (lm.cell != Cell::Lstm
                    || state.cell.len() == lm.layers
                        && state.cell.iter().all(|c| c.len() == per_layer)),
            "HostLm::step: the state does not hold [batch = {batch}, hidden = {}] per layer for \
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
    step: StepScratch,
}

impl PartScratch {
    fn new(lm: &HostLm, part: usize, batch: usize) -> Self {
        let share = lm.parts[part].units.len();
        Self {
            gates: vec![0.0; batch * lm.cell.gates() * share],
            h_prev_units: vec![0.0; batch * share],
            cell_units: vec![
                0.0;
                if lm.cell == Cell::Lstm {
                    batch * share
                } else {
                    0
                }
            ],
            out_units: vec![0.0; batch * share],
            extra_units: vec![0.0; batch * share],
            step: StepScratch::new(&lm.parts[part].layers[0].hidden, batch),
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
        step::<FMA>(
            isa,
            &weights.hidden,
            batch,
            &mut scratch.gates,
            old,
            &scratch.h_prev_units,
            &mut scratch.cell_units,
            &mut scratch.out_units,
            &mut scratch.extra_units,
            &mut scratch.step,
        );
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
    let isa = Isa::detect();
    // Rows are independent, so each prefix warms up alone (lengths may differ) and the states
    // and last logits are then stacked in prefix order.
    let mut state = model.begin_state(batch);
    let mut first = Vec::with_capacity(batch * vocab);
    let mut logits = Vec::new();
    model.with_team(1, isa, |team| {
        for (row, prefix) in prefixes.iter().enumerate() {
            let mut alone = model.begin_state(1);
            for &token in prefix {
                team.step(&[token], &mut alone, &mut logits);
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
    });
    model.with_team(batch, isa, |team| {
        decode(batch, vocab, len, decoding, first, on_step, |step| {
            team.step(step, &mut state, &mut logits);
            logits.clone()
        })
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
