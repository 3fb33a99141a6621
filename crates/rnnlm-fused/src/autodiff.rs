//! The operation on an autodiff device: one graph node over a whole layer, whose backward pass
//! is [`ScanKernels::layer_backward`].

use burn::backend::Backend;
use burn::backend::TensorMetadata;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use rnnlm_kernels::CellKind;
use rnnlm_kernels::scan::Wanted;

use crate::op::{LayerWanted, ScanBackend, ScanInputs, ScanKernels, ScanOrder, ScanSaved};

/// The node's backward pass; its parents are the seven float inputs in the order of
/// [`ScanBackend::recurrent_layer`].
#[derive(Debug)]
struct Layer;

impl<B: Backend + ScanKernels> Backward<B, 7> for Layer {
    type State = ScanSaved<B>;

    fn backward(self, ops: Ops<Self::State, 7>, grads: &mut Gradients, _: &mut Checkpointer) {
        let d_output = grads.consume::<B>(&ops.node);
        let [input, input_weight, input_bias, h0, c0, weight, hidden_bias] = ops.parents;
        // Parents that take no gradient (constants, frozen or detached tensors, the empty
        // stand-ins of the inputs a layer lacks) arrive as `None`: their work is skipped.
        let wanted = LayerWanted {
            input: input.is_some(),
            input_weight: input_weight.is_some(),
            scan: Wanted {
                input_bias: input_bias.is_some(),
                h0: h0.is_some(),
                c0: c0.is_some(),
                weight: weight.is_some(),
                hidden_bias: hidden_bias.is_some(),
            },
        };
        let result = B::layer_backward(ops.state, d_output, wanted);
        let pairs = [
            (input, result.input),
            (input_weight, result.input_weight),
            (input_bias, result.input_bias),
            (h0, result.h0),
            (c0, result.c0),
            (weight, result.weight),
            (hidden_bias, result.hidden_bias),
        ];
        for (node, grad) in pairs {
            if let (Some(node), Some(grad)) = (node, grad) {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// The row gather's backward pass; its one parent is the table.
#[derive(Debug)]
struct GatherRows;

impl<B: Backend + ScanKernels> Backward<B, 1> for GatherRows {
    /// The ids and the table's row count.
    type State = (IntTensor<B>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let d_output = grads.consume::<B>(&ops.node);
        let [table] = ops.parents;
        if let Some(table) = table {
            let (ids, vocab) = ops.state;
            grads.register::<B>(table.id, B::gather_rows_backward(d_output, ids, vocab));
        }
    }
}

impl<B: Backend + ScanKernels, C: CheckpointStrategy> ScanBackend for Autodiff<B, C> {
    fn gather_rows(table: FloatTensor<Self>, ids: IntTensor<Self>) -> FloatTensor<Self> {
        let guard = table.node();
        let table = table.into_primitive();
        let vocab = table.shape()[0];
        // The state is the ids alone, small: a checkpointing strategy has nothing to recompute.
        match GatherRows.prepare::<C>([guard]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let output = B::float_select(table, 0, ids.clone());
                prep.finish((ids, vocab), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::float_select(table, 0, ids)),
        }
    }

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
        // The guards first: the primitives move into the inputs below.
        let guards = [
            input.node(),
            input_weight.node(),
            input_bias.node(),
            h0.node(),
            c0.node(),
            weight.node(),
            hidden_bias.node(),
        ];
        let inputs = ScanInputs {
            input: input.into_primitive(),
            ids,
            input_weight: input_weight.into_primitive(),
            input_bias: input_bias.into_primitive(),
            h0: h0.into_primitive(),
            c0: c0.into_primitive(),
            weight: weight.into_primitive(),
            hidden_bias: hidden_bias.into_primitive(),
            order,
        };
        // Compute-bound: a checkpointing strategy must keep the tape rather than run the loop
        // again.
        match Layer.prepare::<C>(guards).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (output, saved) = B::layer_forward(cell, inputs, true);
                prep.finish(saved.expect("a tracked layer keeps its tape"), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::layer_forward(cell, inputs, false).0),
        }
    }
}
