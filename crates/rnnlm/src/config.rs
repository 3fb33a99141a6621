//! The choices and checks that the cores and the language model share: which core, its
//! activation, GRU formula and weight initialisation, and the error a configuration value
//! that cannot build a module gives. Below both the cores and the language model, importing
//! neither.

use core::fmt;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Which recurrent core a [`RnnLm`](crate::RnnLm) is built around.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellKind {
    /// [`RnnScratch`](crate::RnnScratch): d2l's vanilla RNN written from scratch.
    RnnScratch,
    /// [`Gru`](crate::Gru): gated recurrent unit.
    Gru,
    /// [`DeepLstm`](crate::DeepLstm): long short-term memory, any number of layers.
    Lstm,
}

impl CellKind {
    /// The name used in configuration files (`rnn-scratch`, `gru`, `lstm`).
    pub fn name(self) -> &'static str {
        match self {
            CellKind::RnnScratch => "rnn-scratch",
            CellKind::Gru => "gru",
            CellKind::Lstm => "lstm",
        }
    }

    /// The weight initialisation this kind uses when the config does not name one:
    /// d2l's N(0, 0.01²) for the scratch RNN, PyTorch's uniform rule for GRU and LSTM
    /// (d2l trains those through `nn.GRU` / `nn.LSTM`).
    pub fn default_init(self) -> WeightInit {
        match self {
            CellKind::RnnScratch => WeightInit::Normal { sigma: 0.01 },
            CellKind::Gru | CellKind::Lstm => WeightInit::PyTorch,
        }
    }
}

impl fmt::Display for CellKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How token ids enter the recurrent core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputEncoding {
    /// d2l's one-hot vectors of width `vocab_size`. Never materialised: multiplying a one-hot
    /// row by the first layer's input weight selects one of its rows, so the model gathers rows.
    OneHot,
    /// A learnable embedding table `[vocab_size, embedding_dim]`, initialised N(0, 1) as in
    /// PyTorch's `nn.Embedding`.
    Embedding,
}

/// Non-linearity of the vanilla RNN's hidden state (d2l and PyTorch's `nn.RNN` offer both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// `tanh`, d2l's choice.
    Tanh,
    /// `max(0, x)`.
    Relu,
}

impl Activation {
    pub(crate) fn apply(self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Activation::Tanh => x.tanh(),
            Activation::Relu => burn::tensor::activation::relu(x),
        }
    }
}

/// Where the GRU's reset gate acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GruFormula {
    /// PyTorch / cuDNN: `n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))`. The reset gate scales
    /// the hidden product, so one `[hidden, 3·hidden]` matmul per step serves all three gates.
    #[serde(rename = "pytorch")]
    PyTorch,
    /// d2l (and the v3 paper): `n = tanh(x W_xh + (r ⊙ h) W_hh + b_h)`. The reset gate scales
    /// the state before the matmul, which costs a second matmul per step.
    D2l,
}

/// How the weights of the recurrent core are drawn. Biases follow the same rule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "rule")]
pub enum WeightInit {
    /// Weights N(0, sigma²), biases zero (d2l's from-scratch models).
    Normal {
        /// Standard deviation of the weights.
        sigma: f64,
    },
    /// Weights and biases U(-k, k) with k = 1/sqrt(hidden_size) (PyTorch's `nn.RNN`,
    /// `nn.GRU`, `nn.LSTM` and `nn.Linear` defaults).
    #[serde(rename = "pytorch")]
    PyTorch,
}

impl WeightInit {
    /// A weight tensor of the given shape for a core of width `hidden_size`.
    pub(crate) fn weight(
        self,
        shape: [usize; 2],
        hidden_size: usize,
        device: &Device,
    ) -> Tensor<2> {
        match self {
            WeightInit::Normal { sigma } => Tensor::random(
                shape,
                burn::tensor::Distribution::Normal(0.0, sigma),
                device,
            ),
            WeightInit::PyTorch => Self::uniform(shape, hidden_size, device),
        }
    }

    /// A bias vector of the given length for a core of width `hidden_size`.
    pub(crate) fn bias(self, len: usize, hidden_size: usize, device: &Device) -> Tensor<1> {
        match self {
            WeightInit::Normal { .. } => Tensor::zeros([len], device),
            WeightInit::PyTorch => Self::uniform([len], hidden_size, device),
        }
    }

    fn uniform<const D: usize>(shape: [usize; D], fan: usize, device: &Device) -> Tensor<D> {
        let k = 1.0 / (fan as f64).sqrt();
        Tensor::random(shape, burn::tensor::Distribution::Uniform(-k, k), device)
    }

    pub(crate) fn validate(self, field: &str) -> Result<(), ConfigError> {
        match self {
            WeightInit::Normal { sigma } if !(sigma.is_finite() && sigma > 0.0) => {
                Err(ConfigError::new(
                    format!("{field}.sigma"),
                    sigma,
                    "must be a finite number > 0",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// A configuration value that cannot build a model. The message names the field, the value
/// and what would be accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} = {value}: {expected}")]
pub struct ConfigError {
    /// Dotted path of the offending field, e.g. `model.hidden_size`.
    pub field: String,
    /// The rejected value as written.
    pub value: String,
    /// What the field accepts.
    pub expected: String,
}

impl ConfigError {
    pub(crate) fn new(
        field: impl Into<String>,
        value: impl fmt::Debug,
        expected: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            value: format!("{value:?}"),
            expected: expected.into(),
        }
    }
}

/// Checks the sizes every recurrent core shares; `prefix` is prepended to the field names.
pub(crate) fn validate_core(
    prefix: &str,
    input_size: usize,
    hidden_size: usize,
    num_layers: usize,
    dropout: f64,
) -> Result<(), ConfigError> {
    if input_size == 0 {
        return Err(ConfigError::new(
            format!("{prefix}input_size"),
            0,
            "must be at least 1",
        ));
    }
    if hidden_size == 0 {
        return Err(ConfigError::new(
            format!("{prefix}hidden_size"),
            0,
            "must be at least 1",
        ));
    }
    if num_layers == 0 {
        return Err(ConfigError::new(
            format!("{prefix}num_layers"),
            0,
            "must be at least 1",
        ));
    }
    validate_dropout(&format!("{prefix}dropout"), dropout)
}

/// Checks the options every core shares with burn-nn's layers: `reverse` on a one-direction
/// core only, and a `clip` that is a finite number > 0.
pub(crate) fn validate_options(
    reverse: bool,
    bidirectional: bool,
    clip: Option<f64>,
) -> Result<(), ConfigError> {
    if reverse && bidirectional {
        return Err(ConfigError::new(
            "reverse",
            true,
            "false when bidirectional = true: a bidirectional core already runs every layer in \
             both directions (reverse = true runs a one-direction core last step first)",
        ));
    }
    match clip {
        Some(clip) if !(clip.is_finite() && clip > 0.0) => Err(ConfigError::new(
            "clip",
            clip,
            "None, or a finite number > 0 (the state is clamped to [-clip, clip] after every step)",
        )),
        _ => Ok(()),
    }
}

/// A layer's `clip` as the kernels take it (none for a bound they cannot hold, which
/// [`clip_beyond_kernels`] sends to the tensor operations).
pub(crate) fn kernel_clip(clip: Option<f64>) -> rnnlm_fused::Clip {
    clip.and_then(|bound| rnnlm_fused::Clip::new(bound as f32))
        .unwrap_or(rnnlm_fused::Clip::NONE)
}

/// Whether a layer's `clip` is a bound the kernels cannot hold (not a finite number > 0: set on
/// the field, past the config's check): the tensor operations then apply it as given.
pub(crate) fn clip_beyond_kernels(clip: Option<f64>) -> bool {
    clip.is_some_and(|bound| rnnlm_fused::Clip::new(bound as f32).is_none())
}

pub(crate) fn validate_dropout(field: &str, dropout: f64) -> Result<(), ConfigError> {
    if !(0.0..1.0).contains(&dropout) {
        return Err(ConfigError::new(field, dropout, "must lie in [0, 1)"));
    }
    Ok(())
}

/// The input width of every layer of a core, one entry per layer and direction in PyTorch's
/// order (layer by layer, the forward direction before the reverse one): the first layer reads
/// the input, each later one the outputs of both directions of the layer below, side by side.
pub(crate) fn layer_inputs(
    input_size: usize,
    hidden_size: usize,
    num_layers: usize,
    bidirectional: bool,
) -> Vec<usize> {
    let directions = 1 + usize::from(bidirectional);
    (0..num_layers * directions)
        .map(|index| {
            if index < directions {
                input_size
            } else {
                directions * hidden_size
            }
        })
        .collect()
}
