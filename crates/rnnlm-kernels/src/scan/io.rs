//! What a scan takes and gives: its shape and plan, its inputs, outputs, tape and gradients,
//! shared by the row loops (`scan/mod.rs`) and the unit split (`scan/units.rs`).

use crate::math::Isa;
use crate::order::Order;
use crate::shared::SharedMut;

/// The sizes of one layer's scan: `steps` time steps of `batch` rows of `hidden` units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanShape {
    /// Time steps.
    pub steps: usize,
    /// Rows per step (independent sequences).
    pub batch: usize,
    /// Units of the layer.
    pub hidden: usize,
}

impl ScanShape {
    pub(crate) fn rows(self) -> usize {
        self.steps * self.batch
    }
}

/// How a scan runs: on how many threads, with loops compiled for which instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Threads (at most one per batch row is used).
    pub threads: usize,
    /// The instruction set of the loops ([`Isa::detect`], or less for tests).
    pub isa: Isa,
}

impl Default for Plan {
    /// [`crate::threads`] threads and the best instruction set of this CPU.
    fn default() -> Self {
        Self {
            threads: crate::threads(),
            isa: Isa::detect(),
        }
    }
}

/// The input projection of every step without its bias, `[steps · batch, gates·hidden]`,
/// row-major and time-major (row `t · batch + b`).
#[derive(Debug)]
pub enum Projected<'a> {
    /// Read; the gates are written to a buffer of their own.
    Borrowed(&'a [f32]),
    /// Handed over: the gates are computed in place, and the buffer becomes the tape's gates
    /// (no second buffer of the same size, and half the memory traffic).
    Owned(Vec<f32>),
}

impl Projected<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Projected::Borrowed(values) => values.len(),
            Projected::Owned(values) => values.len(),
        }
    }
}

/// What a layer's forward scan reads besides the projection, all row-major.
#[derive(Clone, Copy, Debug)]
pub struct ScanInputs<'a> {
    /// The bias added to every row of the projection, `[gates·hidden]` (empty: none).
    pub input_bias: &'a [f32],
    /// The initial state `h_0`, `[batch, hidden]`.
    pub h0: &'a [f32],
    /// The LSTM's initial cell `c_0`, `[batch, hidden]`; empty for the other cells.
    pub c0: &'a [f32],
    /// The hidden weight `W_h`, `[hidden, gates·hidden]`.
    pub weight: &'a [f32],
    /// PyTorch's GRU: `b_hh`, `[gates·hidden]` (empty: none); empty for the other cells.
    pub hidden_bias: &'a [f32],
    /// The order of the steps and the rows' lengths.
    pub order: Order<'a>,
}

/// What a forward scan gives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanOutput {
    /// `h_t` of every step `t` (zero past a row's length), then every row's final `h` and
    /// (LSTM) final `c`: `[steps + 1 (+ 1), batch, hidden]`.
    pub output: Vec<f32>,
    /// Tape: the gate activations `[steps · batch, gates·hidden]` (empty when no tape was kept,
    /// and for the RNN, which needs none).
    pub gates: Vec<f32>,
    /// Tape: the cell's extra block per step, `[steps · batch, hidden]` (empty when no tape was
    /// kept, and for the RNN).
    pub extra: Vec<f32>,
}

/// What a backward scan reads: the forward scan's inputs and outputs, with its tape.
#[derive(Clone, Copy, Debug)]
pub struct ScanTape<'a> {
    /// `h_0`, `[batch, hidden]`.
    pub h0: &'a [f32],
    /// The LSTM's `c_0`, `[batch, hidden]`; empty otherwise.
    pub c0: &'a [f32],
    /// `W_h`, `[hidden, gates·hidden]`.
    pub weight: &'a [f32],
    /// [`ScanOutput::output`].
    pub output: &'a [f32],
    /// [`ScanOutput::gates`].
    pub gates: &'a [f32],
    /// [`ScanOutput::extra`].
    pub extra: &'a [f32],
    /// The forward scan's [`ScanInputs::order`].
    pub order: Order<'a>,
}

/// Which gradients a backward scan computes besides the projection's (which every other one
/// is computed from): those whose inputs take part in the caller's graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Of the input bias (the column sums of the projection's gradient).
    pub input_bias: bool,
    /// Of `h_0`.
    pub h0: bool,
    /// Of the LSTM's `c_0`.
    pub c0: bool,
    /// Of `W_h`.
    pub weight: bool,
    /// Of PyTorch's GRU's `b_hh`.
    pub hidden_bias: bool,
}

/// What a backward scan gives: each gradient has its input's shape, or is empty where it was
/// not [`Wanted`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanGradients {
    /// Of the projection, `[steps · batch, gates·hidden]`.
    pub projected: Vec<f32>,
    /// Of the input bias, `[gates·hidden]`.
    pub input_bias: Vec<f32>,
    /// Of `h_0`, `[batch, hidden]`.
    pub h0: Vec<f32>,
    /// Of `c_0`, `[batch, hidden]`.
    pub c0: Vec<f32>,
    /// Of `W_h`, `[hidden, gates·hidden]`.
    pub weight: Vec<f32>,
    /// Of `b_hh`, `[gates·hidden]`.
    pub hidden_bias: Vec<f32>,
}

/// Adds `block` into `sums` element by element (equally long).
#[inline(always)]
pub(crate) fn accumulate(sums: &mut [f32], block: &[f32]) {
    for (s, &v) in sums.iter_mut().zip(block) {
        *s += v;
    }
}

/// Where the threads of a backward scan leave their batch rows' results besides dp and dq.
#[derive(Clone, Copy)]
pub(crate) struct Sinks<'a> {
    /// `[batch, gates·hidden]`: per batch row, the sum of its rows of dp over the steps.
    pub(crate) projected_sums: SharedMut<'a>,
    /// The same for dq (empty unless wanted).
    pub(crate) hidden_sums: SharedMut<'a>,
    /// `[batch, hidden]` each (empty unless wanted).
    pub(crate) d_h0: SharedMut<'a>,
    pub(crate) d_c0: SharedMut<'a>,
}
