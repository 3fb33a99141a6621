//! Generation on a host copy of the weights ([`rnnlm_kernels::decode`]), where the fused scan
//! runs: a token's input projection is a row of a table and a step one product per layer, with
//! the same cell rows as the fused scan, instead of a dozen tensor operations per layer and step.

use burn::prelude::*;
use rnnlm_kernels::decode::{LayerWeights, StackWeights};

use crate::recurrent::RecurrentLayer;
use crate::{Recurrent, RecurrentCore, RnnLm};

fn host<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float tensor")
}

fn layers<L: RecurrentLayer>(layers: &[L]) -> (rnnlm_kernels::CellKind, Vec<LayerWeights>) {
    let weights = layers
        .iter()
        .map(|layer| {
            let input_weight = layer.input_weight();
            let width = input_weight.dims()[1];
            LayerWeights {
                input_weight: host(input_weight),
                input_bias: layer.input_bias().map_or_else(|| vec![0.0; width], host),
                hidden_weight: host(layer.hidden_weight()),
                hidden_bias: layer.hidden_bias().map(host).unwrap_or_default(),
            }
        })
        .collect();
    (layers[0].recurrence(), weights)
}

/// Whether the host loop computes what the model's core does: not for a layer the kernels do
/// not run (a clip that is not a positive bound), nor a reversed or bidirectional core (whose steps do
/// not run first to last), which generate through the tensor operations.
pub(crate) fn runs(model: &RnnLm) -> bool {
    fn kernels_run<L: RecurrentLayer>(layers: &[L]) -> bool {
        layers.iter().all(|layer| !layer.composite_only())
    }
    let core = &model.core;
    let layers_run = match core {
        RecurrentCore::RnnScratch(core) => kernels_run(&core.layers),
        RecurrentCore::Gru(core) => kernels_run(&core.layers),
        RecurrentCore::Lstm(core) => kernels_run(&core.layers),
    };
    layers_run && !core.reverse() && !core.bidirectional()
}

/// The model's weights on the host, one read-back per parameter.
pub(crate) fn stack_weights(model: &RnnLm) -> StackWeights {
    let (cell, layers) = match &model.core {
        RecurrentCore::RnnScratch(core) => layers(&core.layers),
        RecurrentCore::Gru(core) => layers(&core.layers),
        RecurrentCore::Lstm(core) => layers(&core.layers),
    };
    StackWeights {
        cell,
        hidden: model.core.hidden_size(),
        vocab: model.vocab_size,
        layers,
        embedding: model.embedding.as_ref().map(|e| {
            let weight = e.weight.val();
            let dim = weight.dims()[1];
            (host(weight), dim)
        }),
        output_weight: host(model.output.w_hq.val()),
        output_bias: host(model.output.b_q.val()),
    }
}
