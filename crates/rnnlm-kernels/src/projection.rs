//! A layer's input projection `X · W_x` for every step at once, and its two gradients: the
//! part of a layer's work that does not wait on the previous step.
//!
//! The forward product writes straight into the buffer that [`crate::scan::forward`] turns into
//! the gates (time-major rows, `t · batch + b`), reading the input wherever it lies: time-major
//! or batch-first, any row and step stride ([`RowLayout`]), so a batch-first input costs no
//! transpose. A one-hot input's projection is a row of `W_x` per token. Rows past their
//! sequence's length are neither projected nor differentiated: a batch of padded sequences
//! sorted longest first (as the fused layers run it) does only the work of its real steps.
//!
//! The backward pass takes the gate gradients that [`crate::scan::backward`] gives: the input's
//! gradient `dX = dP · W_xᵀ` (written in the input's own layout) and the weight's
//! `dW_x = Xᵀ · dP`, the latter one product over all steps; for a one-hot input, `dW_x`'s rows
//! summed by token ([`crate::gather::scatter_add_rows`]).
//!
//! The products are the time loop's micro-kernel over the weight packed once (rows of the
//! input in blocks that stay in the L2 cache) and, for `dW_x`, whose inner dimension is every
//! row of the batch, the `gemm` crate. Every output element is one thread's sum in an order
//! fixed by the shapes: the results do not depend on the thread count.

use crate::gemm::{MR, PackedB, SHORT_K, View, gemm_into, gemm_large, gemm_short_k};
use crate::profile::timed;
use crate::scan::{Order, Plan};
use crate::shared::{SharedMut, parallel, split};

/// Where row `b` of step `t` of a `[steps, batch, width]` operand starts:
/// `t · step_stride + b · row_stride`; a row's `width` values are contiguous from there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowLayout {
    /// Elements from step `t` to step `t + 1` of the same row.
    pub step_stride: usize,
    /// Elements from row `b` to row `b + 1` of the same step.
    pub row_stride: usize,
}

impl RowLayout {
    /// `[steps, batch, width]`, contiguous.
    pub fn time_major(batch: usize, width: usize) -> Self {
        Self {
            step_stride: batch * width,
            row_stride: width,
        }
    }

    /// `[batch, steps, width]`, contiguous.
    pub fn batch_first(steps: usize, width: usize) -> Self {
        Self {
            step_stride: width,
            row_stride: steps * width,
        }
    }

    fn offset(self, t: usize, b: usize) -> usize {
        t * self.step_stride + b * self.row_stride
    }

    /// The stride of the rows in time-major order (`t · batch + b`) where one stride describes
    /// them all: the operand is then one matrix.
    fn single_stride(self, steps: usize, batch: usize) -> Option<usize> {
        if steps == 1 {
            Some(self.row_stride)
        } else if batch == 1 {
            Some(self.step_stride)
        } else {
            (self.step_stride == batch * self.row_stride).then_some(self.row_stride)
        }
    }

    /// Elements a buffer needs for `[steps, batch, width]` in this layout.
    fn extent(self, steps: usize, batch: usize, width: usize) -> usize {
        if steps == 0 || batch == 0 || width == 0 {
            return 0;
        }
        self.offset(steps - 1, batch - 1) + width
    }

    /// Whether rows of `width` in this layout never share an element (the layout can be
    /// written, and a product's `k` steps of a row are where the kernels look for them).
    pub fn rows_apart(self, steps: usize, batch: usize, width: usize) -> bool {
        let (step, row) = (self.step_stride, self.row_stride);
        match (steps > 1, batch > 1) {
            (false, false) => true,
            (true, false) => step >= width,
            (false, true) => row >= width,
            // One stride nests the other: the inner one spaced by rows, the outer one past
            // every inner row.
            (true, true) => {
                (row >= width && step >= (batch - 1) * row + width)
                    || (step >= width && row >= (steps - 1) * step + width)
            }
        }
    }
}

/// A layer's input as the projection reads it.
#[derive(Clone, Copy, Debug)]
pub enum LayerInput<'a> {
    /// Feature vectors of `features` values, row `b` of step `t` at
    /// `layout.offset(t, b)`.
    Dense {
        /// The buffer the rows lie in.
        values: &'a [f32],
        /// Width of a row: the weight's first dimension.
        features: usize,
        /// Where the rows lie.
        layout: RowLayout,
    },
    /// Token ids, time-major `[steps · batch]`, each below the weight's first dimension: one-hot
    /// vectors without building them.
    OneHot(&'a [usize]),
}

/// Rows of the input per block of the forward product: `96 · 256` floats of a 256-wide input
/// (96 KB) stay in L2 while every panel of the weight passes over them.
const ROW_BLOCK: usize = 96;

/// The rows taking step `t`, as a count from the first: all of them without lengths, the
/// leading rows whose length passes `t` when the rows are sorted longest first, and all of them
/// otherwise (their extra rows then computed and never read).
fn live_rows(order: Order<'_>, batch: usize, t: usize) -> usize {
    if order.lengths.is_empty() || !order.lengths.windows(2).all(|pair| pair[0] >= pair[1]) {
        return batch;
    }
    order.lengths.partition_point(|&length| length > t)
}

/// `[steps · batch, width]`, time-major: every row's projection `x · W_x` (no bias), zero for
/// rows past their length when the rows are sorted longest first.
///
/// - `weight`: `W_x`, `[inputs, width]` row-major, where `inputs` is the input's `features` or
///   the one-hot width;
/// - `order`: only its lengths count (a row takes steps `0..length` in either direction).
///
/// # Panics
/// If the input or the weight does not hold what the shapes ask for (naming it and both
/// sizes), a token id is not below `inputs`, or the layout's rows overlap.
pub fn forward(
    input: LayerInput<'_>,
    weight: &[f32],
    [steps, batch, width]: [usize; 3],
    order: Order<'_>,
    plan: Plan,
) -> Vec<f32> {
    let rows = steps * batch;
    let mut out = crate::shared::zeros(rows * width);
    if rows == 0 || width == 0 {
        return out;
    }
    match input {
        LayerInput::OneHot(ids) => {
            let inputs = check_weight(weight, width);
            check_ids(ids, rows, inputs);
            timed("projection forward: rows of W_x", || {
                let shared = SharedMut::new(&mut out);
                let parts = plan.threads.clamp(1, steps);
                parallel(parts, |part| {
                    for t in split(steps, parts, part) {
                        for b in 0..live_rows(order, batch, t) {
                            let (row, id) = (t * batch + b, ids[t * batch + b]);
                            // SAFETY: step t's rows are this part's alone.
                            unsafe { shared.slice(row * width, width) }
                                .copy_from_slice(&weight[id * width..(id + 1) * width]);
                        }
                    }
                });
            });
        }
        LayerInput::Dense {
            values,
            features,
            layout,
        } => {
            check_dense(values, features, layout, [steps, batch], "input");
            expect(
                weight.len(),
                features * width,
                "weight",
                "[features, width]",
            );
            let packed = timed("projection forward: pack W_x", || {
                PackedB::new_on(weight, features, width, width, plan.threads)
            });
            timed("projection forward: product", || {
                product(
                    plan,
                    &mut out,
                    RowLayout::time_major(batch, width),
                    values,
                    layout,
                    [steps, batch],
                    order,
                    &packed,
                );
            });
        }
    }
    out
}

/// The gradients of a projection, each empty where it was not asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProjectionGradients {
    /// Of a dense input, contiguous in the layout asked for (empty for a one-hot input).
    pub input: Vec<f32>,
    /// Of `W_x`, `[inputs, width]`.
    pub weight: Vec<f32>,
}

/// The gradients of [`forward`]'s input and weight from that of its output, `d_projected`
/// `[steps · batch, width]` time-major (rows past their length zero, as the scan leaves them).
///
/// - `input_layout`: the layout of the input's gradient, contiguous
///   ([`RowLayout::time_major`] or [`RowLayout::batch_first`] of the input's features);
/// - `wanted`: `[input, weight]`, which of the two to compute.
///
/// # Panics
/// As [`forward`], and if `d_projected` or `input_layout` does not fit the shapes.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    input: LayerInput<'_>,
    weight: &[f32],
    d_projected: &[f32],
    [steps, batch, width]: [usize; 3],
    order: Order<'_>,
    input_layout: RowLayout,
    [input_wanted, weight_wanted]: [bool; 2],
    plan: Plan,
) -> ProjectionGradients {
    let rows = steps * batch;
    expect(
        d_projected.len(),
        rows * width,
        "d_projected",
        "[steps · batch, width]",
    );
    let inputs = check_weight(weight, width);
    let mut grads = ProjectionGradients::default();
    match input {
        LayerInput::OneHot(ids) => {
            check_ids(ids, rows, inputs);
            if weight_wanted {
                grads.weight = timed("projection backward: dW_x rows by token", || {
                    crate::gather::scatter_add_rows(d_projected, width, ids, inputs)
                });
            }
        }
        LayerInput::Dense {
            values,
            features,
            layout,
        } => {
            check_dense(values, features, layout, [steps, batch], "input");
            if input_wanted {
                let extent = input_layout.extent(steps, batch, features);
                assert!(
                    extent == rows * features && input_layout.rows_apart(steps, batch, features),
                    "projection::backward: the input's gradient layout {input_layout:?} is not a \
                     contiguous [{steps}, {batch}, {features}] in some order"
                );
                let mut d_input = crate::shared::zeros(extent);
                let transposed = timed("projection backward: pack W_x transposed", || {
                    PackedB::transposed_on(weight, features, width, width, plan.threads)
                });
                timed("projection backward: dX", || {
                    product(
                        plan,
                        &mut d_input,
                        input_layout,
                        d_projected,
                        RowLayout::time_major(batch, width),
                        [steps, batch],
                        order,
                        &transposed,
                    );
                });
                grads.input = d_input;
            }
            if weight_wanted {
                grads.weight = timed("projection backward: dW_x", || {
                    weight_gradient(
                        values,
                        features,
                        layout,
                        d_projected,
                        [steps, batch, width],
                        plan,
                    )
                });
            }
        }
    }
    grads
}

/// `C += A · B` for every row `(t, b)` that takes its step, `A`'s and `C`'s rows where their
/// layouts put them: one matrix in blocks of [`ROW_BLOCK`] rows where both layouts have a single
/// row stride and every row is live, else one product per step (per row, when the batch is the
/// shorter side), the pieces shared out over the threads.
#[allow(clippy::too_many_arguments)]
fn product(
    plan: Plan,
    c: &mut [f32],
    c_layout: RowLayout,
    a: &[f32],
    a_layout: RowLayout,
    [steps, batch]: [usize; 2],
    order: Order<'_>,
    b: &PackedB,
) {
    let n = b.n();
    let c = SharedMut::new(c);
    // One piece: `rows` rows of A from `a_at` with stride `lda`, into C from `c_at` with `ldc`.
    let piece = |rows: usize, a_at: usize, lda: usize, c_at: usize, ldc: usize| {
        if rows == 0 {
            return;
        }
        // `block_ptr` checks that the piece's last element lies in C.
        let c_piece = c.block_ptr(c_at, (rows - 1) * ldc + n);
        // SAFETY: the pieces of one call are disjoint rows of C (the layout's rows are apart,
        // checked by the callers), each written by one thread; C is borrowed mutably for the
        // whole call.
        unsafe { gemm_into(plan.isa, c_piece, ldc, &a[a_at..], lda, rows, b) };
    };
    let all_live = order.lengths.is_empty() || order.lengths.iter().all(|&length| length == steps);
    let single = (
        a_layout.single_stride(steps, batch),
        c_layout.single_stride(steps, batch),
    );
    if let (Some(lda), Some(ldc), true) = (single.0, single.1, all_live) {
        // Each thread an equal share of whole row tiles, in blocks of at most ROW_BLOCK rows
        // (blocks dealt out whole left one thread a block more than the other: 9 blocks of
        // the LSTM 512's 896 rows).
        let rows = steps * batch;
        let tiles = rows.div_ceil(MR);
        let parts = plan.threads.clamp(1, tiles);
        parallel(parts, |part| {
            let share = split(tiles, parts, part);
            let (start, end) = (share.start * MR, (share.end * MR).min(rows));
            for first in (start..end).step_by(ROW_BLOCK) {
                piece(
                    ROW_BLOCK.min(end - first),
                    first * lda,
                    lda,
                    first * ldc,
                    ldc,
                );
            }
        });
        return;
    }
    if batch >= steps || !all_live {
        // Per step: its live rows, stride `row_stride`.
        let parts = plan.threads.clamp(1, steps);
        parallel(parts, |part| {
            for t in split(steps, parts, part) {
                piece(
                    live_rows(order, batch, t),
                    a_layout.offset(t, 0),
                    a_layout.row_stride,
                    c_layout.offset(t, 0),
                    c_layout.row_stride,
                );
            }
        });
    } else {
        // Per row: its steps, stride `step_stride` (every row live here).
        let parts = plan.threads.clamp(1, batch);
        parallel(parts, |part| {
            for row in split(batch, parts, part) {
                piece(
                    steps,
                    a_layout.offset(0, row),
                    a_layout.step_stride,
                    c_layout.offset(0, row),
                    c_layout.step_stride,
                );
            }
        });
    }
}

/// `dW_x = Xᵀ · dP` `[features, width]`, one product over every row: `X` read in place where
/// one stride describes its rows, else gathered time-major first (one copy of the input).
fn weight_gradient(
    values: &[f32],
    features: usize,
    layout: RowLayout,
    d_projected: &[f32],
    [steps, batch, width]: [usize; 3],
    plan: Plan,
) -> Vec<f32> {
    let rows = steps * batch;
    let mut d_weight = crate::shared::zeros(features * width);
    let gathered;
    let (x, stride) = match layout.single_stride(steps, batch) {
        Some(stride) => (values, stride),
        None => {
            gathered = timed("projection backward: input gathered time-major", || {
                let mut rows_out = Vec::with_capacity(rows * features);
                for t in 0..steps {
                    for b in 0..batch {
                        let at = layout.offset(t, b);
                        rows_out.extend_from_slice(&values[at..at + features]);
                    }
                }
                rows_out
            });
            (&gathered[..], features)
        }
    };
    if rows <= SHORT_K {
        // Few rows: X's rows side by side are Xᵀ, row-major.
        let packed_rows;
        let x_rows = if stride == features {
            &x[..rows * features]
        } else {
            packed_rows = (0..rows)
                .flat_map(|r| &x[r * stride..r * stride + features])
                .copied()
                .collect::<Vec<f32>>();
            &packed_rows[..]
        };
        gemm_short_k(
            plan.isa,
            &mut d_weight,
            width,
            [features, width, rows],
            x_rows,
            View::rows(d_projected, width),
            plan.threads,
        );
        return d_weight;
    }
    // Xᵀ: element (f, r) of the [features, rows] operand is x[r · stride + f].
    let x_transposed = View {
        data: x,
        row_stride: 1,
        column_stride: stride,
    };
    gemm_large(
        &mut d_weight,
        width,
        features,
        width,
        rows,
        x_transposed,
        View::rows(d_projected, width),
        plan.threads,
    );
    d_weight
}

fn expect(len: usize, expected: usize, what: &str, shape: &str) {
    assert_eq!(
        len, expected,
        "projection: {what} holds {len} values, expected {shape} = {expected}"
    );
}

/// The weight's row count, checked to be whole rows of `width`.
fn check_weight(weight: &[f32], width: usize) -> usize {
    assert!(
        width > 0 && weight.len().is_multiple_of(width),
        "projection: weight holds {} values, expected [inputs, {width}]",
        weight.len()
    );
    weight.len() / width
}

fn check_ids(ids: &[usize], rows: usize, inputs: usize) {
    assert_eq!(
        ids.len(),
        rows,
        "projection: {} token ids, expected [steps · batch] = {rows}",
        ids.len()
    );
    if let Some((row, &id)) = ids.iter().enumerate().find(|&(_, &id)| id >= inputs) {
        panic!(
            "projection: row {row} has token id {id}, expected ids in 0..{inputs} (the weight's rows)"
        );
    }
}

fn check_dense(
    values: &[f32],
    features: usize,
    layout: RowLayout,
    [steps, batch]: [usize; 2],
    what: &str,
) {
    let extent = layout.extent(steps, batch, features);
    assert!(
        values.len() >= extent,
        "projection: {what} holds {} values, expected at least {extent} for [{steps}, {batch}, {features}] in {layout:?}",
        values.len()
    );
    assert!(
        layout.rows_apart(steps, batch, features),
        "projection: {what}'s layout {layout:?} overlaps its own rows of {features}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{isas, values};

    /// `[steps · batch, width]` time-major, in plain loops.
    fn reference(
        x: &[f32],
        layout: RowLayout,
        features: usize,
        w: &[f32],
        [steps, batch, width]: [usize; 3],
        lengths: &[usize],
    ) -> Vec<f32> {
        let mut out = vec![0.0f32; steps * batch * width];
        for t in 0..steps {
            for b in 0..batch {
                if !lengths.is_empty() && t >= lengths[b] {
                    continue;
                }
                for j in 0..width {
                    let mut sum = 0.0f64;
                    for f in 0..features {
                        sum += f64::from(x[layout.offset(t, b) + f]) * f64::from(w[f * width + j]);
                    }
                    out[(t * batch + b) * width + j] = sum as f32;
                }
            }
        }
        out
    }

    fn close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{what}: element {i}: {g} against {w}"
            );
        }
    }

    fn plan(isa: crate::Isa, threads: usize) -> Plan {
        Plan { threads, isa }
    }

    /// Every layout the fused layers hand over, on ragged sizes, every instruction set and
    /// 1 and 3 threads: forward against plain loops, and both gradients against the plain
    /// loops' transposed products.
    #[test]
    fn dense_projection_and_its_gradients_match_plain_loops() {
        for &(steps, batch, features, width) in &[
            (7, 5, 13, 70),
            (1, 1, 3, 4),
            (3, 130, 9, 65),
            (200, 2, 17, 33),
        ] {
            let w = values(features * width, 3, 0.5);
            let layouts = [
                (
                    "time-major",
                    RowLayout::time_major(batch, features),
                    steps * batch * features,
                ),
                (
                    "batch-first",
                    RowLayout::batch_first(steps, features),
                    steps * batch * features,
                ),
                // A row stride longer than a row: every row padded, as a narrowed tensor is.
                (
                    "padded",
                    RowLayout {
                        step_stride: batch * (features + 3),
                        row_stride: features + 3,
                    },
                    steps * batch * (features + 3),
                ),
            ];
            for (name, layout, len) in layouts {
                let x = values(len, 5, 1.0);
                let dp = values(steps * batch * width, 7, 1.0);
                for isa in isas() {
                    for threads in [1, 3] {
                        let what = format!(
                            "{name} {steps}x{batch}x{features}->{width} {isa:?} {threads} threads"
                        );
                        let input = LayerInput::Dense {
                            values: &x,
                            features,
                            layout,
                        };
                        let got = forward(
                            input,
                            &w,
                            [steps, batch, width],
                            Order::default(),
                            plan(isa, threads),
                        );
                        close(
                            &got,
                            &reference(&x, layout, features, &w, [steps, batch, width], &[]),
                            &what,
                        );
                        for grad_layout in [
                            RowLayout::time_major(batch, features),
                            RowLayout::batch_first(steps, features),
                        ] {
                            let grads = backward(
                                input,
                                &w,
                                &dp,
                                [steps, batch, width],
                                Order::default(),
                                grad_layout,
                                [true, true],
                                plan(isa, threads),
                            );
                            // dX = dP · Wᵀ: the reference with W transposed, dP as a time-major input.
                            let w_t: Vec<f32> = (0..width * features)
                                .map(|i| w[(i % features) * width + i / features])
                                .collect();
                            let d_x = reference(
                                &dp,
                                RowLayout::time_major(batch, width),
                                width,
                                &w_t,
                                [steps, batch, features],
                                &[],
                            );
                            for t in 0..steps {
                                for b in 0..batch {
                                    let at = grad_layout.offset(t, b);
                                    close(
                                        &grads.input[at..at + features],
                                        &d_x[(t * batch + b) * features..][..features],
                                        &format!("{what}: dX"),
                                    );
                                }
                            }
                            let mut d_w = vec![0.0f32; features * width];
                            for f in 0..features {
                                for j in 0..width {
                                    let mut sum = 0.0f64;
                                    for t in 0..steps {
                                        for b in 0..batch {
                                            sum += f64::from(x[layout.offset(t, b) + f])
                                                * f64::from(dp[(t * batch + b) * width + j]);
                                        }
                                    }
                                    d_w[f * width + j] = sum as f32;
                                }
                            }
                            close(&grads.weight, &d_w, &format!("{what}: dW"));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (steps, batch, features, width) = (9, 40, 31, 96);
        let x = values(steps * batch * features, 1, 1.0);
        let w = values(features * width, 2, 0.5);
        let dp = values(steps * batch * width, 3, 1.0);
        for layout in [
            RowLayout::time_major(batch, features),
            RowLayout::batch_first(steps, features),
        ] {
            let input = LayerInput::Dense {
                values: &x,
                features,
                layout,
            };
            let run = |threads| {
                let p = plan(crate::Isa::detect(), threads);
                let out = forward(input, &w, [steps, batch, width], Order::default(), p);
                let grads = backward(
                    input,
                    &w,
                    &dp,
                    [steps, batch, width],
                    Order::default(),
                    layout,
                    [true, true],
                    p,
                );
                (out, grads)
            };
            assert_eq!(run(1), run(2));
            assert_eq!(run(1), run(5));
        }
    }

    /// Rows sorted longest first: rows past their length are zero forwards and contribute
    /// nothing backwards (the scan leaves their gradient zero); unsorted rows are all computed.
    #[test]
    fn rows_past_their_length_are_skipped_when_sorted() {
        let (steps, batch, features, width) = (6, 5, 7, 20);
        let x = values(steps * batch * features, 11, 1.0);
        let w = values(features * width, 12, 0.5);
        for layout in [
            RowLayout::time_major(batch, features),
            RowLayout::batch_first(steps, features),
        ] {
            let input = LayerInput::Dense {
                values: &x,
                features,
                layout,
            };
            let sorted = [6, 4, 4, 2, 1];
            let order = Order {
                reverse: true,
                lengths: &sorted,
            };
            let got = forward(
                input,
                &w,
                [steps, batch, width],
                order,
                plan(crate::Isa::detect(), 2),
            );
            close(
                &got,
                &reference(&x, layout, features, &w, [steps, batch, width], &sorted),
                "sorted",
            );
            let unsorted = [1, 6, 4, 2, 4];
            let order = Order {
                reverse: false,
                lengths: &unsorted,
            };
            let got = forward(
                input,
                &w,
                [steps, batch, width],
                order,
                plan(crate::Isa::detect(), 2),
            );
            close(
                &got,
                &reference(&x, layout, features, &w, [steps, batch, width], &[]),
                "unsorted",
            );
        }
    }

    #[test]
    fn one_hot_rows_and_their_gradient() {
        let (steps, batch, vocab, width) = (4, 3, 6, 10);
        let w = values(vocab * width, 4, 1.0);
        let ids: Vec<usize> = (0..steps * batch).map(|i| (i * 5) % vocab).collect();
        let got = forward(
            LayerInput::OneHot(&ids),
            &w,
            [steps, batch, width],
            Order::default(),
            plan(crate::Isa::detect(), 2),
        );
        for (row, &id) in ids.iter().enumerate() {
            assert_eq!(
                &got[row * width..(row + 1) * width],
                &w[id * width..(id + 1) * width]
            );
        }
        let dp = values(steps * batch * width, 9, 1.0);
        let grads = backward(
            LayerInput::OneHot(&ids),
            &w,
            &dp,
            [steps, batch, width],
            Order::default(),
            RowLayout::time_major(batch, vocab),
            [true, true],
            plan(crate::Isa::detect(), 2),
        );
        assert!(grads.input.is_empty());
        assert_eq!(
            grads.weight,
            crate::gather::scatter_add_rows(&dp, width, &ids, vocab)
        );
    }

    #[test]
    #[should_panic(expected = "row 2 has token id 6, expected ids in 0..6")]
    fn a_token_past_the_weight_is_named() {
        let w = values(6 * 4, 4, 1.0);
        forward(
            LayerInput::OneHot(&[0, 1, 6, 2]),
            &w,
            [2, 2, 4],
            Order::default(),
            Plan::default(),
        );
    }

    #[test]
    #[should_panic(expected = "input holds 20 values, expected at least 24")]
    fn a_short_input_is_named() {
        let w = values(3 * 4, 4, 1.0);
        let x = values(20, 1, 1.0);
        let input = LayerInput::Dense {
            values: &x,
            features: 3,
            layout: RowLayout::time_major(4, 3),
        };
        forward(input, &w, [2, 4, 4], Order::default(), Plan::default());
    }

    #[test]
    fn overlapping_rows_are_told_apart_from_strided_ones() {
        assert!(RowLayout::time_major(4, 8).rows_apart(3, 4, 8));
        assert!(RowLayout::batch_first(3, 8).rows_apart(3, 4, 8));
        assert!(
            !RowLayout {
                step_stride: 8,
                row_stride: 4
            }
            .rows_apart(3, 4, 8)
        );
        // A broadcast step (stride 0) repeats its rows.
        assert!(
            !RowLayout {
                step_stride: 0,
                row_stride: 8
            }
            .rows_apart(3, 4, 8)
        );
        assert!(
            RowLayout {
                step_stride: 0,
                row_stride: 8
            }
            .rows_apart(1, 4, 8)
        );
    }
}
