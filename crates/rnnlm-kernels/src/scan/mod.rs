//! One layer's whole time loop, forwards and backwards, generic over the [`Cell`].
//!
//! The batch's rows are split between threads: rows are independent in the recurrence, so the
//! threads never wait for each other inside the loop. A batch with few rows for the threads (a
//! batch of one, or a few rows each against a large weight) splits the units instead, as
//! generation does, the threads meeting after every step; both give the same bits. A step is one product of the state with
//! the packed `[hidden, gates·hidden]` weight and one pass over the gates; the forward pass
//! keeps what the backward pass needs (the tape), and the backward pass sums the bias gradients
//! while each step is in cache, then takes the weight gradient as one large product over all
//! steps. Every sum runs in an order fixed by the shapes, so the results do not depend on the
//! number of threads.

use crate::cell::{
    BackwardStep, Cell, CellKind, ForwardStep, GradientSources, HiddenWeights, Scratch,
};
use crate::math::{Isa, Kernel, run};
use crate::profile::timed;
use crate::shared::{SharedMut, SharedUninit, filled_in_parallel, parallel};

pub use crate::order::Order;
pub use io::{Plan, Projected, ScanGradients, ScanInputs, ScanOutput, ScanShape, ScanTape, Wanted};
pub(crate) use io::{Sinks, accumulate};

mod io;
mod units;

/// The forward scan of one layer: every step's `h` (and the LSTM's final cell), and, when
/// `keep_tape`, what [`backward`] needs.
///
/// # Panics
/// If a slice does not have the length its shape asks for.
pub fn forward(
    kind: CellKind,
    shape: ScanShape,
    projected: Projected<'_>,
    inputs: ScanInputs<'_>,
    keep_tape: bool,
    plan: Plan,
) -> ScanOutput {
    inputs.order.check(shape.steps, shape.batch);
    if let Some(sorted) = Sorted::by_length(inputs.order) {
        return sorted.forward(kind, shape, projected, inputs, keep_tape, plan);
    }
    crate::dispatch!(kind, |cell| forward_cell(
        cell, shape, projected, inputs, keep_tape, plan
    ))
}

/// The rows sorted by length, longest first, ties in row order (`result[place]` is the row at
/// that place): the order in which rows of different lengths run, each step's rows then one
/// run per thread. `None` when the rows are already in it, or have no lengths.
pub fn longest_first(lengths: &[usize]) -> Option<Vec<usize>> {
    if lengths.windows(2).all(|pair| pair[0] >= pair[1]) {
        return None;
    }
    let mut rows: Vec<usize> = (0..lengths.len()).collect();
    rows.sort_by_key(|&row| std::cmp::Reverse(lengths[row]));
    Some(rows)
}

/// Rows of different lengths in another order than longest first, run sorted: at every step
/// the rows that take it are then one run per thread (one product with the hidden weight,
/// not one per run of consecutive rows). The rows move into the sorted order on the way in and
/// back on the way out; the tape stays sorted, and the backward pass sorts the same way (the
/// order depends on the lengths alone, so the results do not depend on the thread count).
struct Sorted {
    /// `rows[i]`: the row at place `i` of the sorted order (longest first, ties in row order).
    rows: Vec<usize>,
    lengths: Vec<usize>,
}

impl Sorted {
    /// `None` without lengths, or when the rows are already longest first.
    fn by_length(order: Order<'_>) -> Option<Self> {
        let rows = longest_first(order.lengths)?;
        let lengths = rows.iter().map(|&row| order.lengths[row]).collect();
        Some(Self { rows, lengths })
    }

    fn order(&self, reverse: bool) -> Order<'_> {
        Order {
            reverse,
            lengths: &self.lengths,
        }
    }

    /// Every block of `rows.len()` rows of `cols` values, in the sorted order.
    fn gather(&self, values: &[f32], cols: usize) -> Vec<f32> {
        let block = self.rows.len() * cols;
        let mut out = Vec::with_capacity(values.len());
        for chunk in values.chunks_exact(block) {
            for &row in &self.rows {
                out.extend_from_slice(&chunk[row * cols..(row + 1) * cols]);
            }
        }
        out
    }

    /// The inverse of [`gather`](Self::gather).
    fn scatter(&self, values: &[f32], cols: usize) -> Vec<f32> {
        let block = self.rows.len() * cols;
        let mut out = vec![0.0f32; values.len()];
        for (from, to) in values.chunks_exact(block).zip(out.chunks_exact_mut(block)) {
            for (place, &row) in self.rows.iter().enumerate() {
                to[row * cols..(row + 1) * cols]
                    .copy_from_slice(&from[place * cols..(place + 1) * cols]);
            }
        }
        out
    }

    fn forward(
        &self,
        kind: CellKind,
        shape: ScanShape,
        projected: Projected<'_>,
        inputs: ScanInputs<'_>,
        keep_tape: bool,
        plan: Plan,
    ) -> ScanOutput {
        let (hidden, width) = (shape.hidden, kind.gates() * shape.hidden);
        let (projected, h0, c0) = timed("scan: rows sorted by length", || {
            let projected = match projected {
                Projected::Borrowed(values) => self.gather(values, width),
                Projected::Owned(values) => self.gather(&values, width),
            };
            (
                projected,
                self.gather(inputs.h0, hidden),
                self.gather(inputs.c0, hidden),
            )
        });
        let sorted_inputs = ScanInputs {
            h0: &h0,
            c0: &c0,
            order: self.order(inputs.order.reverse),
            ..inputs
        };
        let out = forward(
            kind,
            shape,
            Projected::Owned(projected),
            sorted_inputs,
            keep_tape,
            plan,
        );
        ScanOutput {
            output: timed("scan: rows sorted by length", || {
                self.scatter(&out.output, hidden)
            }),
            ..out
        }
    }

    fn backward(
        &self,
        kind: CellKind,
        shape: ScanShape,
        tape: ScanTape<'_>,
        d_output: &[f32],
        wanted: Wanted,
        plan: Plan,
    ) -> ScanGradients {
        let (hidden, width) = (shape.hidden, kind.gates() * shape.hidden);
        let (h0, c0, output, d_output) = timed("scan: rows sorted by length", || {
            (
                self.gather(tape.h0, hidden),
                self.gather(tape.c0, hidden),
                self.gather(tape.output, hidden),
                self.gather(d_output, hidden),
            )
        });
        let sorted_tape = ScanTape {
            h0: &h0,
            c0: &c0,
            output: &output,
            order: self.order(tape.order.reverse),
            ..tape
        };
        let grads = backward(kind, shape, sorted_tape, &d_output, wanted, plan);
        timed("scan: rows sorted by length", || ScanGradients {
            projected: self.scatter(&grads.projected, width),
            h0: self.scatter(&grads.h0, hidden),
            c0: self.scatter(&grads.c0, hidden),
            ..grads
        })
    }
}

fn expect_len(what: &str, slice: &[f32], len: usize, shape: &str) {
    assert_eq!(
        slice.len(),
        len,
        "scan: {what} holds {} values, expected {shape} = {len}",
        slice.len()
    );
}

fn forward_cell<C: Cell>(
    cell: C,
    shape: ScanShape,
    mut projected: Projected<'_>,
    inputs: ScanInputs<'_>,
    keep_tape: bool,
    plan: Plan,
) -> ScanOutput {
    let ScanShape {
        steps,
        batch,
        hidden,
    } = shape;
    let width = C::GATES * hidden;
    let rows = shape.rows();
    assert_eq!(
        projected.len(),
        rows * width,
        "scan: projected holds {} values, expected [steps · batch, gates · hidden] = {}",
        projected.len(),
        rows * width
    );
    if !inputs.input_bias.is_empty() {
        expect_len("input_bias", inputs.input_bias, width, "[gates · hidden]");
    }
    expect_len("h0", inputs.h0, batch * hidden, "[batch, hidden]");
    expect_len(
        "c0",
        inputs.c0,
        if C::HAS_CELL { batch * hidden } else { 0 },
        "[batch, hidden]",
    );
    expect_len(
        "weight",
        inputs.weight,
        hidden * width,
        "[hidden, gates · hidden]",
    );
    if !inputs.hidden_bias.is_empty() {
        expect_len("hidden_bias", inputs.hidden_bias, width, "[gates · hidden]");
    }
    inputs.order.check(steps, batch);
    let unit_parts = units::parts::<C>(shape, inputs.order, plan);
    if unit_parts > 1 {
        let projected = match projected {
            Projected::Owned(values) => values,
            Projected::Borrowed(values) => values.to_vec(),
        };
        return units::forward(cell, shape, projected, inputs, keep_tape, plan, unit_parts);
    }
    let parts = plan.threads.clamp(1, batch.max(1));
    let weights = timed("scan forward: pack W_h", || {
        cell.pack(inputs.weight, inputs.hidden_bias, hidden, parts)
    });
    let output_len = output_blocks::<C>(steps) * batch * hidden;
    let in_place = matches!(projected, Projected::Owned(_));
    // Gates computed in place need no buffer of their own.
    let gates_len = if keep_tape && C::KEEPS_GATES && !in_place {
        rows * width
    } else {
        0
    };
    let extra_len = if keep_tape && C::HAS_EXTRA {
        rows * hidden
    } else {
        0
    };
    let (mut gates, mut extra) = (Vec::new(), Vec::new());
    let source = match &mut projected {
        Projected::Borrowed(values) => Source::Read(values),
        Projected::Owned(values) => Source::InPlace(SharedMut::new(values)),
    };
    let output = timed("scan forward: time loop", || {
        // SAFETY: the parts cover every batch row, and each zeroes and writes its rows of the
        // three buffers at every step (and its rows of the final cell).
        unsafe {
            filled_in_parallel(output_len, |output| {
                gates = filled_in_parallel(gates_len, |gates| {
                    extra = filled_in_parallel(extra_len, |extra| {
                        parallel(parts, |part| {
                            let rows = ForwardRows {
                                cell,
                                shape,
                                batch_rows: inputs.order.part(batch, parts, part),
                                source,
                                inputs,
                                isa: plan.isa,
                                weights: &weights,
                                output,
                                gates: keep_tape.then_some(gates),
                                extra: keep_tape.then_some(extra),
                            };
                            run(plan.isa, rows);
                        })
                    })
                })
            })
        }
    });
    if let Projected::Owned(values) = projected
        && keep_tape
        && C::KEEPS_GATES
    {
        gates = values;
    }
    ScanOutput {
        output,
        gates,
        extra,
    }
}

/// Blocks of `[batch, hidden]` in a scan's output: every step's `h`, the final `h`, the final
/// `c`.
fn output_blocks<C: Cell>(steps: usize) -> usize {
    steps + 1 + usize::from(C::HAS_CELL)
}

/// Where a forward scan's threads find the projection.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Read, the gates written elsewhere.
    Read(&'a [f32]),
    /// Turned into the gates in place.
    InPlace(SharedMut<'a>),
}

/// One thread's share of a forward scan: the batch rows `batch_rows` over every step.
struct ForwardRows<'a, C> {
    cell: C,
    shape: ScanShape,
    batch_rows: std::ops::Range<usize>,
    source: Source<'a>,
    inputs: ScanInputs<'a>,
    isa: Isa,
    weights: &'a HiddenWeights,
    /// `[steps (+ 1), batch, hidden]`.
    output: SharedUninit<'a>,
    /// The tapes, where they are kept (else each step's gates and extra block are scratch).
    gates: Option<SharedUninit<'a>>,
    extra: Option<SharedUninit<'a>>,
}

impl<C: Cell> Kernel for ForwardRows<'_, C> {
    #[inline(always)]
    fn run<const FMA: bool>(self) {
        let ScanShape {
            steps,
            batch,
            hidden: h,
        } = self.shape;
        let width = C::GATES * h;
        let (start, nb) = (self.batch_rows.start, self.batch_rows.len());
        if nb == 0 {
            return;
        }
        let inputs = self.inputs;
        let order = inputs.order;
        let mut cell_state = if C::HAS_CELL {
            inputs.c0[start * h..(start + nb) * h].to_vec()
        } else {
            Vec::new()
        };
        // Where the gates are neither computed in place nor kept, a step's gates live here;
        // where no tape is kept, its extra block.
        let mut local_gates = match (self.source, self.gates) {
            (Source::InPlace(_), _) => Vec::new(),
            (_, Some(_)) if C::KEEPS_GATES => Vec::new(),
            _ => vec![0.0f32; nb * width],
        };
        let mut local_extra = if self.extra.is_some() || !C::HAS_EXTRA {
            Vec::new()
        } else {
            vec![0.0f32; nb * h]
        };
        let mut scratch = Scratch::default();
        let initial = &inputs.h0[start * h..(start + nb) * h];
        // Rows of different lengths keep their state here, since a row's output past its
        // length is zero; without lengths the previous step's output is the state.
        let mut state = if order.lengths.is_empty() {
            Vec::new()
        } else {
            initial.to_vec()
        };
        let mut h_prev: &[f32] = initial;
        for t in order.steps(steps) {
            let row = t * batch + start;
            let rows = row * width..(row + nb) * width;
            // SAFETY (all four): rows `row .. row + nb` at step t are this thread's alone.
            let gates: &mut [f32] = match (self.source, self.gates) {
                (Source::InPlace(projected), _) => unsafe {
                    projected.slice(rows.start, rows.len())
                },
                (_, Some(tape)) if C::KEEPS_GATES => unsafe {
                    tape.zeroed_slice(rows.start, rows.len())
                },
                _ => &mut local_gates,
            };
            let extra: &mut [f32] = match self.extra {
                Some(tape) if C::HAS_EXTRA => unsafe { tape.zeroed_slice(row * h, nb * h) },
                _ => &mut local_extra,
            };
            let out = unsafe { self.output.zeroed_slice(row * h, nb * h) };
            if let Source::Read(projected) = self.source {
                gates.copy_from_slice(&projected[rows]);
            }
            if !inputs.input_bias.is_empty() {
                for g in gates.chunks_exact_mut(width) {
                    for (g, &b) in g.iter_mut().zip(inputs.input_bias) {
                        *g += b;
                    }
                }
            }
            if order.lengths.is_empty() {
                self.cell.forward::<FMA>(
                    self.isa,
                    self.weights,
                    nb,
                    ForwardStep {
                        gates,
                        h_prev,
                        h_prev_units: h_prev,
                        cell: &mut cell_state,
                        h: &mut *out,
                        extra,
                    },
                    &mut scratch,
                );
                h_prev = out;
                continue;
            }
            // Only the rows that take this step, a run of consecutive ones at a time (one run
            // where the rows are sorted by length); the others' outputs stay zero.
            for run in order.runs(self.batch_rows.clone(), t) {
                let units = run.start * h..run.end * h;
                let gate_units = run.start * width..run.end * width;
                self.cell.forward::<FMA>(
                    self.isa,
                    self.weights,
                    run.len(),
                    ForwardStep {
                        gates: &mut gates[gate_units],
                        h_prev: &state[units.clone()],
                        h_prev_units: &state[units.clone()],
                        cell: if C::HAS_CELL {
                            &mut cell_state[units.clone()]
                        } else {
                            &mut []
                        },
                        h: &mut out[units.clone()],
                        extra: if C::HAS_EXTRA {
                            &mut extra[units.clone()]
                        } else {
                            &mut []
                        },
                    },
                    &mut scratch,
                );
                state[units.clone()].copy_from_slice(&out[units]);
            }
        }
        let last = if order.lengths.is_empty() {
            h_prev
        } else {
            &state
        };
        // SAFETY: these rows of the final state's blocks are this thread's alone.
        unsafe {
            self.output
                .zeroed_slice((steps * batch + start) * h, nb * h)
        }
        .copy_from_slice(last);
        if C::HAS_CELL {
            unsafe {
                self.output
                    .zeroed_slice(((steps + 1) * batch + start) * h, nb * h)
            }
            .copy_from_slice(&cell_state);
        }
    }
}

/// The backward scan of one layer: from the gradient of its output (`d_output`, shaped as
/// [`ScanOutput::output`]: every `h_t`, then the LSTM's final cell), the gradients of its
/// inputs.
///
/// # Panics
/// If a slice does not have the length its shape asks for, or the tape was not kept.
pub fn backward(
    kind: CellKind,
    shape: ScanShape,
    tape: ScanTape<'_>,
    d_output: &[f32],
    wanted: Wanted,
    plan: Plan,
) -> ScanGradients {
    tape.order.check(shape.steps, shape.batch);
    if let Some(sorted) = Sorted::by_length(tape.order) {
        return sorted.backward(kind, shape, tape, d_output, wanted, plan);
    }
    crate::dispatch!(kind, |cell| backward_cell(
        cell, shape, tape, d_output, wanted, plan
    ))
}

fn backward_cell<C: Cell>(
    cell: C,
    shape: ScanShape,
    tape: ScanTape<'_>,
    d_output: &[f32],
    wanted: Wanted,
    plan: Plan,
) -> ScanGradients {
    let ScanShape {
        steps,
        batch,
        hidden,
    } = shape;
    let width = C::GATES * hidden;
    let rows = shape.rows();
    let state = batch * hidden;
    let output_len = output_blocks::<C>(steps) * state;
    expect_len("h0", tape.h0, state, "[batch, hidden]");
    expect_len(
        "c0",
        tape.c0,
        if C::HAS_CELL { state } else { 0 },
        "[batch, hidden]",
    );
    expect_len(
        "weight",
        tape.weight,
        hidden * width,
        "[hidden, gates · hidden]",
    );
    expect_len(
        "output",
        tape.output,
        output_len,
        "[steps + 1 (+ 1), batch, hidden]",
    );
    expect_len(
        "d_output",
        d_output,
        output_len,
        "[steps + 1 (+ 1), batch, hidden]",
    );
    tape.order.check(steps, batch);
    expect_len(
        "tape gates",
        tape.gates,
        if C::KEEPS_GATES { rows * width } else { 0 },
        "[steps · batch, gates · hidden]",
    );
    expect_len(
        "tape extra",
        tape.extra,
        if C::HAS_EXTRA { rows * hidden } else { 0 },
        "[steps · batch, hidden]",
    );

    let parts = plan.threads.clamp(1, batch.max(1));
    let unit_parts = units::parts::<C>(shape, tape.order, plan);
    let hidden_sums_wanted = C::HIDDEN_GRADIENT && wanted.hidden_bias;
    // Per batch row, the sums over the steps of its rows of dp (and dq); then over the rows in
    // order, so the bias gradients do not depend on the thread count.
    let mut projected_sums = vec![0.0f32; if wanted.input_bias { batch * width } else { 0 }];
    let mut hidden_sums = vec![0.0f32; if hidden_sums_wanted { batch * width } else { 0 }];
    let mut d_h0 = vec![0.0f32; if wanted.h0 { state } else { 0 }];
    let mut d_c0 = vec![0.0f32; if wanted.c0 && C::HAS_CELL { state } else { 0 }];
    let dq_len = if C::HIDDEN_GRADIENT { rows * width } else { 0 };
    let mut dq = Vec::new();
    let sinks = Sinks {
        projected_sums: SharedMut::new(&mut projected_sums),
        hidden_sums: SharedMut::new(&mut hidden_sums),
        d_h0: SharedMut::new(&mut d_h0),
        d_c0: SharedMut::new(&mut d_c0),
    };
    let dp = if unit_parts > 1 {
        timed("scan backward: time loop (units split)", || {
            let mut dp = vec![0.0f32; rows * width];
            dq = vec![0.0f32; dq_len];
            units::backward(
                cell, shape, tape, d_output, wanted, plan, unit_parts, &mut dp, &mut dq, sinks,
            );
            dp
        })
    } else {
        let transposed = timed("scan backward: pack W_h transposed", || {
            cell.pack_transposed(tape.weight, hidden, parts)
        });
        timed("scan backward: time loop", || {
            // SAFETY: the parts cover every batch row, and each zeroes and writes its rows of dp
            // (and dq) at every step.
            unsafe {
                filled_in_parallel(rows * width, |dp| {
                    dq = filled_in_parallel(dq_len, |dq| {
                        parallel(parts, |part| {
                            let rows = BackwardRows {
                                cell,
                                shape,
                                batch_rows: tape.order.part(batch, parts, part),
                                isa: plan.isa,
                                transposed: &transposed,
                                tape,
                                d_output,
                                wanted,
                                dp,
                                dq,
                                sinks,
                            };
                            run(plan.isa, rows);
                        })
                    })
                })
            }
        })
    };
    let weight = if wanted.weight {
        timed("scan backward: weight gradient", || {
            let sources = GradientSources {
                h0: tape.h0,
                outputs: &tape.output[..rows * hidden],
                dp: &dp,
                dq: &dq,
                extra: tape.extra,
                batch,
                order: tape.order,
            };
            cell.weight_gradient(&sources, hidden, plan.threads)
        })
    } else {
        Vec::new()
    };
    ScanGradients {
        input_bias: column_sums(&projected_sums, width),
        hidden_bias: column_sums(&hidden_sums, width),
        projected: dp,
        h0: d_h0,
        c0: d_c0,
        weight,
    }
}

/// The sums of the columns of `g` `[rows, width]`, every sum in row order (empty for an empty
/// `g`).
fn column_sums(g: &[f32], width: usize) -> Vec<f32> {
    if g.is_empty() {
        return Vec::new();
    }
    let mut sums = vec![0.0f32; width];
    for row in g.chunks_exact(width) {
        accumulate(&mut sums, row);
    }
    sums
}

/// One thread's share of a backward scan: its batch rows, last step first.
struct BackwardRows<'a, C> {
    cell: C,
    shape: ScanShape,
    batch_rows: std::ops::Range<usize>,
    isa: Isa,
    transposed: &'a HiddenWeights,
    tape: ScanTape<'a>,
    d_output: &'a [f32],
    wanted: Wanted,
    dp: SharedUninit<'a>,
    dq: SharedUninit<'a>,
    sinks: Sinks<'a>,
}

impl<C: Cell> Kernel for BackwardRows<'_, C> {
    #[inline(always)]
    fn run<const FMA: bool>(self) {
        let ScanShape {
            steps,
            batch,
            hidden: h,
        } = self.shape;
        let width = C::GATES * h;
        let (start, nb) = (self.batch_rows.start, self.batch_rows.len());
        if nb == 0 {
            return;
        }
        let (tape, d_output, order) = (self.tape, self.d_output, self.tape.order);
        // This thread's rows of step t in a buffer of `cols` columns.
        let block =
            |t: usize, cols: usize| (t * batch + start) * cols..(t * batch + start + nb) * cols;
        let initial = start * h..(start + nb) * h;
        // The gradient reaching the state from the steps after it (in the forward scan's
        // order), starting from the final state's own.
        let mut dh_next = d_output[block(steps, h)].to_vec();
        let mut dh = vec![0.0f32; nb * h];
        // LSTM: the gradient of c_t, starting from the final cell's.
        let mut dc = if C::HAS_CELL {
            d_output[block(steps + 1, h)].to_vec()
        } else {
            Vec::new()
        };
        // Rows of different lengths: each run's h_{t-1} and c_{t-1}, gathered from the
        // outputs and the initial state.
        let (mut h_prev_rows, mut cell_prev_rows) = (Vec::new(), Vec::new());
        let mut scratch = Scratch::default();
        // SAFETY (the sums): these batch rows are this thread's alone.
        let projected_sums = if self.wanted.input_bias {
            unsafe { self.sinks.projected_sums.slice(start * width, nb * width) }
        } else {
            &mut []
        };
        let hidden_sums = if C::HIDDEN_GRADIENT && self.wanted.hidden_bias {
            unsafe { self.sinks.hidden_sums.slice(start * width, nb * width) }
        } else {
            &mut []
        };
        let forward_order: Vec<usize> = order.steps(steps).collect();
        for &t in forward_order.iter().rev() {
            // SAFETY: rows `block(t)` are this thread's alone.
            let dp = unsafe {
                self.dp
                    .zeroed_slice((t * batch + start) * width, nb * width)
            };
            let dq: &mut [f32] = if C::HIDDEN_GRADIENT {
                unsafe {
                    self.dq
                        .zeroed_slice((t * batch + start) * width, nb * width)
                }
            } else {
                &mut []
            };
            if order.lengths.is_empty() {
                for ((d, &up), &next) in dh.iter_mut().zip(&d_output[block(t, h)]).zip(&dh_next) {
                    *d = up + next;
                }
                let previous = order.previous(0, t, steps);
                let h_prev = match previous {
                    None => &tape.h0[initial.clone()],
                    Some(p) => &tape.output[block(p, h)],
                };
                let cell_prev: &[f32] = match (C::HAS_CELL, previous) {
                    (false, _) => &[],
                    (true, None) => &tape.c0[initial.clone()],
                    (true, Some(p)) => &tape.extra[block(p, h)],
                };
                let wants_dh_prev = previous.is_some() || self.wanted.h0;
                self.cell.backward::<FMA>(
                    self.isa,
                    self.transposed,
                    nb,
                    BackwardStep {
                        gates: if C::KEEPS_GATES {
                            &tape.gates[block(t, width)]
                        } else {
                            &[]
                        },
                        extra: if C::HAS_EXTRA {
                            &tape.extra[block(t, h)]
                        } else {
                            &[]
                        },
                        cell_prev,
                        h: &tape.output[block(t, h)],
                        h_prev,
                        dh: &dh,
                        dc: &mut dc,
                        dp: &mut *dp,
                        dq: &mut *dq,
                        dh_prev: wants_dh_prev.then_some(&mut dh_next[..]),
                    },
                    &mut scratch,
                );
            } else {
                // The rows past their length at step t pass the state's gradient through
                // unchanged and get none of their own (their output there is a constant zero).
                for run in order.runs(self.batch_rows.clone(), t) {
                    // The run's rows in this thread's buffers, and of step t in the tapes.
                    let (units, gate_units) = (
                        run.start * h..run.end * h,
                        run.start * width..run.end * width,
                    );
                    let at = |cols: usize| {
                        (t * batch + start + run.start) * cols..(t * batch + start + run.end) * cols
                    };
                    h_prev_rows.clear();
                    cell_prev_rows.clear();
                    for b in start + run.start..start + run.end {
                        let (h_from, c_from) = match order.previous(b, t, steps) {
                            None => (tape.h0, tape.c0),
                            Some(p) => (
                                &tape.output[p * batch * h..],
                                tape.extra.get(p * batch * h..).unwrap_or(&[]),
                            ),
                        };
                        h_prev_rows.extend_from_slice(&h_from[b * h..(b + 1) * h]);
                        if C::HAS_CELL {
                            cell_prev_rows.extend_from_slice(&c_from[b * h..(b + 1) * h]);
                        }
                    }
                    let up = &d_output[at(h)];
                    for ((d, &up), &next) in dh[units.clone()]
                        .iter_mut()
                        .zip(up)
                        .zip(&dh_next[units.clone()])
                    {
                        *d = up + next;
                    }
                    self.cell.backward::<FMA>(
                        self.isa,
                        self.transposed,
                        run.len(),
                        BackwardStep {
                            gates: if C::KEEPS_GATES {
                                &tape.gates[at(width)]
                            } else {
                                &[]
                            },
                            extra: if C::HAS_EXTRA {
                                &tape.extra[at(h)]
                            } else {
                                &[]
                            },
                            cell_prev: &cell_prev_rows,
                            h: &tape.output[at(h)],
                            h_prev: &h_prev_rows,
                            dh: &dh[units.clone()],
                            dc: if C::HAS_CELL {
                                &mut dc[units.clone()]
                            } else {
                                &mut []
                            },
                            dp: &mut dp[gate_units.clone()],
                            dq: if C::HIDDEN_GRADIENT {
                                &mut dq[gate_units]
                            } else {
                                &mut []
                            },
                            dh_prev: Some(&mut dh_next[units]),
                        },
                        &mut scratch,
                    );
                }
            }
            if !projected_sums.is_empty() {
                accumulate(projected_sums, dp);
            }
            if !hidden_sums.is_empty() {
                accumulate(hidden_sums, dq);
            }
        }
        // SAFETY: these batch rows are this thread's alone.
        if self.wanted.h0 {
            unsafe { self.sinks.d_h0.slice(start * h, nb * h) }.copy_from_slice(&dh_next);
        }
        if C::HAS_CELL && self.wanted.c0 {
            unsafe { self.sinks.d_c0.slice(start * h, nb * h) }.copy_from_slice(&dc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Activation;
    use crate::cell::KINDS;
    use crate::test_support::{isas, values};

    /// Every input of a scan of `kind` with `shape`, as owned buffers.
    struct Case {
        kind: CellKind,
        shape: ScanShape,
        projected: Vec<f32>,
        input_bias: Vec<f32>,
        h0: Vec<f32>,
        c0: Vec<f32>,
        weight: Vec<f32>,
        hidden_bias: Vec<f32>,
        reverse: bool,
        lengths: Vec<usize>,
    }

    impl Case {
        fn new(kind: CellKind, shape: ScanShape, seed: u64) -> Self {
            let ScanShape {
                steps,
                batch,
                hidden,
            } = shape;
            let width = kind.gates() * hidden;
            Self {
                kind,
                shape,
                projected: values(steps * batch * width, seed, 1.0),
                input_bias: values(width, seed + 1, 0.5),
                h0: values(batch * hidden, seed + 2, 0.8),
                c0: if kind.has_cell() {
                    values(batch * hidden, seed + 3, 0.8)
                } else {
                    Vec::new()
                },
                weight: values(hidden * width, seed + 4, 0.6),
                hidden_bias: if kind.has_hidden_bias() {
                    values(width, seed + 5, 0.5)
                } else {
                    Vec::new()
                },
                reverse: false,
                lengths: Vec::new(),
            }
        }

        fn inputs(&self) -> ScanInputs<'_> {
            ScanInputs {
                input_bias: &self.input_bias,
                h0: &self.h0,
                c0: &self.c0,
                weight: &self.weight,
                hidden_bias: &self.hidden_bias,
                order: Order {
                    reverse: self.reverse,
                    lengths: &self.lengths,
                },
            }
        }

        fn forward(&self, keep_tape: bool, plan: Plan) -> ScanOutput {
            let projected = Projected::Borrowed(&self.projected);
            forward(
                self.kind,
                self.shape,
                projected,
                self.inputs(),
                keep_tape,
                plan,
            )
        }

        fn backward(&self, out: &ScanOutput, d_output: &[f32], plan: Plan) -> ScanGradients {
            let wanted = Wanted {
                input_bias: true,
                h0: true,
                c0: true,
                weight: true,
                hidden_bias: true,
            };
            self.backward_wanting(out, d_output, plan, wanted)
        }

        fn backward_wanting(
            &self,
            out: &ScanOutput,
            d_output: &[f32],
            plan: Plan,
            wanted: Wanted,
        ) -> ScanGradients {
            let tape = ScanTape {
                h0: &self.h0,
                c0: &self.c0,
                weight: &self.weight,
                output: &out.output,
                gates: &out.gates,
                extra: &out.extra,
                order: Order {
                    reverse: self.reverse,
                    lengths: &self.lengths,
                },
            };
            backward(self.kind, self.shape, tape, d_output, wanted, plan)
        }
    }

    /// Every clipped kind of [`KINDS`] clamps some of its tests' states and not others (the
    /// LSTM its cells, the others their hidden states): the finite-difference and thread tests
    /// pass through both branches of the clamp.
    #[test]
    fn clipped_cells_hold_their_states_on_the_bound() {
        let shape = ScanShape {
            steps: 4,
            batch: 3,
            hidden: 5,
        };
        let rows = shape.steps * shape.batch * shape.hidden;
        let clipped: Vec<(CellKind, CellKind, f32)> = KINDS
            .into_iter()
            .filter_map(|kind| {
                let (plain, clip) = match kind {
                    CellKind::Lstm(clip) => (CellKind::Lstm(crate::cell::Clip::NONE), clip),
                    CellKind::Gru(clip) => (CellKind::Gru(crate::cell::Clip::NONE), clip),
                    CellKind::GruD2l(clip) => (CellKind::GruD2l(crate::cell::Clip::NONE), clip),
                    CellKind::Rnn(a, clip) => (CellKind::Rnn(a, crate::cell::Clip::NONE), clip),
                };
                clip.bound()
                    .is_finite()
                    .then_some((plain, kind, clip.bound()))
            })
            .collect();
        assert_eq!(clipped.len(), 4, "a clipped LSTM, GRU, d2l GRU and RNN");
        for (plain, kind, bound) in clipped {
            let states = |kind: CellKind| {
                let out = Case::new(kind, shape, 21).forward(true, Plan::default());
                if kind.has_cell() {
                    out.extra
                } else {
                    out.output[..rows].to_vec()
                }
            };
            let (free, held) = (states(plain), states(kind));
            assert!(
                free.iter().any(|c| c.abs() > bound),
                "{kind:?}: the unclipped states exceed {bound}"
            );
            assert!(
                held.iter().all(|c| c.abs() <= bound),
                "{kind:?}: clipped states within {bound}"
            );
            assert!(
                held.iter().any(|c| c.abs() == bound) && held.iter().any(|c| c.abs() < bound),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let shape = ScanShape {
            steps: 5,
            batch: 7,
            hidden: 70,
        };
        for (kind, (reverse, lengths)) in KINDS.into_iter().flat_map(|k| {
            orders(shape.steps, shape.batch)
                .into_iter()
                .map(move |o| (k, o))
        }) {
            let kind_and_order = format!("{kind:?} reverse {reverse} lengths {lengths:?}");
            let case = Case {
                reverse,
                lengths,
                ..Case::new(kind, shape, 11)
            };
            let plan = |threads| Plan {
                threads,
                isa: Isa::detect(),
            };
            let one = case.forward(true, plan(1));
            let d_output = values(one.output.len(), 99, 1.0);
            let grads = case.backward(&one, &d_output, plan(1));
            for threads in 2..=4 {
                let out = case.forward(true, plan(threads));
                assert_eq!(out, one, "{kind_and_order}, {threads} threads: forward");
                assert_eq!(
                    case.backward(&out, &d_output, plan(threads)),
                    grads,
                    "{kind_and_order}, {threads} threads: backward"
                );
            }
            // Without a tape the same states come out, and nothing else.
            let untracked = case.forward(false, plan(2));
            assert_eq!(
                untracked.output, one.output,
                "{kind_and_order}: untracked forward"
            );
            assert!(untracked.gates.is_empty() && untracked.extra.is_empty());
            // Gates computed in the projection's own buffer: the same output and tape.
            for keep_tape in [true, false] {
                let owned = Projected::Owned(case.projected.clone());
                let in_place = forward(kind, shape, owned, case.inputs(), keep_tape, plan(3));
                let expected = if keep_tape { &one } else { &untracked };
                assert_eq!(
                    &in_place, expected,
                    "{kind_and_order}: in place, tape {keep_tape}"
                );
            }
        }
    }

    /// Small batches split the units instead of the rows (`crate::units`): the same
    /// bits as one thread's rows, for every cell that splits, both directions, with and without
    /// a tape, every wanted gradient; unit shares of 64 and of uneven sizes.
    #[test]
    fn splitting_the_units_gives_the_same_bits_as_splitting_the_rows() {
        for (batch, hidden, threads) in [(1, 130, 2), (2, 200, 3), (1, 257, 4), (3, 128, 4)] {
            let shape = ScanShape {
                steps: 6,
                batch,
                hidden,
            };
            for kind in KINDS {
                for reverse in [false, true] {
                    let what = format!(
                        "{kind:?} batch {batch} hidden {hidden} {threads} threads reverse {reverse}"
                    );
                    let case = Case {
                        reverse,
                        ..Case::new(kind, shape, 21)
                    };
                    let plan = |threads| Plan {
                        threads,
                        isa: Isa::detect(),
                    };
                    let splits = units::parts::<crate::cell::lstm::Lstm>(
                        shape,
                        Order::default(),
                        plan(threads),
                    );
                    assert!(splits > 1, "{what}: the units are split");
                    let one = case.forward(true, plan(1));
                    let d_output = values(one.output.len(), 98, 1.0);
                    let grads = case.backward(&one, &d_output, plan(1));
                    let split = case.forward(true, plan(threads));
                    assert_eq!(split, one, "{what}: forward");
                    assert_eq!(
                        case.backward(&split, &d_output, plan(threads)),
                        grads,
                        "{what}: backward"
                    );
                    let untracked = case.forward(false, plan(threads));
                    assert_eq!(untracked.output, one.output, "{what}: untracked forward");
                    assert!(
                        untracked.gates.is_empty() && untracked.extra.is_empty(),
                        "{what}: no tape"
                    );
                    // Only some gradients wanted (a constant initial state, a frozen bias).
                    for wanted in [
                        Wanted {
                            weight: true,
                            ..Wanted::default()
                        },
                        Wanted {
                            h0: true,
                            c0: true,
                            ..Wanted::default()
                        },
                        Wanted {
                            input_bias: true,
                            hidden_bias: true,
                            ..Wanted::default()
                        },
                    ] {
                        assert_eq!(
                            case.backward_wanting(&split, &d_output, plan(threads), wanted),
                            case.backward_wanting(&one, &d_output, plan(1), wanted),
                            "{what}: backward wanting {wanted:?}"
                        );
                    }
                }
            }
        }
    }

    fn close(a: &[f32], b: &[f32], tolerance: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tolerance * (1.0 + x.abs().max(y.abs())),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    #[test]
    fn every_instruction_set_gives_the_same_results_to_rounding() {
        let shape = ScanShape {
            steps: 4,
            batch: 9,
            hidden: 67,
        };
        for kind in KINDS {
            let case = Case::new(kind, shape, 5);
            let reference = Plan {
                threads: 2,
                isa: Isa::Baseline,
            };
            let base = case.forward(true, reference);
            let d_output = values(base.output.len(), 3, 1.0);
            let base_grads = case.backward(&base, &d_output, reference);
            for isa in isas() {
                let plan = Plan { threads: 2, isa };
                let out = case.forward(true, plan);
                close(
                    &out.output,
                    &base.output,
                    1e-5,
                    &format!("{kind:?} {isa:?} output"),
                );
                let grads = case.backward(&out, &d_output, plan);
                close(
                    &grads.projected,
                    &base_grads.projected,
                    1e-4,
                    &format!("{kind:?} {isa:?} d projected"),
                );
                close(
                    &grads.weight,
                    &base_grads.weight,
                    1e-4,
                    &format!("{kind:?} {isa:?} d weight"),
                );
                close(
                    &grads.h0,
                    &base_grads.h0,
                    1e-4,
                    &format!("{kind:?} {isa:?} d h0"),
                );
            }
        }
    }

    #[test]
    fn a_long_scan_equals_two_short_ones_carrying_the_state() {
        let shape = ScanShape {
            steps: 6,
            batch: 3,
            hidden: 20,
        };
        let plan = Plan::default();
        for kind in KINDS {
            let case = Case::new(kind, shape, 8);
            let whole = case.forward(false, plan);
            let width = kind.gates() * shape.hidden;
            let state = shape.batch * shape.hidden;
            let half = ScanShape { steps: 3, ..shape };
            let first = Case {
                shape: half,
                projected: case.projected[..3 * shape.batch * width].to_vec(),
                ..Case::new(kind, half, 8)
            };
            let first = Case {
                h0: case.h0.clone(),
                c0: case.c0.clone(),
                weight: case.weight.clone(),
                input_bias: case.input_bias.clone(),
                hidden_bias: case.hidden_bias.clone(),
                ..first
            };
            let a = first.forward(false, plan);
            let second = Case {
                projected: case.projected[3 * shape.batch * width..].to_vec(),
                h0: a.output[2 * state..3 * state].to_vec(),
                c0: if kind.has_cell() {
                    a.output[4 * state..].to_vec()
                } else {
                    Vec::new()
                },
                ..Case {
                    shape: half,
                    ..first
                }
            };
            let b = second.forward(false, plan);
            assert_eq!(
                &whole.output[..3 * state],
                &a.output[..3 * state],
                "{kind:?}: first half"
            );
            assert_eq!(
                &whole.output[3 * state..],
                &b.output[..],
                "{kind:?}: second half"
            );
        }
    }

    /// `Σ output ⊙ weights`, summed in f64.
    fn loss(out: &ScanOutput, weights: &[f32]) -> f64 {
        out.output
            .iter()
            .zip(weights)
            .map(|(&o, &w)| o as f64 * w as f64)
            .sum()
    }

    /// The orders every order-dependent test runs: forwards and backwards, over whole rows and
    /// over rows of different lengths (unsorted, with a row of one step).
    fn orders(steps: usize, batch: usize) -> Vec<(bool, Vec<usize>)> {
        let lengths: Vec<usize> = (0..batch)
            .map(|b| [steps, 1, steps - 1, 2][b % 4].clamp(1, steps))
            .collect();
        vec![
            (false, Vec::new()),
            (true, Vec::new()),
            (false, lengths.clone()),
            (true, lengths),
        ]
    }

    #[test]
    fn gradients_match_finite_differences() {
        let shape = ScanShape {
            steps: 4,
            batch: 3,
            hidden: 5,
        };
        let plan = Plan::default();
        // ReLU's kink makes differences unreliable; its backward row is checked by hand.
        for kind in KINDS
            .into_iter()
            .filter(|k| !matches!(k, CellKind::Rnn(Activation::Relu, _)))
        {
            for (reverse, lengths) in orders(shape.steps, shape.batch) {
                let at_order = |case: Case| Case {
                    reverse,
                    lengths: lengths.clone(),
                    ..case
                };
                let case = at_order(Case::new(kind, shape, 21));
                let out = case.forward(true, plan);
                let d_output = values(out.output.len(), 77, 1.0);
                let grads = case.backward(&out, &d_output, plan);
                let eps = 1e-3f32;
                // A gradient's name, where its values sit in a case, and the gradient itself.
                type Field<'g> = (&'static str, fn(&mut Case) -> &mut Vec<f32>, &'g Vec<f32>);
                let fields: [Field<'_>; 6] = [
                    ("projected", |c| &mut c.projected, &grads.projected),
                    ("input_bias", |c| &mut c.input_bias, &grads.input_bias),
                    ("h0", |c| &mut c.h0, &grads.h0),
                    ("c0", |c| &mut c.c0, &grads.c0),
                    ("weight", |c| &mut c.weight, &grads.weight),
                    ("hidden_bias", |c| &mut c.hidden_bias, &grads.hidden_bias),
                ];
                for (name, field, analytic) in fields {
                    let mut probe = at_order(Case::new(kind, shape, 21));
                    let len = field(&mut probe).len();
                    assert_eq!(analytic.len(), len, "{kind:?} {name}: gradient length");
                    for i in (0..len).step_by(len.div_ceil(12).max(1)) {
                        let at = field(&mut probe)[i];
                        field(&mut probe)[i] = at + eps;
                        let up = loss(&probe.forward(false, plan), &d_output);
                        field(&mut probe)[i] = at - eps;
                        let down = loss(&probe.forward(false, plan), &d_output);
                        field(&mut probe)[i] = at;
                        let numeric = (up - down) / (2.0 * eps as f64);
                        let a = analytic[i] as f64;
                        assert!(
                            (a - numeric).abs() <= 2e-3 + 1e-2 * numeric.abs(),
                            "{kind:?} reverse {reverse} lengths {lengths:?} d {name}[{i}]: analytic {a}, numeric {numeric}"
                        );
                    }
                }
            }
        }
    }

    /// Blocks `t` of `[blocks, batch, cols]` in the order `steps` (a row's steps reversed, say).
    fn blocks_in(values: &[f32], steps: &[usize], batch: usize, cols: usize) -> Vec<f32> {
        steps
            .iter()
            .flat_map(|&t| {
                values[t * batch * cols..(t + 1) * batch * cols]
                    .iter()
                    .copied()
            })
            .collect()
    }

    #[test]
    fn a_reverse_scan_is_the_forward_scan_of_the_steps_reversed() {
        let shape = ScanShape {
            steps: 5,
            batch: 4,
            hidden: 9,
        };
        let plan = Plan {
            threads: 2,
            isa: Isa::detect(),
        };
        let (steps, batch, h) = (shape.steps, shape.batch, shape.hidden);
        let reversed: Vec<usize> = (0..steps).rev().collect();
        // The output's step blocks reversed, the final state's blocks as they are.
        let finals: Vec<usize> = (steps..steps + 2).collect();
        for kind in KINDS {
            let width = kind.gates() * h;
            let case = Case {
                reverse: true,
                ..Case::new(kind, shape, 31)
            };
            let flipped = Case {
                projected: blocks_in(&case.projected, &reversed, batch, width),
                ..Case::new(kind, shape, 31)
            };
            let out = case.forward(true, plan);
            let expected = flipped.forward(true, plan);
            let blocks: Vec<usize> = reversed
                .iter()
                .copied()
                .chain(
                    finals
                        .iter()
                        .copied()
                        .take(1 + usize::from(kind.has_cell())),
                )
                .collect();
            assert_eq!(
                out.output,
                blocks_in(&expected.output, &blocks, batch, h),
                "{kind:?}: outputs"
            );
            let d_output = values(out.output.len(), 5, 1.0);
            let grads = case.backward(&out, &d_output, plan);
            let flipped_grads =
                flipped.backward(&expected, &blocks_in(&d_output, &blocks, batch, h), plan);
            assert_eq!(
                grads.projected,
                blocks_in(&flipped_grads.projected, &reversed, batch, width),
                "{kind:?}: d projected"
            );
            for (name, a, b) in [
                ("d h0", &grads.h0, &flipped_grads.h0),
                ("d c0", &grads.c0, &flipped_grads.c0),
                ("d input_bias", &grads.input_bias, &flipped_grads.input_bias),
                (
                    "d hidden_bias",
                    &grads.hidden_bias,
                    &flipped_grads.hidden_bias,
                ),
                ("d weight", &grads.weight, &flipped_grads.weight),
            ] {
                // The sums over steps run in another order.
                close(a, b, 1e-5, &format!("{kind:?}: {name}"));
            }
        }
    }

    #[test]
    fn rows_of_different_lengths_each_equal_the_row_alone() {
        let shape = ScanShape {
            steps: 5,
            batch: 6,
            hidden: 7,
        };
        let (steps, batch, h) = (shape.steps, shape.batch, shape.hidden);
        let lengths = vec![3, 5, 1, 4, 5, 2];
        for threads in [1, 3] {
            let plan = Plan {
                threads,
                isa: Isa::detect(),
            };
            for kind in KINDS {
                let width = kind.gates() * h;
                let blocks = 1 + usize::from(kind.has_cell());
                for reverse in [false, true] {
                    let case = Case {
                        reverse,
                        lengths: lengths.clone(),
                        ..Case::new(kind, shape, 41)
                    };
                    let out = case.forward(true, plan);
                    let d_output = values(out.output.len(), 9, 1.0);
                    let grads = case.backward(&out, &d_output, plan);
                    let (mut d_weight, mut d_input_bias, mut d_hidden_bias) = (
                        vec![0.0; case.weight.len()],
                        vec![0.0; case.input_bias.len()],
                        vec![0.0; case.hidden_bias.len()],
                    );
                    for (b, &length) in lengths.iter().enumerate() {
                        let what = format!(
                            "{kind:?} reverse {reverse}, {threads} threads, row {b} of length {length}"
                        );
                        // Row b's values at steps 0..length (and at the final blocks).
                        let row = |values: &[f32],
                                   cols: usize,
                                   steps: std::ops::Range<usize>|
                         -> Vec<f32> {
                            steps
                                .flat_map(|t| {
                                    values[(t * batch + b) * cols..(t * batch + b + 1) * cols]
                                        .iter()
                                        .copied()
                                })
                                .collect()
                        };
                        let alone = Case {
                            shape: ScanShape {
                                steps: length,
                                batch: 1,
                                hidden: h,
                            },
                            projected: row(&case.projected, width, 0..length),
                            h0: case.h0[b * h..(b + 1) * h].to_vec(),
                            c0: if kind.has_cell() {
                                case.c0[b * h..(b + 1) * h].to_vec()
                            } else {
                                Vec::new()
                            },
                            reverse,
                            ..Case::new(kind, shape, 41)
                        };
                        let alone_out = alone.forward(true, plan);
                        let mut expected = alone_out.output[..length * h].to_vec();
                        expected.resize(steps * h, 0.0);
                        expected.extend_from_slice(&alone_out.output[length * h..]);
                        assert_eq!(
                            row(&out.output, h, 0..steps + blocks),
                            expected,
                            "{what}: outputs"
                        );
                        let alone_d_output: Vec<f32> = row(&d_output, h, 0..length)
                            .into_iter()
                            .chain(row(&d_output, h, steps..steps + blocks))
                            .collect();
                        let alone_grads = alone.backward(&alone_out, &alone_d_output, plan);
                        let mut d_projected = alone_grads.projected.clone();
                        d_projected.resize(steps * width, 0.0);
                        assert_eq!(
                            row(&grads.projected, width, 0..steps),
                            d_projected,
                            "{what}: d projected"
                        );
                        assert_eq!(
                            &grads.h0[b * h..(b + 1) * h],
                            &alone_grads.h0[..],
                            "{what}: d h0"
                        );
                        if kind.has_cell() {
                            assert_eq!(
                                &grads.c0[b * h..(b + 1) * h],
                                &alone_grads.c0[..],
                                "{what}: d c0"
                            );
                        }
                        for (sum, part) in [
                            (&mut d_weight, &alone_grads.weight),
                            (&mut d_input_bias, &alone_grads.input_bias),
                            (&mut d_hidden_bias, &alone_grads.hidden_bias),
                        ] {
                            accumulate(sum, part);
                        }
                    }
                    close(
                        &grads.weight,
                        &d_weight,
                        1e-5,
                        &format!("{kind:?} reverse {reverse}: d weight"),
                    );
                    close(
                        &grads.input_bias,
                        &d_input_bias,
                        1e-5,
                        &format!("{kind:?} reverse {reverse}: d input_bias"),
                    );
                    close(
                        &grads.hidden_bias,
                        &d_hidden_bias,
                        1e-5,
                        &format!("{kind:?} reverse {reverse}: d hidden_bias"),
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "row 2 has length 0, expected 1..=4")]
    fn a_zero_length_is_refused_naming_the_row() {
        let shape = ScanShape {
            steps: 4,
            batch: 3,
            hidden: 2,
        };
        let case = Case {
            lengths: vec![4, 1, 0],
            ..Case::new(CellKind::Lstm(crate::cell::Clip::NONE), shape, 1)
        };
        case.forward(false, Plan::default());
    }
}
