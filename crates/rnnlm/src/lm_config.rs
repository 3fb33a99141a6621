//! [`RnnLmConfig`]: the serialisable description of a language model, the `[model]` table of
//! the experiment files.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use burn::nn::DropoutConfig;

use crate::config::{
    Activation, CellKind, ConfigError, GruFormula, InputEncoding, WeightInit, validate_core,
    validate_dropout,
};
use crate::{DeepLstmConfig, GruConfig, RecurrentCore, RnnLm, RnnScratchConfig, lm::OutputLayer};

/// Everything needed to rebuild a [`RnnLm`]: a checkpoint stores this next to the weights.
///
/// Every field but `kind` has a default, so a TOML `[model]` table may name only what it
/// changes; unknown fields are rejected. `vocab_size` defaults to 0, meaning "not known yet":
/// a trainer fills it from the vocabulary before calling [`validate`](Self::validate).
///
/// ```
/// use burn::config::Config;
/// use rnnlm::{CellKind, RnnLmConfig};
/// let json = br#"{ "kind": "lstm", "vocab_size": 28, "num_layers": 2 }"#;
/// let config = RnnLmConfig::load_binary(json).unwrap();
/// assert_eq!((config.kind, config.hidden_size), (CellKind::Lstm, 256));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RnnLmConfig {
    /// The recurrent core: `rnn-scratch`, `gru` or `lstm`.
    pub kind: CellKind,
    /// Number of tokens in the vocabulary (input one-hot width and number of logits).
    #[serde(default)]
    pub vocab_size: usize,
    /// Width of every recurrent layer's state.
    #[serde(default = "defaults::hidden_size")]
    pub hidden_size: usize,
    /// Number of stacked recurrent layers.
    #[serde(default = "defaults::num_layers")]
    pub num_layers: usize,
    /// Dropout probability on the outputs of every layer but the last, while training.
    #[serde(default)]
    pub dropout: f64,
    /// Dropout probability on the last layer's outputs on their way to the output layer, while
    /// training (char-rnn's and Zaremba et al.'s place for it; with `dropout` every
    /// non-recurrent connection is covered, and a one-layer model can be regularised at all).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_dropout: f64,
    /// How tokens enter the core: `one-hot` (d2l) or `embedding`.
    #[serde(default = "defaults::encoding")]
    pub encoding: InputEncoding,
    /// Embedding width, used with `encoding = "embedding"`.
    #[serde(default = "defaults::embedding_dim")]
    pub embedding_dim: usize,
    /// Weight initialisation of the core and the output layer; absent means the kind's
    /// default ([`CellKind::default_init`]).
    #[serde(default)]
    pub init: Option<WeightInit>,
    /// Hidden non-linearity of `rnn-scratch` (`tanh` or `relu`).
    #[serde(default = "defaults::activation")]
    pub activation: Activation,
    /// Where the GRU applies its reset gate (`pytorch` or `d2l`).
    #[serde(default = "defaults::gru_formula")]
    pub gru_formula: GruFormula,
    /// Always `false`: named only so that a config asking for bidirectional layers is told
    /// why a language model cannot have them, rather than that the field is unknown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bidirectional: bool,
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

mod defaults {
    use super::*;
    pub fn hidden_size() -> usize {
        256
    }
    pub fn num_layers() -> usize {
        1
    }
    pub fn encoding() -> InputEncoding {
        InputEncoding::OneHot
    }
    pub fn embedding_dim() -> usize {
        32
    }
    pub fn activation() -> Activation {
        Activation::Tanh
    }
    pub fn gru_formula() -> GruFormula {
        GruFormula::PyTorch
    }
}

impl burn::config::Config for RnnLmConfig {}

impl RnnLmConfig {
    /// A one-layer model of the given kind with every other field at its default.
    pub fn new(kind: CellKind, vocab_size: usize, hidden_size: usize) -> Self {
        Self {
            kind,
            vocab_size,
            hidden_size,
            num_layers: defaults::num_layers(),
            dropout: 0.0,
            output_dropout: 0.0,
            encoding: defaults::encoding(),
            embedding_dim: defaults::embedding_dim(),
            init: None,
            activation: defaults::activation(),
            gru_formula: defaults::gru_formula(),
            bidirectional: false,
        }
    }

    /// Sets the number of stacked layers.
    pub fn with_num_layers(mut self, num_layers: usize) -> Self {
        self.num_layers = num_layers;
        self
    }

    /// Sets the dropout between layers.
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.dropout = dropout;
        self
    }

    /// Sets the dropout on the last layer's outputs, before the output layer.
    pub fn with_output_dropout(mut self, output_dropout: f64) -> Self {
        self.output_dropout = output_dropout;
        self
    }

    /// Sets the input encoding.
    pub fn with_encoding(mut self, encoding: InputEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Switches to a learnable embedding of the given width.
    pub fn with_embedding(mut self, embedding_dim: usize) -> Self {
        self.encoding = InputEncoding::Embedding;
        self.embedding_dim = embedding_dim;
        self
    }

    /// Sets the weight initialisation.
    pub fn with_init(mut self, init: WeightInit) -> Self {
        self.init = Some(init);
        self
    }

    /// Sets the scratch RNN's activation.
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Sets the GRU formula.
    pub fn with_gru_formula(mut self, gru_formula: GruFormula) -> Self {
        self.gru_formula = gru_formula;
        self
    }

    /// The initialisation in force: the configured one or the kind's default.
    pub fn weight_init(&self) -> WeightInit {
        self.init.unwrap_or(self.kind.default_init())
    }

    /// Width of what the core receives per step: `vocab_size` for one-hot, else `embedding_dim`.
    pub fn core_input_size(&self) -> usize {
        match self.encoding {
            InputEncoding::OneHot => self.vocab_size,
            InputEncoding::Embedding => self.embedding_dim,
        }
    }

    /// Checks every field; the error names the first bad one (`model.<field>`), its value and
    /// what is accepted. Options that do not apply to the chosen kind are rejected rather than
    /// silently ignored.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vocab_size == 0 {
            return Err(ConfigError::new(
                "model.vocab_size",
                0,
                "must be at least 1 (a trainer sets it from the vocabulary)",
            ));
        }
        if self.encoding == InputEncoding::Embedding && self.embedding_dim == 0 {
            return Err(ConfigError::new(
                "model.embedding_dim",
                0,
                "must be at least 1",
            ));
        }
        validate_core(
            "model.",
            self.core_input_size(),
            self.hidden_size,
            self.num_layers,
            self.dropout,
        )?;
        validate_dropout("model.output_dropout", self.output_dropout)?;
        self.weight_init().validate("model.init")?;
        if self.activation != Activation::Tanh && self.kind != CellKind::RnnScratch {
            return Err(ConfigError::new(
                "model.activation",
                self.activation,
                format!(
                    "only kind rnn-scratch has a selectable activation, not {}",
                    self.kind
                ),
            ));
        }
        if self.bidirectional {
            return Err(ConfigError::new(
                "model.bidirectional",
                true,
                "must be false: a language model predicts every token from the ones before it, \
                 and a reverse direction would read the very tokens it is asked to predict \
                 (bidirectional cores are for models that see the whole sequence, such as \
                 classifiers: DeepLstmConfig::with_bidirectional)",
            ));
        }
        if self.gru_formula != GruFormula::PyTorch && self.kind != CellKind::Gru {
            return Err(ConfigError::new(
                "model.gru_formula",
                self.gru_formula,
                format!("applies to kind gru only, not {}", self.kind),
            ));
        }
        Ok(())
    }

    /// Builds the model on `device`, or says which field is invalid.
    pub fn try_init(&self, device: &Device) -> Result<RnnLm, ConfigError> {
        self.validate()?;
        let init = self.weight_init();
        let input_size = self.core_input_size();
        let core = match self.kind {
            CellKind::RnnScratch => RecurrentCore::RnnScratch(
                RnnScratchConfig::new(input_size, self.hidden_size)
                    .with_num_layers(self.num_layers)
                    .with_init(init)
                    .with_activation(self.activation)
                    .with_dropout(self.dropout)
                    .init(device),
            ),
            CellKind::Gru => RecurrentCore::Gru(
                GruConfig::new(input_size, self.hidden_size)
                    .with_num_layers(self.num_layers)
                    .with_formula(self.gru_formula)
                    .with_init(init)
                    .with_dropout(self.dropout)
                    .init(device),
            ),
            CellKind::Lstm => RecurrentCore::Lstm(
                DeepLstmConfig::new(input_size, self.hidden_size)
                    .with_num_layers(self.num_layers)
                    .with_init(init)
                    .with_dropout(self.dropout)
                    .init(device),
            ),
        };
        let embedding = (self.encoding == InputEncoding::Embedding).then(|| {
            burn::nn::EmbeddingConfig::new(self.vocab_size, self.embedding_dim).init(device)
        });
        let output = OutputLayer::new(self.hidden_size, self.vocab_size, init, device);
        Ok(RnnLm {
            embedding,
            core,
            output,
            output_dropout: DropoutConfig::new(self.output_dropout).init(),
            vocab_size: self.vocab_size,
        })
    }

    /// Builds the model on `device`.
    ///
    /// # Panics
    /// If [`validate`](Self::validate) fails; the message names the field.
    pub fn init(&self, device: &Device) -> RnnLm {
        self.try_init(device).unwrap_or_else(|err| panic!("{err}"))
    }
}
