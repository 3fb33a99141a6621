//! One time step of a recurrent layer for a block of rows, shared by the host engines: the
//! generation engine runs it once per token, the training engine over a whole sequence.

use std::ops::Range;

use rnnlm::{Activation, GruFormula, RecurrentCore};

use crate::math::{Isa, PackedB, gemm, madd, sigmoid, tanh};

/// A layer's recurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cell {
    Rnn(Activation),
    Lstm,
    /// PyTorch's GRU: the reset gate scales `h W_hn + b_hn`.
    GruTorch,
    /// d2l's GRU: the reset gate scales `h` before `W_hn`.
    GruD2l,
}

impl Cell {
    /// The recurrence of `core`'s layers (they all share one).
    pub fn of(core: &RecurrentCore) -> Self {
        match core {
            RecurrentCore::RnnScratch(core) => Cell::Rnn(core.layers[0].activation),
            RecurrentCore::Gru(core) => match core.layers[0].formula {
                GruFormula::PyTorch => Cell::GruTorch,
                GruFormula::D2l => Cell::GruD2l,
            },
            RecurrentCore::Lstm(_) => Cell::Lstm,
        }
    }

    /// Gate blocks of width `hidden` in the packed weights.
    pub fn gates(self) -> usize {
        match self {
            Cell::Rnn(_) => 1,
            Cell::Lstm => 4,
            Cell::GruTorch | Cell::GruD2l => 3,
        }
    }

    /// Whether a step keeps a second `[rows, hidden]` buffer besides `h` (see [`step`]).
    pub fn has_extra(self) -> bool {
        !matches!(self, Cell::Rnn(_))
    }
}

/// A layer's hidden weight `W_h` `[inputs, width]` packed for [`step`] (d2l's GRU multiplies its
/// `r z` block and its candidate block separately), or its transpose for the backward pass.
#[derive(Clone, Debug)]
pub(crate) struct HiddenWeights {
    pub cell: Cell,
    /// Units this weight produces (every unit of the layer, or the share of one thread):
    /// the gate blocks of `width = gates · hidden` are this wide.
    pub hidden: usize,
    /// Width of `h_{t-1}`, the product's inner dimension (the layer's units).
    pub inputs: usize,
    /// `W_h` whole, or d2l's `W_hrz`; transposed: `W_hᵀ` `[width, hidden]` or `W_hrzᵀ`.
    pub main: PackedB,
    /// d2l's GRU: `W_hn` (transposed: `W_hnᵀ`).
    pub candidate: Option<PackedB>,
    /// PyTorch's GRU: `b_hh` `[width]` (zeros without one); empty otherwise.
    pub bias: Vec<f32>,
}

impl HiddenWeights {
    /// For the forward step, from `weight` `[hidden, width]` row-major, packed on `threads`
    /// threads.
    pub fn new(cell: Cell, hidden: usize, weight: &[f32], bias: Vec<f32>, threads: usize) -> Self {
        let width = cell.gates() * hidden;
        let pack = |b: &[f32], n: usize| PackedB::new_on(b, hidden, n, width, threads);
        let (main, candidate) = match cell {
            Cell::GruD2l => (
                pack(weight, 2 * hidden),
                Some(pack(&weight[2 * hidden..], hidden)),
            ),
            _ => (pack(weight, width), None),
        };
        Self {
            cell,
            hidden,
            inputs: hidden,
            main,
            candidate,
            bias,
        }
    }

    /// The columns of the units `units` in every gate block of `weight` `[hidden, width]`
    /// (and of `bias`), for a thread that computes only those units from all of `h_{t-1}`.
    /// Not for d2l's GRU, whose candidate needs every unit's reset gate first.
    pub fn units(
        cell: Cell,
        hidden: usize,
        weight: &[f32],
        bias: &[f32],
        units: Range<usize>,
    ) -> Self {
        assert_ne!(cell, Cell::GruD2l, "d2l's GRU steps all its units together");
        let columns = select_units(weight, hidden, cell.gates(), &units);
        let share = units.len();
        let width = cell.gates() * share;
        Self {
            cell,
            hidden: share,
            inputs: hidden,
            main: PackedB::new(&columns, hidden, width, width),
            candidate: None,
            bias: if bias.is_empty() {
                Vec::new()
            } else {
                select_units(bias, hidden, cell.gates(), &units)
            },
        }
    }

    /// The transposes, for the gradient of `h_{t-1}`, packed on `threads` threads.
    pub fn transposed(cell: Cell, hidden: usize, weight: &[f32], threads: usize) -> Self {
        let width = cell.gates() * hidden;
        let pack = |b: &[f32], k: usize| PackedB::transposed_on(b, hidden, k, width, threads);
        let (main, candidate) = match cell {
            Cell::GruD2l => (
                pack(weight, 2 * hidden),
                Some(pack(&weight[2 * hidden..], hidden)),
            ),
            _ => (pack(weight, width), None),
        };
        Self {
            cell,
            hidden,
            inputs: hidden,
            main,
            candidate,
            bias: Vec::new(),
        }
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

/// Work space of [`step`] for up to `rows` rows.
pub(crate) struct StepScratch {
    /// GRUs: `h W_h (+ b_hh)` (d2l's: its `r z` block).
    hw: Vec<f32>,
    /// d2l's GRU: `(r ⊙ h) W_hn`.
    candidate: Vec<f32>,
}

impl StepScratch {
    pub fn new(weights: &HiddenWeights, rows: usize) -> Self {
        let h = weights.hidden;
        let (hw, candidate) = match weights.cell {
            Cell::GruTorch => (rows * 3 * h, 0),
            Cell::GruD2l => (rows * 2 * h, rows * h),
            _ => (0, 0),
        };
        Self {
            hw: vec![0.0; hw],
            candidate: vec![0.0; candidate],
        }
    }
}

/// One step for `rows` rows of the units `weights` produces, each row `[.., hidden]` or
/// `[.., width]` (of `weights.hidden` units) row-major:
/// - `gates`: the input projection (with its biases) on entry; the gate activations on return
///   (LSTM `i f g o`, GRU `r z n`; RNN: left as the pre-activation);
/// - `h_prev`: `h_{t-1}` of every unit, `[rows, weights.inputs]`; `h_prev_units`: the same
///   restricted to these units (the same slice when they are all of them); `out`: receives
///   `h_t` of these units;
/// - `cell`: LSTM only, `c_{t-1}` on entry, `c_t` on return;
/// - `extra`: receives what the backward pass needs besides the gates: LSTM `c_t`, PyTorch's
///   GRU `h W_hn + b_hn`, d2l's GRU `r ⊙ h_{t-1}` (unused for RNN).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn step<const FMA: bool>(
    isa: Isa,
    weights: &HiddenWeights,
    rows: usize,
    gates: &mut [f32],
    h_prev: &[f32],
    h_prev_units: &[f32],
    cell: &mut [f32],
    out: &mut [f32],
    extra: &mut [f32],
    scratch: &mut StepScratch,
) {
    let (h, k) = (weights.hidden, weights.inputs);
    let width = weights.cell.gates() * h;
    // The loops below run over slices of exactly `h` elements each (a gate block of one row),
    // so the compiler drops the bounds checks and vectorises them.
    match weights.cell {
        Cell::Rnn(activation) => {
            gemm(isa, gates, width, h_prev, k, rows, &weights.main);
            for (o, &z) in out[..rows * h].iter_mut().zip(gates.iter()) {
                *o = match activation {
                    Activation::Tanh => tanh::<FMA>(z),
                    Activation::Relu => z.max(0.0),
                };
            }
        }
        Cell::Lstm => {
            gemm(isa, gates, width, h_prev, k, rows, &weights.main);
            for (((g, c), cells), hb) in gates
                .chunks_exact_mut(width)
                .zip(cell.chunks_exact_mut(h))
                .zip(extra.chunks_exact_mut(h))
                .zip(out.chunks_exact_mut(h))
                .take(rows)
            {
                let (i, rest) = g.split_at_mut(h);
                let (f, rest) = rest.split_at_mut(h);
                let (candidate, o) = rest.split_at_mut(h);
                lstm_row::<FMA>(i, f, candidate, o, c, cells, hb);
            }
        }
        Cell::GruTorch => {
            let hw = &mut scratch.hw[..rows * width];
            for r in hw.chunks_exact_mut(width) {
                r.copy_from_slice(&weights.bias);
            }
            gemm(isa, hw, width, h_prev, k, rows, &weights.main);
            for ((((g, hwb), hp), hb), hwn_out) in gates
                .chunks_exact_mut(width)
                .zip(hw.chunks_exact(width))
                .zip(h_prev_units.chunks_exact(h))
                .zip(out.chunks_exact_mut(h))
                .zip(extra.chunks_exact_mut(h))
                .take(rows)
            {
                let (r, rest) = g.split_at_mut(h);
                let (z, n) = rest.split_at_mut(h);
                let (hw_r, rest) = hwb.split_at(h);
                let (hw_z, hw_n) = rest.split_at(h);
                gru_torch_row::<FMA>(r, z, n, hw_r, hw_z, hw_n, hp, hb, hwn_out);
            }
        }
        Cell::GruD2l => {
            debug_assert_eq!(h, k, "d2l's GRU steps all its units together");
            let rz = &mut scratch.hw[..rows * 2 * h];
            rz.fill(0.0);
            gemm(isa, rz, 2 * h, h_prev, h, rows, &weights.main);
            for (((g, rzb), hp), reset_h) in gates
                .chunks_exact_mut(width)
                .zip(rz.chunks_exact(2 * h))
                .zip(h_prev.chunks_exact(h))
                .zip(extra.chunks_exact_mut(h))
                .take(rows)
            {
                let (r, rest) = g.split_at_mut(h);
                let (hr, hz) = rzb.split_at(h);
                gru_d2l_gates_row::<FMA>(r, &mut rest[..h], hr, hz, hp, reset_h);
            }
            let candidate = &mut scratch.candidate[..rows * h];
            candidate.fill(0.0);
            let w_n = weights.candidate.as_ref().expect("d2l's GRU packs W_hn");
            gemm(isa, candidate, h, extra, h, rows, w_n);
            for (((g, cand), hp), hb) in gates
                .chunks_exact_mut(width)
                .zip(candidate.chunks_exact(h))
                .zip(h_prev.chunks_exact(h))
                .zip(out.chunks_exact_mut(h))
                .take(rows)
            {
                let (z, n) = g[h..].split_at_mut(h);
                gru_d2l_candidate_row::<FMA>(z, n, cand, hp, hb);
            }
        }
    }
}

// One row's gate arithmetic, each a function of its own so that every slice is a separate
// `&mut` or `&` argument: the compiler then knows they do not overlap and vectorises the loop
// (inlined into one loop over several parts of one buffer, it would have to check at run time,
// and gives up beyond a few pointers).

/// LSTM: gate pre-activations in, activations out (in place); `c` from `c_{t-1}` to `c_t`,
/// copied into `cells`; `h = o ⊙ tanh(c)`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn lstm_row<const FMA: bool>(
    i: &mut [f32],
    f: &mut [f32],
    g: &mut [f32],
    o: &mut [f32],
    c: &mut [f32],
    cells: &mut [f32],
    h: &mut [f32],
) {
    let n = h.len();
    let (i, f, g, o, c, cells) = (
        &mut i[..n],
        &mut f[..n],
        &mut g[..n],
        &mut o[..n],
        &mut c[..n],
        &mut cells[..n],
    );
    for j in 0..n {
        let (ig, fg) = (sigmoid::<FMA>(i[j]), sigmoid::<FMA>(f[j]));
        let (gg, og) = (tanh::<FMA>(g[j]), sigmoid::<FMA>(o[j]));
        let cj = madd::<FMA>(fg, c[j], ig * gg);
        (i[j], f[j], g[j], o[j]) = (ig, fg, gg, og);
        c[j] = cj;
        cells[j] = cj;
        h[j] = og * tanh::<FMA>(cj);
    }
}

/// PyTorch's GRU: `r z n` pre-activations (input side) in, activations out; `hw_*` is
/// `h W_hh + b_hh` by block, `hw_n` also copied to `hwn_out`; `h = (1 - z) ⊙ n + z ⊙ h_prev`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gru_torch_row<const FMA: bool>(
    r: &mut [f32],
    z: &mut [f32],
    n: &mut [f32],
    hw_r: &[f32],
    hw_z: &[f32],
    hw_n: &[f32],
    h_prev: &[f32],
    h: &mut [f32],
    hwn_out: &mut [f32],
) {
    let len = h.len();
    let (r, z, n) = (&mut r[..len], &mut z[..len], &mut n[..len]);
    let (hw_r, hw_z, hw_n, h_prev, hwn_out) = (
        &hw_r[..len],
        &hw_z[..len],
        &hw_n[..len],
        &h_prev[..len],
        &mut hwn_out[..len],
    );
    for j in 0..len {
        let rj = sigmoid::<FMA>(r[j] + hw_r[j]);
        let zj = sigmoid::<FMA>(z[j] + hw_z[j]);
        let nj = tanh::<FMA>(madd::<FMA>(rj, hw_n[j], n[j]));
        (r[j], z[j], n[j]) = (rj, zj, nj);
        hwn_out[j] = hw_n[j];
        // (1 - z) ⊙ n + z ⊙ h, with one multiplication fewer.
        h[j] = madd::<FMA>(zj, h_prev[j] - nj, nj);
    }
}

/// d2l's GRU, first half: `r` and `z` from their input-side pre-activations and `h W_hrz`
/// (`hr`, `hz`); `reset_h = r ⊙ h_prev`.
#[inline(always)]
fn gru_d2l_gates_row<const FMA: bool>(
    r: &mut [f32],
    z: &mut [f32],
    hr: &[f32],
    hz: &[f32],
    h_prev: &[f32],
    reset_h: &mut [f32],
) {
    let len = reset_h.len();
    let (r, z, hr, hz, h_prev) = (
        &mut r[..len],
        &mut z[..len],
        &hr[..len],
        &hz[..len],
        &h_prev[..len],
    );
    for j in 0..len {
        let rj = sigmoid::<FMA>(r[j] + hr[j]);
        (r[j], z[j]) = (rj, sigmoid::<FMA>(z[j] + hz[j]));
        reset_h[j] = rj * h_prev[j];
    }
}

/// d2l's GRU, second half: `n = tanh(input side + (r ⊙ h) W_hn)`, `h = (1 - z) ⊙ n + z ⊙ h_prev`.
#[inline(always)]
fn gru_d2l_candidate_row<const FMA: bool>(
    z: &[f32],
    n: &mut [f32],
    candidate: &[f32],
    h_prev: &[f32],
    h: &mut [f32],
) {
    let len = h.len();
    let (z, n, candidate, h_prev) = (&z[..len], &mut n[..len], &candidate[..len], &h_prev[..len]);
    for j in 0..len {
        let nj = tanh::<FMA>(n[j] + candidate[j]);
        n[j] = nj;
        h[j] = madd::<FMA>(z[j], h_prev[j] - nj, nj);
    }
}
