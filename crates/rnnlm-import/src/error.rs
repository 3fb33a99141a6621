//! What can go wrong when importing weights.

use std::fmt;

use rnnlm::{CellKind, ConfigError};

/// Why a file could not be imported. Every variant names the file; the ones about keys list
/// every offending key with the shape that was expected, so one run shows all that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not in the format it claims.
    #[error("{path} is not a readable {format}: {message}")]
    Format {
        /// The file.
        path: String,
        /// What it was read as.
        format: &'static str,
        /// The reader's complaint.
        message: String,
    },
    /// A tensor the model needs holds integers or booleans.
    #[error(
        "{origin}: {key} holds {dtype} values; weights must be floating point (f16, bf16, f32, f64)"
    )]
    Dtype {
        /// The file.
        origin: String,
        /// The tensor.
        key: String,
        /// Its element type.
        dtype: String,
    },
    /// Nothing in the file looks like a recurrent layer.
    #[error(
        "{origin}: found no recurrent weights. Expected PyTorch's nn.RNN/nn.GRU/nn.LSTM keys \
         (<prefix>weight_ih_l0, <prefix>weight_hh_l0, ...) or d2l's scratch RNN (W_xh, W_hh, b_h, \
         W_hq, b_q, or the list params.0..params.4). The file holds:\n{listing}"
    )]
    NoRecurrentWeights {
        /// The file.
        origin: String,
        /// Its tensors with their shapes.
        listing: String,
    },
    /// The file holds more than one recurrent core.
    #[error(
        "{origin}: several recurrent cores ({prefixes}); pass the prefix of the one to import \
         (`--prefix` on the command line, `ImportOptions::prefix` in code)"
    )]
    Ambiguous {
        /// The file.
        origin: String,
        /// The prefixes found.
        prefixes: String,
    },
    /// The file holds another kind of core than the caller asked for.
    #[error("{origin} holds a {found}, not the {expected} core that was asked for")]
    Kind {
        /// The file.
        origin: String,
        /// The kind asked for.
        expected: CellKind,
        /// What the file holds.
        found: String,
    },
    /// The file uses a PyTorch option that rnnlm's cores do not have.
    #[error("{origin}: {what} is not supported ({keys}). {hint}")]
    Unsupported {
        /// The file.
        origin: String,
        /// The option.
        what: String,
        /// The keys that show it.
        keys: String,
        /// What to do instead.
        hint: String,
    },
    /// The tensors do not fit the model the file otherwise describes.
    #[error("{origin} does not hold a complete {model}:\n{}", KeyProblem::list(.problems))]
    Mismatch {
        /// The file.
        origin: String,
        /// What the importer recognised (e.g. `2-layer nn.LSTM(28, 256) + nn.Linear(256, 28)`).
        model: String,
        /// Every missing, unexpected or misshapen key.
        problems: Vec<KeyProblem>,
    },
    /// The recognised sizes do not make a valid model.
    #[error("the imported weights describe an invalid model: {0}")]
    Config(#[from] ConfigError),
}

/// One key that does not fit the recognised model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyProblem {
    /// The model needs this tensor and the file lacks it.
    Missing {
        /// The key.
        key: String,
        /// The shape it should have, e.g. `[1024, 256]`.
        expected: String,
    },
    /// The file holds a tensor the model has no place for.
    Unexpected {
        /// The key.
        key: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// The tensor exists with the wrong shape.
    Shape {
        /// The key.
        key: String,
        /// Its shape in the file.
        found: Vec<usize>,
        /// The shape the model needs, e.g. `[1024, 256]`.
        expected: String,
    },
}

impl KeyProblem {
    fn list(problems: &[KeyProblem]) -> String {
        problems
            .iter()
            .map(|problem| format!("  {problem}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProblem::Missing { key, expected } => {
                write!(f, "missing    {key}, expected shape {expected}")
            }
            KeyProblem::Unexpected { key, shape } => {
                write!(f, "unexpected {key} {shape:?}")
            }
            KeyProblem::Shape {
                key,
                found,
                expected,
            } => write!(f, "wrong shape {key}: {found:?}, expected {expected}"),
        }
    }
}
