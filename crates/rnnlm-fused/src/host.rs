//! The operation on backends whose tensors live in host memory (Flex, NdArray): their data read
//! in place and results handed over without a copy, the work done by [`rnnlm_kernels::scan`].

use std::borrow::Cow;

use burn::backend::TensorMetadata;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::Backend;
use rnnlm_kernels::CellKind;
use rnnlm_kernels::scan::{self, Plan, ScanShape, ScanTape, Wanted};

use crate::op::{ScanGrads, ScanInputs, ScanKernels, ScanSaved};

/// A backend whose float tensors hold `f32` values in host memory.
pub(crate) trait HostTensors: Backend {
    /// The values, row-major: borrowed when the tensor is contiguous, copied otherwise.
    fn values(tensor: &FloatTensor<Self>) -> Cow<'_, [f32]>;
    /// A tensor of `shape` owning `values` (no copy).
    fn from_values(values: Vec<f32>, shape: &[usize]) -> FloatTensor<Self>;
    /// The values themselves, when nothing else holds the tensor and its layout is plain (no
    /// copy); the tensor back otherwise.
    fn into_values(tensor: FloatTensor<Self>) -> Result<Vec<f32>, FloatTensor<Self>>;
}

fn dims<B: Backend>(tensor: &FloatTensor<B>) -> Vec<usize> {
    tensor.shape().to_vec()
}

/// The scan's sizes from its inputs' shapes, which the caller has checked.
fn shape_of<B: Backend>(cell: CellKind, projected: &FloatTensor<B>, h0: &FloatTensor<B>) -> ScanShape {
    let (p, h) = (dims::<B>(projected), dims::<B>(h0));
    let shape = ScanShape {
        steps: p[0],
        batch: p[1],
        hidden: h[1],
    };
    debug_assert_eq!(p[2], cell.gates() * shape.hidden);
    shape
}

pub(crate) fn forward<B: HostTensors>(
    cell: CellKind,
    inputs: ScanInputs<B>,
    keep_tape: bool,
) -> (FloatTensor<B>, Option<ScanSaved<B>>) {
    let shape = shape_of::<B>(cell, &inputs.projected, &inputs.h0);
    // The projection is the op's own after this call: its buffer becomes the gates where
    // nothing else holds it.
    let (owned, borrowed) = match B::into_values(inputs.projected) {
        Ok(values) => (Some(values), None),
        Err(tensor) => (None, Some(tensor)),
    };
    let out = {
        let read = borrowed.as_ref().map(|tensor| B::values(tensor));
        let projected = match (owned, &read) {
            (Some(values), _) => scan::Projected::Owned(values),
            (None, Some(values)) => scan::Projected::Borrowed(values),
            (None, None) => unreachable!("the projection is either owned or borrowed"),
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
            projected,
            scan::ScanInputs {
                input_bias: &input_bias,
                h0: &h0,
                c0: &c0,
                weight: &weight,
                hidden_bias: &hidden_bias,
                order: inputs.order.as_kernel_order(),
            },
            keep_tape,
            Plan::default(),
        )
    };
    let ScanShape { steps, batch, hidden } = shape;
    let rows = steps * batch;
    let output = B::from_values(
        out.output,
        &[steps + 1 + usize::from(cell.has_cell()), batch, hidden],
    );
    // A tape of `[rows, width]`, or `[0]` for a cell that keeps none.
    let tape = |values: Vec<f32>| {
        let shape = if values.is_empty() { vec![0] } else { vec![rows, values.len() / rows] };
        B::from_values(values, &shape)
    };
    let saved = keep_tape.then(|| ScanSaved {
        cell,
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
    wanted: Wanted,
) -> ScanGrads<B> {
    let cell = saved.cell;
    let [outputs, batch, hidden] = <[usize; 3]>::try_from(dims::<B>(&saved.output))
        .expect("a scan's output has three dimensions");
    let shape = ScanShape {
        steps: outputs - 1 - usize::from(cell.has_cell()),
        batch,
        hidden,
    };
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
            order: saved.order.as_kernel_order(),
        };
        scan::backward(cell, shape, tape, &d_output, wanted, Plan::default())
    };
    let width = cell.gates() * hidden;
    let some = |values: Vec<f32>, shape: &[usize]| {
        (!values.is_empty()).then(|| B::from_values(values, shape))
    };
    ScanGrads {
        projected: B::from_values(grads.projected, &[shape.steps, batch, width]),
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
    let ids: Vec<usize> = ids.into_iter().map(|id| usize::try_from(id).unwrap_or(usize::MAX)).collect();
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
            fn scan_forward(
                cell: CellKind,
                inputs: ScanInputs<Self>,
                keep_tape: bool,
            ) -> (FloatTensor<Self>, Option<ScanSaved<Self>>) {
                forward::<Self>(cell, inputs, keep_tape)
            }

            fn scan_backward(
                saved: ScanSaved<Self>,
                d_output: FloatTensor<Self>,
                wanted: Wanted,
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
            fn recurrent_scan(
                cell: CellKind,
                order: crate::op::ScanOrder,
                projected: FloatTensor<Self>,
                input_bias: FloatTensor<Self>,
                h0: FloatTensor<Self>,
                c0: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                hidden_bias: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                let inputs = ScanInputs {
                    projected,
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

        fn into_values(tensor: FlexTensor) -> Result<Vec<f32>, FlexTensor> {
            // Flex allocates most results as bytes (`FlexTensor::empty`, alignment 1), which a
            // `Vec<f32>` cannot take over: `into_data` would copy the whole buffer, a pass over
            // memory that the borrowed path (gates written to a buffer of their own) saves.
            if tensor.data_arc().align() != std::mem::align_of::<f32>() {
                return Err(tensor);
            }
            if !(tensor.is_unique() && tensor.as_slice::<f32>().is_some()) {
                return Err(tensor);
            }
            let whole = tensor.bytes().len() == tensor.layout().num_elements() * 4;
            if !whole {
                return Err(tensor);
            }
            Ok(tensor
                .into_data()
                .try_into_vec::<f32>()
                .expect("an f32 tensor holds f32 values"))
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
                panic!("the fused scan runs on f32 tensors only, got {:?}", tensor.dtype());
            };
            match storage.view().to_slice() {
                Some(values) => Cow::Borrowed(values),
                None => Cow::Owned(storage.view().iter().copied().collect()),
            }
        }

        fn from_values(values: Vec<f32>, shape: &[usize]) -> NdArrayTensor {
            NdArrayTensor::from_data(TensorData::new(values, shape.to_vec()))
        }

        fn into_values(tensor: NdArrayTensor) -> Result<Vec<f32>, NdArrayTensor> {
            // Its storage is private to burn-ndarray beyond a read-only view: read it instead.
            Err(tensor)
        }
    }

    host_backend!(NdArray);
}
