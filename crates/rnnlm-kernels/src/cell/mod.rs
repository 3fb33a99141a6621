//! The recurrences, one module each, behind one small trait: what one time step of a layer does
//! to a block of rows, forwards and backwards. The time loops ([`crate::scan`]), the generation
//! engine ([`crate::decode`]), the packing and the weight-gradient products are written once,
//! generic over [`Cell`].
//!
//! Each module holds a cell's forward row, its backward row and what its tape keeps, side by
//! side, so the equations of a cell are read (and checked) in one place.

pub mod gru;
pub mod gru_d2l;
pub mod lstm;
pub mod rnn;

use std::ops::Range;

use crate::gemm::{PackedB, SHORT_K, View, gemm_large, gemm_short_k};
use crate::math::Isa;

/// The non-linearity of a vanilla RNN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `tanh`, d2l's default.
    Tanh,
    /// `max(0, x)`.
    Relu,
}

/// A bound on a layer's state after every step, or none: the LSTM's memory cell, the other
/// cells' hidden state (burn-nn's `clip`). Kept as
/// the bound's bits so that [`CellKind`] stays `Eq + Hash`; no bound is an infinite one, which
/// the cell's rows apply at no cost worth a branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Clip(pub(crate) u32);

impl Clip {
    /// No bound.
    pub const NONE: Clip = Clip(0x7f80_0000); // f32::INFINITY

    /// The bound `bound`, or `None` unless it is a finite number > 0.
    pub fn new(bound: f32) -> Option<Self> {
        (bound.is_finite() && bound > 0.0).then_some(Clip(bound.to_bits()))
    }

    /// The bound, infinite for [`Clip::NONE`].
    pub fn bound(self) -> f32 {
        f32::from_bits(self.0)
    }
}

impl Default for Clip {
    fn default() -> Self {
        Self::NONE
    }
}

/// Which recurrence a layer runs, chosen at run time (from a model's configuration); the
/// kernels are compiled once per kind ([`dispatch`](crate::dispatch)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CellKind {
    /// `h' = φ(p + h W_h)`: one gate block; `h'` clamped by the [`Clip`]'s bound.
    Rnn(Activation, Clip),
    /// PyTorch's LSTM, gates `i f g o`, with a memory cell, clamped to `[-clip, clip]` after
    /// every step when the [`Clip`] has a bound (burn-nn's LSTM `clip`).
    Lstm(Clip),
    /// PyTorch's GRU, gates `r z n`, the reset gate scaling `h W_hn + b_hn`; `h'` clamped by
    /// the [`Clip`]'s bound.
    Gru(Clip),
    /// d2l's GRU, the reset gate scaling `h` before `W_hn`; `h'` clamped by the [`Clip`]'s
    /// bound.
    GruD2l(Clip),
}

impl CellKind {
    /// Gate blocks of width `hidden` in the packed weights and projections.
    pub fn gates(self) -> usize {
        crate::dispatch!(self, |cell| cell.gates())
    }

    /// Whether the state has a memory cell (the LSTM's `c`).
    pub fn has_cell(self) -> bool {
        crate::dispatch!(self, |cell| cell.has_cell())
    }

    /// Whether the hidden product has a bias of its own (PyTorch's GRU, `b_hh`).
    pub fn has_hidden_bias(self) -> bool {
        matches!(self, CellKind::Gru(_))
    }

    /// The bound of the cell's state ([`Clip::NONE`]: none).
    pub fn clip(self) -> Clip {
        match self {
            CellKind::Rnn(_, clip)
            | CellKind::Lstm(clip)
            | CellKind::Gru(clip)
            | CellKind::GruD2l(clip) => clip,
        }
    }
}

/// Runs `$body` with `$cell` bound to the [`Cell`] value of the [`CellKind`] `$kind`, so that
/// the body is compiled once per cell.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch {
    ($kind:expr, |$cell:ident| $body:expr) => {
        match $kind {
            $crate::CellKind::Rnn(activation, clip) => {
                let $cell = $crate::cell::rnn::Rnn {
                    activation,
                    clip: clip.bound(),
                };
                $body
            }
            $crate::CellKind::Lstm(clip) => {
                let $cell = $crate::cell::lstm::Lstm { clip: clip.bound() };
                $body
            }
            $crate::CellKind::Gru(clip) => {
                let $cell = $crate::cell::gru::Gru { clip: clip.bound() };
                $body
            }
            $crate::CellKind::GruD2l(clip) => {
                let $cell = $crate::cell::gru_d2l::GruD2l { clip: clip.bound() };
                $body
            }
        }
    };
}

/// Clamps a step's hidden states to `[-clip, clip]` (the GRU's and the RNN's clip); nothing to do
/// without a bound.
#[inline(always)]
pub(crate) fn clamp_hidden(h: &mut [f32], clip: f32) {
    if clip.is_finite() {
        for h in h {
            // max/min, not clamp: no panic path, and the loop stays vectorised.
            *h = h.max(-clip).min(clip);
        }
    }
}

/// `dh` with zeros where the clamp held `h_t` on its bound (`|h_t| >= clip`), where the clamp
/// passes no gradient; `dh` itself without a bound. `buffer` is the scratch it is written to
/// (taken from [`Scratch`] and given back by the caller, whose own buffers stay free).
#[inline(always)]
pub(crate) fn clipped_dh<'a>(
    dh: &'a [f32],
    h: &[f32],
    clip: f32,
    buffer: &'a mut Vec<f32>,
) -> &'a [f32] {
    if !clip.is_finite() {
        return dh;
    }
    buffer.clear();
    buffer.extend(
        dh.iter()
            .zip(h)
            .map(|(&d, &h)| if h.abs() < clip { d } else { 0.0 }),
    );
    buffer
}

impl Scratch {
    /// The buffer for [`clipped_dh`], taken out (give it back with [`Scratch::restore_masked`]).
    pub(crate) fn take_masked(&mut self) -> Vec<f32> {
        std::mem::take(&mut self.masked)
    }

    /// Gives back the buffer [`Scratch::take_masked`] took.
    pub(crate) fn restore_masked(&mut self, buffer: Vec<f32>) {
        self.masked = buffer;
    }
}

/// A layer's hidden weight `W_h` `[inputs, gates·hidden]` packed for a cell's step, or its
/// transpose for the backward step.
#[derive(Clone, Debug)]
pub struct HiddenWeights {
    /// Units these weights produce (every unit of the layer, or the share of one thread): the
    /// gate blocks of the product are this wide.
    pub(crate) hidden: usize,
    /// Width of `h_{t-1}`, the product's inner dimension (every unit of the layer).
    pub(crate) inputs: usize,
    /// `W_h` whole (d2l's GRU: `W_hrz`); transposed, `W_hᵀ` (`W_hrzᵀ`).
    pub(crate) main: PackedB,
    /// d2l's GRU: `W_hn` (transposed, `W_hnᵀ`).
    pub(crate) candidate: Option<PackedB>,
    /// PyTorch's GRU: `b_hh` `[gates·hidden]`, added to the product; empty otherwise.
    pub(crate) bias: Vec<f32>,
}

/// Work space of a step, reused from step to step: two buffers that a cell sizes as it needs
/// (PyTorch's GRU keeps `h W_h + b_h` in one, d2l's GRU its two products).
#[derive(Default, Debug)]
pub struct Scratch {
    first: Vec<f32>,
    second: Vec<f32>,
    /// `dh` masked by a clamp of the hidden state ([`clipped_dh`]).
    masked: Vec<f32>,
}

impl Scratch {
    /// Both buffers, at least `first` and `second` long, zeroed.
    pub(crate) fn zeroed(&mut self, first: usize, second: usize) -> (&mut [f32], &mut [f32]) {
        for (buffer, len) in [(&mut self.first, first), (&mut self.second, second)] {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
            buffer[..len].fill(0.0);
        }
        (&mut self.first[..first], &mut self.second[..second])
    }
}

/// What a forward step reads and writes, for `rows` rows, each `[.., hidden]` or
/// `[.., gates·hidden]` (of the units the weights produce) row-major.
pub struct ForwardStep<'s> {
    /// The input projection (with its biases) on entry; the gate activations on return
    /// (LSTM `i f g o`, GRU `r z n`; RNN: left as the pre-activation).
    pub gates: &'s mut [f32],
    /// `h_{t-1}` of every unit: `[rows, inputs]`.
    pub h_prev: &'s [f32],
    /// `h_{t-1}` of the units these weights produce (the same slice as `h_prev` when they are
    /// all of them).
    pub h_prev_units: &'s [f32],
    /// LSTM: `c_{t-1}` on entry, `c_t` on return; empty for the other cells.
    pub cell: &'s mut [f32],
    /// Receives `h_t`.
    pub h: &'s mut [f32],
    /// Receives what the backward step reads besides the gates (see each cell's tape); empty
    /// for a cell without one.
    pub extra: &'s mut [f32],
}

/// What a backward step reads and writes for `rows` rows, shaped as in [`ForwardStep`].
pub struct BackwardStep<'s> {
    /// The forward step's gate activations (empty for the RNN, which keeps none).
    pub gates: &'s [f32],
    /// The forward step's extra tape block.
    pub extra: &'s [f32],
    /// LSTM: `c_{t-1}` (the previous step's extra block, or the initial cell); empty otherwise.
    pub cell_prev: &'s [f32],
    /// `h_t`.
    pub h: &'s [f32],
    /// `h_{t-1}`.
    pub h_prev: &'s [f32],
    /// The whole gradient of `h_t`: from above and from step `t + 1`.
    pub dh: &'s [f32],
    /// LSTM: the gradient of `c_t` on entry, of `c_{t-1}` on return; empty otherwise.
    pub dc: &'s mut [f32],
    /// Receives the gradient of the step's input projection, `[rows, gates·hidden]`.
    pub dp: &'s mut [f32],
    /// Cells with [`Cell::HIDDEN_GRADIENT`]: receives the gradient of `h W_h + b_h`
    /// `[rows, gates·hidden]`; empty otherwise.
    pub dq: &'s mut [f32],
    /// Receives the gradient of `h_{t-1}` when asked for (not needed before the first step
    /// unless the initial state's gradient is wanted).
    pub dh_prev: Option<&'s mut [f32]>,
}

/// The rows a weight gradient is summed over: a layer's `h_{t-1}` for every step (the initial
/// state, then the outputs of all steps but the last), the gradients of the products, and the
/// tape.
pub struct GradientSources<'s> {
    /// `[batch, hidden]`.
    pub h0: &'s [f32],
    /// `h_1 .. h_T`, `[steps · batch, hidden]` (a forward scan reads all but the last step's
    /// rows, a reverse one all but the first's).
    pub outputs: &'s [f32],
    /// The projection's gradient, `[steps · batch, gates·hidden]`.
    pub dp: &'s [f32],
    /// The hidden product's gradient where it has its own (else empty).
    pub dq: &'s [f32],
    /// The forward pass's extra tape, `[steps · batch, hidden]` (or empty).
    pub extra: &'s [f32],
    /// Rows per step.
    pub batch: usize,
    /// The order of the steps and the rows' lengths ([`crate::order::Order`]): which step's
    /// output is a step's `h_{t-1}`, and where each row starts from `h_0`.
    pub order: crate::order::Order<'s>,
}

/// One layer's recurrence: its step forwards and backwards for a block of rows, and how its
/// hidden weight is packed and differentiated. Implemented by the four cells of this module;
/// everything that loops over time or threads is generic over it.
pub trait Cell: Copy + Send + Sync + 'static {
    /// Gate blocks of width `hidden` in the packed weights and projections.
    const GATES: usize;
    /// Whether the state has a memory cell.
    const HAS_CELL: bool = false;
    /// Whether a step writes an extra `[rows, hidden]` tape block.
    const HAS_EXTRA: bool;
    /// Whether the backward step reads the gate activations (the RNN's needs only `h_t`).
    const KEEPS_GATES: bool = true;
    /// Whether the gradient of the hidden product `h W_h + b_h` differs from that of the input
    /// projection (PyTorch's GRU, whose reset gate scales the candidate's block of it).
    const HIDDEN_GRADIENT: bool = false;
    /// Whether a thread can step a share of the units from all of `h_{t-1}` (generation); not
    /// d2l's GRU, whose candidate needs every unit's reset gate first.
    const SPLITS_UNITS: bool = true;

    /// [`Cell::GATES`] of this value.
    fn gates(self) -> usize {
        Self::GATES
    }

    /// [`Cell::HAS_CELL`] of this value.
    fn has_cell(self) -> bool {
        Self::HAS_CELL
    }

    /// `W_h` `[hidden, gates·hidden]` (row-major) packed for [`Cell::forward`], with the hidden
    /// bias (PyTorch's GRU; empty otherwise), the panels shared out over `threads` threads.
    fn pack(self, weight: &[f32], bias: &[f32], hidden: usize, threads: usize) -> HiddenWeights {
        let width = Self::GATES * hidden;
        HiddenWeights {
            hidden,
            inputs: hidden,
            main: PackedB::new_on(weight, hidden, width, width, threads),
            candidate: None,
            bias: bias.to_vec(),
        }
    }

    /// `W_hᵀ` packed for [`Cell::backward`], for the gradient of `h_{t-1}`.
    fn pack_transposed(self, weight: &[f32], hidden: usize, threads: usize) -> HiddenWeights {
        let width = Self::GATES * hidden;
        HiddenWeights {
            hidden,
            inputs: width,
            main: PackedB::transposed_on(weight, hidden, width, width, threads),
            candidate: None,
            bias: Vec::new(),
        }
    }

    /// The columns of the units `units` in every gate block of `W_h` (and of the bias), for a
    /// thread that steps only those units from all of `h_{t-1}` (see [`Cell::SPLITS_UNITS`]).
    fn pack_units(
        self,
        weight: &[f32],
        bias: &[f32],
        hidden: usize,
        units: Range<usize>,
    ) -> HiddenWeights {
        assert!(Self::SPLITS_UNITS, "this cell steps all its units together");
        let columns = select_units(weight, hidden, Self::GATES, &units);
        let width = Self::GATES * units.len();
        HiddenWeights {
            hidden: units.len(),
            inputs: hidden,
            main: PackedB::new(&columns, hidden, width, width),
            candidate: None,
            bias: if bias.is_empty() {
                Vec::new()
            } else {
                select_units(bias, hidden, Self::GATES, &units)
            },
        }
    }

    /// One step for `rows` rows (see [`ForwardStep`]).
    fn forward<const FMA: bool>(
        self,
        isa: Isa,
        weights: &HiddenWeights,
        rows: usize,
        step: ForwardStep<'_>,
        scratch: &mut Scratch,
    );

    /// The gradients of one step for `rows` rows (see [`BackwardStep`]), with the transposed
    /// weights of [`Cell::pack_transposed`].
    fn backward<const FMA: bool>(
        self,
        isa: Isa,
        transposed: &HiddenWeights,
        rows: usize,
        step: BackwardStep<'_>,
        scratch: &mut Scratch,
    );

    /// The gradient of `W_h` `[hidden, gates·hidden]`: `Σ_t h_{t-1}ᵀ G_t`, one product over all
    /// steps, with `G` the hidden product's gradient ([`GradientSources::dq`] where the cell
    /// has one, the projection's otherwise). d2l's GRU replaces the candidate block.
    fn weight_gradient(
        self,
        sources: &GradientSources<'_>,
        hidden: usize,
        threads: usize,
    ) -> Vec<f32> {
        let width = Self::GATES * hidden;
        let g = if Self::HIDDEN_GRADIENT {
            sources.dq
        } else {
            sources.dp
        };
        let mut out = crate::shared::zeros(hidden * width);
        add_previous_states_times(sources, g, width, 0..width, hidden, &mut out, threads);
        out
    }
}

/// Adds `Σ_t h_{t-1}ᵀ G_t[.., columns]` `[hidden, columns.len()]` into `out` (row stride
/// `width`, from its first element), with `G` `[rows, width]`: the initial state's rows against
/// each row's first step, then the outputs against the steps that follow them.
///
/// A row past its length has a zero output and a zero `G` there, so the two products need no
/// mask: in a reverse scan, the step where a shorter row starts pairs with the zero output
/// after it, and its `h_0` term comes in through the first product.
pub(crate) fn add_previous_states_times(
    sources: &GradientSources<'_>,
    g: &[f32],
    width: usize,
    columns: Range<usize>,
    hidden: usize,
    out: &mut [f32],
    threads: usize,
) {
    let batch = sources.batch;
    let rows = g.len() / width;
    let order = sources.order;
    if order.lengths.is_empty() && rows <= SHORT_K {
        // Few rows (a small batch): one pass over C with every row's h_{t-1} side by side, in
        // the rows' own order (the initial state first forwards, last backwards).
        let mut h_prev = Vec::with_capacity(rows * hidden);
        if order.reverse {
            h_prev.extend_from_slice(&sources.outputs[batch * hidden..rows * hidden]);
            h_prev.extend_from_slice(sources.h0);
        } else {
            h_prev.extend_from_slice(sources.h0);
            h_prev.extend_from_slice(&sources.outputs[..(rows - batch) * hidden]);
        }
        gemm_short_k(
            Isa::detect(),
            out,
            width,
            [hidden, columns.len(), rows],
            &h_prev,
            View::rows(&g[columns.start..], width),
            threads,
        );
        return;
    }
    // Each row's G at its first step: step 0 forwards; backwards the last step, or each
    // row's own last one.
    let first: std::borrow::Cow<'_, [f32]> = match (order.reverse, order.lengths) {
        (false, _) => g[..batch * width].into(),
        (true, []) => g[(rows - batch) * width..].into(),
        (true, lengths) => lengths
            .iter()
            .enumerate()
            .flat_map(|(b, &length)| {
                let row = (length - 1) * batch + b;
                g[row * width..(row + 1) * width].iter().copied()
            })
            .collect::<Vec<f32>>()
            .into(),
    };
    // h_{t-1} of step t is the output of step t - 1 forwards, of step t + 1 backwards.
    let (outputs_from, g_from) = if order.reverse {
        (batch, 0)
    } else {
        (0, batch)
    };
    let parts = [
        (sources.h0, &first[..], batch),
        (
            &sources.outputs[outputs_from * hidden..],
            &g[g_from * width..],
            rows - batch,
        ),
    ];
    for (a, g, count) in parts {
        gemm_large(
            out,
            width,
            hidden,
            columns.len(),
            count,
            View::transposed(a, hidden),
            View::rows(&g[columns.start..], width),
            threads,
        );
    }
}

/// The columns of `units` in each of the `gates` blocks (of width `hidden`) of every row of
/// `matrix` (rows of `gates · hidden`), side by side block after block.
pub(crate) fn select_units(
    matrix: &[f32],
    hidden: usize,
    gates: usize,
    units: &Range<usize>,
) -> Vec<f32> {
    let width = gates * hidden;
    let mut out = Vec::with_capacity(matrix.len() / width * gates * units.len());
    for row in matrix.chunks_exact(width) {
        for block in row.chunks_exact(hidden) {
            out.extend_from_slice(&block[units.clone()]);
        }
    }
    out
}

/// Splits a row of `gates · n` values into its gate blocks of `n`.
#[inline(always)]
pub(crate) fn blocks<const G: usize>(row: &[f32], n: usize) -> [&[f32]; G] {
    std::array::from_fn(|g| &row[g * n..(g + 1) * n])
}

/// Splits a mutable row of `gates · n` values into its gate blocks of `n`.
#[inline(always)]
pub(crate) fn blocks_mut<const G: usize>(row: &mut [f32], n: usize) -> [&mut [f32]; G] {
    let mut rest = &mut row[..G * n];
    std::array::from_fn(|_| {
        let (block, tail) = std::mem::take(&mut rest).split_at_mut(n);
        rest = tail;
        block
    })
}

/// 0.25: the tests' states reach it, so some entries are clamped and some not.
#[cfg(test)]
const QUARTER: Clip = Clip(0x3e80_0000);

/// Every recurrence the kernels implement, each with and without a clip of its state (the
/// ReLU RNN's clip is left out: its kink and the clamp's together leave finite differences
/// nothing smooth to check; its forward clamp is the tanh RNN's).
#[cfg(test)]
pub(crate) const KINDS: [CellKind; 9] = [
    CellKind::Rnn(Activation::Tanh, Clip::NONE),
    CellKind::Rnn(Activation::Tanh, QUARTER),
    CellKind::Rnn(Activation::Relu, Clip::NONE),
    CellKind::Lstm(Clip::NONE),
    CellKind::Lstm(QUARTER),
    CellKind::Gru(Clip::NONE),
    CellKind::Gru(QUARTER),
    CellKind::GruD2l(Clip::NONE),
    CellKind::GruD2l(QUARTER),
];
