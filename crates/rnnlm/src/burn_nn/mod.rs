//! burn-nn's recurrent layers in and out of the cores, for a model that moves from burn-nn to
//! rnnlm (or back) without retraining: `nn::Lstm` / `nn::BiLstm` into [`DeepLstm`], `nn::Gru` /
//! `nn::BiGru` into [`Gru`], `nn::Rnn` / `nn::BiRnn` into [`RnnScratch`], one burn-nn module
//! per layer, stacked by the user; and configs from burn-nn's configs.
//!
//! burn-nn keeps one `GateController` per gate, two `Linear`s each (`[in, hidden]` on the
//! input, `[hidden, hidden]` on the state, a bias on each); a core keeps, per layer and
//! direction, the gates side by side in one `[in, gates·hidden]` and one `[hidden,
//! gates·hidden]` weight, so that a step is one product. Loading concatenates the gates in the
//! core's order (LSTM i, f, g, o, or i, g, o with a coupled forget gate; GRU r, z, n); the
//! values are moved, never changed, except where a core has one bias where burn-nn has two
//! that always appear summed (the vanilla RNN, d2l's GRU formula).
//!
//! Every loaded parameter keeps the core's own id, device and gradient tracking (as a record
//! loaded with `load_record` does), so a core on an autodiff device trains on from the loaded
//! weights whatever device, autodiff or not, the burn-nn layers live on.

mod record;

pub use record::{RecordError, StackKeys, apply_record, load_record};

use burn::module::{Param, ParamId};
use burn::nn::{self, GateController};
use burn::prelude::*;

use crate::config::{Activation, ConfigError, GruFormula};
use crate::{DeepLstm, DeepLstmConfig, Gru, GruConfig, Recurrent, RnnScratch, RnnScratchConfig};

mod sealed {
    /// One direction of a burn-nn recurrent layer: `nn::Lstm`, `nn::Gru` or `nn::Rnn`.
    pub trait Direction {
        /// Whether its `forward` reads `[batch, steps, ..]` (burn-nn's `Gru` always does).
        fn batch_first(&self) -> bool;
        /// Whether its `forward` runs last step first (never for burn-nn's `Gru`).
        fn reverse(&self) -> bool;
    }

    /// A burn-nn recurrent layer of one or both directions.
    pub trait Layer {
        /// The one-direction layer it is made of.
        type Direction: Direction;
        /// Its type's name, for messages.
        const NAME: &'static str;
        /// Whether it runs both directions.
        const BIDIRECTIONAL: bool;
        /// Its directions: itself, or forward then reverse.
        fn directions(&self) -> Vec<&Self::Direction>;
        /// Whether its `forward` reads `[batch, steps, ..]`.
        fn batch_first(&self) -> bool;
        /// Whether it runs last step first (a one-direction layer's `reverse`).
        fn reverse(&self) -> bool;
        /// A layer of this type from its directions (one, or forward then reverse).
        fn assemble(directions: Vec<Self::Direction>, batch_first: bool) -> Self;
    }
}

/// A burn-nn recurrent layer that a core loads from and exports to: `nn::Lstm` and
/// `nn::BiLstm` for [`DeepLstm`], `nn::Gru` and `nn::BiGru` for [`Gru`], `nn::Rnn` and
/// `nn::BiRnn` for [`RnnScratch`]. Sealed: implemented for those six types only.
pub trait BurnNnLayer: sealed::Layer {}

impl sealed::Direction for nn::Lstm {
    fn batch_first(&self) -> bool {
        self.batch_first
    }
    fn reverse(&self) -> bool {
        self.reverse
    }
}

impl sealed::Direction for nn::Gru {
    fn batch_first(&self) -> bool {
        true
    }
    fn reverse(&self) -> bool {
        false
    }
}

impl sealed::Direction for nn::Rnn {
    fn batch_first(&self) -> bool {
        self.batch_first
    }
    fn reverse(&self) -> bool {
        self.reverse
    }
}

macro_rules! one_direction {
    ($layer:ty, $name:literal, $assemble:expr) => {
        impl sealed::Layer for $layer {
            type Direction = $layer;
            const NAME: &'static str = $name;
            const BIDIRECTIONAL: bool = false;
            fn directions(&self) -> Vec<&$layer> {
                vec![self]
            }
            fn batch_first(&self) -> bool {
                sealed::Direction::batch_first(self)
            }
            fn reverse(&self) -> bool {
                sealed::Direction::reverse(self)
            }
            fn assemble(mut directions: Vec<$layer>, batch_first: bool) -> Self {
                let layer = directions.remove(0);
                #[allow(clippy::redundant_closure_call)]
                ($assemble)(layer, batch_first)
            }
        }
        impl BurnNnLayer for $layer {}
    };
}

one_direction!(nn::Lstm, "Lstm", |mut layer: nn::Lstm, batch_first| {
    layer.batch_first = batch_first;
    layer
});
one_direction!(nn::Gru, "Gru", |layer: nn::Gru, _| layer);
one_direction!(nn::Rnn, "Rnn", |mut layer: nn::Rnn, batch_first| {
    layer.batch_first = batch_first;
    layer
});

macro_rules! both_directions {
    ($layer:ident, $direction:ty, $name:literal) => {
        impl sealed::Layer for nn::$layer {
            type Direction = $direction;
            const NAME: &'static str = $name;
            const BIDIRECTIONAL: bool = true;
            fn directions(&self) -> Vec<&$direction> {
                vec![&self.forward, &self.reverse]
            }
            fn batch_first(&self) -> bool {
                self.batch_first
            }
            fn reverse(&self) -> bool {
                false
            }
            fn assemble(directions: Vec<$direction>, batch_first: bool) -> Self {
                let [forward, reverse]: [$direction; 2] = directions
                    .try_into()
                    .unwrap_or_else(|_| unreachable!("a bidirectional layer has two directions"));
                let d_hidden = forward.d_hidden;
                nn::$layer {
                    forward,
                    reverse,
                    d_hidden,
                    batch_first,
                }
            }
        }
        impl BurnNnLayer for nn::$layer {}
    };
}

both_directions!(BiLstm, nn::Lstm, "BiLstm");
both_directions!(BiGru, nn::Gru, "BiGru");
both_directions!(BiRnn, nn::Rnn, "BiRnn");

/// `param` holding `value` instead, with the param's own id, device and gradient tracking: what
/// loading a record does, so that a core on an autodiff device gets tracked leaves (never the
/// graph behind `value`, which would make them untrainable) and one on a plain device plain
/// tensors, wherever `value` lives.
pub(crate) fn replaced<const D: usize>(
    param: Param<Tensor<D>>,
    value: Tensor<D>,
) -> Param<Tensor<D>> {
    let id: ParamId = param.id;
    let target = param.val().device();
    // Devices compare equal with and without autodiff: set the association explicitly.
    let value = value
        .without_autodiff()
        .to_device(&target.clone().without_autodiff());
    let value = if target.is_autodiff() {
        value.autodiff()
    } else {
        value
    };
    param.transform_for_load(value, id)
}

/// The two products and (when the layer has them) two biases of one burn-nn gate, checked
/// against the core's sizes.
struct GateWeights {
    input: Tensor<2>,
    hidden: Tensor<2>,
    biases: Option<(Tensor<1>, Tensor<1>)>,
}

/// What one direction of one layer is checked against: the core's name and sizes, the
/// layer's index and direction.
struct Target {
    core: &'static str,
    layer: usize,
    /// `None` for a one-direction layer, else `forward` or `reverse`.
    direction: Option<&'static str>,
    input_size: usize,
    hidden_size: usize,
    /// Whether the core's layer has biases.
    bias: bool,
}

impl Target {
    fn error(&self, field: &str, value: impl std::fmt::Debug, expected: String) -> ConfigError {
        let direction = self.direction.map(|d| format!(".{d}")).unwrap_or_default();
        ConfigError::new(
            format!(
                "burn-nn layer {}{direction} (into {}): {field}",
                self.layer, self.core
            ),
            value,
            expected,
        )
    }

    fn gate(&self, name: &str, gate: &GateController) -> Result<GateWeights, ConfigError> {
        let input = gate.input_transform.weight.val();
        let hidden = gate.hidden_transform.weight.val();
        let [d_input, d_output] = input.dims();
        if d_input != self.input_size {
            let reads = if self.layer == 0 {
                "the core's input_size".to_owned()
            } else {
                format!("the outputs of layer {}", self.layer - 1)
            };
            return Err(self.error(
                &format!("{name}.input_transform d_input"),
                d_input,
                format!("{} ({reads})", self.input_size),
            ));
        }
        if d_output != self.hidden_size || hidden.dims() != [self.hidden_size, self.hidden_size] {
            return Err(self.error(
                &format!("{name} d_hidden"),
                d_output,
                format!("{} (the core's hidden_size)", self.hidden_size),
            ));
        }
        let biases = match (&gate.input_transform.bias, &gate.hidden_transform.bias) {
            (Some(input), Some(hidden)) => Some((input.val(), hidden.val())),
            (None, None) => None,
            (input, _) => {
                return Err(self.error(
                    &format!("{name}.hidden_transform.bias"),
                    if input.is_some() { "None" } else { "Some" },
                    "the same as input_transform.bias: rnnlm's layers have both biases or none"
                        .to_owned(),
                ));
            }
        };
        if biases.is_some() != self.bias {
            return Err(self.error(
                "bias",
                biases.is_some(),
                format!(
                    "{}, as the core was built; build it with bias = {} (the config's \
                     with_bias({}))",
                    self.bias,
                    biases.is_some(),
                    biases.is_some()
                ),
            ));
        }
        Ok(GateWeights {
            input,
            hidden,
            biases,
        })
    }

    fn activation(
        &self,
        field: &str,
        activation: &nn::activation::Activation,
        expected: &str,
        is: impl Fn(&nn::activation::Activation) -> bool,
    ) -> Result<(), ConfigError> {
        if is(activation) {
            Ok(())
        } else {
            Err(self.error(field, activation_name(activation), expected.to_owned()))
        }
    }

    fn same_clip(
        &self,
        clip: Option<f64>,
        own: Option<f64>,
        what: &str,
    ) -> Result<(), ConfigError> {
        if clip == own {
            return Ok(());
        }
        Err(self.error(
            "clip",
            clip,
            format!("{own:?}, the core's clip of its {what}; build the core with clip = {clip:?}"),
        ))
    }
}

fn activation_name(activation: &impl std::fmt::Debug) -> String {
    // The variant's name, without the layer's own fields.
    let debug = format!("{activation:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or(&debug)
        .to_owned()
}

fn is_sigmoid(a: &nn::activation::Activation) -> bool {
    matches!(a, nn::activation::Activation::Sigmoid(_))
}

fn is_tanh(a: &nn::activation::Activation) -> bool {
    matches!(a, nn::activation::Activation::Tanh(_))
}

/// The core's side of a load: what every loader checks before any weight moves.
struct CoreSide {
    name: &'static str,
    layers: usize,
    input_size: usize,
    hidden_size: usize,
    bidirectional: bool,
    batch_first: bool,
    reverse: bool,
}

impl CoreSide {
    fn of(name: &'static str, core: &impl Recurrent) -> CoreSide {
        CoreSide {
            name,
            layers: core.num_layers(),
            input_size: core.input_size(),
            hidden_size: core.hidden_size(),
            bidirectional: core.bidirectional(),
            batch_first: core.batch_first(),
            reverse: core.reverse(),
        }
    }

    /// The stack's shape against the core's: as many layers, the same directions, time layout
    /// and order; then, per layer and direction (PyTorch's order, the core's `layers`), the
    /// burn-nn direction and its target.
    fn targets<'l, L: BurnNnLayer>(
        &self,
        stack: &'l [L],
        bias: impl Fn(usize) -> bool,
    ) -> Result<Vec<(&'l L::Direction, Target)>, ConfigError> {
        use sealed::Direction;
        let core = self.name;
        if L::BIDIRECTIONAL != self.bidirectional {
            return Err(ConfigError::new(
                format!("{core}.bidirectional"),
                self.bidirectional,
                format!(
                    "{}: burn-nn's {} runs {}; build the core with bidirectional = {}",
                    L::BIDIRECTIONAL,
                    L::NAME,
                    if L::BIDIRECTIONAL {
                        "both directions"
                    } else {
                        "one direction"
                    },
                    L::BIDIRECTIONAL
                ),
            ));
        }
        if stack.len() != self.layers {
            return Err(ConfigError::new(
                format!("burn-nn layers (into {core})"),
                stack.len(),
                format!(
                    "{}, the core's num_layers: one burn-nn {} per layer",
                    self.layers,
                    L::NAME
                ),
            ));
        }
        let directions = 1 + usize::from(self.bidirectional);
        let mut targets = Vec::with_capacity(stack.len() * directions);
        for (index, layer) in stack.iter().enumerate() {
            let at = |field: &str| format!("burn-nn layer {index} (into {core}): {field}");
            if layer.batch_first() != self.batch_first {
                return Err(ConfigError::new(
                    at("batch_first"),
                    layer.batch_first(),
                    format!(
                        "{}, as the core was built: the layer reads {} and the core {}; build the \
                         core with batch_first = {}",
                        self.batch_first,
                        layout(layer.batch_first()),
                        layout(self.batch_first),
                        layer.batch_first()
                    ),
                ));
            }
            if layer.reverse() != self.reverse {
                return Err(ConfigError::new(
                    at("reverse"),
                    layer.reverse(),
                    format!(
                        "{}, as the core was built; build the core with reverse = {}",
                        self.reverse,
                        layer.reverse()
                    ),
                ));
            }
            let parts = layer.directions();
            if L::BIDIRECTIONAL {
                // burn-nn's bidirectional layers run their forward direction through its own
                // `forward` (which honours its `reverse` and `batch_first`) on a batch-first
                // input, and the reverse one step by step, whatever its own fields say.
                let forward = parts[0];
                if forward.reverse() || !forward.batch_first() {
                    return Err(ConfigError::new(
                        at(if forward.reverse() {
                            "forward.reverse"
                        } else {
                            "forward.batch_first"
                        }),
                        !forward.batch_first() || forward.reverse(),
                        format!(
                            "{}, as {}Config builds it: its forward direction would not run \
                             forwards over a batch-first input",
                            !forward.reverse(),
                            L::NAME
                        ),
                    ));
                }
            }
            for (direction, part) in parts.into_iter().enumerate() {
                let entry = index * directions + direction;
                targets.push((
                    part,
                    Target {
                        core,
                        layer: index,
                        direction: L::BIDIRECTIONAL.then_some(["forward", "reverse"][direction]),
                        input_size: if index == 0 {
                            self.input_size
                        } else {
                            directions * self.hidden_size
                        },
                        hidden_size: self.hidden_size,
                        bias: bias(entry),
                    },
                ));
            }
        }
        Ok(targets)
    }
}

fn layout(batch_first: bool) -> &'static str {
    if batch_first {
        "[batch, steps, ..]"
    } else {
        "[steps, batch, ..]"
    }
}

/// `[a | b | ..]` along the gate axis.
fn side_by_side<const D: usize>(parts: Vec<Tensor<D>>) -> Tensor<D> {
    Tensor::cat(parts, D - 1)
}

/// Packs gates into the core layer's four tensors: weights, then (where the layer has them)
/// the input-side and hidden-side biases.
struct Packed {
    input: Tensor<2>,
    hidden: Tensor<2>,
    biases: Option<(Tensor<1>, Tensor<1>)>,
}

fn pack(gates: Vec<GateWeights>) -> Packed {
    let input = side_by_side(gates.iter().map(|g| g.input.clone()).collect());
    let hidden = side_by_side(gates.iter().map(|g| g.hidden.clone()).collect());
    let biases: Option<Vec<_>> = gates.into_iter().map(|g| g.biases).collect();
    let biases = biases.map(|pairs| {
        let (input, hidden): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        (side_by_side(input), side_by_side(hidden))
    });
    Packed {
        input,
        hidden,
        biases,
    }
}

impl Packed {
    /// Writes the packed tensors into a core layer's weights and biases, each keeping its
    /// parameter's id and tracking ([`replaced`]). `one_bias`: the layer keeps one bias where
    /// burn-nn has two that only ever appear summed (the vanilla RNN, d2l's GRU), their sum; its
    /// `biases[1]` is then not written.
    fn store(
        self,
        [input_weight, hidden_weight]: [&mut Param<Tensor<2>>; 2],
        [input_bias, hidden_bias]: [&mut Option<Param<Tensor<1>>>; 2],
        one_bias: bool,
    ) {
        *input_weight = replaced(input_weight.clone(), self.input);
        *hidden_weight = replaced(hidden_weight.clone(), self.hidden);
        let Some((input, hidden)) = self.biases else {
            return;
        };
        let (input, hidden) = if one_bias {
            (input + hidden, None)
        } else {
            (input, Some(hidden))
        };
        replace_bias(input_bias, Some(input));
        replace_bias(hidden_bias, hidden);
    }
}

fn replace_bias(own: &mut Option<Param<Tensor<1>>>, value: Option<Tensor<1>>) {
    if let (Some(param), Some(value)) = (own.take(), value) {
        *own = Some(replaced(param, value));
    }
}

impl DeepLstm {
    /// Loads the weights of burn-nn LSTMs into this core: one [`burn::nn::Lstm`] per layer, input
    /// side first, into a one-direction core; one [`burn::nn::BiLstm`] per layer into a
    /// bidirectional one. The core must be built with the same sizes, number of layers and
    /// options (`batch_first`, `reverse`, `bias`, `clip`, `input_forget`;
    /// [`DeepLstmConfig::from_burn_nn`] builds such a config). The result gives the same
    /// outputs, states and gradients as running the burn-nn layers one after the other, on any
    /// device: the loaded parameters keep this core's ids, device and gradient tracking.
    ///
    /// `input_weight` `[in, 4·hidden]` becomes `[W_i | W_f | W_g | W_o]` from the gates'
    /// `input_transform` weights (burn-nn's `input_gate`, `forget_gate`, `cell_gate`,
    /// `output_gate`; `[W_i | W_g | W_o]` with a coupled forget gate), `hidden_weight` the same
    /// from their `hidden_transform`s, and the two biases likewise.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the layer (and direction), the field and both values, with the
    /// core unchanged, when the number of layers, the directions, `batch_first`, `reverse`, a
    /// size, the biases, `input_forget`, `clip` or an activation other than sigmoid / tanh /
    /// tanh does not fit this core.
    pub fn load_burn_nn<L: BurnNnLayer<Direction = nn::Lstm>>(
        mut self,
        stack: &[L],
    ) -> Result<Self, ConfigError> {
        let side = CoreSide::of("DeepLstm", &self);
        let targets = side.targets(stack, |entry| self.layers[entry].input_bias.is_some())?;
        let mut loaded = Vec::with_capacity(targets.len());
        for ((layer, target), own) in targets.into_iter().zip(&self.layers) {
            if layer.input_forget != own.input_forget
                || layer.forget_gate.is_some() == layer.input_forget
            {
                return Err(target.error(
                    "input_forget",
                    layer.input_forget,
                    format!(
                        "{}, as the core was built (and a forget gate exactly when false); build \
                         the core with input_forget = {}",
                        own.input_forget, layer.input_forget
                    ),
                ));
            }
            target.same_clip(layer.clip, own.clip, "memory cell")?;
            target.activation(
                "gate_activation",
                &layer.gate_activation,
                "Sigmoid",
                is_sigmoid,
            )?;
            target.activation("cell_activation", &layer.cell_activation, "Tanh", is_tanh)?;
            target.activation(
                "hidden_activation",
                &layer.hidden_activation,
                "Tanh",
                is_tanh,
            )?;
            let mut gates = vec![target.gate("input_gate", &layer.input_gate)?];
            if let Some(forget) = &layer.forget_gate {
                gates.push(target.gate("forget_gate", forget)?);
            }
            gates.push(target.gate("cell_gate", &layer.cell_gate)?);
            gates.push(target.gate("output_gate", &layer.output_gate)?);
            loaded.push(pack(gates));
        }
        for (layer, packed) in self.layers.iter_mut().zip(loaded) {
            packed.store(
                [&mut layer.input_weight, &mut layer.hidden_weight],
                [&mut layer.input_bias, &mut layer.hidden_bias],
                false,
            );
        }
        Ok(self)
    }
}

impl Gru {
    /// Loads the weights of burn-nn GRUs into this core: one [`burn::nn::Gru`] per layer, input
    /// side first, into a one-direction core; one [`burn::nn::BiGru`] per layer into a
    /// bidirectional one. The core must be built with the same sizes, number of layers and
    /// options ([`GruConfig::from_burn_nn`] builds such a config): burn-nn's `reset_after =
    /// true` is [`GruFormula::PyTorch`] (both biases kept), `reset_after = false` is
    /// [`GruFormula::D2l`] (the reset gate before the hidden product; each gate's two biases,
    /// which only ever appear summed, become one). The loaded parameters keep this core's ids,
    /// device and gradient tracking.
    ///
    /// `input_weight` `[in, 3·hidden]` becomes `[W_r | W_z | W_n]` from burn-nn's `reset_gate`,
    /// `update_gate` and `new_gate`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the layer (and direction), the field and both values, with the
    /// core unchanged, when the number of layers, the directions, `batch_first` (burn-nn's
    /// `Gru` is batch-first), a size, the biases, `reset_after` against this core's formula,
    /// `clip` or an activation other than sigmoid / tanh does not fit.
    pub fn load_burn_nn<L: BurnNnLayer<Direction = nn::Gru>>(
        mut self,
        stack: &[L],
    ) -> Result<Self, ConfigError> {
        let side = CoreSide::of("Gru", &self);
        let targets = side.targets(stack, |entry| self.layers[entry].input_bias.is_some())?;
        let mut loaded = Vec::with_capacity(targets.len());
        for ((layer, target), own) in targets.into_iter().zip(&self.layers) {
            let reset_after = own.formula == GruFormula::PyTorch;
            if layer.reset_after != reset_after {
                return Err(target.error(
                    "reset_after",
                    layer.reset_after,
                    format!(
                        "{reset_after}, as this core's formula ({:?}) needs; build the core with \
                         GruFormula::{}",
                        own.formula,
                        if layer.reset_after { "PyTorch" } else { "D2l" }
                    ),
                ));
            }
            target.same_clip(layer.clip, own.clip, "hidden state")?;
            target.activation(
                "gate_activation",
                &layer.gate_activation,
                "Sigmoid",
                is_sigmoid,
            )?;
            target.activation(
                "hidden_activation",
                &layer.hidden_activation,
                "Tanh",
                is_tanh,
            )?;
            loaded.push(pack(vec![
                target.gate("reset_gate", &layer.reset_gate)?,
                target.gate("update_gate", &layer.update_gate)?,
                target.gate("new_gate", &layer.new_gate)?,
            ]));
        }
        for (layer, packed) in self.layers.iter_mut().zip(loaded) {
            packed.store(
                [&mut layer.input_weight, &mut layer.hidden_weight],
                [&mut layer.input_bias, &mut layer.hidden_bias],
                layer.formula == GruFormula::D2l,
            );
        }
        Ok(self)
    }
}

impl RnnScratch {
    /// Loads the weights of burn-nn RNNs into this core: one [`burn::nn::Rnn`] per layer, input
    /// side first, into a one-direction core; one [`burn::nn::BiRnn`] per layer into a
    /// bidirectional one. The core must be built with the same sizes, number of layers,
    /// activation and options ([`RnnScratchConfig::from_burn_nn`] builds such a config).
    /// burn-nn's `input_transform` weight becomes `w_xh` `[in, hidden]`, its
    /// `hidden_transform` weight `w_hh`, and its two biases, which only ever appear summed,
    /// `b_h`. The loaded parameters keep this core's ids, device and gradient tracking.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the layer (and direction), the field and both values, with the
    /// core unchanged, when the number of layers, the directions, `batch_first`, `reverse`, a
    /// size, the biases, the activation (against this core's) or `clip` does not fit.
    pub fn load_burn_nn<L: BurnNnLayer<Direction = nn::Rnn>>(
        mut self,
        stack: &[L],
    ) -> Result<Self, ConfigError> {
        let side = CoreSide::of("RnnScratch", &self);
        let targets = side.targets(stack, |entry| self.layers[entry].b_h.is_some())?;
        let mut loaded = Vec::with_capacity(targets.len());
        for ((layer, target), own) in targets.into_iter().zip(&self.layers) {
            let (expected, is): (&str, fn(&nn::activation::Activation) -> bool) =
                match own.activation {
                    Activation::Tanh => ("Tanh, this core's activation", is_tanh),
                    Activation::Relu => ("Relu, this core's activation", |a| {
                        matches!(a, nn::activation::Activation::Relu(_))
                    }),
                };
            target.activation("hidden_activation", &layer.hidden_activation, expected, is)?;
            target.same_clip(layer.clip, own.clip, "hidden state")?;
            loaded.push(pack(vec![target.gate("gate", &layer.gate)?]));
        }
        for (layer, packed) in self.layers.iter_mut().zip(loaded) {
            packed.store(
                [&mut layer.w_xh, &mut layer.w_hh],
                [&mut layer.b_h, &mut None],
                true,
            );
        }
        Ok(self)
    }
}

/// A burn-nn recurrent layer's config, one entry of a stack that a core's config is built
/// from: `nn::LstmConfig` / `nn::BiLstmConfig` for [`DeepLstmConfig::from_burn_nn`],
/// `nn::GruConfig` / `nn::BiGruConfig` for [`GruConfig::from_burn_nn`], `nn::RnnConfig` /
/// `nn::BiRnnConfig` for [`RnnScratchConfig::from_burn_nn`]. Sealed.
pub trait BurnNnConfig: config_sealed::Options {}

mod config_sealed {
    /// A burn-nn config in the terms the cores use.
    pub trait Options {
        /// The config's name, for messages.
        const NAME: &'static str;
        /// Its options.
        fn options(&self) -> super::NnOptions;
    }
}

/// What a burn-nn recurrent config sets, in the terms the cores use.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq)]
pub struct NnOptions {
    d_input: usize,
    d_hidden: usize,
    bias: bool,
    batch_first: bool,
    reverse: bool,
    bidirectional: bool,
    clip: Option<f64>,
    input_forget: bool,
    reset_after: bool,
    /// `(field, activation's name, what rnnlm runs there)`.
    activations: Vec<(&'static str, String, &'static str)>,
}

macro_rules! lstm_options {
    ($config:ty, $name:literal, $bidirectional:expr, $reverse:expr) => {
        impl config_sealed::Options for $config {
            const NAME: &'static str = $name;
            #[allow(clippy::redundant_closure_call)]
            fn options(&self) -> NnOptions {
                NnOptions {
                    d_input: self.d_input,
                    d_hidden: self.d_hidden,
                    bias: self.bias,
                    batch_first: self.batch_first,
                    reverse: ($reverse)(self),
                    bidirectional: $bidirectional,
                    clip: self.clip,
                    input_forget: self.input_forget,
                    reset_after: true,
                    activations: vec![
                        (
                            "gate_activation",
                            activation_name(&self.gate_activation),
                            "Sigmoid",
                        ),
                        (
                            "cell_activation",
                            activation_name(&self.cell_activation),
                            "Tanh",
                        ),
                        (
                            "hidden_activation",
                            activation_name(&self.hidden_activation),
                            "Tanh",
                        ),
                    ],
                }
            }
        }
        impl BurnNnConfig for $config {}
    };
}

lstm_options!(nn::LstmConfig, "LstmConfig", false, |c: &nn::LstmConfig| c
    .reverse);
lstm_options!(
    nn::BiLstmConfig,
    "BiLstmConfig",
    true,
    |_: &nn::BiLstmConfig| false
);

macro_rules! gru_options {
    ($config:ty, $name:literal, $bidirectional:expr, $batch_first:expr) => {
        impl config_sealed::Options for $config {
            const NAME: &'static str = $name;
            #[allow(clippy::redundant_closure_call)]
            fn options(&self) -> NnOptions {
                NnOptions {
                    d_input: self.d_input,
                    d_hidden: self.d_hidden,
                    bias: self.bias,
                    batch_first: ($batch_first)(self),
                    reverse: false,
                    bidirectional: $bidirectional,
                    clip: self.clip,
                    input_forget: false,
                    reset_after: self.reset_after,
                    activations: vec![
                        (
                            "gate_activation",
                            activation_name(&self.gate_activation),
                            "Sigmoid",
                        ),
                        (
                            "hidden_activation",
                            activation_name(&self.hidden_activation),
                            "Tanh",
                        ),
                    ],
                }
            }
        }
        impl BurnNnConfig for $config {}
    };
}

gru_options!(nn::GruConfig, "GruConfig", false, |_: &nn::GruConfig| true);
gru_options!(
    nn::BiGruConfig,
    "BiGruConfig",
    true,
    |c: &nn::BiGruConfig| c.batch_first
);

macro_rules! rnn_options {
    ($config:ty, $name:literal, $bidirectional:expr, $reverse:expr) => {
        impl config_sealed::Options for $config {
            const NAME: &'static str = $name;
            #[allow(clippy::redundant_closure_call)]
            fn options(&self) -> NnOptions {
                NnOptions {
                    d_input: self.d_input,
                    d_hidden: self.d_hidden,
                    bias: self.bias,
                    batch_first: self.batch_first,
                    reverse: ($reverse)(self),
                    bidirectional: $bidirectional,
                    clip: self.clip,
                    input_forget: false,
                    reset_after: true,
                    activations: vec![(
                        "hidden_activation",
                        activation_name(&self.hidden_activation),
                        "Tanh or Relu",
                    )],
                }
            }
        }
        impl BurnNnConfig for $config {}
    };
}

rnn_options!(nn::RnnConfig, "RnnConfig", false, |c: &nn::RnnConfig| c
    .reverse);
rnn_options!(
    nn::BiRnnConfig,
    "BiRnnConfig",
    true,
    |_: &nn::BiRnnConfig| false
);

/// The options every entry of a stack of burn-nn configs shares, checked: sizes that chain
/// (entry `k`'s `d_input` is the outputs of entry `k - 1`), one `d_hidden`, the same options in
/// every entry, and activations rnnlm runs.
fn stack_options<C: BurnNnConfig>(stack: &[C]) -> Result<NnOptions, ConfigError> {
    let name = C::NAME;
    let Some(first) = stack.first() else {
        return Err(ConfigError::new(
            format!("[{name}]"),
            "[]",
            "one config per layer, input side first: at least one",
        ));
    };
    let first = first.options();
    let directions = 1 + usize::from(first.bidirectional);
    for (index, config) in stack.iter().enumerate() {
        let options = config.options();
        let at = |field: &str| format!("{name} {index}: {field}");
        for (field, activation, supported) in &options.activations {
            let runs = match *supported {
                "Tanh or Relu" => activation == "Tanh" || activation == "Relu",
                one => activation == one,
            };
            if !runs {
                return Err(ConfigError::new(
                    at(field),
                    activation,
                    format!("{supported}: the activation rnnlm's cores run there"),
                ));
            }
        }
        if index == 0 {
            continue;
        }
        let expected_input = directions * first.d_hidden;
        if options.d_input != expected_input {
            return Err(ConfigError::new(
                at("d_input"),
                options.d_input,
                format!(
                    "{expected_input}: the outputs of layer {} ({directions}·d_hidden)",
                    index - 1
                ),
            ));
        }
        let same = NnOptions {
            d_input: first.d_input,
            activations: first.activations.clone(),
            ..options.clone()
        };
        if same != first {
            let field = [
                (
                    "d_hidden",
                    options.d_hidden != first.d_hidden,
                    format!("{}", options.d_hidden),
                    format!("{}", first.d_hidden),
                ),
                (
                    "bias",
                    options.bias != first.bias,
                    format!("{}", options.bias),
                    format!("{}", first.bias),
                ),
                (
                    "batch_first",
                    options.batch_first != first.batch_first,
                    format!("{}", options.batch_first),
                    format!("{}", first.batch_first),
                ),
                (
                    "reverse",
                    options.reverse != first.reverse,
                    format!("{}", options.reverse),
                    format!("{}", first.reverse),
                ),
                (
                    "clip",
                    options.clip != first.clip,
                    format!("{:?}", options.clip),
                    format!("{:?}", first.clip),
                ),
                (
                    "input_forget",
                    options.input_forget != first.input_forget,
                    format!("{}", options.input_forget),
                    format!("{}", first.input_forget),
                ),
                (
                    "reset_after",
                    options.reset_after != first.reset_after,
                    format!("{}", options.reset_after),
                    format!("{}", first.reset_after),
                ),
            ]
            .into_iter()
            .find(|(_, differs, _, _)| *differs);
            if let Some((field, _, value, expected)) = field {
                return Err(ConfigError {
                    field: at(field),
                    value,
                    expected: format!(
                        "{expected}, as in {name} 0: an rnnlm core gives every layer the same \
                         {field}"
                    ),
                });
            }
        }
    }
    Ok(first)
}

impl DeepLstmConfig {
    /// The config of the core that a stack of burn-nn LSTMs becomes: one
    /// [`burn::nn::LstmConfig`] (or [`burn::nn::BiLstmConfig`]) per layer, input side first.
    /// Sizes, `batch_first`, `reverse`, `bias`, `clip` and `input_forget` carry over; the
    /// weights are then drawn by rnnlm's initialisation (PyTorch's), or loaded with
    /// [`DeepLstm::load_burn_nn`].
    ///
    /// ```
    /// use burn::nn::LstmConfig;
    /// use burn::prelude::*;
    /// use rnnlm::DeepLstmConfig;
    ///
    /// let stack = [LstmConfig::new(28, 64, true), LstmConfig::new(64, 64, true)];
    /// let config = DeepLstmConfig::from_burn_nn(&stack)?;
    /// assert_eq!((config.input_size, config.hidden_size, config.num_layers), (28, 64, 2));
    /// # Ok::<(), rnnlm::ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// A [`ConfigError`] naming the entry and field when the stack is empty, its sizes do not
    /// chain, its entries differ in an option, or an activation is not the LSTM's own.
    pub fn from_burn_nn<C: LstmFamily>(stack: &[C]) -> Result<Self, ConfigError> {
        let o = stack_options(stack)?;
        let config = Self::new(o.d_input, o.d_hidden)
            .with_num_layers(stack.len())
            .with_batch_first(o.batch_first)
            .with_bidirectional(o.bidirectional)
            .with_bias(o.bias)
            .with_reverse(o.reverse)
            .with_clip(o.clip)
            .with_input_forget(o.input_forget);
        config.validate()?;
        Ok(config)
    }
}

impl GruConfig {
    /// The config of the core that a stack of burn-nn GRUs becomes: one
    /// [`burn::nn::GruConfig`] (or [`burn::nn::BiGruConfig`]) per layer, input side first.
    /// Sizes, `bias`, `clip`, `batch_first` (burn-nn's `Gru` is batch-first) carry over, and
    /// `reset_after` chooses the formula ([`GruFormula::PyTorch`] when true).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the entry and field when the stack is empty, its sizes do not
    /// chain, its entries differ in an option, or an activation is not the GRU's own.
    pub fn from_burn_nn<C: GruFamily>(stack: &[C]) -> Result<Self, ConfigError> {
        let o = stack_options(stack)?;
        let config = Self::new(o.d_input, o.d_hidden)
            .with_num_layers(stack.len())
            .with_formula(if o.reset_after {
                GruFormula::PyTorch
            } else {
                GruFormula::D2l
            })
            .with_batch_first(o.batch_first)
            .with_bidirectional(o.bidirectional)
            .with_bias(o.bias)
            .with_clip(o.clip);
        config.validate()?;
        Ok(config)
    }
}

impl RnnScratchConfig {
    /// The config of the core that a stack of burn-nn RNNs becomes: one
    /// [`burn::nn::RnnConfig`] (or [`burn::nn::BiRnnConfig`]) per layer, input side first.
    /// Sizes, the activation (tanh or ReLU), `batch_first`, `reverse`, `bias` and `clip` carry
    /// over; the weights are drawn by rnnlm's initialisation (d2l's), or loaded with
    /// [`RnnScratch::load_burn_nn`].
    ///
    /// # Errors
    /// A [`ConfigError`] naming the entry and field when the stack is empty, its sizes do not
    /// chain, its entries differ in an option, or the activation is neither tanh nor ReLU.
    pub fn from_burn_nn<C: RnnFamily>(stack: &[C]) -> Result<Self, ConfigError> {
        let o = stack_options(stack)?;
        let activation = match o.activations[0].1.as_str() {
            "Relu" => Activation::Relu,
            _ => Activation::Tanh,
        };
        let config = Self::new(o.d_input, o.d_hidden)
            .with_num_layers(stack.len())
            .with_activation(activation)
            .with_batch_first(o.batch_first)
            .with_bidirectional(o.bidirectional)
            .with_bias(o.bias)
            .with_reverse(o.reverse)
            .with_clip(o.clip);
        config.validate()?;
        Ok(config)
    }
}

/// burn-nn's LSTM configs (`LstmConfig`, `BiLstmConfig`): what [`DeepLstmConfig::from_burn_nn`]
/// takes. Sealed.
pub trait LstmFamily: BurnNnConfig {}
impl LstmFamily for nn::LstmConfig {}
impl LstmFamily for nn::BiLstmConfig {}
/// burn-nn's GRU configs (`GruConfig`, `BiGruConfig`): what [`GruConfig::from_burn_nn`] takes.
/// Sealed.
pub trait GruFamily: BurnNnConfig {}
impl GruFamily for nn::GruConfig {}
impl GruFamily for nn::BiGruConfig {}
/// burn-nn's RNN configs (`RnnConfig`, `BiRnnConfig`): what [`RnnScratchConfig::from_burn_nn`]
/// takes. Sealed.
pub trait RnnFamily: BurnNnConfig {}
impl RnnFamily for nn::RnnConfig {}
impl RnnFamily for nn::BiRnnConfig {}

/// The parts of a packed tensor along its gate axis (the last one), `hidden` wide each.
fn gate_blocks<const D: usize>(packed: Tensor<D>, hidden: usize) -> Vec<Tensor<D>> {
    let axis = D - 1;
    let gates = packed.dims()[axis] / hidden;
    (0..gates)
        .map(|g| packed.clone().narrow(axis, g * hidden, hidden))
        .collect()
}

/// A burn-nn gate holding one block of the core's packed weights: `input` `[in, hidden]`,
/// `hidden` `[hidden, hidden]`, and the two biases (or none), each a parameter tracked as the
/// core's are (the burn-nn layer was built on the core's device).
fn gate_from(
    mut gate: GateController,
    input: Tensor<2>,
    hidden: Tensor<2>,
    biases: Option<(Tensor<1>, Tensor<1>)>,
) -> GateController {
    gate.input_transform.weight = replaced(gate.input_transform.weight, input);
    gate.hidden_transform.weight = replaced(gate.hidden_transform.weight, hidden);
    if let Some((input_bias, hidden_bias)) = biases {
        gate.input_transform.bias = gate.input_transform.bias.map(|b| replaced(b, input_bias));
        gate.hidden_transform.bias = gate.hidden_transform.bias.map(|b| replaced(b, hidden_bias));
    }
    gate
}

/// One gate's input weight, hidden weight and biases (input, hidden).
type GateBlocks = (Tensor<2>, Tensor<2>, Option<(Tensor<1>, Tensor<1>)>);

/// The per-gate blocks of a layer's weights and biases: `(input, hidden, biases)` per gate. A
/// core's single bias (the vanilla RNN, d2l's GRU) goes to burn-nn's input side, zeros to its
/// hidden side: the same sums, so the same function.
fn unpack(
    input: Tensor<2>,
    hidden: Tensor<2>,
    input_bias: Option<Tensor<1>>,
    hidden_bias: Option<Tensor<1>>,
    size: usize,
) -> Vec<GateBlocks> {
    let inputs = gate_blocks(input, size);
    let hiddens = gate_blocks(hidden, size);
    let biases: Vec<Option<(Tensor<1>, Tensor<1>)>> = match (input_bias, hidden_bias) {
        (None, _) => vec![None; inputs.len()],
        (Some(input), hidden) => {
            let hidden = hidden.unwrap_or_else(|| input.zeros_like());
            gate_blocks(input, size)
                .into_iter()
                .zip(gate_blocks(hidden, size))
                .map(Some)
                .collect()
        }
    };
    inputs
        .into_iter()
        .zip(hiddens)
        .zip(biases)
        .map(|((input, hidden), biases)| (input, hidden, biases))
        .collect()
}

/// The layout burn-nn's layers are built with: a one-direction layer takes the core's
/// `batch_first` and `reverse`; the directions inside a bidirectional layer are batch-first and
/// forwards (burn-nn's bidirectional layers convert the layout and run the reverse direction
/// step by step themselves).
fn direction_layout(core: &impl Recurrent) -> (bool, bool) {
    if core.bidirectional() {
        (true, false)
    } else {
        (core.batch_first(), core.reverse())
    }
}

/// What every `to_burn_nn` checks first: the layer type runs as many directions as the core.
fn check_directions<L: BurnNnLayer>(
    core_name: &str,
    core: &impl Recurrent,
) -> Result<(), ConfigError> {
    if L::BIDIRECTIONAL == core.bidirectional() {
        return Ok(());
    }
    Err(ConfigError::new(
        format!("{core_name}.bidirectional"),
        core.bidirectional(),
        format!(
            "{}: burn-nn's {} runs {}; ask for {}",
            L::BIDIRECTIONAL,
            L::NAME,
            if L::BIDIRECTIONAL {
                "both directions"
            } else {
                "one direction"
            },
            if core.bidirectional() {
                "the Bi layer"
            } else {
                "the one-direction layer"
            },
        ),
    ))
}

/// The burn-nn stack of a core: per layer, its directions built by `direction` and assembled.
fn stack_of<L: BurnNnLayer, Layer>(
    core: &impl Recurrent,
    layers: &[Layer],
    mut direction: impl FnMut(usize, &Layer) -> L::Direction,
) -> Vec<L> {
    let directions = core.num_directions();
    layers
        .chunks(directions)
        .enumerate()
        .map(|(index, both)| {
            let d_input = if index == 0 {
                core.input_size()
            } else {
                directions * core.hidden_size()
            };
            let parts = both.iter().map(|layer| direction(d_input, layer)).collect();
            L::assemble(parts, core.batch_first())
        })
        .collect()
}

impl DeepLstm {
    /// This core as burn-nn LSTMs, the way back from [`load_burn_nn`](Self::load_burn_nn): one
    /// [`burn::nn::Lstm`] per layer for a one-direction core, one [`burn::nn::BiLstm`] per
    /// layer for a bidirectional one (`let stack: Vec<nn::Lstm> = lstm.to_burn_nn()?`), on the
    /// core's device, each weight a copy of the core's, tracked as the core's are. The stack
    /// run layer after layer gives the core's outputs and states.
    ///
    /// # Errors
    /// A [`ConfigError`] when `L` runs another number of directions than the core.
    pub fn to_burn_nn<L: BurnNnLayer<Direction = nn::Lstm>>(&self) -> Result<Vec<L>, ConfigError> {
        check_directions::<L>("DeepLstm", self)?;
        let device = self.layers[0].input_weight.val().device();
        let (batch_first, reverse) = direction_layout(self);
        let hidden = self.hidden_size;
        Ok(stack_of::<L, _>(self, &self.layers, |d_input, layer| {
            let bias = layer.input_bias.is_some();
            let mut lstm = nn::LstmConfig::new(d_input, hidden, bias)
                .with_batch_first(batch_first)
                .with_reverse(reverse)
                .with_clip(layer.clip)
                .with_input_forget(layer.input_forget)
                .init(&device);
            let mut gates = unpack(
                layer.input_weight.val(),
                layer.hidden_weight.val(),
                layer.input_bias.as_ref().map(Param::val),
                layer.hidden_bias.as_ref().map(Param::val),
                hidden,
            )
            .into_iter();
            let mut next = |gate: GateController| {
                let (input, hidden, biases) = gates.next().expect("one block per gate");
                gate_from(gate, input, hidden, biases)
            };
            lstm.input_gate = next(lstm.input_gate);
            lstm.forget_gate = lstm.forget_gate.map(&mut next);
            lstm.cell_gate = next(lstm.cell_gate);
            lstm.output_gate = next(lstm.output_gate);
            lstm
        }))
    }
}

impl Gru {
    /// This core as burn-nn GRUs, the way back from [`load_burn_nn`](Self::load_burn_nn): one
    /// [`burn::nn::Gru`] per layer for a one-direction core, one [`burn::nn::BiGru`] per layer
    /// for a bidirectional one, on the core's device, tracked as the core's weights are.
    /// [`GruFormula::PyTorch`] becomes `reset_after = true`; d2l's formula `reset_after =
    /// false`, its one bias per gate on burn-nn's input side and zeros on the hidden side
    /// (the same sums: the same function).
    ///
    /// # Errors
    /// A [`ConfigError`] when `L` runs another number of directions than the core, or for a
    /// time-major or reversed one-direction core (burn-nn's `Gru` is batch-first and forwards
    /// only: use `BiGru`'s layout or a batch-first core).
    pub fn to_burn_nn<L: BurnNnLayer<Direction = nn::Gru>>(&self) -> Result<Vec<L>, ConfigError> {
        check_directions::<L>("Gru", self)?;
        if !self.bidirectional && (!self.batch_first || self.reverse) {
            let (field, value) = if self.reverse {
                ("reverse", true)
            } else {
                ("batch_first", false)
            };
            return Err(ConfigError::new(
                format!("Gru.{field}"),
                value,
                format!(
                    "{}: burn-nn's Gru reads [batch, steps, ..] forwards only",
                    !value
                ),
            ));
        }
        let device = self.layers[0].input_weight.val().device();
        let hidden = self.hidden_size;
        Ok(stack_of::<L, _>(self, &self.layers, |d_input, layer| {
            let bias = layer.input_bias.is_some();
            let mut gru = nn::GruConfig::new(d_input, hidden, bias)
                .with_reset_after(layer.formula == GruFormula::PyTorch)
                .with_clip(layer.clip)
                .init(&device);
            let mut gates = unpack(
                layer.input_weight.val(),
                layer.hidden_weight.val(),
                layer.input_bias.as_ref().map(Param::val),
                layer.hidden_bias.as_ref().map(Param::val),
                hidden,
            )
            .into_iter();
            let mut next = |gate: GateController| {
                let (input, hidden, biases) = gates.next().expect("one block per gate");
                gate_from(gate, input, hidden, biases)
            };
            gru.reset_gate = next(gru.reset_gate);
            gru.update_gate = next(gru.update_gate);
            gru.new_gate = next(gru.new_gate);
            gru
        }))
    }
}

impl RnnScratch {
    /// This core as burn-nn RNNs, the way back from [`load_burn_nn`](Self::load_burn_nn): one
    /// [`burn::nn::Rnn`] per layer for a one-direction core, one [`burn::nn::BiRnn`] per layer
    /// for a bidirectional one, on the core's device, tracked as the core's weights are; `b_h`
    /// becomes burn-nn's input-side bias, with zeros on the hidden side (the same function).
    ///
    /// # Errors
    /// A [`ConfigError`] when `L` runs another number of directions than the core.
    pub fn to_burn_nn<L: BurnNnLayer<Direction = nn::Rnn>>(&self) -> Result<Vec<L>, ConfigError> {
        check_directions::<L>("RnnScratch", self)?;
        let device = self.layers[0].w_xh.val().device();
        let (batch_first, reverse) = direction_layout(self);
        let hidden = self.hidden_size;
        Ok(stack_of::<L, _>(self, &self.layers, |d_input, layer| {
            let activation = match layer.activation {
                Activation::Tanh => nn::activation::ActivationConfig::Tanh,
                Activation::Relu => nn::activation::ActivationConfig::Relu,
            };
            let mut rnn = nn::RnnConfig::new(d_input, hidden, layer.b_h.is_some())
                .with_batch_first(batch_first)
                .with_reverse(reverse)
                .with_clip(layer.clip)
                .with_hidden_activation(activation)
                .init(&device);
            let (input, hidden, biases) = unpack(
                layer.w_xh.val(),
                layer.w_hh.val(),
                layer.b_h.as_ref().map(Param::val),
                None,
                hidden,
            )
            .remove(0);
            rnn.gate = gate_from(rnn.gate, input, hidden, biases);
            rnn
        }))
    }
}
