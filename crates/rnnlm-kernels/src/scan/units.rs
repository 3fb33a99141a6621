//! A layer's time loops with the units, not the rows, split between the threads: for batches
//! with few rows for the threads (a batch of one ran on one thread; a few rows a thread each
//! streamed the whole weight every step), the way generation steps a layer
//! ([`crate::decode`]).
//!
//! Each thread owns a contiguous share of the units and the columns of `W_h` (and, backwards,
//! the rows of `W_hᵀ`) that compute them, packed by itself and kept in its own cache. A step is
//! the share's product from the whole `h_{t-1}` and its share of the gate arithmetic; the
//! threads meet at a spin barrier after every step, since the next step reads every unit.
//! Backwards, each thread writes its units' gate gradients, meets the others, then takes its
//! units of `dh_{t-1}` from all of them.
//!
//! Every product sums over `k` in the same order as the row-split loops ([`crate::scan`]), and
//! every element-wise result is the same function of the same values, so both give the same
//! bits; the tests hold them to it.

use std::ops::Range;

use super::io::{Plan, ScanInputs, ScanOutput, ScanShape, ScanTape, Sinks, Wanted};
use crate::cell::{BackwardStep, Cell, ForwardStep, HiddenWeights, Scratch};
use crate::gemm::{PackedB, gemm};
use crate::math::{Isa, Kernel, run};
use crate::order::Order;
use crate::profile::timed;
use crate::shared::{SharedMut, SpinBarrier, parallel, split};

/// Fewest units a thread steps: below that, meeting at every step costs more than it saves.
const MIN_UNITS: usize = 64;

/// Rows per thread below which a gated cell's units are split (a batch with fewer rows than
/// threads always splits them): with so few rows, each thread's product streams the whole
/// weight for little arithmetic, and halving what each reads pays for the barrier. Measured on
/// 2 threads, units against rows: the LSTM and GRU at batch 8, hidden 512, 1.07-1.12x, the LSTM
/// at hidden 2048 1.5x; batch 16 1.03-1.17x; batch 32 at hidden 512 0.82-0.95x. The RNN (one
/// gate block, a step of little work) showed no gain at batch 8: its ratio to PyTorch in the
/// sweep fell from 3.25 to 2.14 at hidden 512, but alternating pairs spread over 35-83k
/// tokens/s for either way, so its rows stay split as they were.
const FEW_ROWS_PER_THREAD: usize = 8;

/// A packed weight this large (bytes) comes from memory every step whatever the batch; the
/// units are then split up to [`LARGE_WEIGHT_ROWS_PER_THREAD`] rows a thread. Measured at batch
/// 32: LSTM 2048 (64 MB) 1.09-1.18x, GRU 2048 (48 MB) 1.05x, RNN 2048 (16 MB) 0.96x; LSTM 2048 at
/// batch 128 even.
const LARGE_WEIGHT: usize = 32 << 20;
const LARGE_WEIGHT_ROWS_PER_THREAD: usize = 32;

/// Into how many unit shares a scan of `cell` splits (1: the rows are split instead): when
/// every row takes every step, the batch is small for the threads (see [`FEW_ROWS_PER_THREAD`]
/// and [`LARGE_WEIGHT`]), and each share keeps at least [`MIN_UNITS`] units.
pub(crate) fn parts<C: Cell>(shape: ScanShape, order: Order<'_>, plan: Plan) -> usize {
    if !C::SPLITS_UNITS || !order.lengths.is_empty() || plan.threads < 2 {
        return 1;
    }
    let weight_bytes = shape.hidden * C::GATES * shape.hidden * std::mem::size_of::<f32>();
    let rows_per_thread = if weight_bytes > LARGE_WEIGHT {
        LARGE_WEIGHT_ROWS_PER_THREAD
    } else if C::GATES > 1 {
        FEW_ROWS_PER_THREAD
    } else {
        1
    };
    if shape.batch >= rows_per_thread * plan.threads {
        return 1;
    }
    plan.threads.min(shape.hidden / MIN_UNITS).max(1)
}

/// Where a thread's share of the units lies in every row of a buffer of `cols` columns: `units`
/// columns from each of `offsets` (the start of every gate block in a `[.., gates·hidden]`
/// buffer, or of the units in a `[.., hidden]` one). A thread works on its columns compact,
/// `[rows, offsets·units]`, and moves them in and out with [`take`](Self::take) and
/// [`put`](Self::put).
struct Columns {
    cols: usize,
    offsets: Vec<usize>,
    units: usize,
}

impl Columns {
    /// The units `units` of a `[.., hidden]` buffer.
    fn of_units(hidden: usize, units: &Range<usize>) -> Self {
        Self {
            cols: hidden,
            offsets: vec![units.start],
            units: units.len(),
        }
    }

    /// The units `units` of every gate block of a `[.., gates·hidden]` buffer.
    fn of_gates(gates: usize, hidden: usize, units: &Range<usize>) -> Self {
        Self {
            cols: gates * hidden,
            offsets: (0..gates).map(|gate| gate * hidden + units.start).collect(),
            units: units.len(),
        }
    }

    /// Every piece of rows `first_row .. first_row + rows`: where it starts in the buffer, and
    /// in the compact share.
    fn pieces(&self, first_row: usize, rows: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..rows).flat_map(move |row| {
            self.offsets.iter().enumerate().map(move |(i, &at)| {
                (
                    (first_row + row) * self.cols + at,
                    (row * self.offsets.len() + i) * self.units,
                )
            })
        })
    }

    /// `out` becomes this share of rows `first_row .. first_row + rows` of `values`.
    fn take(&self, values: &[f32], first_row: usize, rows: usize, out: &mut Vec<f32>) {
        out.clear();
        for (at, _) in self.pieces(first_row, rows) {
            out.extend_from_slice(&values[at..at + self.units]);
        }
    }

    /// [`take`](Self::take) from a buffer other threads write elsewhere.
    ///
    /// # Safety
    /// No other thread may write these columns of these rows meanwhile.
    unsafe fn take_shared(
        &self,
        values: SharedMut<'_>,
        first_row: usize,
        rows: usize,
        out: &mut Vec<f32>,
    ) {
        out.clear();
        for (at, _) in self.pieces(first_row, rows) {
            // SAFETY: the caller's promise.
            out.extend_from_slice(unsafe { values.read(at, self.units) });
        }
    }

    /// Writes `share` (compact, whole rows) into its columns of the rows from `first_row`.
    ///
    /// # Safety
    /// No other thread may read or write these columns of these rows meanwhile.
    unsafe fn put(&self, target: SharedMut<'_>, first_row: usize, share: &[f32]) {
        let rows = share.len() / (self.offsets.len() * self.units);
        for (at, from) in self.pieces(first_row, rows) {
            // SAFETY: the caller's promise.
            unsafe { target.slice(at, self.units) }
                .copy_from_slice(&share[from..from + self.units]);
        }
    }
}

/// The forward scan with the units split into `parts` shares: [`crate::scan::forward`] for
/// the projection handed over (`projected`, `[steps · batch, gates·hidden]`, turned into the
/// gates in place).
pub(crate) fn forward<C: Cell>(
    cell: C,
    shape: ScanShape,
    mut projected: Vec<f32>,
    inputs: ScanInputs<'_>,
    keep_tape: bool,
    plan: Plan,
    parts: usize,
) -> ScanOutput {
    let ScanShape {
        steps,
        batch,
        hidden,
    } = shape;
    let mut output = vec![0.0f32; (steps + 1 + usize::from(C::HAS_CELL)) * batch * hidden];
    let mut extra = vec![
        0.0f32;
        if keep_tape && C::HAS_EXTRA {
            steps * batch * hidden
        } else {
            0
        }
    ];
    let barrier = SpinBarrier::new(parts);
    timed("scan forward: time loop (units split)", || {
        let (gates, out, tape_extra) = (
            SharedMut::new(&mut projected),
            SharedMut::new(&mut output),
            SharedMut::new(&mut extra),
        );
        parallel(parts, |part| {
            run(
                plan.isa,
                ForwardUnits {
                    cell,
                    shape,
                    units: split(hidden, parts, part),
                    inputs,
                    isa: plan.isa,
                    barrier: &barrier,
                    gates,
                    output: out,
                    extra: tape_extra,
                    keep_tape,
                },
            );
        });
    });
    let gates = if keep_tape && C::KEEPS_GATES {
        projected
    } else {
        Vec::new()
    };
    ScanOutput {
        output,
        gates,
        extra,
    }
}

/// One thread's units over every step of a forward scan.
struct ForwardUnits<'a, C> {
    cell: C,
    shape: ScanShape,
    units: Range<usize>,
    inputs: ScanInputs<'a>,
    isa: Isa,
    barrier: &'a SpinBarrier,
    /// `[steps · batch, gates·hidden]`: the projection on entry, this share's columns turned
    /// into its gates.
    gates: SharedMut<'a>,
    /// `[steps + 1 (+ 1), batch, hidden]`.
    output: SharedMut<'a>,
    /// `[steps · batch, hidden]` or empty.
    extra: SharedMut<'a>,
    keep_tape: bool,
}

impl<C: Cell> Kernel for ForwardUnits<'_, C> {
    #[inline(always)]
    fn run<const FMA: bool>(self) {
        let ScanShape {
            steps,
            batch,
            hidden: h,
        } = self.shape;
        let (units, u) = (self.units.clone(), self.units.len());
        let share_width = C::GATES * u;
        let inputs = self.inputs;
        let weights: HiddenWeights =
            self.cell
                .pack_units(inputs.weight, inputs.hidden_bias, h, units.clone());
        let (unit_columns, gate_columns) = (
            Columns::of_units(h, &units),
            Columns::of_gates(C::GATES, h, &units),
        );
        let (mut h_prev_units, mut cell_state, mut input_bias) =
            (Vec::new(), Vec::new(), Vec::new());
        unit_columns.take(inputs.h0, 0, batch, &mut h_prev_units);
        if C::HAS_CELL {
            unit_columns.take(inputs.c0, 0, batch, &mut cell_state);
        }
        if !inputs.input_bias.is_empty() {
            gate_columns.take(inputs.input_bias, 0, 1, &mut input_bias);
        }
        let (mut gates, mut h_units, mut extra) =
            (Vec::new(), vec![0.0f32; batch * u], vec![0.0f32; batch * u]);
        let mut scratch = Scratch::default();
        let mut h_prev: &[f32] = inputs.h0;
        for t in inputs.order.steps(steps) {
            // This share's projection (and input bias), the step, then its results written out.
            // SAFETY (take_shared, every put): this share's columns of step t's rows are its
            // alone; nobody reads step t's outputs before the barrier below.
            unsafe { gate_columns.take_shared(self.gates, t * batch, batch, &mut gates) };
            if !input_bias.is_empty() {
                for row in gates.chunks_exact_mut(share_width) {
                    for (g, &bias) in row.iter_mut().zip(&input_bias) {
                        *g += bias;
                    }
                }
            }
            self.cell.forward::<FMA>(
                self.isa,
                &weights,
                batch,
                ForwardStep {
                    gates: &mut gates,
                    h_prev,
                    h_prev_units: &h_prev_units,
                    cell: &mut cell_state,
                    h: &mut h_units,
                    extra: &mut extra,
                },
                &mut scratch,
            );
            unsafe { unit_columns.put(self.output, t * batch, &h_units) };
            if self.keep_tape && C::KEEPS_GATES {
                unsafe { gate_columns.put(self.gates, t * batch, &gates) };
            }
            if self.keep_tape && C::HAS_EXTRA {
                unsafe { unit_columns.put(self.extra, t * batch, &extra) };
            }
            std::mem::swap(&mut h_prev_units, &mut h_units);
            self.barrier.wait();
            // SAFETY: every share wrote its units of step t before the barrier; step t is not
            // written again.
            h_prev = unsafe { self.output.read(t * batch * h, batch * h) };
        }
        // SAFETY: this share's units of the final blocks are its alone.
        unsafe { unit_columns.put(self.output, steps * batch, &h_prev_units) };
        if C::HAS_CELL {
            unsafe { unit_columns.put(self.output, (steps + 1) * batch, &cell_state) };
        }
    }
}

/// The backward scan's time loop with the units split into `parts` shares: fills `dp` (and
/// `dq`) `[steps · batch, gates·hidden]`, zeroed on entry, and the sinks.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<C: Cell>(
    cell: C,
    shape: ScanShape,
    tape: ScanTape<'_>,
    d_output: &[f32],
    wanted: Wanted,
    plan: Plan,
    parts: usize,
    dp: &mut [f32],
    dq: &mut [f32],
    sinks: Sinks<'_>,
) {
    let barrier = SpinBarrier::new(parts);
    let (dp, dq) = (SharedMut::new(dp), SharedMut::new(dq));
    parallel(parts, |part| {
        run(
            plan.isa,
            BackwardUnits {
                cell,
                shape,
                units: split(shape.hidden, parts, part),
                tape,
                d_output,
                wanted,
                isa: plan.isa,
                barrier: &barrier,
                dp,
                dq,
                sinks,
            },
        );
    });
}

/// One thread's units over every step of a backward scan, last step first.
struct BackwardUnits<'a, C> {
    cell: C,
    shape: ScanShape,
    units: Range<usize>,
    tape: ScanTape<'a>,
    d_output: &'a [f32],
    wanted: Wanted,
    isa: Isa,
    barrier: &'a SpinBarrier,
    dp: SharedMut<'a>,
    dq: SharedMut<'a>,
    sinks: Sinks<'a>,
}

impl<C: Cell> Kernel for BackwardUnits<'_, C> {
    #[inline(always)]
    fn run<const FMA: bool>(self) {
        let ScanShape {
            steps,
            batch,
            hidden: h,
        } = self.shape;
        let (units, u) = (self.units.clone(), self.units.len());
        let (width, share_width) = (C::GATES * h, C::GATES * u);
        let (tape, order) = (self.tape, self.tape.order);
        // `W_hᵀ` for this share's units of dh_{t-1}: the rows `units` of `W_h`, transposed.
        let transposed = PackedB::transposed_on(
            &tape.weight[units.start * width..units.end * width],
            u,
            width,
            width,
            1,
        );
        // The cells' own product is skipped (no columns): it needs every unit's gradients.
        let no_product = HiddenWeights {
            hidden: u,
            inputs: width,
            main: PackedB::empty(share_width),
            candidate: None,
            bias: Vec::new(),
        };
        let (unit_columns, gate_columns) = (
            Columns::of_units(h, &units),
            Columns::of_gates(C::GATES, h, &units),
        );
        let mut dh_next = Vec::new();
        unit_columns.take(self.d_output, steps * batch, batch, &mut dh_next);
        let mut dc = Vec::new();
        if C::HAS_CELL {
            unit_columns.take(self.d_output, (steps + 1) * batch, batch, &mut dc);
        }
        let (mut dh, mut up, mut gates, mut extra, mut cell_prev, mut h_t, mut h_prev) = (
            vec![0.0f32; batch * u],
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        let (mut dp_units, mut dq_units) = (
            vec![0.0f32; batch * share_width],
            vec![
                0.0f32;
                if C::HIDDEN_GRADIENT {
                    batch * share_width
                } else {
                    0
                }
            ],
        );
        let (mut projected_sums, mut hidden_sums) = (
            vec![
                0.0f32;
                if self.wanted.input_bias {
                    batch * share_width
                } else {
                    0
                }
            ],
            vec![
                0.0f32;
                if C::HIDDEN_GRADIENT && self.wanted.hidden_bias {
                    batch * share_width
                } else {
                    0
                }
            ],
        );
        let mut scratch = Scratch::default();
        let forward_order: Vec<usize> = order.steps(steps).collect();
        for &t in forward_order.iter().rev() {
            unit_columns.take(self.d_output, t * batch, batch, &mut up);
            for ((d, &up), &next) in dh.iter_mut().zip(&up).zip(&dh_next) {
                *d = up + next;
            }
            let previous = order.previous(0, t, steps);
            if C::KEEPS_GATES {
                gate_columns.take(tape.gates, t * batch, batch, &mut gates);
            }
            if C::HAS_EXTRA {
                unit_columns.take(tape.extra, t * batch, batch, &mut extra);
            }
            unit_columns.take(tape.output, t * batch, batch, &mut h_t);
            let (h_from, c_from, from_row) = match previous {
                None => (tape.h0, tape.c0, 0),
                Some(p) => (tape.output, tape.extra, p * batch),
            };
            unit_columns.take(h_from, from_row, batch, &mut h_prev);
            if C::HAS_CELL {
                unit_columns.take(c_from, from_row, batch, &mut cell_prev);
            }
            let wants_dh_prev = previous.is_some() || self.wanted.h0;
            // The element-wise part: this share's gate gradients, and (GRU) the direct part of
            // its units of dh_{t-1}, which the product below adds to.
            dh_next.fill(0.0);
            self.cell.backward::<FMA>(
                self.isa,
                &no_product,
                batch,
                BackwardStep {
                    gates: &gates,
                    extra: &extra,
                    cell_prev: &cell_prev,
                    h: &h_t,
                    h_prev: &h_prev,
                    dh: &dh,
                    dc: &mut dc,
                    dp: &mut dp_units,
                    dq: &mut dq_units,
                    dh_prev: Some(&mut dh_next),
                },
                &mut scratch,
            );
            // SAFETY (both): this share's columns of step t's rows are its alone; nobody reads
            // step t's gradients before the barrier below.
            unsafe { gate_columns.put(self.dp, t * batch, &dp_units) };
            if C::HIDDEN_GRADIENT {
                unsafe { gate_columns.put(self.dq, t * batch, &dq_units) };
            }
            if !projected_sums.is_empty() {
                crate::scan::accumulate(&mut projected_sums, &dp_units);
            }
            if !hidden_sums.is_empty() {
                crate::scan::accumulate(&mut hidden_sums, &dq_units);
            }
            self.barrier.wait();
            if wants_dh_prev {
                // SAFETY: every share wrote its columns of step t before the barrier; they are
                // not written again.
                let g = unsafe {
                    if C::HIDDEN_GRADIENT {
                        self.dq.read(t * batch * width, batch * width)
                    } else {
                        self.dp.read(t * batch * width, batch * width)
                    }
                };
                gemm(self.isa, &mut dh_next, u, g, width, batch, &transposed);
            }
        }
        // SAFETY (all): this share's columns of every row are its alone.
        if self.wanted.h0 {
            unsafe { unit_columns.put(self.sinks.d_h0, 0, &dh_next) };
        }
        if C::HAS_CELL && self.wanted.c0 {
            unsafe { unit_columns.put(self.sinks.d_c0, 0, &dc) };
        }
        if !projected_sums.is_empty() {
            unsafe { gate_columns.put(self.sinks.projected_sums, 0, &projected_sums) };
        }
        if !hidden_sums.is_empty() {
            unsafe { gate_columns.put(self.sinks.hidden_sums, 0, &hidden_sums) };
        }
    }
}
