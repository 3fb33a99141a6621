//! Named tensors read from a PyTorch checkpoint or a safetensors file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use burn::tensor::{DType, TensorData};

use crate::ImportError;

/// A flat map from dotted names (`rnn.weight_ih_l0`) to tensors, as `torch.save(model.state_dict())`
/// or `safetensors.torch.save_file` writes them. Nested dictionaries and lists are flattened
/// with dots (`{"params": [w, b]}` gives `params.0`, `params.1`), the way PyTorch names
/// `nn.ModuleList` entries.
///
/// Values keep the file's element type; the importer converts floating-point ones to `f32`.
#[derive(Clone, Debug)]
pub struct StateDict {
    origin: String,
    tensors: BTreeMap<String, TensorData>,
}

impl StateDict {
    /// Reads a PyTorch checkpoint (`torch.save`, zip or legacy format; `.pt`, `.pth`, `.bin`)
    /// or a safetensors file, telling them apart by their first bytes rather than by name.
    pub fn read(path: &Path) -> Result<Self, ImportError> {
        let mut head = [0u8; 9];
        let io = |source| ImportError::Io {
            path: path.display().to_string(),
            source,
        };
        let len = {
            use std::io::Read;
            let mut file = std::fs::File::open(path).map_err(io)?;
            file.read(&mut head).map_err(io)?
        };
        // safetensors: an 8-byte little-endian header length, then the JSON header.
        if len == head.len() && head[8] == b'{' {
            Self::read_safetensors(path)
        } else {
            Self::read_pytorch(path)
        }
    }

    /// Reads a PyTorch checkpoint with burn-store's reader (no Python needed).
    pub fn read_pytorch(path: &Path) -> Result<Self, ImportError> {
        let origin = path.display().to_string();
        let reader = burn::store::pytorch_reader::PytorchReader::new(path).map_err(|e| {
            ImportError::Format {
                path: origin.clone(),
                format: "PyTorch checkpoint",
                message: e.to_string(),
            }
        })?;
        let mut tensors = BTreeMap::new();
        for (name, tensor) in reader.into_tensors() {
            use burn::store::pytorch_reader::DType as Pt;
            let dtype = match tensor.dtype() {
                Pt::F64 => DType::F64,
                Pt::F32 => DType::F32,
                Pt::F16 => DType::F16,
                Pt::BF16 => DType::BF16,
                Pt::I64 => DType::I64,
                Pt::I32 => DType::I32,
                Pt::I16 => DType::I16,
                Pt::I8 => DType::I8,
                Pt::U64 => DType::U64,
                Pt::U32 => DType::U32,
                Pt::U16 => DType::U16,
                Pt::U8 => DType::U8,
                Pt::Bool => DType::Bool(burn::tensor::BoolStore::Native),
            };
            let shape = tensor.shape().to_vec();
            let bytes = tensor.read().map_err(|source| ImportError::Io {
                path: origin.clone(),
                source,
            })?;
            tensors.insert(name, TensorData::from_bytes_vec(bytes, shape, dtype));
        }
        Ok(Self { origin, tensors })
    }

    /// Reads a safetensors file.
    pub fn read_safetensors(path: &Path) -> Result<Self, ImportError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
            path: origin.clone(),
            source,
        })?;
        let format_error = |message: String| ImportError::Format {
            path: origin.clone(),
            format: "safetensors file",
            message,
        };
        let file = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| format_error(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.iter() {
            use safetensors::Dtype as St;
            let dtype = match view.dtype() {
                St::F64 => DType::F64,
                St::F32 => DType::F32,
                St::F16 => DType::F16,
                St::BF16 => DType::BF16,
                St::I64 => DType::I64,
                St::I32 => DType::I32,
                St::I16 => DType::I16,
                St::I8 => DType::I8,
                St::U64 => DType::U64,
                St::U32 => DType::U32,
                St::U16 => DType::U16,
                St::U8 => DType::U8,
                St::BOOL => DType::Bool(burn::tensor::BoolStore::Native),
                other => {
                    return Err(format_error(format!(
                        "{name} has element type {other:?}, which rnnlm cannot read"
                    )));
                }
            };
            // safetensors stores little-endian bytes; TensorData wants native ones.
            #[cfg(target_endian = "big")]
            compile_error!("rnnlm-import reads safetensors on little-endian targets only");
            tensors.insert(
                name.to_owned(),
                TensorData::from_bytes_vec(view.data().to_vec(), view.shape().to_vec(), dtype),
            );
        }
        Ok(Self { origin, tensors })
    }

    /// A state dict built in memory; `origin` names it in error messages.
    pub fn from_tensors(
        origin: impl Into<String>,
        tensors: impl IntoIterator<Item = (String, TensorData)>,
    ) -> Self {
        Self {
            origin: origin.into(),
            tensors: tensors.into_iter().collect(),
        }
    }

    /// Where the tensors came from (the file's path), for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The tensor names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor called `key`.
    pub fn get(&self, key: &str) -> Option<&TensorData> {
        self.tensors.get(key)
    }

    /// The shape of the tensor called `key`.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.tensors.get(key).map(|data| data.shape().as_slice())
    }

    /// Adds or replaces a tensor.
    pub fn insert(&mut self, key: impl Into<String>, data: TensorData) -> Option<TensorData> {
        self.tensors.insert(key.into(), data)
    }

    /// Takes a tensor out.
    pub fn remove(&mut self, key: &str) -> Option<TensorData> {
        self.tensors.remove(key)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Only the tensors whose names start with `prefix`, with the prefix removed: picks the model
    /// out of a training checkpoint that also holds an optimizer (`prefix = "model."`).
    pub fn under(&self, prefix: &str) -> Self {
        Self {
            origin: format!("{} (keys under {prefix:?})", self.origin),
            tensors: self
                .tensors
                .iter()
                .filter_map(|(key, data)| {
                    key.strip_prefix(prefix)
                        .map(|rest| (rest.to_owned(), data.clone()))
                })
                .collect(),
        }
    }

    /// The values of `key` as `f32`, row-major, with its shape.
    pub(crate) fn floats(&self, key: &str) -> Result<(Vec<f32>, Vec<usize>), ImportError> {
        let data = self
            .tensors
            .get(key)
            .unwrap_or_else(|| panic!("the importer checked that {key} exists"));
        match data.dtype() {
            DType::F64 | DType::F32 | DType::F16 | DType::BF16 => {}
            other => {
                return Err(ImportError::Dtype {
                    origin: self.origin.clone(),
                    key: key.to_owned(),
                    dtype: format!("{other:?}"),
                });
            }
        }
        let shape = data.shape().to_vec();
        let values = data
            .clone()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("converted to f32 just above");
        Ok((values, shape))
    }

    /// One line per tensor, `name [d0, d1]`, for error messages.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        for (key, data) in &self.tensors {
            let _ = writeln!(out, "  {key} {:?}", data.shape().as_slice());
        }
        if out.is_empty() {
            out.push_str("  (no tensors)\n");
        }
        out
    }
}
