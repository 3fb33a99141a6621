//! A host copy of an [`RnnLm`]'s parameters, with the ids their gradients are reported under.

use burn::module::{Param, ParamId};
use burn::prelude::*;

use rnnlm::{GruFormula, Recurrent, RecurrentCore, RnnLm};

use crate::cell::Cell;

/// One layer's weights on the host, with the ids their gradients are reported under.
pub(crate) struct Layer {
    /// `W_x` `[input, width]` with `width = gates · hidden`.
    pub input_weight: Vec<f32>,
    /// Everything added to the input projection: `[width]`.
    pub input_bias: Vec<f32>,
    /// `W_h` `[hidden, width]`.
    pub hidden_weight: Vec<f32>,
    /// PyTorch's GRU: `b_hh` `[width]`, added to `h W_hh` (zeros without one).
    pub hidden_bias: Vec<f32>,
    pub ids: LayerIds,
}

/// Parameter ids of a layer; `None` where the parameter does not exist or is frozen.
pub(crate) struct LayerIds {
    pub input_weight: Option<ParamId>,
    pub hidden_weight: Option<ParamId>,
    /// Every bias whose gradient is the column sum of the input projection's gradient.
    pub input_biases: Vec<ParamId>,
    /// PyTorch's GRU `b_hh`.
    pub hidden_bias: Option<ParamId>,
}

/// The parameter's id if it takes a gradient: every parameter of a model on a plain device, and
/// those not frozen on an autodiff device (as autodiff would give them gradients).
fn id_of<const D: usize>(param: &Param<Tensor<D>>) -> Option<ParamId> {
    (param.is_require_grad() || !param.val().device().is_autodiff()).then_some(param.id)
}

pub(crate) fn host<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float tensor")
}

/// The model's weights on the host, read once per step.
pub(crate) struct Weights {
    pub cell: Cell,
    pub hidden: usize,
    pub vocab: usize,
    pub layers: Vec<Layer>,
    /// Dropout between layers while training; 0 when inactive.
    pub dropout: f64,
    /// `[vocab, dim]`, with its id, for a model with an embedding.
    pub embedding: Option<(Vec<f32>, usize, Option<ParamId>)>,
    pub output_weight: Vec<f32>,
    pub output_bias: Vec<f32>,
    pub output_ids: (Option<ParamId>, Option<ParamId>),
}

impl Weights {
    pub fn read(model: &RnnLm) -> Self {
        let hidden = model.core.hidden_size();
        let cell = Cell::of(&model.core);
        let (dropout, layers): (&burn::nn::Dropout, Vec<Layer>) = match &model.core {
            RecurrentCore::RnnScratch(core) => (
                &core.dropout,
                core.layers
                    .iter()
                    .map(|l| Layer {
                        input_weight: host(l.w_xh.val()),
                        input_bias: host(l.b_h.val()),
                        hidden_weight: host(l.w_hh.val()),
                        hidden_bias: Vec::new(),
                        ids: LayerIds {
                            input_weight: id_of(&l.w_xh),
                            hidden_weight: id_of(&l.w_hh),
                            input_biases: id_of(&l.b_h).into_iter().collect(),
                            hidden_bias: None,
                        },
                    })
                    .collect(),
            ),
            RecurrentCore::Gru(core) => (
                &core.dropout,
                core.layers
                    .iter()
                    .map(|l| {
                        let width = 3 * hidden;
                        let torch = l.formula == GruFormula::PyTorch;
                        let hidden_bias = match (&l.hidden_bias, torch) {
                            (Some(b), true) => host(b.val()),
                            _ => vec![0.0; width],
                        };
                        Layer {
                            input_weight: host(l.input_weight.val()),
                            input_bias: host(l.input_bias.val()),
                            hidden_weight: host(l.hidden_weight.val()),
                            hidden_bias,
                            ids: LayerIds {
                                input_weight: id_of(&l.input_weight),
                                hidden_weight: id_of(&l.hidden_weight),
                                input_biases: id_of(&l.input_bias).into_iter().collect(),
                                hidden_bias: l
                                    .hidden_bias
                                    .as_ref()
                                    .filter(|_| torch)
                                    .and_then(id_of),
                            },
                        }
                    })
                    .collect(),
            ),
            RecurrentCore::Lstm(core) => (
                &core.dropout,
                core.layers
                    .iter()
                    .map(|l| Layer {
                        input_weight: host(l.input_weight.val()),
                        // Both biases only ever appear as their sum, and each gets its gradient.
                        // (Added here rather than by a tensor op, which an autodiff device
                        // would record.)
                        input_bias: host(l.input_bias.val())
                            .into_iter()
                            .zip(host(l.hidden_bias.val()))
                            .map(|(a, b)| a + b)
                            .collect(),
                        hidden_weight: host(l.hidden_weight.val()),
                        hidden_bias: Vec::new(),
                        ids: LayerIds {
                            input_weight: id_of(&l.input_weight),
                            hidden_weight: id_of(&l.hidden_weight),
                            input_biases: id_of(&l.input_bias)
                                .into_iter()
                                .chain(id_of(&l.hidden_bias))
                                .collect(),
                            hidden_bias: None,
                        },
                    })
                    .collect(),
            ),
        };
        let dropout = if dropout.training.is_enabled() {
            dropout.prob
        } else {
            0.0
        };
        Self {
            cell,
            hidden,
            vocab: model.vocab_size,
            layers,
            dropout,
            embedding: model.embedding.as_ref().map(|e| {
                let dim = e.weight.val().dims()[1];
                (host(e.weight.val()), dim, id_of(&e.weight))
            }),
            output_weight: host(model.output.w_hq.val()),
            output_bias: host(model.output.b_q.val()),
            output_ids: (id_of(&model.output.w_hq), id_of(&model.output.b_q)),
        }
    }

    pub fn input_size(&self, layer: usize) -> usize {
        if layer > 0 {
            self.hidden
        } else {
            match &self.embedding {
                Some((_, dim, _)) => *dim,
                None => self.vocab,
            }
        }
    }
}
