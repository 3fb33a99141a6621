//! Records saved from a model built on burn-nn's recurrent layers, read into the same model
//! built on rnnlm's cores: the key and layout map between the two, over burn-store.
//!
//! A burn-nn model saves every gate of every layer as two `Linear`s
//! (`lstm.0.input_gate.input_transform.weight` `[in, hidden]`, `...hidden_transform.weight`
//! `[hidden, hidden]`, a bias on each); the core that replaces the stack keeps one packed
//! tensor per layer, direction and role (`lstm.layers.0.input_weight` `[in, gates·hidden]`).
//! [`load_record`] rewrites the first into the second for every stack it is told about,
//! passes every other tensor through under its own name (a `Linear` head, an `Embedding`),
//! and applies the result to the rnnlm model: a model that only swapped its layers reads the
//! burn-nn model's file without rebuilding the burn-nn model first.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::store::bridge;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{BurnpackStore, ModuleSnapshot, ModuleStore};
use burn::tensor::TensorData;

/// A tensor read from a record: its values, row-major, and its shape.
type Values = (Vec<f32>, Vec<usize>);

/// Where one stack of burn-nn layers sat in the saved model and where its core sits in the
/// model that reads the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackKeys {
    /// The burn-nn layers' paths in the saved model, input side first: `lstm.0`, `lstm.1` for
    /// a field `lstm: Vec<nn::Lstm>`, or the field names of layers kept one per field. Each is
    /// an `Lstm`, `Gru` or `Rnn` (or the `Bi` form, whose `forward` and `reverse` are read).
    pub layers: Vec<String>,
    /// The core's path in the rnnlm model (`lstm` for a field `lstm: DeepLstm`).
    pub core: String,
}

impl StackKeys {
    /// The layers at `layers` (input side first) become the core at `core`.
    pub fn new(
        layers: impl IntoIterator<Item = impl Into<String>>,
        core: impl Into<String>,
    ) -> Self {
        Self {
            layers: layers.into_iter().map(Into::into).collect(),
            core: core.into(),
        }
    }

    /// The common case, a field `name: Vec<nn::Lstm>` (or `Gru`, `Rnn`, ...) of `layers`
    /// entries replaced by a field `name` holding the core: `name.0`, `name.1`, ... -> `name`.
    pub fn vec_field(name: &str, layers: usize) -> Self {
        Self::new((0..layers).map(|k| format!("{name}.{k}")), name)
    }
}

/// A record that cannot be read into the rnnlm model: which file or tensor, what is wrong, and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file could not be read as a burnpack record.
    #[error("cannot read the record {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// What the reader said.
        message: String,
    },
    /// A burn-nn layer named in the keys has none of the tensors a recurrent layer saves.
    #[error(
        "the record has no recurrent layer at `{layer}` (no `{layer}.input_gate`, `{layer}.reset_gate`, \
         `{layer}.gate` or `{layer}.forward` tensors); the record's tensors start with: {found}. \
         Give StackKeys the layers' paths as the burn-nn model named its fields"
    )]
    NoLayer {
        /// The path given.
        layer: String,
        /// A few of the record's tensor names.
        found: String,
    },
    /// A tensor a layer needs is absent (a gate without its bias, say).
    #[error("the record lacks `{name}`, which the burn-nn layer at `{layer}` needs")]
    MissingTensor {
        /// The layer.
        layer: String,
        /// The tensor.
        name: String,
    },
    /// Tensors that do not line up (gates of different sizes).
    #[error("`{name}` has shape {shape:?}, expected {expected}")]
    Shape {
        /// The tensor.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// What fits.
        expected: String,
    },
    /// The remapped record does not fit the rnnlm model: tensors it lacks, tensors nothing in
    /// the model takes, and tensors of the wrong shape, by name.
    #[error(
        "the record does not fit the model: missing {missing:?}, unused {unused:?}, errors {errors:?}; \
         check the StackKeys (each stack's layer paths and its core's path) and that the cores \
         were built with the burn-nn layers' options (DeepLstmConfig::from_burn_nn, ...)"
    )]
    Apply {
        /// Model tensors the record does not provide.
        missing: Vec<String>,
        /// Record tensors nothing in the model takes.
        unused: Vec<String>,
        /// Tensors that could not be applied (shape or type), with the reason.
        errors: Vec<String>,
    },
}

/// Reads a burnpack file saved from a burn-nn model into `model`, the same model with the
/// stacks of burn-nn layers named in `stacks` replaced by rnnlm cores (built with the same
/// sizes and options: [`DeepLstmConfig::from_burn_nn`](crate::DeepLstmConfig::from_burn_nn)
/// and its siblings). Every other tensor is read under its own name.
///
/// ```no_run
/// # use burn::prelude::*;
/// # use burn::nn::Linear;
/// # use rnnlm::DeepLstm;
/// # #[derive(Module, Debug)] struct Model { lstm: DeepLstm, head: Linear }
/// # fn build() -> Model { unimplemented!() }
/// use rnnlm::burn_nn::{StackKeys, load_record};
///
/// // Saved from `struct Model { lstm: Vec<nn::Lstm>, head: Linear }` with two layers.
/// let model: Model = build(); // the same model with `lstm: DeepLstm`
/// let model = load_record(model, "burn-nn-model.bpk", &[StackKeys::vec_field("lstm", 2)])?;
/// # Ok::<(), rnnlm::burn_nn::RecordError>(())
/// ```
///
/// # Errors
/// [`RecordError`] naming the file, the layer or the tensors that do not fit; the model is
/// then dropped unchanged (pass a clone to keep it).
pub fn load_record<M: Module>(
    model: M,
    path: impl AsRef<Path>,
    stacks: &[StackKeys],
) -> Result<M, RecordError> {
    let path = path.as_ref();
    let read = |message: String| RecordError::Read {
        path: path.display().to_string(),
        message,
    };
    if !path.is_file() {
        return Err(read("no such file".to_owned()));
    }
    let mut store = BurnpackStore::from_file(path);
    let tensors = store
        .get_all_tensors()
        .map_err(|e| read(e.to_string()))?
        .clone();
    apply_record(model, tensors, stacks)
}

/// [`load_record`] on tensors already read (from any burn-store store, by name).
///
/// # Errors
/// As [`load_record`].
pub fn apply_record<M: Module>(
    mut model: M,
    tensors: BTreeMap<String, PackTensor>,
    stacks: &[StackKeys],
) -> Result<M, RecordError> {
    let target: BTreeMap<String, Vec<usize>> = model
        .collect(None, None, false)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();
    let mut source = Source { tensors };
    let mut mapped = Vec::new();
    for stack in stacks {
        mapped.extend(map_stack(&mut source, stack, &target)?);
    }
    // What no stack took passes through under its own name, read into memory now: a store's
    // tensors may read their file lazily, and the model must not depend on the file staying.
    for (name, tensor) in source.tensors {
        let param_id = tensor.param_id;
        let data = bridge::into_data(tensor).map_err(|e| RecordError::Read {
            path: name.clone(),
            message: e.to_string(),
        })?;
        let owned = TensorData::from_bytes_vec(
            data.as_bytes().to_vec(),
            data.shape().clone(),
            data.dtype(),
        );
        mapped.push(bridge::from_data(owned, name, param_id));
    }
    let result = model.apply(mapped, None, None, false);
    if result.missing.is_empty() && result.unused.is_empty() && result.errors.is_empty() {
        return Ok(model);
    }
    Err(RecordError::Apply {
        missing: result.missing.into_iter().map(|(name, _)| name).collect(),
        unused: result.unused,
        errors: result.errors.iter().map(|e| format!("{e:?}")).collect(),
    })
}

/// The record's tensors not yet taken by a stack.
struct Source {
    tensors: BTreeMap<String, PackTensor>,
}

impl Source {
    fn has_prefix(&self, prefix: &str) -> bool {
        let dotted = format!("{prefix}.");
        self.tensors
            .range(dotted.clone()..)
            .next()
            .is_some_and(|(name, _)| name.starts_with(&dotted))
    }

    /// Takes `name` as a float matrix or vector (row-major values and shape).
    fn take(&mut self, layer: &str, name: &str) -> Result<Values, RecordError> {
        let tensor = self
            .tensors
            .remove(name)
            .ok_or_else(|| RecordError::MissingTensor {
                layer: layer.to_owned(),
                name: name.to_owned(),
            })?;
        let data = bridge::into_data(tensor).map_err(|e| RecordError::Read {
            path: name.to_owned(),
            message: e.to_string(),
        })?;
        let shape = data.shape().to_vec();
        let values =
            data.convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| RecordError::Read {
                    path: name.to_owned(),
                    message: format!("{e:?}"),
                })?;
        Ok((values, shape))
    }

    fn take_optional(&mut self, layer: &str, name: &str) -> Result<Option<Values>, RecordError> {
        if self.tensors.contains_key(name) {
            self.take(layer, name).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// One gate's `Linear`s: `[in, h]`, `[h, h]` and the two biases, if saved.
struct Gate {
    input: Values,
    hidden: Values,
    biases: Option<(Vec<f32>, Vec<f32>)>,
}

fn gate(source: &mut Source, layer: &str, name: &str) -> Result<Gate, RecordError> {
    let at = |linear: &str, what: &str| format!("{layer}.{name}.{linear}.{what}");
    let input = source.take(layer, &at("input_transform", "weight"))?;
    let hidden = source.take(layer, &at("hidden_transform", "weight"))?;
    let input_bias = source.take_optional(layer, &at("input_transform", "bias"))?;
    let hidden_bias = source.take_optional(layer, &at("hidden_transform", "bias"))?;
    let biases = match (input_bias, hidden_bias) {
        (Some(i), Some(h)) => Some((i.0, h.0)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(RecordError::MissingTensor {
                layer: layer.to_owned(),
                name: at("hidden_transform", "bias"),
            });
        }
        (None, Some(_)) => {
            return Err(RecordError::MissingTensor {
                layer: layer.to_owned(),
                name: at("input_transform", "bias"),
            });
        }
    };
    Ok(Gate {
        input,
        hidden,
        biases,
    })
}

/// `[rows, a] | [rows, b] | ..` side by side, row-major.
fn side_by_side(parts: &[&Values], name: &str) -> Result<Values, RecordError> {
    let rows = parts[0].1[0];
    for (values, shape) in parts {
        if shape.len() != 2 || shape[0] != rows || values.len() != shape[0] * shape[1] {
            return Err(RecordError::Shape {
                name: name.to_owned(),
                shape: shape.clone(),
                expected: format!("[{rows}, _], as every gate of the layer"),
            });
        }
    }
    let width: usize = parts.iter().map(|(_, shape)| shape[1]).sum();
    let mut out = Vec::with_capacity(rows * width);
    for row in 0..rows {
        for (values, shape) in parts {
            out.extend_from_slice(&values[row * shape[1]..(row + 1) * shape[1]]);
        }
    }
    Ok((out, vec![rows, width]))
}

fn tensor(name: String, (values, shape): Values) -> PackTensor {
    bridge::from_data(TensorData::new(values, shape), name, None)
}

/// The packed tensors of one core layer from burn-nn gates (in the core's order). Where the
/// core has one bias and burn-nn two (`summed`), the core's is their sum.
fn pack(
    gates: &[Gate],
    prefix: &str,
    names: [&str; 4],
    summed: bool,
) -> Result<Vec<PackTensor>, RecordError> {
    let [w_in, w_h, b_in, b_h] = names;
    let inputs: Vec<_> = gates.iter().map(|g| &g.input).collect();
    let hiddens: Vec<_> = gates.iter().map(|g| &g.hidden).collect();
    let mut out = vec![
        tensor(
            format!("{prefix}.{w_in}"),
            side_by_side(&inputs, &format!("{prefix}.{w_in}"))?,
        ),
        tensor(
            format!("{prefix}.{w_h}"),
            side_by_side(&hiddens, &format!("{prefix}.{w_h}"))?,
        ),
    ];
    let biases: Option<Vec<&(Vec<f32>, Vec<f32>)>> =
        gates.iter().map(|g| g.biases.as_ref()).collect();
    if let Some(biases) = biases {
        let input: Vec<f32> = biases.iter().flat_map(|(i, _)| i.iter().copied()).collect();
        let hidden: Vec<f32> = biases.iter().flat_map(|(_, h)| h.iter().copied()).collect();
        let len = input.len();
        if summed {
            let sum = input.iter().zip(&hidden).map(|(a, b)| a + b).collect();
            out.push(tensor(format!("{prefix}.{b_in}"), (sum, vec![len])));
        } else {
            out.push(tensor(format!("{prefix}.{b_in}"), (input, vec![len])));
            out.push(tensor(format!("{prefix}.{b_h}"), (hidden, vec![len])));
        }
    }
    Ok(out)
}

fn map_stack(
    source: &mut Source,
    stack: &StackKeys,
    target: &BTreeMap<String, Vec<usize>>,
) -> Result<Vec<PackTensor>, RecordError> {
    let mut out = Vec::new();
    let mut entry = 0;
    for layer in &stack.layers {
        let bidirectional = source.has_prefix(&format!("{layer}.forward"));
        let directions: Vec<String> = if bidirectional {
            vec![format!("{layer}.forward"), format!("{layer}.reverse")]
        } else {
            vec![layer.clone()]
        };
        for direction in directions {
            let prefix = format!("{}.layers.{entry}", stack.core);
            entry += 1;
            if source.has_prefix(&format!("{direction}.input_gate")) {
                let mut gates = vec![gate(source, &direction, "input_gate")?];
                if source.has_prefix(&format!("{direction}.forget_gate")) {
                    gates.push(gate(source, &direction, "forget_gate")?);
                }
                gates.push(gate(source, &direction, "cell_gate")?);
                gates.push(gate(source, &direction, "output_gate")?);
                out.extend(pack(
                    &gates,
                    &prefix,
                    ["input_weight", "hidden_weight", "input_bias", "hidden_bias"],
                    false,
                )?);
            } else if source.has_prefix(&format!("{direction}.reset_gate")) {
                let gates = [
                    gate(source, &direction, "reset_gate")?,
                    gate(source, &direction, "update_gate")?,
                    gate(source, &direction, "new_gate")?,
                ];
                // d2l's formula (burn-nn's reset_after = false) keeps one bias per gate.
                let summed = !target.contains_key(&format!("{prefix}.hidden_bias"));
                out.extend(pack(
                    &gates,
                    &prefix,
                    ["input_weight", "hidden_weight", "input_bias", "hidden_bias"],
                    summed,
                )?);
            } else if source.has_prefix(&format!("{direction}.gate")) {
                let gates = [gate(source, &direction, "gate")?];
                out.extend(pack(&gates, &prefix, ["w_xh", "w_hh", "b_h", "b_h"], true)?);
            } else {
                let found: Vec<&str> = source.tensors.keys().take(8).map(String::as_str).collect();
                return Err(RecordError::NoLayer {
                    layer: direction,
                    found: found.join(", "),
                });
            }
        }
    }
    Ok(out)
}
