//! Recognising PyTorch and d2l parameter layouts and loading them into rnnlm modules.
//!
//! PyTorch packs each layer's gates into one matrix, `weight_ih_l{k}` `[gates·hidden, input]`
//! in the order (i, f, g, o) for nn.LSTM and (r, z, n) for nn.GRU. rnnlm packs them in the same
//! order but multiplies from the left (`x W`), so every matrix is transposed once here and no
//! gate is moved. d2l's scratch RNN already uses `x W` and loads as it is.

use std::collections::BTreeSet;

use burn::module::Param;
use burn::prelude::*;
use rnnlm::{
    Activation, CellKind, DeepLstm, DeepLstmConfig, Gru, GruConfig, RecurrentCore, RnnLm,
    RnnLmConfig, RnnScratch, RnnScratchConfig,
};

use crate::{ImportError, KeyProblem, StateDict};

/// What the state dict does not record and the importer cannot guess.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportOptions {
    /// Read only the keys under this prefix (e.g. `"model."` in a training checkpoint that also
    /// holds an optimizer); other keys are ignored. `None` reads every key, and then every key
    /// must belong to the model.
    pub prefix: Option<String>,
    /// The non-linearity of an `nn.RNN` (its `nonlinearity` argument) or of d2l's scratch RNN:
    /// `tanh` unless the model was built with `relu`.
    pub nonlinearity: Activation,
    /// The kind of core the caller expects; `None` accepts whichever the file holds. An
    /// `nn.RNN` and d2l's scratch RNN are both [`CellKind::RnnScratch`].
    pub kind: Option<CellKind>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            prefix: None,
            nonlinearity: Activation::Tanh,
            kind: None,
        }
    }
}

/// A language model read from a state dict.
#[derive(Debug)]
pub struct ImportedLm {
    /// The configuration that rebuilds the model (what a checkpoint stores next to it).
    pub config: RnnLmConfig,
    /// The model with the imported weights.
    pub model: RnnLm,
    /// What was recognised, e.g. `2-layer nn.LSTM(28, 256) + nn.Linear(256, 28)`.
    pub description: String,
}

/// A recurrent core read from a state dict.
#[derive(Debug)]
pub struct ImportedCore {
    /// The core with the imported weights.
    pub core: RecurrentCore,
    /// What was recognised, e.g. `2-layer nn.GRU(64, 128)`.
    pub description: String,
}

/// Reads a character language model: an `nn.RNN`, `nn.GRU` or `nn.LSTM` (any `num_layers`,
/// with or without biases) followed by an `nn.Linear` to the vocabulary, with one-hot input
/// (d2l's `RNNModel`) or an `nn.Embedding` in front; or d2l's scratch RNN
/// (`W_xh, W_hh, b_h, W_hq, b_q`, by name or as the list `params.0..params.4`).
///
/// Module names are free (`rnn.`, `lstm.`, `encoder.` ...): the layout is recognised from the
/// key suffixes and the shapes. Every key (under [`ImportOptions::prefix`]) must belong to the
/// model: a missing, unexpected or misshapen key is an error that lists all of them with the
/// shapes the model needs.
///
/// Shapes: PyTorch's `weight_ih_l{k}` `[gates·hidden, input]` becomes the layer's
/// `input_weight` `[input, gates·hidden]`; `nn.Linear.weight` `[vocab, hidden]` becomes
/// `output.w_hq` `[hidden, vocab]`; an `nn.RNN`'s two biases become the one `b_h = b_ih + b_hh`.
pub fn import_lm(
    dict: &StateDict,
    options: &ImportOptions,
    device: &Device,
) -> Result<ImportedLm, ImportError> {
    let dict = select(dict, options);
    let core = find_core(&dict, options)?;
    if core.bidirectional() {
        // Refused by the model's config, which says why (a language model cannot read ahead).
        let config = RnnLmConfig {
            bidirectional: true,
            ..RnnLmConfig::new(core.kind(), 1, core.hidden)
        };
        config.validate()?;
    }
    let head = match find_head(&dict, &core) {
        Ok(head) => head,
        // Without a recognisable head, still list everything else that is wrong.
        Err(ImportError::Mismatch {
            origin,
            model,
            problems: mut head_problems,
        }) => {
            head_problems.extend(key_problems(&dict, &core.expected_keys()));
            return Err(ImportError::Mismatch {
                origin,
                model,
                problems: head_problems,
            });
        }
        Err(other) => return Err(other),
    };

    let mut expected = core.expected_keys();
    expected.extend(head.expected_keys(&core));
    let (before, after) = head.describe(&core);
    let model_name = format!("{before}{}{after}", core.describe());
    check_keys(&dict, &expected, &model_name)?;

    let mut config = RnnLmConfig::new(core.kind(), head.vocab, core.hidden);
    config.num_layers = core.num_layers;
    config.activation = options.nonlinearity;
    if head.embedding.is_some() {
        config = config.with_embedding(core.input);
    }
    let mut model = config.try_init(device)?;
    load_core(&dict, &core, options.nonlinearity, &mut model.core, device)?;
    if let (Some(key), Some(embedding)) = (&head.embedding, model.embedding.as_mut()) {
        embedding.weight = Param::from_tensor(matrix(&dict, key, false, device)?);
    }
    model.output.w_hq = Param::from_tensor(matrix(&dict, &head.weight, head.transposed, device)?);
    model.output.b_q = Param::from_tensor(vector(&dict, &head.bias, device)?);
    Ok(ImportedLm {
        config,
        model,
        description: model_name,
    })
}

/// Reads a recurrent core alone: an `nn.RNN`, `nn.GRU` or `nn.LSTM`, or d2l's scratch RNN
/// layers, for a model of your own around it (an encoder, a classifier). With
/// [`ImportOptions::prefix`] naming the core's module (`"encoder.rnn."`), the rest of the file
/// is ignored; without it, the file must hold the core and nothing else.
///
/// A bidirectional module (`weight_ih_l{k}_reverse`, ...) becomes a bidirectional core, its
/// layers in PyTorch's order (forward, then reverse, per layer); its `forward_padded` gives
/// what the PyTorch module gives on a `pack_padded_sequence` of the same batch.
///
/// The core takes inputs `[batch, steps, input]` and returns `[batch, steps, hidden]`
/// (`[batch, steps, 2·hidden]` when bidirectional), as PyTorch's `batch_first=True` does.
pub fn import_core(
    dict: &StateDict,
    options: &ImportOptions,
    device: &Device,
) -> Result<ImportedCore, ImportError> {
    let dict = select(dict, options);
    let core = find_core(&dict, options)?;
    check_keys(&dict, &core.expected_keys(), &core.describe())?;
    let (input, hidden) = (core.input, core.hidden);
    let mut built = match core.kind() {
        CellKind::RnnScratch => RecurrentCore::RnnScratch(
            RnnScratchConfig::new(input, hidden)
                .with_num_layers(core.num_layers)
                .with_activation(options.nonlinearity)
                .with_bidirectional(core.bidirectional())
                .try_init(device)?,
        ),
        CellKind::Gru => RecurrentCore::Gru(
            GruConfig::new(input, hidden)
                .with_num_layers(core.num_layers)
                .with_bidirectional(core.bidirectional())
                .try_init(device)?,
        ),
        CellKind::Lstm => RecurrentCore::Lstm(
            DeepLstmConfig::new(input, hidden)
                .with_num_layers(core.num_layers)
                .with_bidirectional(core.bidirectional())
                .try_init(device)?,
        ),
    };
    load_core(&dict, &core, options.nonlinearity, &mut built, device)?;
    Ok(ImportedCore {
        core: built,
        description: core.describe(),
    })
}

fn select(dict: &StateDict, options: &ImportOptions) -> StateDict {
    let dict = match &options.prefix {
        Some(prefix) if !prefix.is_empty() => dict.under(prefix),
        _ => dict.clone(),
    };
    name_d2l_param_list(dict)
}

/// d2l's classic `RNNModelScratch` keeps its parameters in a list, `[W_xh, W_hh, b_h, W_hq,
/// b_q]`, so `torch.save({"params": params})` writes `params.0` .. `params.4`. Give them their
/// names when exactly such a list is present.
fn name_d2l_param_list(mut dict: StateDict) -> StateDict {
    const NAMES: [&str; 5] = ["W_xh", "W_hh", "b_h", "W_hq", "b_q"];
    const RANKS: [usize; 5] = [2, 2, 1, 2, 1];
    let lists: Vec<String> = dict
        .keys()
        .filter_map(|key| key.strip_suffix("0").map(str::to_owned))
        .filter(|stem| stem.is_empty() || stem.ends_with('.'))
        .filter(|stem| {
            dict.get(&format!("{stem}5")).is_none()
                && (0..5).all(|i| {
                    dict.shape(&format!("{stem}{i}"))
                        .is_some_and(|shape| shape.len() == RANKS[i])
                })
        })
        .collect();
    if let [stem] = lists.as_slice() {
        for (i, name) in NAMES.iter().enumerate() {
            let data = dict.remove(&format!("{stem}{i}")).expect("checked above");
            dict.insert(format!("{stem}{name}"), data);
        }
    }
    dict
}

/// PyTorch's recurrent modules, by the number of gate blocks in `weight_ih_l{k}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TorchCell {
    Rnn,
    Gru,
    Lstm,
}

impl TorchCell {
    fn gates(self) -> usize {
        match self {
            TorchCell::Rnn => 1,
            TorchCell::Gru => 3,
            TorchCell::Lstm => 4,
        }
    }

    fn name(self) -> &'static str {
        match self {
            TorchCell::Rnn => "nn.RNN",
            TorchCell::Gru => "nn.GRU",
            TorchCell::Lstm => "nn.LSTM",
        }
    }
}

/// The recognised recurrent core.
#[derive(Debug)]
struct CoreLayout {
    convention: Convention,
    input: usize,
    hidden: usize,
    num_layers: usize,
}

#[derive(Debug)]
enum Convention {
    /// `{prefix}weight_ih_l{k}` ..., and `{prefix}weight_ih_l{k}_reverse` ... for the reverse
    /// directions of a bidirectional module.
    Torch {
        cell: TorchCell,
        prefix: String,
        bias: bool,
        bidirectional: bool,
    },
    /// `{layer_prefixes[k]}W_xh`, `W_hh`, `b_h`.
    D2l { layer_prefixes: Vec<String> },
}

impl CoreLayout {
    fn kind(&self) -> CellKind {
        match &self.convention {
            Convention::Torch {
                cell: TorchCell::Gru,
                ..
            } => CellKind::Gru,
            Convention::Torch {
                cell: TorchCell::Lstm,
                ..
            } => CellKind::Lstm,
            _ => CellKind::RnnScratch,
        }
    }

    fn owns(&self, key: &str) -> bool {
        match &self.convention {
            Convention::Torch { prefix, .. } => key.starts_with(prefix.as_str()),
            Convention::D2l { layer_prefixes } => layer_prefixes.iter().any(|prefix| {
                ["W_xh", "W_hh", "b_h"]
                    .iter()
                    .any(|name| key == format!("{prefix}{name}"))
            }),
        }
    }

    fn bidirectional(&self) -> bool {
        matches!(
            self.convention,
            Convention::Torch {
                bidirectional: true,
                ..
            }
        )
    }

    /// The key suffixes of a layer's directions: `""`, and `"_reverse"` when bidirectional.
    fn directions(&self) -> &'static [&'static str] {
        if self.bidirectional() {
            &["", "_reverse"]
        } else {
            &[""]
        }
    }

    /// The first layer reads the input; each later one both directions of the layer below.
    fn layer_input(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input
        } else {
            self.hidden * self.directions().len()
        }
    }

    fn expected_keys(&self) -> Vec<(String, Vec<usize>)> {
        let h = self.hidden;
        let mut keys = Vec::new();
        for layer in 0..self.num_layers {
            let input = self.layer_input(layer);
            match &self.convention {
                Convention::Torch {
                    cell, prefix, bias, ..
                } => {
                    let rows = cell.gates() * h;
                    for suffix in self.directions() {
                        let key = |name: &str| format!("{prefix}{name}_l{layer}{suffix}");
                        keys.push((key("weight_ih"), vec![rows, input]));
                        keys.push((key("weight_hh"), vec![rows, h]));
                        if *bias {
                            keys.push((key("bias_ih"), vec![rows]));
                            keys.push((key("bias_hh"), vec![rows]));
                        }
                    }
                }
                Convention::D2l { layer_prefixes } => {
                    let prefix = &layer_prefixes[layer];
                    keys.push((format!("{prefix}W_xh"), vec![input, h]));
                    keys.push((format!("{prefix}W_hh"), vec![h, h]));
                    keys.push((format!("{prefix}b_h"), vec![h]));
                }
            }
        }
        keys
    }

    fn describe(&self) -> String {
        let layers = match self.num_layers {
            1 => String::new(),
            n => format!("{n}-layer "),
        };
        match &self.convention {
            Convention::Torch {
                cell,
                bias,
                bidirectional,
                ..
            } => format!(
                "{layers}{}({}, {}{}{})",
                cell.name(),
                self.input,
                self.hidden,
                if *bias { "" } else { ", bias=False" },
                if *bidirectional {
                    ", bidirectional=True"
                } else {
                    ""
                }
            ),
            Convention::D2l { .. } => {
                format!("{layers}d2l scratch RNN({}, {})", self.input, self.hidden)
            }
        }
    }
}

/// Finds the one recurrent core in the file.
fn find_core(dict: &StateDict, options: &ImportOptions) -> Result<CoreLayout, ImportError> {
    let core = recognise_core(dict)?;
    match options.kind {
        Some(kind) if kind != core.kind() => Err(ImportError::Kind {
            origin: dict.origin().to_owned(),
            expected: kind,
            found: core.describe(),
        }),
        _ => Ok(core),
    }
}

fn recognise_core(dict: &StateDict) -> Result<CoreLayout, ImportError> {
    let origin = dict.origin().to_owned();
    let unsupported = |what: &str, marker: &str, hint: &str| {
        let keys: Vec<&str> = dict.keys().filter(|key| key.contains(marker)).collect();
        (!keys.is_empty()).then(|| ImportError::Unsupported {
            origin: origin.clone(),
            what: what.to_owned(),
            keys: keys.join(", "),
            hint: hint.to_owned(),
        })
    };
    if let Some(err) = unsupported(
        "an LSTM with proj_size > 0",
        "weight_hr_l",
        "rnnlm's LSTM has no output projection; export a model built with proj_size=0",
    ) {
        return Err(err);
    }

    let torch: Vec<String> = dict
        .keys()
        .filter_map(|key| key.strip_suffix("weight_ih_l0").map(str::to_owned))
        .collect();
    let d2l = d2l_layer_prefixes(dict);
    let found = torch.len() + d2l.len();
    if found == 0 {
        return Err(ImportError::NoRecurrentWeights {
            origin,
            listing: dict.listing(),
        });
    }
    if found > 1 {
        let mut prefixes: Vec<String> = torch.iter().map(|p| format!("{p:?}")).collect();
        prefixes.extend(d2l.iter().map(|layers| format!("{:?}", layers[0])));
        return Err(ImportError::Ambiguous {
            origin,
            prefixes: prefixes.join(", "),
        });
    }
    if let Some(prefix) = torch.into_iter().next() {
        return torch_core(dict, prefix);
    }
    let layer_prefixes = d2l.into_iter().next().expect("found == 1");
    let first = format!("{}W_xh", layer_prefixes[0]);
    let shape = dict.shape(&first).expect("found by its name").to_vec();
    let [input, hidden] = two_dims(dict, &first, &shape, "[input, hidden]")?;
    Ok(CoreLayout {
        num_layers: layer_prefixes.len(),
        convention: Convention::D2l { layer_prefixes },
        input,
        hidden,
    })
}

fn torch_core(dict: &StateDict, prefix: String) -> Result<CoreLayout, ImportError> {
    let ih_key = format!("{prefix}weight_ih_l0");
    let hh_key = format!("{prefix}weight_hh_l0");
    let ih_shape = dict.shape(&ih_key).expect("found by its name").to_vec();
    let [rows, input] = two_dims(dict, &ih_key, &ih_shape, "[gates·hidden, input]")?;
    let Some(hh_shape) = dict.shape(&hh_key).map(<[usize]>::to_vec) else {
        return Err(ImportError::Mismatch {
            origin: dict.origin().to_owned(),
            model: "PyTorch recurrent layer".to_owned(),
            problems: vec![KeyProblem::Missing {
                key: hh_key,
                expected: format!("[{rows}, hidden]"),
            }],
        });
    };
    let [hh_rows, hidden] = two_dims(dict, &hh_key, &hh_shape, "[gates·hidden, hidden]")?;
    let cell = match (rows == hh_rows, rows / hidden.max(1), rows % hidden.max(1)) {
        (true, 1, 0) => TorchCell::Rnn,
        (true, 3, 0) => TorchCell::Gru,
        (true, 4, 0) => TorchCell::Lstm,
        _ => {
            return Err(ImportError::Unsupported {
                origin: dict.origin().to_owned(),
                what: format!(
                    "a recurrent layer whose weights are {ih_key} {ih_shape:?} and {hh_key} \
                     {hh_shape:?}"
                ),
                keys: format!("{ih_key}, {hh_key}"),
                hint: "both must have gates·hidden rows with hidden = the columns of weight_hh: \
                       1 gate block for nn.RNN, 3 for nn.GRU, 4 for nn.LSTM"
                    .to_owned(),
            });
        }
    };
    let num_layers = (0..)
        .take_while(|layer| dict.get(&format!("{prefix}weight_ih_l{layer}")).is_some())
        .count();
    let bias = dict.get(&format!("{prefix}bias_ih_l0")).is_some()
        || dict.get(&format!("{prefix}bias_hh_l0")).is_some();
    let bidirectional = dict.get(&format!("{prefix}weight_ih_l0_reverse")).is_some();
    Ok(CoreLayout {
        convention: Convention::Torch {
            cell,
            prefix,
            bias,
            bidirectional,
        },
        input,
        hidden,
        num_layers,
    })
}

/// d2l scratch layers: one `{p}W_xh`, or several `{base}{k}.W_xh` with `k = 0..n` (d2l's
/// `StackedRNNScratch`). One entry per core found, each the layer prefixes in order.
fn d2l_layer_prefixes(dict: &StateDict) -> Vec<Vec<String>> {
    let prefixes: Vec<String> = dict
        .keys()
        .filter_map(|key| key.strip_suffix("W_xh").map(str::to_owned))
        .collect();
    if prefixes.len() <= 1 {
        return prefixes.into_iter().map(|p| vec![p]).collect();
    }
    // Group `{base}{k}.` by base; a group with indices 0..n is one stacked core.
    let mut groups: std::collections::BTreeMap<String, Vec<(usize, String)>> = Default::default();
    let mut loose = Vec::new();
    for prefix in prefixes {
        let parsed = prefix.strip_suffix('.').and_then(|stem| {
            let digits = stem.len() - stem.trim_end_matches(|c: char| c.is_ascii_digit()).len();
            let (base, index) = stem.split_at(stem.len() - digits);
            index.parse::<usize>().ok().map(|k| (base.to_owned(), k))
        });
        match parsed {
            Some((base, index)) => groups.entry(base).or_default().push((index, prefix)),
            None => loose.push(vec![prefix]),
        }
    }
    for (_, mut layers) in groups {
        layers.sort();
        if layers.iter().enumerate().all(|(i, (k, _))| i == *k) {
            loose.push(layers.into_iter().map(|(_, p)| p).collect());
        } else {
            loose.extend(layers.into_iter().map(|(_, p)| vec![p]));
        }
    }
    loose
}

/// The output layer (and embedding) around the core.
#[derive(Debug)]
struct HeadLayout {
    weight: String,
    bias: String,
    /// `nn.Linear` stores `[vocab, hidden]`; d2l's `W_hq` is already `[hidden, vocab]`.
    transposed: bool,
    vocab: usize,
    embedding: Option<String>,
}

impl HeadLayout {
    fn expected_keys(&self, core: &CoreLayout) -> Vec<(String, Vec<usize>)> {
        let (h, v) = (core.hidden, self.vocab);
        let weight = if self.transposed {
            vec![v, h]
        } else {
            vec![h, v]
        };
        let mut keys = vec![(self.weight.clone(), weight), (self.bias.clone(), vec![v])];
        if let Some(key) = &self.embedding {
            keys.push((key.clone(), vec![v, core.input]));
        }
        keys
    }

    /// What sits before and after the core, e.g. `("nn.Embedding(28, 32) + ", " + nn.Linear(256, 28)")`.
    fn describe(&self, core: &CoreLayout) -> (String, String) {
        let embedding = match &self.embedding {
            Some(_) => format!("nn.Embedding({}, {}) + ", self.vocab, core.input),
            None => String::new(),
        };
        let output = if self.transposed {
            format!(" + nn.Linear({}, {})", core.hidden, self.vocab)
        } else {
            format!(" + W_hq [{}, {}]", core.hidden, self.vocab)
        };
        (embedding, output)
    }
}

fn find_head(dict: &StateDict, core: &CoreLayout) -> Result<HeadLayout, ImportError> {
    let origin = dict.origin().to_owned();
    let outside: Vec<&str> = dict.keys().filter(|key| !core.owns(key)).collect();
    let shape_of = |key: &str| dict.shape(key).unwrap_or(&[]).to_vec();
    let h = core.hidden;

    let (weight, bias, transposed) = match &core.convention {
        Convention::D2l { .. } => {
            let candidates: Vec<&str> = outside
                .iter()
                .copied()
                .filter(|key| key.ends_with("W_hq"))
                .collect();
            match candidates.as_slice() {
                [key] => {
                    let stem = key.strip_suffix("W_hq").expect("filtered on it");
                    (key.to_string(), format!("{stem}b_q"), false)
                }
                [] => {
                    return Err(missing_head(&origin, core, "W_hq", format!("[{h}, vocab]")));
                }
                _ => return Err(ambiguous(&origin, &candidates)),
            }
        }
        Convention::Torch { .. } => {
            // An nn.Linear from the hidden state: `{q}weight` [vocab, hidden] with `{q}bias`.
            let candidates: Vec<&str> = outside
                .iter()
                .copied()
                .filter(|key| {
                    key.strip_suffix("weight").is_some_and(|stem| {
                        let shape = shape_of(key);
                        shape.len() == 2
                            && shape[1] == h
                            && dict.get(&format!("{stem}bias")).is_some()
                    })
                })
                .collect();
            match candidates.as_slice() {
                [key] => {
                    let stem = key.strip_suffix("weight").expect("filtered on it");
                    (key.to_string(), format!("{stem}bias"), true)
                }
                [] => {
                    return Err(missing_head(
                        &origin,
                        core,
                        "<linear>.weight and <linear>.bias",
                        format!("[vocab, {h}] and [vocab]"),
                    ));
                }
                _ => return Err(ambiguous(&origin, &candidates)),
            }
        }
    };
    let weight_shape = shape_of(&weight);
    let vocab = if transposed {
        weight_shape[0]
    } else {
        *weight_shape.get(1).unwrap_or(&0)
    };

    // Input side: one-hot when the first layer takes `vocab` inputs and no table is present;
    // otherwise an nn.Embedding `[vocab, input]` (a 2-D `weight` without a bias).
    let embedding_candidates: Vec<&str> = outside
        .iter()
        .copied()
        .filter(|key| {
            *key != weight
                && key.strip_suffix("weight").is_some_and(|stem| {
                    shape_of(key).len() == 2 && dict.get(&format!("{stem}bias")).is_none()
                })
        })
        .collect();
    let embedding = match embedding_candidates.as_slice() {
        [key] if shape_of(key) == [vocab, core.input] => Some(key.to_string()),
        _ if core.input == vocab => None,
        // A lone misshapen table is reported as such by the key check.
        [key] => Some(key.to_string()),
        [] => {
            return Err(ImportError::Mismatch {
                origin,
                model: format!(
                    "{} + {}",
                    core.describe(),
                    if transposed { "nn.Linear" } else { "W_hq" }
                ),
                problems: vec![KeyProblem::Missing {
                    key: "<embedding>.weight".to_owned(),
                    expected: format!(
                        "[{vocab}, {}] (the first layer takes {} inputs, not a one-hot vector \
                         of the {vocab} tokens)",
                        core.input, core.input
                    ),
                }],
            });
        }
        _ => return Err(ambiguous(&origin, &embedding_candidates)),
    };
    Ok(HeadLayout {
        weight,
        bias,
        transposed,
        vocab,
        embedding,
    })
}

fn missing_head(origin: &str, core: &CoreLayout, key: &str, expected: String) -> ImportError {
    ImportError::Mismatch {
        origin: origin.to_owned(),
        model: format!("{} language model", core.describe()),
        problems: vec![KeyProblem::Missing {
            key: key.to_owned(),
            expected,
        }],
    }
}

fn ambiguous(origin: &str, keys: &[&str]) -> ImportError {
    ImportError::Ambiguous {
        origin: origin.to_owned(),
        prefixes: keys.join(", "),
    }
}

fn two_dims(
    dict: &StateDict,
    key: &str,
    shape: &[usize],
    expected: &str,
) -> Result<[usize; 2], ImportError> {
    match shape {
        [a, b] if *a > 0 && *b > 0 => Ok([*a, *b]),
        _ => Err(ImportError::Mismatch {
            origin: dict.origin().to_owned(),
            model: "recurrent layer".to_owned(),
            problems: vec![KeyProblem::Shape {
                key: key.to_owned(),
                found: shape.to_vec(),
                expected: expected.to_owned(),
            }],
        }),
    }
}

/// Every expected key present with its shape, and nothing else.
fn check_keys(
    dict: &StateDict,
    expected: &[(String, Vec<usize>)],
    model: &str,
) -> Result<(), ImportError> {
    let problems = key_problems(dict, expected);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ImportError::Mismatch {
            origin: dict.origin().to_owned(),
            model: model.to_owned(),
            problems,
        })
    }
}

fn key_problems(dict: &StateDict, expected: &[(String, Vec<usize>)]) -> Vec<KeyProblem> {
    let mut problems = Vec::new();
    for (key, shape) in expected {
        match dict.shape(key) {
            None => problems.push(KeyProblem::Missing {
                key: key.clone(),
                expected: format!("{shape:?}"),
            }),
            Some(found) if found != shape.as_slice() => problems.push(KeyProblem::Shape {
                key: key.clone(),
                found: found.to_vec(),
                expected: format!("{shape:?}"),
            }),
            Some(_) => {}
        }
    }
    let known: BTreeSet<&str> = expected.iter().map(|(key, _)| key.as_str()).collect();
    for key in dict.keys().filter(|key| !known.contains(key)) {
        problems.push(KeyProblem::Unexpected {
            key: key.to_owned(),
            shape: dict.shape(key).unwrap_or(&[]).to_vec(),
        });
    }
    problems
}

fn load_core(
    dict: &StateDict,
    layout: &CoreLayout,
    nonlinearity: Activation,
    core: &mut RecurrentCore,
    device: &Device,
) -> Result<(), ImportError> {
    match (&layout.convention, core) {
        (
            Convention::D2l { layer_prefixes },
            RecurrentCore::RnnScratch(RnnScratch { layers, .. }),
        ) => {
            for (layer, prefix) in layers.iter_mut().zip(layer_prefixes) {
                layer.w_xh =
                    Param::from_tensor(matrix(dict, &format!("{prefix}W_xh"), false, device)?);
                layer.w_hh =
                    Param::from_tensor(matrix(dict, &format!("{prefix}W_hh"), false, device)?);
                layer.b_h = Some(Param::from_tensor(vector(
                    dict,
                    &format!("{prefix}b_h"),
                    device,
                )?));
                layer.activation = nonlinearity;
            }
        }
        (Convention::Torch { prefix, bias, .. }, core) => {
            // The core's layers in PyTorch's order: layer by layer, forward then reverse.
            let directions = layout.directions();
            let key = |name: &str, entry: usize| {
                let (layer, suffix) = (
                    entry / directions.len(),
                    directions[entry % directions.len()],
                );
                format!("{prefix}{name}_l{layer}{suffix}")
            };
            let rows = |layer: usize| -> Result<(Tensor<2>, Tensor<2>, Tensor<1>, Tensor<1>), ImportError> {
                let w_ih = matrix(dict, &key("weight_ih", layer), true, device)?;
                let w_hh = matrix(dict, &key("weight_hh", layer), true, device)?;
                let width = w_hh.dims()[1];
                // bias=False is the same function as zero biases.
                let (b_ih, b_hh) = if *bias {
                    (
                        vector(dict, &key("bias_ih", layer), device)?,
                        vector(dict, &key("bias_hh", layer), device)?,
                    )
                } else {
                    (Tensor::zeros([width], device), Tensor::zeros([width], device))
                };
                Ok((w_ih, w_hh, b_ih, b_hh))
            };
            match core {
                RecurrentCore::RnnScratch(RnnScratch { layers, .. }) => {
                    for (index, layer) in layers.iter_mut().enumerate() {
                        let (w_ih, w_hh, b_ih, b_hh) = rows(index)?;
                        layer.w_xh = Param::from_tensor(w_ih);
                        layer.w_hh = Param::from_tensor(w_hh);
                        // nn.RNN adds two biases that only ever appear as their sum.
                        layer.b_h = Some(Param::from_tensor(b_ih + b_hh));
                        layer.activation = nonlinearity;
                    }
                }
                RecurrentCore::Gru(Gru { layers, .. }) => {
                    for (index, layer) in layers.iter_mut().enumerate() {
                        let (w_ih, w_hh, b_ih, b_hh) = rows(index)?;
                        layer.input_weight = Param::from_tensor(w_ih);
                        layer.hidden_weight = Param::from_tensor(w_hh);
                        layer.input_bias = Some(Param::from_tensor(b_ih));
                        layer.hidden_bias = Some(Param::from_tensor(b_hh));
                    }
                }
                RecurrentCore::Lstm(DeepLstm { layers, .. }) => {
                    for (index, layer) in layers.iter_mut().enumerate() {
                        let (w_ih, w_hh, b_ih, b_hh) = rows(index)?;
                        layer.input_weight = Param::from_tensor(w_ih);
                        layer.hidden_weight = Param::from_tensor(w_hh);
                        layer.input_bias = Some(Param::from_tensor(b_ih));
                        layer.hidden_bias = Some(Param::from_tensor(b_hh));
                    }
                }
            }
        }
        (Convention::D2l { .. }, _) => unreachable!("a d2l layout always builds an RnnScratch"),
    }
    Ok(())
}

/// A matrix from the file, transposed from PyTorch's `[out, in]` to rnnlm's `[in, out]` when
/// asked (on the host, so the parameter is contiguous).
fn matrix(
    dict: &StateDict,
    key: &str,
    transpose: bool,
    device: &Device,
) -> Result<Tensor<2>, ImportError> {
    let (values, shape) = dict.floats(key)?;
    let [rows, cols] = [shape[0], shape[1]];
    let data = if transpose {
        let mut out = vec![0.0f32; values.len()];
        for r in 0..rows {
            for c in 0..cols {
                out[c * rows + r] = values[r * cols + c];
            }
        }
        TensorData::new(out, [cols, rows])
    } else {
        TensorData::new(values, [rows, cols])
    };
    Ok(Tensor::from_data(data, device))
}

fn vector(dict: &StateDict, key: &str, device: &Device) -> Result<Tensor<1>, ImportError> {
    let (values, shape) = dict.floats(key)?;
    Ok(Tensor::from_data(
        TensorData::new(values, [shape[0]]),
        device,
    ))
}
