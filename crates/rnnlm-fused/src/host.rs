//! The operation on backends whose tensors live in host memory (Flex, NdArray, LibTorch on its
//! CPU device): their data read in place and results handed over (without a copy, but for
//! LibTorch's, copied once into its own allocation), the work done by [`rnnlm_kernels::scan`].

use std::borrow::Cow;

use burn::backend::Backend;
use burn::backend::TensorMetadata;
use burn::backend::tensor::{FloatTensor, IntTensor};
use rnnlm_kernels::CellKind;
use rnnlm_kernels::projection::{self, LayerInput, RowLayout};
use rnnlm_kernels::scan::{self, Plan, ScanShape, ScanTape};

use crate::op::{LayerWanted, ScanGrads, ScanInputs, ScanKernels, ScanSaved};

/// A backend whose float tensors hold `f32` values in host memory.
pub(crate) trait HostTensors: Backend {
    /// The values, row-major: borrowed when the tensor is contiguous, copied otherwise.
    fn values(tensor: &FloatTensor<Self>) -> Cow<'_, [f32]>;
    /// A tensor of `shape` owning `values` (no copy).
    fn from_values(values: Vec<f32>, shape: &[usize]) -> FloatTensor<Self>;
    /// The rows of a `[steps, batch, features]` tensor where they lie, when each row's
    /// features are contiguous and no two rows overlap (a batch-first tensor with its first two
    /// dimensions swapped, a narrowed one); a time-major copy otherwise.
    fn rows(tensor: &FloatTensor<Self>, shape: [usize; 3]) -> (Cow<'_, [f32]>, RowLayout) {
        let [_, batch, features] = shape;
        (Self::values(tensor), RowLayout::time_major(batch, features))
    }
}

fn dims<B: Backend>(tensor: &FloatTensor<B>) -> Vec<usize> {
    tensor.shape().to_vec()
}

/// A layer's input as the kernels read it: the dense input's rows where they lie, or the
/// token ids.
enum Input<'a> {
    Dense {
        values: Cow<'a, [f32]>,
        features: usize,
        layout: RowLayout,
    },
    OneHot(Vec<usize>),
}

impl Input<'_> {
    fn read<'a, B: HostTensors>(input: &'a FloatTensor<B>, ids: &IntTensor<B>) -> Input<'a> {
        let shape = dims::<B>(input);
        if let [steps, batch, features] = shape[..] {
            let (values, layout) = B::rows(input, [steps, batch, features]);
            return Input::Dense {
                values,
                features,
                layout,
            };
        }
        // The caller checked the ids against the table (`check_ids` in the cores, the
        // projection's own bounds below): a negative one cannot reach here.
        let ids = ready(B::int_into_data(ids.clone()))
            .expect("a host tensor's ids read at once")
            .convert::<i64>()
            .try_into_vec::<i64>()
            .expect("ids converted to i64");
        Input::OneHot(
            ids.into_iter()
                .map(|id| usize::try_from(id).unwrap_or(usize::MAX))
                .collect(),
        )
    }

    fn kernel(&self) -> LayerInput<'_> {
        match self {
            Input::Dense {
                values,
                features,
                layout,
            } => LayerInput::Dense {
                values,
                features: *features,
                layout: *layout,
            },
            Input::OneHot(ids) => LayerInput::OneHot(ids),
        }
    }
}

pub(crate) fn forward<B: HostTensors>(
    cell: CellKind,
    inputs: ScanInputs<B>,
    keep_tape: bool,
) -> (FloatTensor<B>, Option<ScanSaved<B>>) {
    let [steps, batch] = inputs.steps_and_batch();
    let hidden = dims::<B>(&inputs.h0)[1];
    let shape = ScanShape {
        steps,
        batch,
        hidden,
    };
    let width = cell.gates() * hidden;
    let order = inputs.order.as_kernel_order();
    let out = {
        // The projection is written straight into the buffer that becomes the gates.
        let projected = {
            let input = Input::read::<B>(&inputs.input, &inputs.ids);
            let input_weight = B::values(&inputs.input_weight);
            projection::forward(
                input.kernel(),
                &input_weight,
                [steps, batch, width],
                order,
                Plan::default(),
            )
        };
        let (input_bias, h0, c0, weight, hidden_bias) = (
            B::values(&inputs.input_bias),
            B::values(&inputs.h0),
            B::values(&inputs.c0),
            B::values(&inputs.weight),
            B::values(&inputs.hidden_bias),
        );
        scan::forward(
            cell,
            shape,
            scan::Projected::Owned(projected),
            scan::ScanInputs {
                input_bias: &input_bias,
                h0: &h0,
                c0: &c0,
                weight: &weight,
                hidden_bias: &hidden_bias,
                order,
            },
            keep_tape,
            Plan::default(),
        )
    };
    let rows = steps * batch;
    let output = B::from_values(
        out.output,
        &[steps + 1 + usize::from(cell.has_cell()), batch, hidden],
    );
    // A tape of `[rows, width]`, or `[0]` for a cell that keeps none.
    let tape = |values: Vec<f32>| {
        let shape = if values.is_empty() {
            vec![0]
        } else {
            vec![rows, values.len() / rows]
        };
        B::from_values(values, &shape)
    };
    debug_assert!(out.gates.is_empty() || out.gates.len() == rows * width);
    let saved = keep_tape.then(|| ScanSaved {
        cell,
        input: inputs.input,
        ids: inputs.ids,
        input_weight: inputs.input_weight,
        h0: inputs.h0,
        c0: inputs.c0,
        weight: inputs.weight,
        output: output.clone(),
        gates: tape(out.gates),
        extra: tape(out.extra),
        order: inputs.order,
    });
    (output, saved)
}

pub(crate) fn backward<B: HostTensors>(
    saved: ScanSaved<B>,
    d_output: FloatTensor<B>,
    wanted: LayerWanted,
) -> ScanGrads<B> {
    let cell = saved.cell;
    let [outputs, batch, hidden] = <[usize; 3]>::try_from(dims::<B>(&saved.output))
        .expect("a scan's output has three dimensions");
    let steps = outputs - 1 - usize::from(cell.has_cell());
    let shape = ScanShape {
        steps,
        batch,
        hidden,
    };
    let width = cell.gates() * hidden;
    let order = saved.order.as_kernel_order();
    let grads = {
        let (h0, c0, weight, output, gates, extra, d_output) = (
            B::values(&saved.h0),
            B::values(&saved.c0),
            B::values(&saved.weight),
            B::values(&saved.output),
            B::values(&saved.gates),
            B::values(&saved.extra),
            B::values(&d_output),
        );
        let tape = ScanTape {
            h0: &h0,
            c0: &c0,
            weight: &weight,
            output: &output,
            gates: &gates,
            extra: &extra,
            order,
        };
        scan::backward(cell, shape, tape, &d_output, wanted.scan, Plan::default())
    };
    // The input's gradient in the input's own order of steps and rows, so that a batch-first
    // input gets a batch-first gradient without a transpose.
    let input = Input::read::<B>(&saved.input, &saved.ids);
    let gradient_layout = match &input {
        Input::Dense {
            layout, features, ..
        } if layout.step_stride < layout.row_stride => RowLayout::batch_first(steps, *features),
        Input::Dense { features, .. } => RowLayout::time_major(batch, *features),
        Input::OneHot(_) => RowLayout::time_major(batch, 0),
    };
    let projection_grads = {
        let input_weight = B::values(&saved.input_weight);
        projection::backward(
            input.kernel(),
            &input_weight,
            &grads.projected,
            [steps, batch, width],
            order,
            gradient_layout,
            [
                wanted.input && matches!(input, Input::Dense { .. }),
                wanted.input_weight,
            ],
            Plan::default(),
        )
    };
    let input_weight_rows = dims::<B>(&saved.input_weight)[0];
    let d_input = match &input {
        Input::Dense { features, .. } if !projection_grads.input.is_empty() => Some(
            if gradient_layout == RowLayout::time_major(batch, *features) {
                B::from_values(projection_grads.input, &[steps, batch, *features])
            } else {
                B::float_swap_dims(
                    B::from_values(projection_grads.input, &[batch, steps, *features]),
                    0,
                    1,
                )
            },
        ),
        _ => None,
    };
    let some = |values: Vec<f32>, shape: &[usize]| {
        (!values.is_empty()).then(|| B::from_values(values, shape))
    };
    ScanGrads {
        input: d_input,
        input_weight: some(projection_grads.weight, &[input_weight_rows, width]),
        input_bias: some(grads.input_bias, &[width]),
        h0: some(grads.h0, &[batch, hidden]),
        c0: some(grads.c0, &[batch, hidden]),
        weight: some(grads.weight, &[hidden, width]),
        hidden_bias: some(grads.hidden_bias, &[width]),
    }
}

/// The gradient of a row gather: `d_output` `[ids, width]` summed into `[vocab, width]` by id.
pub(crate) fn gather_rows_backward<B: HostTensors>(
    d_output: FloatTensor<B>,
    ids: IntTensor<B>,
    vocab: usize,
) -> FloatTensor<B> {
    let width = dims::<B>(&d_output)[1];
    let ids = ready(B::int_into_data(ids))
        .expect("a host tensor's ids read at once")
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("ids converted to i64");
    // The caller checked the ids against the table (`RnnLm`'s `check_ids`, `select`'s own
    // bounds in the forward pass): a negative one cannot reach here.
    let ids: Vec<usize> = ids
        .into_iter()
        .map(|id| usize::try_from(id).unwrap_or(usize::MAX))
        .collect();
    let d_table = {
        let d_output = B::values(&d_output);
        rnnlm_kernels::gather::scatter_add_rows(&d_output, width, &ids, vocab)
    };
    B::from_values(d_table, &[vocab, width])
}

/// The value of a host backend's read, which is ready at once (its future never waits).
fn ready<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => panic!("a host backend's read did not complete at once"),
    }
}

/// Implements the operation and its kernels for a host backend.
macro_rules! host_backend {
    ($backend:ty) => {
        impl ScanKernels for $backend {
            fn layer_forward(
                cell: CellKind,
                inputs: ScanInputs<Self>,
                keep_tape: bool,
            ) -> (FloatTensor<Self>, Option<ScanSaved<Self>>) {
                forward::<Self>(cell, inputs, keep_tape)
            }

            fn layer_backward(
                saved: ScanSaved<Self>,
                d_output: FloatTensor<Self>,
                wanted: LayerWanted,
            ) -> ScanGrads<Self> {
                backward::<Self>(saved, d_output, wanted)
            }

            fn gather_rows_backward(
                d_output: FloatTensor<Self>,
                ids: IntTensor<Self>,
                vocab: usize,
            ) -> FloatTensor<Self> {
                gather_rows_backward::<Self>(d_output, ids, vocab)
            }
        }

        impl crate::op::ScanBackend for $backend {
            fn recurrent_layer(
                cell: CellKind,
                order: crate::op::ScanOrder,
                input: FloatTensor<Self>,
                ids: IntTensor<Self>,
                input_weight: FloatTensor<Self>,
                input_bias: FloatTensor<Self>,
                h0: FloatTensor<Self>,
                c0: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                hidden_bias: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                let inputs = ScanInputs {
                    input,
                    ids,
                    input_weight,
                    input_bias,
                    h0,
                    c0,
                    weight,
                    hidden_bias,
                    order,
                };
                forward::<Self>(cell, inputs, false).0
            }

            fn gather_rows(table: FloatTensor<Self>, ids: IntTensor<Self>) -> FloatTensor<Self> {
                <Self as burn::backend::ops::FloatTensorOps<Self>>::float_select(table, 0, ids)
            }
        }
    };
}

#[cfg(feature = "flex")]
mod flex {
    use super::*;
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::tensor::TensorData;

    impl HostTensors for Flex {
        fn values(tensor: &FlexTensor) -> Cow<'_, [f32]> {
            match tensor.as_slice::<f32>() {
                Some(values) => Cow::Borrowed(values),
                None => Cow::Owned(
                    tensor
                        .to_contiguous()
                        .into_data()
                        .try_into_vec::<f32>()
                        .expect("the fused scan runs on f32 tensors only"),
                ),
            }
        }

        fn from_values(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
            FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
        }

        fn rows(
            tensor: &FlexTensor,
            [steps, batch, features]: [usize; 3],
        ) -> (Cow<'_, [f32]>, RowLayout) {
            let layout = tensor.layout();
            let strides = layout.strides();
            let in_place = match strides {
                &[step, row, 1] if step >= 0 && row >= 0 => {
                    let rows = RowLayout {
                        step_stride: step.unsigned_abs(),
                        row_stride: row.unsigned_abs(),
                    };
                    rows.rows_apart(steps, batch, features).then_some(rows)
                }
                _ => None,
            };
            match in_place {
                Some(rows) => (
                    Cow::Borrowed(&tensor.storage::<f32>()[layout.start_offset()..]),
                    rows,
                ),
                None => (Self::values(tensor), RowLayout::time_major(batch, features)),
            }
        }
    }

    host_backend!(Flex);
}

#[cfg(feature = "ndarray")]
mod ndarray {
    use super::*;
    use burn::backend::NdArray;
    use burn::backend::ndarray::NdArrayTensor;
    use burn::tensor::TensorData;

    impl HostTensors for NdArray {
        fn values(tensor: &NdArrayTensor) -> Cow<'_, [f32]> {
            let NdArrayTensor::F32(storage) = tensor else {
                panic!(
                    "the fused scan runs on f32 tensors only, got {:?}",
                    tensor.dtype()
                );
            };
            match storage.view().to_slice() {
                Some(values) => Cow::Borrowed(values),
                None => Cow::Owned(storage.view().iter().copied().collect()),
            }
        }

        fn from_values(values: Vec<f32>, shape: &[usize]) -> NdArrayTensor {
            NdArrayTensor::from_data(TensorData::new(values, shape.to_vec()))
        }
    }

    host_backend!(NdArray);
}

#[cfg(feature = "tch")]
mod libtorch {
    use super::*;
    use burn::backend::LibTorch;
    use burn::backend::libtorch::TchTensor;

    impl HostTensors for LibTorch {
        fn values(tensor: &TchTensor) -> Cow<'_, [f32]> {
            let t = &tensor.tensor;
            assert!(
                t.kind() == tch::Kind::Float && t.device() == tch::Device::Cpu,
                "the fused scan runs on f32 CPU tensors only, got {:?} on {:?}",
                t.kind(),
                t.device()
            );
            if t.is_contiguous() {
                let len = t.numel();
                if len == 0 {
                    return Cow::Borrowed(&[]);
                }
                // SAFETY: a contiguous CPU float tensor holds `numel` f32 values from
                // `data_ptr`, in storage that `tensor` keeps alive for the borrow's lifetime;
                // Burn mutates a LibTorch tensor in place only when its storage has no other
                // owner, which the borrowed `tensor` rules out while the slice lives.
                let values = unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, len) };
                Cow::Borrowed(values)
            } else {
                let contiguous = t.contiguous();
                Cow::Owned(
                    Vec::<f32>::try_from(contiguous.view(-1)).expect("a float CPU tensor's values"),
                )
            }
        }

        fn from_values(values: Vec<f32>, shape: &[usize]) -> TchTensor {
            let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            TchTensor::new(tch::Tensor::from_slice(&values).reshape(&shape))
        }
    }

    host_backend!(LibTorch);
}
