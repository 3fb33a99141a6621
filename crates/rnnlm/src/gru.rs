//! Gated recurrent unit, PyTorch's formula by default, d2l's on request.

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;

use crate::config::{
    ConfigError, GruFormula, WeightInit, layer_inputs, validate_core, validate_options,
};
use crate::recurrent::{LayerState, RecurrentLayer, impl_recurrent_core};

/// Configuration of a [`Gru`].
#[derive(Config, Debug)]
pub struct GruConfig {
    /// Width of each input vector.
    pub input_size: usize,
    /// Width of every layer's hidden state.
    pub hidden_size: usize,
    /// Number of stacked layers.
    #[config(default = 1)]
    pub num_layers: usize,
    /// Where the reset gate acts.
    #[config(default = "GruFormula::PyTorch")]
    pub formula: GruFormula,
    /// Weight initialisation (PyTorch's U(-1/√hidden, 1/√hidden) by default).
    #[config(default = "WeightInit::PyTorch")]
    pub init: WeightInit,
    /// Dropout on the outputs of every layer but the last, while training.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Whether `forward` takes and returns batch-major tensors, `[batch, steps, ..]` (burn-nn's
    /// default), or time-major ones, `[steps, batch, ..]` (PyTorch's default,
    /// `batch_first=False`). The state is `[num_layers, batch, hidden]` either way.
    #[config(default = true)]
    pub batch_first: bool,
    /// Whether every layer also runs over the sequence backwards (PyTorch's
    /// `bidirectional=True`): the two directions' outputs, side by side, make the outputs
    /// `[batch, steps, 2·hidden]` and the next layer's input; the state holds
    /// `num_layers·2` layers, forward before reverse in each layer.
    #[config(default = false)]
    pub bidirectional: bool,
    /// Whether the layers have biases (burn-nn's `bias`, PyTorch's `bias`). Without them the
    /// gates are `x W_x + h W_h` alone, and no bias parameter exists.
    #[config(default = true)]
    pub bias: bool,
    /// Whether a one-direction core runs over the sequence last step first: output `t` is
    /// then the state after reading steps `t..steps`, and the final state the one after step
    /// 0. Not with `bidirectional`.
    #[config(default = false)]
    pub reverse: bool,
    /// Clamps the hidden state to `[-clip, clip]` after every step (burn-nn's GRU `clip`), in
    /// the fused operation as in the per-step tensor operations.
    #[config(default = "None")]
    pub clip: Option<f64>,
}

impl GruConfig {
    /// Checks the sizes, the dropout and the initialisation.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_core(
            "",
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.dropout,
        )?;
        validate_options(self.reverse, self.bidirectional, self.clip)?;
        self.init.validate("init")
    }

    /// Builds the module on `device`.
    ///
    /// # Panics
    /// If [`validate`](Self::validate) fails; [`try_init`](Self::try_init) returns the error
    /// instead.
    pub fn init(&self, device: &Device) -> Gru {
        self.try_init(device)
            .unwrap_or_else(|err| panic!("GruConfig: {err}"))
    }

    /// Builds the module on `device`, or says which field is invalid (its name, its value and
    /// what it accepts).
    pub fn try_init(&self, device: &Device) -> Result<Gru, ConfigError> {
        self.validate()?;
        let h = self.hidden_size;
        let layers = layer_inputs(self.input_size, h, self.num_layers, self.bidirectional)
            .into_iter()
            .map(|input| {
                GruLayer {
                    input_weight: Param::from_tensor(self.init.weight([input, 3 * h], h, device)),
                    input_bias: self
                        .bias
                        .then(|| Param::from_tensor(self.init.bias(3 * h, h, device))),
                    hidden_weight: Param::from_tensor(self.init.weight([h, 3 * h], h, device)),
                    // d2l's GRU has one bias per gate; PyTorch's has a second one, and the
                    // candidate's (b_hn) sits inside the reset gate, so it is not redundant.
                    hidden_bias: (self.bias && self.formula == GruFormula::PyTorch)
                        .then(|| Param::from_tensor(self.init.bias(3 * h, h, device))),
                    formula: self.formula,
                    clip: self.clip,
                }
            })
            .collect();
        Ok(Gru {
            layers,
            dropout: DropoutConfig::new(self.dropout).init(),
            input_size: self.input_size,
            hidden_size: h,
            batch_first: self.batch_first,
            bidirectional: self.bidirectional,
            reverse: self.reverse,
        })
    }
}

/// One layer of [`Gru`]: the three gates' weights packed side by side in PyTorch's order
/// (reset `r`, update `z`, candidate `n`), so each step costs one hidden matmul.
#[derive(Module, Debug)]
pub struct GruLayer {
    /// `[W_ir | W_iz | W_in]`: `[input, 3·hidden]` (PyTorch's `weight_ih_l{k}` transposed).
    pub input_weight: Param<Tensor<2>>,
    /// `[b_ir | b_iz | b_in]`: `[3·hidden]`; `None` for a core built with `bias = false`.
    pub input_bias: Option<Param<Tensor<1>>>,
    /// `[W_hr | W_hz | W_hn]`: `[hidden, 3·hidden]` (PyTorch's `weight_hh_l{k}` transposed).
    pub hidden_weight: Param<Tensor<2>>,
    /// `[b_hr | b_hz | b_hn]`: `[3·hidden]`; present with [`GruFormula::PyTorch`] and biases
    /// only.
    pub hidden_bias: Option<Param<Tensor<1>>>,
    /// Where the reset gate acts.
    #[module(skip)]
    pub formula: GruFormula,
    /// The hidden state's clamp, `[-clip, clip]` after every step (see the config's `clip`).
    #[module(skip)]
    pub clip: Option<f64>,
}

/// Gated recurrent unit with any number of stacked layers. Per layer, with `σ` the sigmoid:
///
/// ```text
/// r = σ(x W_ir + b_ir + h W_hr + b_hr)
/// z = σ(x W_iz + b_iz + h W_hz + b_hz)
/// n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))   PyTorch (default)
/// n = tanh(x W_in + b_in + (r ⊙ h) W_hn)          d2l
/// h' = (1 - z) ⊙ n + z ⊙ h                       (clamped to [-clip, clip] with clip)
/// ```
///
/// Implements [`Recurrent`](crate::Recurrent): inputs `[batch, steps, input]`, outputs `[batch, steps, hidden]`,
/// state `[num_layers, batch, hidden]`.
#[derive(Module, Debug)]
pub struct Gru {
    /// The stacked layers, input side first (two per layer when bidirectional: forward, then
    /// reverse).
    pub layers: Vec<GruLayer>,
    /// Dropout between layers.
    pub dropout: Dropout,
    /// Width of each input vector.
    pub input_size: usize,
    /// Width of every layer's hidden state.
    pub hidden_size: usize,
    /// Whether `forward` is batch-major (see the config's `batch_first`).
    pub batch_first: bool,
    /// Whether every layer runs in both directions (see the config's `bidirectional`); then
    /// `layers` holds two entries per layer, forward then reverse, as PyTorch numbers them.
    pub bidirectional: bool,
    /// Whether the (one-direction) core runs last step first (see the config's `reverse`).
    pub reverse: bool,
}

/// The hidden weights as the step needs them.
pub(crate) enum GruStepWeights {
    /// `W_h` `[hidden, 3·hidden]` and `b_h` `[1, 3·hidden]`.
    PyTorch {
        weight: Tensor<2>,
        bias: Option<Tensor<2>>,
    },
    /// `[W_hr | W_hz]` `[hidden, 2·hidden]` and `W_hn` `[hidden, hidden]`, split once per
    /// sequence because the candidate's matmul has to wait for the reset gate.
    D2l {
        gates: Tensor<2>,
        candidate: Tensor<2>,
    },
}

impl RecurrentLayer for GruLayer {
    type StepWeights = (GruStepWeights, Option<f64>);

    fn input_weight(&self) -> Tensor<2> {
        self.input_weight.val()
    }

    fn input_bias(&self) -> Option<Tensor<1>> {
        self.input_bias.as_ref().map(Param::val)
    }

    fn hidden_weight(&self) -> Tensor<2> {
        self.hidden_weight.val()
    }

    fn hidden_bias(&self) -> Option<Tensor<1>> {
        match self.formula {
            GruFormula::PyTorch => self.hidden_bias.as_ref().map(|b| b.val()),
            GruFormula::D2l => None,
        }
    }

    fn recurrence(&self) -> rnnlm_fused::CellKind {
        let clip = crate::config::kernel_clip(self.clip);
        match self.formula {
            GruFormula::PyTorch => rnnlm_fused::CellKind::Gru(clip),
            GruFormula::D2l => rnnlm_fused::CellKind::GruD2l(clip),
        }
    }

    fn composite_only(&self) -> bool {
        crate::config::clip_beyond_kernels(self.clip)
    }

    fn step_weights(&self) -> Self::StepWeights {
        let weight = self.hidden_weight.val();
        let h = weight.dims()[0];
        let weights = match self.formula {
            GruFormula::PyTorch => GruStepWeights::PyTorch {
                weight,
                bias: self.hidden_bias.as_ref().map(|b| b.val().unsqueeze_dim(0)),
            },
            GruFormula::D2l => GruStepWeights::D2l {
                gates: weight.clone().narrow(1, 0, 2 * h),
                candidate: weight.narrow(1, 2 * h, h),
            },
        };
        (weights, self.clip)
    }

    fn step(
        (weights, clip): &Self::StepWeights,
        projected: Tensor<2>,
        state: LayerState,
    ) -> LayerState {
        let h_prev = state.h;
        let h = h_prev.dims()[1];
        let input_rz = projected.clone().narrow(1, 0, 2 * h);
        let input_n = projected.narrow(1, 2 * h, h);
        let (update, candidate) = match weights {
            GruStepWeights::PyTorch { weight, bias } => {
                let mut hw = h_prev.clone().matmul(weight.clone());
                if let Some(bias) = bias {
                    hw = hw + bias.clone();
                }
                let rz = sigmoid(input_rz + hw.clone().narrow(1, 0, 2 * h));
                let reset = rz.clone().narrow(1, 0, h);
                let candidate = (input_n + reset * hw.narrow(1, 2 * h, h)).tanh();
                (rz.narrow(1, h, h), candidate)
            }
            GruStepWeights::D2l { gates, candidate } => {
                let rz = sigmoid(input_rz + h_prev.clone().matmul(gates.clone()));
                let reset = rz.clone().narrow(1, 0, h);
                let candidate =
                    (input_n + (reset * h_prev.clone()).matmul(candidate.clone())).tanh();
                (rz.narrow(1, h, h), candidate)
            }
        };
        // (1 - z) ⊙ n + z ⊙ h, with one multiplication fewer.
        let h = candidate.clone() + update * (h_prev - candidate);
        LayerState {
            h: match *clip {
                Some(clip) => h.clamp(-clip, clip),
                None => h,
            },
            c: None,
        }
    }
}

impl_recurrent_core!(Gru, has_cell: false);
