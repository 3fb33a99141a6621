//! The operation on `Fusion<CubeBackend>`, the CubeCL backends as Burn's default features build
//! them: the fused stream runs what it holds, the `CubeBackend` kernels run on its tensors, and
//! their results go back onto the stream as new tensors.
//!
//! Eager on purpose: the layer is one large operation that no fuser could merge with its
//! neighbours, so registering it lazily (as `#[backend_extension(Fusion)]` would) gains
//! nothing and would need its outputs' shapes, tapes included, described up front.

use burn::backend::TensorMetadata;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::tensor::CubeTensor;
use burn_fusion::custom::{OperationIr, StreamId};
use burn_fusion::{Fusion, FusionBackend, FusionTensor, NoOp};
use burn_ir::{BackendIr, InitOperationIr};
use rnnlm_kernels::CellKind;

use crate::op::{
    LayerWanted, ScanBackend, ScanGrads, ScanInputs, ScanKernels, ScanOrder, ScanSaved,
};

type Runtime = <CubeBackend as FusionBackend>::FusionRuntime;
type Outer = FusionTensor<Runtime>;

/// The tensor under a fused one, after everything queued before it has run.
fn inner(tensor: Outer) -> CubeTensor {
    let client = tensor.client.clone();
    client.resolve_tensor_float::<CubeBackend>(tensor)
}

fn inner_int(tensor: Outer) -> CubeTensor {
    let client = tensor.client.clone();
    client.resolve_tensor_int::<CubeBackend>(tensor)
}

/// A `CubeBackend` tensor put on `like`'s fused stream.
fn outer(like: &Outer, tensor: CubeTensor) -> Outer {
    let client = like.client.clone();
    let (shape, dtype) = (tensor.shape(), tensor.dtype());
    let handle = <CubeBackend as BackendIr>::float_tensor_handle(tensor);
    let init = InitOperationIr::create(shape, dtype, || client.register_tensor_handle(handle));
    client
        .register(
            StreamId::current(),
            OperationIr::Init(init),
            NoOp::<CubeBackend>::new(),
        )
        .pop()
        .expect("an initialised tensor is the operation's one output")
}

fn inner_inputs(inputs: ScanInputs<Fusion<CubeBackend>>) -> ScanInputs<CubeBackend> {
    ScanInputs {
        input: inner(inputs.input),
        ids: inner_int(inputs.ids),
        input_weight: inner(inputs.input_weight),
        input_bias: inner(inputs.input_bias),
        h0: inner(inputs.h0),
        c0: inner(inputs.c0),
        weight: inner(inputs.weight),
        hidden_bias: inner(inputs.hidden_bias),
        order: inputs.order,
    }
}

impl ScanKernels for Fusion<CubeBackend> {
    fn layer_forward(
        cell: CellKind,
        inputs: ScanInputs<Self>,
        keep_tape: bool,
    ) -> (FloatTensor<Self>, Option<ScanSaved<Self>>) {
        let like = inputs.h0.clone();
        // The saved inputs stay the caller's fused tensors; only the results are new.
        let (input, ids, input_weight) = (
            inputs.input.clone(),
            inputs.ids.clone(),
            inputs.input_weight.clone(),
        );
        let (h0, c0, weight) = (inputs.h0.clone(), inputs.c0.clone(), inputs.weight.clone());
        let (output, saved) = CubeBackend::layer_forward(cell, inner_inputs(inputs), keep_tape);
        let output = outer(&like, output);
        let saved = saved.map(|saved| ScanSaved {
            cell,
            input,
            ids,
            input_weight,
            h0,
            c0,
            weight,
            output: output.clone(),
            gates: outer(&like, saved.gates),
            extra: outer(&like, saved.extra),
            order: saved.order,
        });
        (output, saved)
    }

    fn layer_backward(
        saved: ScanSaved<Self>,
        d_output: FloatTensor<Self>,
        wanted: LayerWanted,
    ) -> ScanGrads<Self> {
        let like = saved.h0.clone();
        let saved = ScanSaved {
            cell: saved.cell,
            input: inner(saved.input),
            ids: inner_int(saved.ids),
            input_weight: inner(saved.input_weight),
            h0: inner(saved.h0),
            c0: inner(saved.c0),
            weight: inner(saved.weight),
            output: inner(saved.output),
            gates: inner(saved.gates),
            extra: inner(saved.extra),
            order: saved.order,
        };
        let grads = CubeBackend::layer_backward(saved, inner(d_output), wanted);
        let back = |grad: Option<CubeTensor>| grad.map(|grad| outer(&like, grad));
        ScanGrads {
            input: back(grads.input),
            input_weight: back(grads.input_weight),
            input_bias: back(grads.input_bias),
            h0: back(grads.h0),
            c0: back(grads.c0),
            weight: back(grads.weight),
            hidden_bias: back(grads.hidden_bias),
        }
    }

    fn gather_rows_backward(
        d_output: FloatTensor<Self>,
        ids: IntTensor<Self>,
        vocab: usize,
    ) -> FloatTensor<Self> {
        super::scatter_rows::<Self>(d_output, ids, vocab)
    }
}

impl ScanBackend for Fusion<CubeBackend> {
    fn recurrent_layer(
        cell: CellKind,
        order: ScanOrder,
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
        Self::layer_forward(cell, inputs, false).0
    }

    fn gather_rows(table: FloatTensor<Self>, ids: IntTensor<Self>) -> FloatTensor<Self> {
        <Self as burn::backend::ops::FloatTensorOps<Self>>::float_select(table, 0, ids)
    }
}
