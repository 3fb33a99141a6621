//! d2l's vanilla RNN from scratch (`RNNScratch` / `StackedRNNScratch`).

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;

use crate::config::{
    Activation, ConfigError, WeightInit, layer_inputs, validate_core, validate_options,
};
use crate::recurrent::{LayerState, RecurrentLayer, impl_recurrent_core};

/// Configuration of a [`RnnScratch`].
#[derive(Config, Debug)]
pub struct RnnScratchConfig {
    /// Width of each input vector.
    pub input_size: usize,
    /// Width of every layer's hidden state.
    pub hidden_size: usize,
    /// Number of stacked layers; layer `l > 0` reads layer `l - 1`'s hidden states.
    #[config(default = 1)]
    pub num_layers: usize,
    /// Weight initialisation; d2l draws N(0, 0.01²) and zero biases.
    #[config(default = "WeightInit::Normal { sigma: 0.01 }")]
    pub init: WeightInit,
    /// Hidden non-linearity.
    #[config(default = "Activation::Tanh")]
    pub activation: Activation,
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
    /// Whether the layers have a bias `b_h` (burn-nn's `bias`). Without it the layer is
    /// `φ(X W_xh + H W_hh)`, and no bias parameter exists.
    #[config(default = true)]
    pub bias: bool,
    /// Whether a one-direction core runs over the sequence last step first (burn-nn's
    /// `reverse`): output `t` is then the state after reading steps `t..steps`, and the final
    /// state the one after step 0. Not with `bidirectional`.
    #[config(default = false)]
    pub reverse: bool,
    /// Clamps the hidden state to `[-clip, clip]` after every step (burn-nn's RNN `clip`), in
    /// the fused operation as in the per-step tensor operations.
    #[config(default = "None")]
    pub clip: Option<f64>,
}

impl RnnScratchConfig {
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
    pub fn init(&self, device: &Device) -> RnnScratch {
        self.try_init(device)
            .unwrap_or_else(|err| panic!("RnnScratchConfig: {err}"))
    }

    /// Builds the module on `device`, or says which field is invalid (its name, its value and
    /// what it accepts).
    pub fn try_init(&self, device: &Device) -> Result<RnnScratch, ConfigError> {
        self.validate()?;
        let h = self.hidden_size;
        let layers = layer_inputs(self.input_size, h, self.num_layers, self.bidirectional)
            .into_iter()
            .map(|input| RnnScratchLayer {
                w_xh: Param::from_tensor(self.init.weight([input, h], h, device)),
                w_hh: Param::from_tensor(self.init.weight([h, h], h, device)),
                b_h: self
                    .bias
                    .then(|| Param::from_tensor(self.init.bias(h, h, device))),
                activation: self.activation,
                clip: self.clip,
            })
            .collect();
        Ok(RnnScratch {
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

/// One layer of [`RnnScratch`], with d2l's parameter names.
#[derive(Module, Debug)]
pub struct RnnScratchLayer {
    /// Input weight `W_xh`: `[input, hidden]`.
    pub w_xh: Param<Tensor<2>>,
    /// Recurrent weight `W_hh`: `[hidden, hidden]`.
    pub w_hh: Param<Tensor<2>>,
    /// Bias `b_h`: `[hidden]`; `None` for a core built with `bias = false`.
    pub b_h: Option<Param<Tensor<1>>>,
    /// Hidden non-linearity φ.
    #[module(skip)]
    pub activation: Activation,
    /// The hidden state's clamp, `[-clip, clip]` after every step (see the config's `clip`).
    #[module(skip)]
    pub clip: Option<f64>,
}

/// The vanilla RNN: per layer `H_t = φ(X_t W_xh + H_{t-1} W_hh + b_h)` with φ = tanh (or ReLU),
/// layers stacked as in d2l's deep RNN (clamped to `[-clip, clip]` with `clip`).
///
/// Implements [`Recurrent`](crate::Recurrent): inputs `[batch, steps, input]`, outputs `[batch, steps, hidden]`,
/// state `[num_layers, batch, hidden]`.
#[derive(Module, Debug)]
pub struct RnnScratch {
    /// The stacked layers, input side first (two per layer when bidirectional: forward, then
    /// reverse).
    pub layers: Vec<RnnScratchLayer>,
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

impl RecurrentLayer for RnnScratchLayer {
    type StepWeights = (Tensor<2>, Activation, Option<f64>);

    fn input_weight(&self) -> Tensor<2> {
        self.w_xh.val()
    }

    fn input_bias(&self) -> Option<Tensor<1>> {
        self.b_h.as_ref().map(Param::val)
    }

    fn hidden_weight(&self) -> Tensor<2> {
        self.w_hh.val()
    }

    fn recurrence(&self) -> rnnlm_fused::CellKind {
        let activation = match self.activation {
            Activation::Tanh => rnnlm_fused::Activation::Tanh,
            Activation::Relu => rnnlm_fused::Activation::Relu,
        };
        rnnlm_fused::CellKind::Rnn(activation, crate::config::kernel_clip(self.clip))
    }

    fn composite_only(&self) -> bool {
        crate::config::clip_beyond_kernels(self.clip)
    }

    fn step_weights(&self) -> Self::StepWeights {
        (self.w_hh.val(), self.activation, self.clip)
    }

    fn step(
        (w_hh, activation, clip): &Self::StepWeights,
        projected: Tensor<2>,
        state: LayerState,
    ) -> LayerState {
        let h = activation.apply(projected + state.h.matmul(w_hh.clone()));
        LayerState {
            h: match *clip {
                Some(clip) => h.clamp(-clip, clip),
                None => h,
            },
            c: None,
        }
    }
}

impl_recurrent_core!(RnnScratch, has_cell: false);
