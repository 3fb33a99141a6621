//! The operation on Burn's CubeCL backends (wgpu, cuda, cpu: one implementation, the device
//! picks the runtime), for `f32` tensors.
//!
//! A forward step is one product `h_{t-1}·W_h` (Burn's tiled matrix product) and one kernel for
//! all of the step's gate arithmetic ([`kernels`]); a backward step one kernel for the gate
//! gradients and one product `dq·W_hᵀ`. Everything that does not depend on the previous step
//! is one product over all steps: the input projection forwards; the gradients of `W_x`, `W_h`,
//! the input and the biases backwards. d2l's GRU takes two products and two kernels a step,
//! its reset gate scaling `h_{t-1}` between them.
//!
//! Measured on lavapipe (docs/design.md) this beat one launch for the whole loop (a kernel
//! that keeps `W_h` on chip and computes its own products): on a CPU's Vulkan driver a naive
//! in-kernel product is 4-6x slower than Burn's tiled one at hidden 256-512.

mod fusion;
mod kernels;

use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Shape, TensorData, TensorMetadata};
use burn::tensor::{DType, FloatDType, IndexingUpdateOp, Slice};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;
use rnnlm_kernels::{Activation, CellKind};

use crate::op::{LayerWanted, ScanGrads, ScanInputs, ScanKernels, ScanOrder, ScanSaved};

type B = CubeBackend;

/// Units per cube of the step kernels (one unit per `(row, hidden unit)`).
const UNITS: u32 = 256;

/// The launch grid of a kernel with one unit per element of `elements`.
fn grid(tensor: &CubeTensor, elements: usize) -> (CubeCount, CubeDim) {
    // Within the runtime's limit: CubeCL's CPU runtime allows as many units a cube as the
    // machine has cores.
    let limit = tensor.client.properties().hardware.max_units_per_cube;
    let dim = CubeDim::new_1d(UNITS.min(limit).max(1));
    (
        calculate_cube_count_elemwise(&tensor.client, elements.max(1), dim),
        dim,
    )
}

/// An uninitialised row-major `f32` tensor on `like`'s device.
fn empty(like: &CubeTensor, shape: &[usize]) -> CubeTensor {
    empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::from(shape.to_vec()),
        DType::F32,
    )
}

fn zeros(like: &CubeTensor, shape: &[usize]) -> CubeTensor {
    B::float_zeros(Shape::from(shape.to_vec()), &like.device, FloatDType::F32)
}

/// `len` elements of row-major `src` from `src_offset` written into row-major `dst` from
/// `dst_offset` (one launch, no intermediate).
fn copy_range(
    src: &CubeTensor,
    src_offset: usize,
    dst: &CubeTensor,
    dst_offset: usize,
    len: usize,
) {
    let (count, dim) = grid(src, len);
    kernels::copy_range::launch(
        &src.client.clone(),
        count,
        dim,
        src.clone().into_tensor_arg(),
        dst.clone().into_tensor_arg(),
        src_offset as u32,
        dst_offset as u32,
        len as u32,
    );
}

/// A fresh row-major copy (a buffer the loop may write without touching its source).
fn copy(tensor: &CubeTensor) -> CubeTensor {
    let source = into_contiguous(tensor.clone());
    let len = source.shape().num_elements();
    let out = empty(&source, &source.shape().to_vec());
    copy_range(&source, 0, &out, 0, len);
    out
}

/// `a·b`, row-major (Burn's product may hand back a tiled layout the step kernels cannot
/// read).
fn matmul(a: CubeTensor, b: CubeTensor) -> CubeTensor {
    into_contiguous(B::float_matmul(a, b))
}

/// A per-step product `a·w` (`a` `[batch, depth]`): Burn's tiled product. A kernel of one unit
/// per column and block of rows (neighbouring units reading neighbouring weights) ran at half
/// its speed on lavapipe (docs/design.md).
fn step_product(a: &CubeTensor, w: &CubeTensor) -> CubeTensor {
    matmul(a.clone(), w.clone())
}

/// Columns `range` of a `[rows, cols]` matrix, row-major.
fn columns(tensor: &CubeTensor, range: std::ops::Range<usize>) -> CubeTensor {
    let rows = tensor.shape()[0];
    into_contiguous(B::float_slice(
        tensor.clone(),
        &[Slice::from(0..rows), Slice::from(range)],
    ))
}

/// Rows `range` of a row-major `[rows, cols]` matrix.
fn rows_of(tensor: &CubeTensor, range: std::ops::Range<usize>) -> CubeTensor {
    let cols = tensor.shape()[1];
    into_contiguous(B::float_slice(
        tensor.clone(),
        &[Slice::from(range), Slice::from(0..cols)],
    ))
}

/// Every row's number of steps, `[batch]` as `f32`.
fn lengths(like: &CubeTensor, order: &ScanOrder, steps: usize, batch: usize) -> CubeTensor {
    let values: Vec<f32> = if order.lengths.is_empty() {
        vec![steps as f32; batch]
    } else {
        order.lengths.iter().map(|&length| length as f32).collect()
    };
    B::float_from_data(TensorData::new(values, [batch]), &like.device)
}

fn dims(tensor: &CubeTensor) -> Vec<usize> {
    tensor.shape().to_vec()
}

/// The clip's bound and whether there is one.
fn clip_of(cell: CellKind) -> (f32, bool) {
    let bound = cell.clip().bound();
    (
        if bound.is_finite() { bound } else { 0.0 },
        bound.is_finite(),
    )
}

/// The input projection of every step with its bias, `[steps·batch, width]`.
fn project(
    input: &CubeTensor,
    ids: &CubeTensor,
    input_weight: &CubeTensor,
    input_bias: &CubeTensor,
    rows: usize,
) -> CubeTensor {
    let width = dims(input_weight)[1];
    let projected = match dims(input)[..] {
        [_, _, features] => {
            let x = B::float_reshape(
                into_contiguous(input.clone()),
                Shape::from(vec![rows, features]),
            );
            B::float_matmul(x, input_weight.clone())
        }
        _ => {
            let ids = B::int_reshape(ids.clone(), Shape::from(vec![rows]));
            B::float_select(input_weight.clone(), 0, ids)
        }
    };
    let bias = B::float_reshape(input_bias.clone(), Shape::from(vec![1, width]));
    into_contiguous(B::float_add(projected, bias))
}

fn forward(
    cell: CellKind,
    inputs: ScanInputs<B>,
    keep_tape: bool,
) -> (CubeTensor, Option<ScanSaved<B>>) {
    let [steps, batch] = inputs.steps_and_batch();
    let hidden = dims(&inputs.h0)[1];
    let gates = cell.gates();
    let width = gates * hidden;
    let rows = steps * batch;
    let reverse = inputs.order.reverse;
    let (clip, clipped) = clip_of(cell);
    let like = &inputs.h0;
    let client = like.client.clone();

    let proj = project(
        &inputs.input,
        &inputs.ids,
        &inputs.input_weight,
        &inputs.input_bias,
        rows,
    );
    let lengths = lengths(like, &inputs.order, steps, batch);
    let weight = into_contiguous(inputs.weight.clone());
    let h = copy(&inputs.h0);
    let out = zeros(
        like,
        &[steps + 1 + usize::from(cell.has_cell()), batch, hidden],
    );
    // Tapes only where kept (a one-element stand-in otherwise: a binding must exist). The
    // kernels write every row a step takes; past a row's length nothing is written, and those
    // rows must be zero, since d2l's tape enters a product (`W_hn`'s gradient).
    let padded = !inputs.order.lengths.is_empty();
    let tape = |shape: &[usize]| match (keep_tape, padded) {
        (false, _) => empty(like, &[1]),
        (true, false) => empty(like, shape),
        (true, true) => zeros(like, shape),
    };
    let (gate_tape, extra_tape) = match cell {
        CellKind::Rnn(..) => (empty(like, &[1]), empty(like, &[1])),
        _ => (tape(&[rows, width]), tape(&[rows, hidden])),
    };
    let (count, dim) = grid(like, batch * hidden);
    let arg = |t: &CubeTensor| t.clone().into_tensor_arg();

    match cell {
        CellKind::Rnn(activation, _) => {
            let relu = activation == Activation::Relu;
            for s in 0..steps {
                let q = step_product(&h, &weight);
                kernels::rnn_forward::launch(
                    &client,
                    count.clone(),
                    dim,
                    arg(&proj),
                    arg(&q),
                    arg(&lengths),
                    arg(&h),
                    arg(&out),
                    s as u32,
                    clip,
                    reverse,
                    clipped,
                    relu,
                );
            }
        }
        CellKind::Lstm(_) => {
            let c = copy(&inputs.c0);
            for s in 0..steps {
                let q = step_product(&h, &weight);
                kernels::lstm_forward::launch(
                    &client,
                    count.clone(),
                    dim,
                    arg(&proj),
                    arg(&q),
                    arg(&lengths),
                    arg(&h),
                    arg(&c),
                    arg(&out),
                    arg(&gate_tape),
                    arg(&extra_tape),
                    s as u32,
                    clip,
                    reverse,
                    clipped,
                    keep_tape,
                );
            }
            copy_range(&c, 0, &out, (steps + 1) * batch * hidden, batch * hidden);
        }
        CellKind::Gru(_) => {
            let has_bias = dims(&inputs.hidden_bias) == [width];
            let bias = if has_bias {
                into_contiguous(inputs.hidden_bias.clone())
            } else {
                empty(like, &[1])
            };
            for s in 0..steps {
                let q = step_product(&h, &weight);
                kernels::gru_forward::launch(
                    &client,
                    count.clone(),
                    dim,
                    arg(&proj),
                    arg(&q),
                    arg(&bias),
                    arg(&lengths),
                    arg(&h),
                    arg(&out),
                    arg(&gate_tape),
                    arg(&extra_tape),
                    s as u32,
                    clip,
                    reverse,
                    clipped,
                    keep_tape,
                    has_bias,
                );
            }
        }
        CellKind::GruD2l(_) => {
            let w_rz = columns(&weight, 0..2 * hidden);
            let w_n = columns(&weight, 2 * hidden..3 * hidden);
            let reset_h = empty(like, &[batch, hidden]);
            for s in 0..steps {
                let q = step_product(&h, &w_rz);
                kernels::gru_d2l_gates::launch(
                    &client,
                    count.clone(),
                    dim,
                    arg(&proj),
                    arg(&q),
                    arg(&lengths),
                    arg(&h),
                    arg(&reset_h),
                    arg(&gate_tape),
                    arg(&extra_tape),
                    s as u32,
                    reverse,
                    keep_tape,
                );
                let q_n = step_product(&reset_h, &w_n);
                kernels::gru_d2l_candidate::launch(
                    &client,
                    count.clone(),
                    dim,
                    arg(&proj),
                    arg(&q),
                    arg(&q_n),
                    arg(&lengths),
                    arg(&h),
                    arg(&out),
                    arg(&gate_tape),
                    s as u32,
                    clip,
                    reverse,
                    clipped,
                    keep_tape,
                );
            }
        }
    }
    copy_range(&h, 0, &out, steps * batch * hidden, batch * hidden);

    let saved = keep_tape.then(|| ScanSaved {
        cell,
        input: inputs.input,
        ids: inputs.ids,
        input_weight: inputs.input_weight,
        h0: inputs.h0,
        c0: inputs.c0,
        weight: inputs.weight,
        output: out.clone(),
        gates: gate_tape,
        extra: extra_tape,
        order: inputs.order,
    });
    (out, saved)
}

fn backward(saved: ScanSaved<B>, d_output: CubeTensor, wanted: LayerWanted) -> ScanGrads<B> {
    let cell = saved.cell;
    let [outputs, batch, hidden] =
        <[usize; 3]>::try_from(dims(&saved.output)).expect("a scan's output has three dimensions");
    let steps = outputs - 1 - usize::from(cell.has_cell());
    let width = cell.gates() * hidden;
    let rows = steps * batch;
    let reverse = saved.order.reverse;
    let (clip, clipped) = clip_of(cell);
    let like = &saved.h0;
    let client = like.client.clone();
    let (count, dim) = grid(like, batch * hidden);
    let arg = |t: &CubeTensor| t.clone().into_tensor_arg();

    let d_output = into_contiguous(d_output);
    let lengths = lengths(like, &saved.order, steps, batch);
    // `W_hᵀ`, row-major once rather than a strided view every step.
    let weight_t = into_contiguous(B::float_transpose(into_contiguous(saved.weight.clone())));
    let h0 = into_contiguous(saved.h0.clone());
    // The gradient reaching h_{t-1} directly (not through W_h), and the one through W_h from
    // the step after: dh_t = carry + p + d_output[t].
    let carry = empty(like, &[batch, hidden]);
    copy_range(&d_output, steps * batch * hidden, &carry, 0, batch * hidden);
    let mut p = zeros(like, &[batch, hidden]);
    // The projection's gradient by t (zero past a row's length).
    let dp = zeros(like, &[rows, width]);

    // What the one-product gradients need from the loop: the hidden product's gradient by
    // `t` where it is not `dp` (PyTorch's GRU), and the LSTM's `dc_0`.
    let (dq_all, dc) = match cell {
        CellKind::Rnn(activation, _) => {
            let relu = activation == Activation::Relu;
            let dq = empty(like, &[batch, width]);
            for s in (0..steps).rev() {
                kernels::rnn_backward::launch(
                    &client,
                    count.clone(),
                    dim,
                    arg(&d_output),
                    arg(&saved.output),
                    arg(&lengths),
                    arg(&p),
                    arg(&carry),
                    arg(&dp),
                    arg(&dq),
                    s as u32,
                    clip,
                    reverse,
                    clipped,
                    relu,
                );
                p = step_product(&dq, &weight_t);
            }
            (None, None)
        }
        CellKind::Lstm(_) => {
            let dc = empty(like, &[batch, hidden]);
            copy_range(
                &d_output,
                (steps + 1) * batch * hidden,
                &dc,
                0,
                batch * hidden,
            );
            let c0 = into_contiguous(saved.c0.clone());
            let dq = empty(like, &[batch, width]);
            for s in (0..steps).rev() {
                kernels::lstm_backward::launch(
                    &client,
                    count.clone(),
                    dim,
                    arg(&d_output),
                    arg(&saved.gates),
                    arg(&saved.extra),
                    arg(&c0),
                    arg(&lengths),
                    arg(&p),
                    arg(&carry),
                    arg(&dc),
                    arg(&dp),
                    arg(&dq),
                    s as u32,
                    clip,
                    reverse,
                    clipped,
                );
                p = step_product(&dq, &weight_t);
            }
            (None, Some(dc))
        }
        CellKind::Gru(_) => {
            let dq_all = zeros(like, &[rows, width]);
            let dq = empty(like, &[batch, width]);
            for s in (0..steps).rev() {
                kernels::gru_backward::launch(
                    &client,
                    count.clone(),
                    dim,
                    arg(&d_output),
                    arg(&saved.output),
                    arg(&h0),
                    arg(&saved.gates),
                    arg(&saved.extra),
                    arg(&lengths),
                    arg(&p),
                    arg(&carry),
                    arg(&dp),
                    arg(&dq_all),
                    arg(&dq),
                    s as u32,
                    clip,
                    reverse,
                    clipped,
                );
                p = step_product(&dq, &weight_t);
            }
            (Some(dq_all), None)
        }
        CellKind::GruD2l(_) => {
            let w_rz_t = rows_of(&weight_t, 0..2 * hidden);
            let w_n_t = rows_of(&weight_t, 2 * hidden..3 * hidden);
            let dn = empty(like, &[batch, hidden]);
            let dq = empty(like, &[batch, 2 * hidden]);
            for s in (0..steps).rev() {
                kernels::gru_d2l_candidate_backward::launch(
                    &client,
                    count.clone(),
                    dim,
                    arg(&d_output),
                    arg(&saved.output),
                    arg(&h0),
                    arg(&saved.gates),
                    arg(&lengths),
                    arg(&p),
                    arg(&carry),
                    arg(&dp),
                    arg(&dn),
                    arg(&dq),
                    s as u32,
                    clip,
                    reverse,
                    clipped,
                );
                let d_reset_h = step_product(&dn, &w_n_t);
                kernels::gru_d2l_gates_backward::launch(
                    &client,
                    count.clone(),
                    dim,
                    arg(&saved.output),
                    arg(&h0),
                    arg(&saved.gates),
                    arg(&lengths),
                    arg(&d_reset_h),
                    arg(&carry),
                    arg(&dp),
                    arg(&dq),
                    s as u32,
                    reverse,
                );
                p = step_product(&dq, &w_rz_t);
            }
            (None, None)
        }
    };
    let loop_grads = LoopGrads {
        dq_all: dq_all.unwrap_or_else(|| dp.clone()),
        dp,
        carry,
        p,
        dc,
    };
    finish(
        saved,
        wanted,
        loop_grads,
        &h0,
        lengths,
        [steps, batch, hidden],
    )
}

/// What the backward loop leaves for [`finish`]: `dp` the projection's gradient by `t`,
/// `dq_all` the hidden product's by `t` (`dp` itself but for PyTorch's GRU), the initial
/// state's `carry + p`, and the LSTM's `dc_0`.
struct LoopGrads {
    dp: CubeTensor,
    dq_all: CubeTensor,
    carry: CubeTensor,
    p: CubeTensor,
    dc: Option<CubeTensor>,
}

/// The gradients that are one product (or sum) over all steps, from the loop's
/// ([`LoopGrads`]), `h0` and the rows' lengths as the loop had them.
fn finish(
    saved: ScanSaved<B>,
    wanted: LayerWanted,
    LoopGrads {
        dp,
        dq_all,
        carry,
        p,
        dc,
    }: LoopGrads,
    h0: &CubeTensor,
    lengths: CubeTensor,
    [steps, batch, hidden]: [usize; 3],
) -> ScanGrads<B> {
    let cell = saved.cell;
    let width = cell.gates() * hidden;
    let rows = steps * batch;
    let sum_rows =
        |t: &CubeTensor| B::float_reshape(B::float_sum_dim(t.clone(), 0), Shape::from(vec![width]));

    let weight = wanted.scan.weight.then(|| {
        let prev = empty(&h0, &[rows, hidden]);
        let (count, dim) = grid(&h0, rows * hidden);
        kernels::previous_states::launch(
            &h0.client.clone(),
            count,
            dim,
            saved.output.clone().into_tensor_arg(),
            h0.clone().into_tensor_arg(),
            lengths.into_tensor_arg(),
            prev.clone().into_tensor_arg(),
            saved.order.reverse,
        );
        let prev_t = B::float_transpose(prev);
        match cell {
            CellKind::GruD2l(_) => {
                let rz = matmul(prev_t, columns(&dq_all, 0..2 * hidden));
                let n = matmul(
                    B::float_transpose(saved.extra.clone()),
                    columns(&dq_all, 2 * hidden..width),
                );
                B::float_cat(vec![rz, n], 1)
            }
            _ => matmul(prev_t, dq_all.clone()),
        }
    });
    let hidden_bias =
        (cell.has_hidden_bias() && wanted.scan.hidden_bias).then(|| sum_rows(&dq_all));
    let input_bias = wanted.scan.input_bias.then(|| sum_rows(&dp));
    let h0_grad = wanted.scan.h0.then(|| B::float_add(carry, p));
    let c0_grad = if wanted.scan.c0 { dc } else { None };

    let vocab_or_features = dims(&saved.input_weight)[0];
    let (input, input_weight) = match dims(&saved.input)[..] {
        [_, _, features] => {
            let input = wanted.input.then(|| {
                let d = matmul(dp.clone(), B::float_transpose(saved.input_weight.clone()));
                B::float_reshape(d, Shape::from(vec![steps, batch, features]))
            });
            let input_weight = wanted.input_weight.then(|| {
                let x = B::float_reshape(
                    into_contiguous(saved.input.clone()),
                    Shape::from(vec![rows, features]),
                );
                matmul(B::float_transpose(x), dp.clone())
            });
            (input, input_weight)
        }
        _ => {
            let input_weight = wanted.input_weight.then(|| {
                let ids = B::int_reshape(saved.ids.clone(), Shape::from(vec![rows]));
                let table = zeros(&h0, &[vocab_or_features, width]);
                B::float_select_assign(table, 0, ids, dp.clone(), IndexingUpdateOp::Add)
            });
            (None, input_weight)
        }
    };
    ScanGrads {
        input,
        input_weight,
        input_bias,
        h0: h0_grad,
        c0: c0_grad,
        weight,
        hidden_bias,
    }
}

impl ScanKernels for CubeBackend {
    fn layer_forward(
        cell: CellKind,
        inputs: ScanInputs<Self>,
        keep_tape: bool,
    ) -> (FloatTensor<Self>, Option<ScanSaved<Self>>) {
        forward(cell, inputs, keep_tape)
    }

    fn layer_backward(
        saved: ScanSaved<Self>,
        d_output: FloatTensor<Self>,
        wanted: LayerWanted,
    ) -> ScanGrads<Self> {
        backward(saved, d_output, wanted)
    }

    fn gather_rows_backward(
        d_output: FloatTensor<Self>,
        ids: IntTensor<Self>,
        vocab: usize,
    ) -> FloatTensor<Self> {
        scatter_rows::<Self>(d_output, ids, vocab)
    }
}

/// The row gather's backward pass with Burn's own operations (a zero table, then
/// `select_assign` adding the rows by id), on `CubeBackend` and, lazily on its stream, on
/// `Fusion<CubeBackend>`.
pub(super) fn scatter_rows<T: burn::backend::Backend>(
    d_output: FloatTensor<T>,
    ids: IntTensor<T>,
    vocab: usize,
) -> FloatTensor<T> {
    let width = d_output.shape()[1];
    let device = d_output.device();
    let table = T::float_zeros(Shape::from(vec![vocab, width]), &device, FloatDType::F32);
    T::float_select_assign(table, 0, ids, d_output, IndexingUpdateOp::Add)
}
