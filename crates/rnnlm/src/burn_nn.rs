//! Weights of burn-nn's recurrent layers (`burn::nn::Rnn`, `Lstm`, `Gru`, one module per layer,
//! stacked by the user) loaded into the cores, for a model that moves from burn-nn to rnnlm
//! without retraining.
//!
//! burn-nn keeps one `GateController` per gate, two `Linear`s each (`[in, hidden]` on the
//! input, `[hidden, hidden]` on the state, a bias on each); a core keeps, per layer, the gates
//! side by side in one `[in, gates·hidden]` and one `[hidden, gates·hidden]` weight, so that a
//! step is one product. Loading concatenates the gates in the core's order (LSTM i, f, g, o;
//! GRU r, z, n); the values are moved, never changed, except where a core has one bias where
//! burn-nn has two that always appear summed (the vanilla RNN, d2l's GRU formula).

use burn::module::Param;
use burn::nn::{self, GateController};
use burn::prelude::*;

use crate::config::{Activation, ConfigError, GruFormula};
use crate::{DeepLstm, Gru, RnnScratch};

/// The two products and two biases of one burn-nn gate, checked against the core's sizes.
struct GateWeights {
    input: Tensor<2>,
    hidden: Tensor<2>,
    input_bias: Tensor<1>,
    hidden_bias: Tensor<1>,
}

/// What every layer is checked against: the core's name and sizes, and the layer's index.
struct Target<'a> {
    core: &'a str,
    layer: usize,
    input_size: usize,
    hidden_size: usize,
}

impl Target<'_> {
    fn error(&self, field: &str, value: impl std::fmt::Debug, expected: String) -> ConfigError {
        ConfigError::new(
            format!("burn-nn layer {} (into {}): {field}", self.layer, self.core),
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
                format!("the hidden size of layer {}", self.layer - 1)
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
        let bias = |linear: &nn::Linear, which: &str| {
            linear.bias.as_ref().map(Param::val).ok_or_else(|| {
                self.error(
                    &format!("{name}.{which}.bias"),
                    "None",
                    "a bias (the layer built with bias = true): rnnlm's cores always have their \
                     biases, and a missing one would start training from zero where burn-nn's \
                     stays absent"
                        .to_owned(),
                )
            })
        };
        Ok(GateWeights {
            input_bias: bias(&gate.input_transform, "input_transform")?,
            hidden_bias: bias(&gate.hidden_transform, "hidden_transform")?,
            input,
            hidden,
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

    fn no_clip(&self, clip: Option<f64>, what: &str) -> Result<(), ConfigError> {
        match clip {
            None => Ok(()),
            Some(clip) => Err(self.error(
                "clip",
                clip,
                format!("None: rnnlm's cores do not clip their {what}"),
            )),
        }
    }

    fn forward_in_time(&self, reverse: bool) -> Result<(), ConfigError> {
        if reverse {
            Err(self.error(
                "reverse",
                true,
                "false: rnnlm's cores run forward in time".to_owned(),
            ))
        } else {
            Ok(())
        }
    }
}

fn activation_name(activation: &nn::activation::Activation) -> String {
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

/// What every loader starts with: as many burn-nn layers as the core has (`found` against
/// `layers`), then each layer's target, whose input is the core's input for layer 0 and the
/// layer below's hidden state above it.
fn layer_targets(
    core: &str,
    found: usize,
    layers: usize,
    input_size: usize,
    hidden_size: usize,
    bidirectional: bool,
) -> Result<impl Iterator<Item = Target<'_>>, ConfigError> {
    if bidirectional {
        return Err(ConfigError::new(
            format!("{core}.bidirectional"),
            true,
            "false: burn-nn's layers loaded here run one direction; build the core with \
             bidirectional = false",
        ));
    }
    if found != layers {
        return Err(ConfigError::new(
            format!("burn-nn layers (into {core})"),
            found,
            format!("{layers}, the core's num_layers: one burn-nn module per layer"),
        ));
    }
    Ok((0..layers).map(move |layer| Target {
        core,
        layer,
        input_size: if layer == 0 { input_size } else { hidden_size },
        hidden_size,
    }))
}

/// `[a | b | ..]` along the gate axis.
fn side_by_side<const D: usize>(parts: Vec<Tensor<D>>) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::cat(parts, D - 1))
}

impl DeepLstm {
    /// Loads the weights of burn-nn LSTMs, one [`burn::nn::Lstm`] per layer, input side first,
    /// into this core (built with the same sizes and number of layers). The result gives the
    /// same outputs and states as running the burn-nn layers one after the other.
    ///
    /// `input_weight` `[in, 4·hidden]` becomes `[W_i | W_f | W_g | W_o]` from the gates'
    /// `input_transform` weights (burn-nn's `input_gate`, `forget_gate`, `cell_gate`,
    /// `output_gate`), `hidden_weight` the same from their `hidden_transform`s, and the two
    /// biases likewise.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the layer, the field and both values, and nothing loaded, when
    /// the number of layers, a size, a missing bias (`bias = false`), a coupled input-forget
    /// gate, a cell clip, a reversed layer or an activation other than sigmoid / tanh / tanh
    /// does not fit this core.
    pub fn load_burn_nn(mut self, layers: &[nn::Lstm]) -> Result<Self, ConfigError> {
        let targets = layer_targets(
            "DeepLstm",
            layers.len(),
            self.layers.len(),
            self.input_size,
            self.hidden_size,
            self.bidirectional,
        )?;
        let mut loaded = Vec::with_capacity(layers.len());
        for (target, layer) in targets.zip(layers) {
            let forget = match (&layer.forget_gate, layer.input_forget) {
                (Some(gate), false) => gate,
                _ => {
                    return Err(target.error(
                        "input_forget",
                        true,
                        "false: rnnlm's LSTM has a forget gate of its own".to_owned(),
                    ));
                }
            };
            target.no_clip(layer.clip, "cell")?;
            target.forward_in_time(layer.reverse)?;
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
            let gates = [
                target.gate("input_gate", &layer.input_gate)?,
                target.gate("forget_gate", forget)?,
                target.gate("cell_gate", &layer.cell_gate)?,
                target.gate("output_gate", &layer.output_gate)?,
            ];
            loaded.push(gates);
        }
        for (layer, gates) in self.layers.iter_mut().zip(loaded) {
            layer.input_weight = side_by_side(gates.iter().map(|g| g.input.clone()).collect());
            layer.hidden_weight = side_by_side(gates.iter().map(|g| g.hidden.clone()).collect());
            layer.input_bias = side_by_side(gates.iter().map(|g| g.input_bias.clone()).collect());
            layer.hidden_bias = side_by_side(gates.iter().map(|g| g.hidden_bias.clone()).collect());
        }
        Ok(self)
    }
}

impl Gru {
    /// Loads the weights of burn-nn GRUs, one [`burn::nn::Gru`] per layer, input side first,
    /// into this core (built with the same sizes and number of layers). burn-nn's
    /// `reset_after = true` is [`GruFormula::PyTorch`] (both biases kept), `reset_after =
    /// false` is [`GruFormula::D2l`] (the reset gate before the hidden product; each gate's two
    /// biases, which only ever appear summed, become one).
    ///
    /// `input_weight` `[in, 3·hidden]` becomes `[W_r | W_z | W_n]` from burn-nn's `reset_gate`,
    /// `update_gate` and `new_gate`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the layer, the field and both values, and nothing loaded, when
    /// the number of layers, a size, a missing bias, `reset_after` against this core's formula,
    /// a hidden-state clip or an activation other than sigmoid / tanh does not fit.
    pub fn load_burn_nn(mut self, layers: &[nn::Gru]) -> Result<Self, ConfigError> {
        let targets = layer_targets(
            "Gru",
            layers.len(),
            self.layers.len(),
            self.input_size,
            self.hidden_size,
            self.bidirectional,
        )?;
        let mut loaded = Vec::with_capacity(layers.len());
        for (target, (layer, own)) in targets.zip(layers.iter().zip(&self.layers)) {
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
            target.no_clip(layer.clip, "hidden state")?;
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
            loaded.push([
                target.gate("reset_gate", &layer.reset_gate)?,
                target.gate("update_gate", &layer.update_gate)?,
                target.gate("new_gate", &layer.new_gate)?,
            ]);
        }
        for (layer, gates) in self.layers.iter_mut().zip(loaded) {
            layer.input_weight = side_by_side(gates.iter().map(|g| g.input.clone()).collect());
            layer.hidden_weight = side_by_side(gates.iter().map(|g| g.hidden.clone()).collect());
            let (input_bias, hidden_bias): (Vec<_>, Vec<_>) = gates
                .into_iter()
                .map(|g| (g.input_bias, g.hidden_bias))
                .unzip();
            match layer.formula {
                GruFormula::PyTorch => {
                    layer.input_bias = side_by_side(input_bias);
                    layer.hidden_bias = Some(side_by_side(hidden_bias));
                }
                GruFormula::D2l => {
                    let summed = input_bias.into_iter().zip(hidden_bias).map(|(i, h)| i + h);
                    layer.input_bias = side_by_side(summed.collect());
                    layer.hidden_bias = None;
                }
            }
        }
        Ok(self)
    }
}

impl RnnScratch {
    /// Loads the weights of burn-nn RNNs, one [`burn::nn::Rnn`] per layer, input side first,
    /// into this core (built with the same sizes, number of layers and activation). burn-nn's
    /// `input_transform` weight becomes `w_xh` `[in, hidden]`, its `hidden_transform` weight
    /// `w_hh`, and its two biases, which only ever appear summed, `b_h`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the layer, the field and both values, and nothing loaded, when
    /// the number of layers, a size, a missing bias, the activation (against this core's), a
    /// hidden-state clip or a reversed layer does not fit.
    pub fn load_burn_nn(mut self, layers: &[nn::Rnn]) -> Result<Self, ConfigError> {
        let targets = layer_targets(
            "RnnScratch",
            layers.len(),
            self.layers.len(),
            self.input_size,
            self.hidden_size,
            self.bidirectional,
        )?;
        let mut loaded = Vec::with_capacity(layers.len());
        for (target, (layer, own)) in targets.zip(layers.iter().zip(&self.layers)) {
            let (expected, is): (&str, fn(&nn::activation::Activation) -> bool) =
                match own.activation {
                    Activation::Tanh => ("Tanh, this core's activation", is_tanh),
                    Activation::Relu => ("Relu, this core's activation", |a| {
                        matches!(a, nn::activation::Activation::Relu(_))
                    }),
                };
            target.activation("hidden_activation", &layer.hidden_activation, expected, is)?;
            target.no_clip(layer.clip, "hidden state")?;
            target.forward_in_time(layer.reverse)?;
            loaded.push(target.gate("gate", &layer.gate)?);
        }
        for (layer, gate) in self.layers.iter_mut().zip(loaded) {
            layer.w_xh = Param::from_tensor(gate.input);
            layer.w_hh = Param::from_tensor(gate.hidden);
            layer.b_h = Param::from_tensor(gate.input_bias + gate.hidden_bias);
        }
        Ok(self)
    }
}
