//! Weights out to PyTorch: a trained [`RnnLm`] (or a core alone) as the `state_dict()` of
//! `nn.RNN` / `nn.GRU` / `nn.LSTM` + `nn.Linear` (+ `nn.Embedding`), with a serialisable
//! description of the modules to build on the PyTorch side.
//!
//! rnnlm packs each layer's gates in PyTorch's order, as `[input, gates·hidden]`; PyTorch keeps
//! `[gates·hidden, input]`. Export is therefore one transpose per matrix (done on the host, so
//! every tensor comes out contiguous and row-major) and nothing else: the exported model
//! computes the same function. The scratch RNN's single bias becomes `bias_ih`, with a zero
//! `bias_hh`, since `nn.RNN` only ever adds the two.
//!
//! What PyTorch's modules cannot compute is refused with an [`ExportError`] that says why and
//! what to do: d2l's GRU formula, the LSTM's coupled input-forget gate, a clamped state
//! (`clip`), and a one-direction core that reads the sequence backwards (`reverse`).
//!
//! ```
//! use burn::prelude::*;
//! use rnnlm::export::{export_lm, TorchRnnType};
//! use rnnlm::{CellKind, RnnLmConfig};
//!
//! let device = Device::flex();
//! let model = RnnLmConfig::new(CellKind::Lstm, 28, 64).with_num_layers(2).init(&device);
//! let export = export_lm(&model)?;
//! assert_eq!(export.description.rnn.module_type, TorchRnnType::Lstm);
//! let (name, data) = &export.tensors[0];
//! assert_eq!((name.as_str(), data.shape().as_slice()), ("rnn.weight_ih_l0", &[256, 28][..]));
//! assert_eq!(export.tensors.last().unwrap().0, "linear.bias");
//! # Ok::<(), rnnlm::export::ExportError>(())
//! ```

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use crate::{
    Activation, DeepLstm, Gru, GruFormula, InputEncoding, Recurrent, RecurrentCore, RnnLm,
    RnnScratch,
};

/// The attribute name of the recurrent module in an exported language model: its keys are
/// `rnn.weight_ih_l0`, ... (d2l's `RNNModel` uses the same name).
pub const RNN_MODULE: &str = "rnn";
/// The attribute name of the output `nn.Linear`: `linear.weight`, `linear.bias`.
pub const LINEAR_MODULE: &str = "linear";
/// The attribute name of the `nn.Embedding`, when the model has one: `embedding.weight`.
pub const EMBEDDING_MODULE: &str = "embedding";

/// Which PyTorch recurrent module a core becomes; serialises as its class name (`"RNN"`,
/// `"GRU"`, `"LSTM"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TorchRnnType {
    /// `nn.RNN` (from [`RnnScratch`]).
    #[serde(rename = "RNN")]
    Rnn,
    /// `nn.GRU` (from [`Gru`] with [`GruFormula::PyTorch`]).
    #[serde(rename = "GRU")]
    Gru,
    /// `nn.LSTM` (from [`DeepLstm`]).
    #[serde(rename = "LSTM")]
    Lstm,
}

impl TorchRnnType {
    /// Gate blocks in each weight matrix: 1, 3 or 4.
    pub fn gates(self) -> usize {
        match self {
            TorchRnnType::Rnn => 1,
            TorchRnnType::Gru => 3,
            TorchRnnType::Lstm => 4,
        }
    }

    /// The module's name in PyTorch, e.g. `nn.LSTM`.
    pub fn class_name(self) -> &'static str {
        match self {
            TorchRnnType::Rnn => "nn.RNN",
            TorchRnnType::Gru => "nn.GRU",
            TorchRnnType::Lstm => "nn.LSTM",
        }
    }
}

/// The arguments of the PyTorch recurrent module that loads an exported core:
/// `nn.<type>(input_size, hidden_size, num_layers=.., bias=.., batch_first=.., dropout=..,
/// bidirectional=..)`, plus `nonlinearity=..` for `nn.RNN`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TorchRecurrent {
    /// `RNN`, `GRU` or `LSTM`.
    #[serde(rename = "type")]
    pub module_type: TorchRnnType,
    /// Width of the first layer's input.
    pub input_size: usize,
    /// Width of every layer's state (`H`).
    pub hidden_size: usize,
    /// Stacked layers (each with two directions when bidirectional).
    pub num_layers: usize,
    /// Whether the module has `bias_ih_l{k}` and `bias_hh_l{k}`.
    pub bias: bool,
    /// Whether the module takes `[batch, steps, input]` (`true`) or `[steps, batch, input]`.
    pub batch_first: bool,
    /// Dropout between layers while training (PyTorch's `dropout`).
    pub dropout: f64,
    /// Whether every layer runs in both directions; outputs are then `[.., 2·H]`.
    pub bidirectional: bool,
    /// `nn.RNN`'s `nonlinearity` (`"tanh"` or `"relu"`); absent for GRU and LSTM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonlinearity: Option<Activation>,
}

impl TorchRecurrent {
    /// The module as PyTorch prints its constructor, e.g. `nn.LSTM(28, 256, num_layers=2,
    /// batch_first=True)`.
    pub fn describe(&self) -> String {
        let mut args = format!("{}, {}", self.input_size, self.hidden_size);
        if self.num_layers != 1 {
            args += &format!(", num_layers={}", self.num_layers);
        }
        if let Some(Activation::Relu) = self.nonlinearity {
            args += ", nonlinearity='relu'";
        }
        if !self.bias {
            args += ", bias=False";
        }
        if self.batch_first {
            args += ", batch_first=True";
        }
        if self.bidirectional {
            args += ", bidirectional=True";
        }
        format!("{}({args})", self.module_type.class_name())
    }
}

/// `nn.Embedding(num_embeddings, embedding_dim)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TorchEmbedding {
    /// The vocabulary size.
    pub num_embeddings: usize,
    /// Width of each embedding vector (the recurrent module's `input_size`).
    pub embedding_dim: usize,
}

/// `nn.Linear(in_features, out_features, bias)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TorchLinear {
    /// The recurrent module's `hidden_size`.
    pub in_features: usize,
    /// The vocabulary size.
    pub out_features: usize,
    /// Always `true`: the output layer has a bias.
    pub bias: bool,
}

/// The PyTorch modules of an exported language model, in the order they hold their keys:
/// `embedding` (when [`input`](Self::input) is an embedding), `rnn`, `linear`. Serialised as
/// JSON it is what `scripts/check_export.py` builds the model from.
///
/// The logits for token ids `x` `[batch, steps]` are `linear(rnn(e)[0])`, where `e` is
/// `embedding(x)`, or `F.one_hot(x, vocab_size).float()` for one-hot input (transposed to
/// `[steps, batch, ..]` first when `rnn.batch_first` is `false`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TorchLm {
    /// Number of tokens in the vocabulary: the one-hot width and the number of logits.
    pub vocab_size: usize,
    /// How token ids enter the recurrent module: `"one-hot"` or `"embedding"`.
    pub input: InputEncoding,
    /// The `nn.Embedding` at [`EMBEDDING_MODULE`], with embedding input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<TorchEmbedding>,
    /// The recurrent module at [`RNN_MODULE`].
    pub rnn: TorchRecurrent,
    /// The output layer at [`LINEAR_MODULE`].
    pub linear: TorchLinear,
}

impl TorchLm {
    /// The modules as one line, e.g. `nn.Embedding(28, 32) + nn.LSTM(32, 256, batch_first=True)
    /// + nn.Linear(256, 28)`.
    pub fn describe(&self) -> String {
        let embedding = self
            .embedding
            .as_ref()
            .map(|e| format!("nn.Embedding({}, {}) + ", e.num_embeddings, e.embedding_dim))
            .unwrap_or_default();
        format!(
            "{embedding}{} + nn.Linear({}, {})",
            self.rnn.describe(),
            self.linear.in_features,
            self.linear.out_features
        )
    }
}

/// Tensors named and shaped as PyTorch's `state_dict()` gives them, in its order, with the
/// description of the modules that load them.
#[derive(Clone, Debug)]
pub struct TorchExport<D> {
    /// What to build on the PyTorch side ([`TorchLm`] or [`TorchRecurrent`]).
    pub description: D,
    /// `(key, f32 tensor)` pairs: e.g. `rnn.weight_ih_l0` `[gates·H, input]`,
    /// `rnn.weight_hh_l0` `[gates·H, H]`, `rnn.bias_ih_l0` `[gates·H]`, ...
    pub tensors: Vec<(String, TensorData)>,
}

/// Why a model cannot be written as PyTorch modules. Each message names the layer and what
/// to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExportError {
    /// A GRU layer with d2l's formula (reset gate before the hidden product).
    #[error(
        "GRU layer {layer} uses d2l's formula (the reset gate multiplies the state before the \
         hidden product, GruFormula::D2l); nn.GRU applies it after the product, so no PyTorch \
         module computes this model. Train with gru_formula = \"pytorch\" (GruFormula::PyTorch) \
         to export"
    )]
    GruFormula {
        /// The layer (counting directions: forward, then reverse, per layer).
        layer: usize,
    },
    /// An LSTM layer with a coupled input-forget gate.
    #[error(
        "LSTM layer {layer} couples its forget gate to its input gate (input_forget, f = 1 - i); \
         nn.LSTM has independent gates. Build the core with input_forget = false to export"
    )]
    InputForget {
        /// The layer (counting directions).
        layer: usize,
    },
    /// A layer that clamps its state after every step.
    #[error(
        "{core} layer {layer} clamps its state to [-{clip}, {clip}] after every step (clip); \
         PyTorch's recurrent modules never clamp. Build the core with clip = None to export"
    )]
    Clip {
        /// `RnnScratch`, `Gru` or `DeepLstm`.
        core: &'static str,
        /// The layer (counting directions).
        layer: usize,
        /// The clamp.
        clip: f64,
    },
    /// A one-direction core that reads the sequence last step first.
    #[error(
        "this {core} reads the sequence last step first (reverse = true); PyTorch's one-direction \
         modules read it first step first. Export it with reverse = false and give PyTorch \
         torch.flip(x, [1]) (flipping the outputs back), or use bidirectional = true"
    )]
    Reverse {
        /// `RnnScratch`, `Gru` or `DeepLstm`.
        core: &'static str,
    },
    /// An `nn.RNN` has one non-linearity for all its layers.
    #[error(
        "RnnScratch layer {layer} uses {found:?} but layer 0 uses {first:?}; nn.RNN has one \
         nonlinearity for all layers. Give every layer the same activation to export"
    )]
    MixedActivation {
        /// Layer 0's.
        first: Activation,
        /// The first layer that differs.
        layer: usize,
        /// Its activation.
        found: Activation,
    },
    /// A language model around a bidirectional core.
    #[error(
        "the language model's {core} is bidirectional: a language model predicts each token \
         from the ones before it, and RnnLm's output layer reads one direction. Export the core \
         alone with export::export_core"
    )]
    BidirectionalLm {
        /// `RnnScratch`, `Gru` or `DeepLstm`.
        core: &'static str,
    },
    /// A parameter whose shape does not fit the rest of the model (a hand-assembled module).
    #[error(
        "{tensor} has shape {found:?} but the model's sizes need {expected:?}; fix the module \
         (its parameters and its sizes must agree) before exporting"
    )]
    Shape {
        /// The parameter, by its exported key.
        tensor: String,
        /// Its shape.
        found: Vec<usize>,
        /// The shape the sizes imply.
        expected: Vec<usize>,
    },
    /// A parameter whose values cannot be read as `f32`.
    #[error("cannot read {tensor} as f32 values: {reason}")]
    Data {
        /// The parameter, by its exported key.
        tensor: String,
        /// Burn's reason.
        reason: String,
    },
}

/// Exports a language model as PyTorch's `embedding` (if any) + `rnn` + `linear` modules.
///
/// Keys, in `state_dict()` order: `embedding.weight` `[vocab, E]` (embedding input only);
/// per layer `k` (and direction suffix) `rnn.weight_ih_l{k}` `[gates·H, in]`,
/// `rnn.weight_hh_l{k}` `[gates·H, H]`, `rnn.bias_ih_l{k}`, `rnn.bias_hh_l{k}` `[gates·H]`
/// (when the core has biases); `linear.weight` `[vocab, H]`, `linear.bias` `[vocab]`.
/// `rnnlm_import::import_lm` reads the result back into the same model.
///
/// # Errors
/// [`ExportError`] when PyTorch's modules cannot compute the model: d2l's GRU formula, an
/// LSTM with `input_forget`, a `clip`, a one-direction `reverse` core, mixed activations, a
/// bidirectional core; or when a parameter's shape disagrees with the model's sizes.
pub fn export_lm(model: &RnnLm) -> Result<TorchExport<TorchLm>, ExportError> {
    let core = &model.core;
    if core.bidirectional() {
        return Err(ExportError::BidirectionalLm {
            core: core.core_name(),
        });
    }
    let (vocab, hidden) = (model.vocab_size, core.hidden_size());
    let mut tensors = Vec::new();
    let (input, embedding) = match &model.embedding {
        Some(embedding) => {
            let key = format!("{EMBEDDING_MODULE}.weight");
            let dims = [vocab, core.input_size()];
            tensors.push((key.clone(), matrix(&key, &embedding.weight, dims, false)?));
            let description = TorchEmbedding {
                num_embeddings: vocab,
                embedding_dim: core.input_size(),
            };
            (InputEncoding::Embedding, Some(description))
        }
        None => {
            // One-hot input: the first layer must take one column per token.
            if core.input_size() != vocab {
                return Err(ExportError::Shape {
                    tensor: format!("{RNN_MODULE}.weight_ih_l0"),
                    found: vec![core.input_size()],
                    expected: vec![vocab],
                });
            }
            (InputEncoding::OneHot, None)
        }
    };
    let rnn = export_core(core, &format!("{RNN_MODULE}."))?;
    tensors.extend(rnn.tensors);
    let weight = format!("{LINEAR_MODULE}.weight");
    tensors.push((
        weight.clone(),
        matrix(&weight, &model.output.w_hq, [hidden, vocab], true)?,
    ));
    let bias = format!("{LINEAR_MODULE}.bias");
    tensors.push((bias.clone(), vector(&bias, Some(&model.output.b_q), vocab)?));
    Ok(TorchExport {
        description: TorchLm {
            vocab_size: vocab,
            input,
            embedding,
            rnn: rnn.description,
            linear: TorchLinear {
                in_features: hidden,
                out_features: vocab,
                bias: true,
            },
        },
        tensors,
    })
}

/// Exports a recurrent core alone as PyTorch's `nn.RNN` / `nn.GRU` / `nn.LSTM`, its keys
/// prefixed with `prefix` (`""` for the module's own `state_dict()`, `"encoder."` for a
/// submodule). Bidirectional cores keep PyTorch's order: per layer, forward then `_reverse`.
/// A core of your own type goes through [`RecurrentCore`] (`RecurrentCore::Lstm(lstm.clone())`).
///
/// Shapes: `{prefix}weight_ih_l{k}` `[gates·H, in]` with `in` the input size for `k = 0` and
/// `H·directions` above; `{prefix}weight_hh_l{k}` `[gates·H, H]`; biases `[gates·H]`, present
/// when any layer has one (a missing one is exported as zeros, which is the same function).
///
/// # Errors
/// As [`export_lm`], bar the bidirectional case, which a core alone may be.
pub fn export_core(
    core: &RecurrentCore,
    prefix: &str,
) -> Result<TorchExport<TorchRecurrent>, ExportError> {
    if core.reverse() && !core.bidirectional() {
        return Err(ExportError::Reverse {
            core: core.core_name(),
        });
    }
    let (module_type, nonlinearity, layers, dropout) = match core {
        RecurrentCore::RnnScratch(rnn) => {
            let (activation, layers) = rnn_layers(rnn)?;
            (
                TorchRnnType::Rnn,
                Some(activation),
                layers,
                rnn.dropout.prob,
            )
        }
        RecurrentCore::Gru(gru) => (TorchRnnType::Gru, None, gru_layers(gru)?, gru.dropout.prob),
        RecurrentCore::Lstm(lstm) => (
            TorchRnnType::Lstm,
            None,
            lstm_layers(lstm)?,
            lstm.dropout.prob,
        ),
    };
    let description = TorchRecurrent {
        module_type,
        input_size: core.input_size(),
        hidden_size: core.hidden_size(),
        num_layers: core.num_layers(),
        bias: layers
            .iter()
            .any(|layer| layer.b_ih.is_some() || layer.b_hh.is_some()),
        batch_first: core.batch_first(),
        dropout,
        bidirectional: core.bidirectional(),
        nonlinearity,
    };
    let tensors = layer_tensors(&description, &layers, prefix)?;
    Ok(TorchExport {
        description,
        tensors,
    })
}

/// One layer (one direction) in rnnlm's layout: `w_ih` `[in, gates·H]`, `w_hh` `[H, gates·H]`.
struct LayerWeights<'a> {
    w_ih: &'a Param<Tensor<2>>,
    w_hh: &'a Param<Tensor<2>>,
    b_ih: Option<&'a Param<Tensor<1>>>,
    b_hh: Option<&'a Param<Tensor<1>>>,
}

fn refuse_clip(core: &'static str, layer: usize, clip: Option<f64>) -> Result<(), ExportError> {
    match clip {
        Some(clip) => Err(ExportError::Clip { core, layer, clip }),
        None => Ok(()),
    }
}

fn rnn_layers(rnn: &RnnScratch) -> Result<(Activation, Vec<LayerWeights<'_>>), ExportError> {
    let first = rnn
        .layers
        .first()
        .map_or(Activation::Tanh, |l| l.activation);
    let mut layers = Vec::with_capacity(rnn.layers.len());
    for (index, layer) in rnn.layers.iter().enumerate() {
        refuse_clip("RnnScratch", index, layer.clip)?;
        if layer.activation != first {
            return Err(ExportError::MixedActivation {
                first,
                layer: index,
                found: layer.activation,
            });
        }
        // nn.RNN adds bias_ih and bias_hh; b_h is their sum, so bias_hh is zero.
        layers.push(LayerWeights {
            w_ih: &layer.w_xh,
            w_hh: &layer.w_hh,
            b_ih: layer.b_h.as_ref(),
            b_hh: None,
        });
    }
    Ok((first, layers))
}

fn gru_layers(gru: &Gru) -> Result<Vec<LayerWeights<'_>>, ExportError> {
    let mut layers = Vec::with_capacity(gru.layers.len());
    for (index, layer) in gru.layers.iter().enumerate() {
        if layer.formula == GruFormula::D2l {
            return Err(ExportError::GruFormula { layer: index });
        }
        refuse_clip("Gru", index, layer.clip)?;
        layers.push(LayerWeights {
            w_ih: &layer.input_weight,
            w_hh: &layer.hidden_weight,
            b_ih: layer.input_bias.as_ref(),
            b_hh: layer.hidden_bias.as_ref(),
        });
    }
    Ok(layers)
}

fn lstm_layers(lstm: &DeepLstm) -> Result<Vec<LayerWeights<'_>>, ExportError> {
    let mut layers = Vec::with_capacity(lstm.layers.len());
    for (index, layer) in lstm.layers.iter().enumerate() {
        if layer.input_forget {
            return Err(ExportError::InputForget { layer: index });
        }
        refuse_clip("DeepLstm", index, layer.clip)?;
        layers.push(LayerWeights {
            w_ih: &layer.input_weight,
            w_hh: &layer.hidden_weight,
            b_ih: layer.input_bias.as_ref(),
            b_hh: layer.hidden_bias.as_ref(),
        });
    }
    Ok(layers)
}

/// The layers' tensors under PyTorch's names, in `_flat_weights_names` order: per layer and
/// direction, `weight_ih`, `weight_hh`, then (with biases) `bias_ih`, `bias_hh`.
fn layer_tensors(
    module: &TorchRecurrent,
    layers: &[LayerWeights<'_>],
    prefix: &str,
) -> Result<Vec<(String, TensorData)>, ExportError> {
    let directions: &[&str] = if module.bidirectional {
        &["", "_reverse"]
    } else {
        &[""]
    };
    let h = module.hidden_size;
    let rows = module.module_type.gates() * h;
    let mut tensors = Vec::with_capacity(layers.len() * 4);
    for (entry, layer) in layers.iter().enumerate() {
        let (k, suffix) = (
            entry / directions.len(),
            directions[entry % directions.len()],
        );
        let input = if k == 0 {
            module.input_size
        } else {
            h * directions.len()
        };
        let key = |name: &str| format!("{prefix}{name}_l{k}{suffix}");
        let w_ih = key("weight_ih");
        tensors.push((
            w_ih.clone(),
            matrix(&w_ih, layer.w_ih, [input, rows], true)?,
        ));
        let w_hh = key("weight_hh");
        tensors.push((w_hh.clone(), matrix(&w_hh, layer.w_hh, [h, rows], true)?));
        if module.bias {
            let b_ih = key("bias_ih");
            tensors.push((b_ih.clone(), vector(&b_ih, layer.b_ih, rows)?));
            let b_hh = key("bias_hh");
            tensors.push((b_hh.clone(), vector(&b_hh, layer.b_hh, rows)?));
        }
    }
    Ok(tensors)
}

/// The values of a parameter as `f32`, row-major.
fn values<const D: usize>(key: &str, param: &Param<Tensor<D>>) -> Result<Vec<f32>, ExportError> {
    param
        .val()
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| ExportError::Data {
            tensor: key.to_owned(),
            reason: format!("{e:?}"),
        })
}

/// A `[rows, cols]` parameter (checked against `dims`), transposed to PyTorch's `[cols, rows]`
/// when asked.
fn matrix(
    key: &str,
    param: &Param<Tensor<2>>,
    dims: [usize; 2],
    transpose: bool,
) -> Result<TensorData, ExportError> {
    let found = param.val().dims();
    if found != dims {
        // Name the shape as it would appear in the exported file.
        let flip = |[a, b]: [usize; 2]| if transpose { vec![b, a] } else { vec![a, b] };
        return Err(ExportError::Shape {
            tensor: key.to_owned(),
            found: flip(found),
            expected: flip(dims),
        });
    }
    let values = values(key, param)?;
    let [rows, cols] = dims;
    if !transpose {
        return Ok(TensorData::new(values, [rows, cols]));
    }
    let mut out = vec![0.0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    Ok(TensorData::new(out, [cols, rows]))
}

/// A `[len]` parameter, or zeros where the layer has none.
fn vector(
    key: &str,
    param: Option<&Param<Tensor<1>>>,
    len: usize,
) -> Result<TensorData, ExportError> {
    let Some(param) = param else {
        return Ok(TensorData::new(vec![0.0f32; len], [len]));
    };
    let [found] = param.val().dims();
    if found != len {
        return Err(ExportError::Shape {
            tensor: key.to_owned(),
            found: vec![found],
            expected: vec![len],
        });
    }
    Ok(TensorData::new(values(key, param)?, [len]))
}
