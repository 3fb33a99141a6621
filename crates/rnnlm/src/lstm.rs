//! Multi-layer LSTM with PyTorch's gate order and formulas.

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;

use crate::config::{
    ConfigError, WeightInit, clip_beyond_kernels, kernel_clip, layer_inputs, validate_core,
    validate_options,
};
use crate::recurrent::{LayerState, RecurrentLayer, impl_recurrent_core};

/// Configuration of a [`DeepLstm`].
#[derive(Config, Debug)]
pub struct DeepLstmConfig {
    /// Width of each input vector.
    pub input_size: usize,
    /// Width of every layer's hidden state and memory cell.
    pub hidden_size: usize,
    /// Number of stacked layers.
    #[config(default = 1)]
    pub num_layers: usize,
    /// Weight initialisation (PyTorch's U(-1/√hidden, 1/√hidden) by default).
    #[config(default = "WeightInit::PyTorch")]
    pub init: WeightInit,
    /// Dropout on the outputs of every layer but the last, while training (PyTorch's
    /// `nn.LSTM(dropout=..)`).
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
    /// Whether the layers have their two bias vectors (burn-nn's `bias`, PyTorch's `bias`).
    /// Without them the gates are `x W_x + h W_h` alone, and no bias parameter exists.
    #[config(default = true)]
    pub bias: bool,
    /// Whether a one-direction core runs over the sequence last step first (burn-nn's
    /// `reverse`): output `t` is then the state after reading steps `t..steps`, and the final
    /// state the one after step 0. Not with `bidirectional`.
    #[config(default = false)]
    pub reverse: bool,
    /// Clamps the memory cell `c` to `[-clip, clip]` after every step (burn-nn's LSTM `clip`),
    /// in the fused operation as in the per-step tensor operations.
    #[config(default = "None")]
    pub clip: Option<f64>,
    /// Couples the input and forget gates, `f = 1 - i` (burn-nn's `input_forget`): the layers
    /// have three gate blocks (`i g o`) instead of four.
    #[config(default = false)]
    pub input_forget: bool,
}

impl DeepLstmConfig {
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
    pub fn init(&self, device: &Device) -> DeepLstm {
        self.try_init(device)
            .unwrap_or_else(|err| panic!("DeepLstmConfig: {err}"))
    }

    /// Builds the module on `device`, or says which field is invalid (its name, its value and
    /// what it accepts).
    pub fn try_init(&self, device: &Device) -> Result<DeepLstm, ConfigError> {
        self.validate()?;
        let h = self.hidden_size;
        let gates = if self.input_forget { 3 } else { 4 };
        let bias = || {
            self.bias
                .then(|| Param::from_tensor(self.init.bias(gates * h, h, device)))
        };
        let layers = layer_inputs(self.input_size, h, self.num_layers, self.bidirectional)
            .into_iter()
            .map(|input| {
                LstmLayer {
                    input_weight: Param::from_tensor(self.init.weight(
                        [input, gates * h],
                        h,
                        device,
                    )),
                    hidden_weight: Param::from_tensor(self.init.weight([h, gates * h], h, device)),
                    // Two bias vectors, as nn.LSTM: they only ever appear as their sum, but
                    // each is a parameter, so SGD moves the sum twice as fast as it would move
                    // a single vector. Keeping both keeps PyTorch's training dynamics.
                    input_bias: bias(),
                    hidden_bias: bias(),
                    clip: self.clip,
                    input_forget: self.input_forget,
                }
            })
            .collect();
        Ok(DeepLstm {
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

/// One layer of [`DeepLstm`]: the four gates packed side by side in PyTorch's order
/// (input `i`, forget `f`, cell candidate `g`, output `o`), so a step costs one hidden matmul
/// of width `4·hidden`, as in char-rnn. With a coupled input-forget gate (`input_forget`) the
/// layer has three blocks, `i g o`, and runs as the four-block layer `[i | -i | g | o]`
/// (`σ(-x) = 1 - σ(x)`), whose gradients autodiff sums back into `i`.
#[derive(Module, Debug)]
pub struct LstmLayer {
    /// `[W_ii | W_if | W_ig | W_io]`: `[input, 4·hidden]` (PyTorch's `weight_ih_l{k}` transposed);
    /// `[W_ii | W_ig | W_io]`, `[input, 3·hidden]`, with `input_forget`.
    pub input_weight: Param<Tensor<2>>,
    /// `[W_hi | W_hf | W_hg | W_ho]`: `[hidden, 4·hidden]` (PyTorch's `weight_hh_l{k}` transposed);
    /// `[hidden, 3·hidden]` with `input_forget`.
    pub hidden_weight: Param<Tensor<2>>,
    /// `b_ih`: `[4·hidden]` (`[3·hidden]` with `input_forget`); `None` for a core built with
    /// `bias = false`.
    pub input_bias: Option<Param<Tensor<1>>>,
    /// `b_hh`: `[4·hidden]` (`[3·hidden]` with `input_forget`); `None` without biases.
    pub hidden_bias: Option<Param<Tensor<1>>>,
    /// The memory cell's clamp, `[-clip, clip]` after every step (see the config's `clip`).
    #[module(skip)]
    pub clip: Option<f64>,
    /// Whether the forget gate is `1 - i` (see the config's `input_forget`).
    #[module(skip)]
    pub input_forget: bool,
}

impl LstmLayer {
    /// Gate blocks this layer stores: 4, or 3 with a coupled input-forget gate.
    pub fn gates(&self) -> usize {
        if self.input_forget { 3 } else { 4 }
    }

    /// `[i g o]` -> `[i | -i | g | o]` along the gate axis (the last one); unchanged for an
    /// uncoupled layer.
    fn four_blocks<const D: usize>(&self, packed: Tensor<D>) -> Tensor<D> {
        if !self.input_forget {
            return packed;
        }
        let axis = D - 1;
        let h = packed.dims()[axis] / 3;
        let input = packed.clone().narrow(axis, 0, h);
        Tensor::cat(
            vec![input.clone(), input.neg(), packed.narrow(axis, h, 2 * h)],
            axis,
        )
    }
}

/// LSTM with any number of stacked layers and dropout between them. Per layer, with `σ` the
/// sigmoid and `[i f g o] = x W_x + b_ih + h W_h + b_hh` split in four:
///
/// ```text
/// c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)        (f = -i with input_forget; c' clamped with clip)
/// h' = σ(o) ⊙ tanh(c')
/// ```
///
/// Implements [`Recurrent`](crate::Recurrent): inputs `[batch, steps, input]`, outputs `[batch, steps, hidden]`
/// (the last layer's `h`), state `hidden` and `cell` `[num_layers, batch, hidden]`.
#[derive(Module, Debug)]
pub struct DeepLstm {
    /// The stacked layers, input side first (two per layer when bidirectional: forward, then
    /// reverse).
    pub layers: Vec<LstmLayer>,
    /// Dropout between layers; never after the last one, inactive without autodiff.
    pub dropout: Dropout,
    /// Width of each input vector.
    pub input_size: usize,
    /// Width of every layer's state.
    pub hidden_size: usize,
    /// Whether `forward` is batch-major (see the config's `batch_first`).
    pub batch_first: bool,
    /// Whether every layer runs in both directions (see the config's `bidirectional`); then
    /// `layers` holds two entries per layer, forward then reverse, as PyTorch numbers them.
    pub bidirectional: bool,
    /// Whether the (one-direction) core runs last step first (see the config's `reverse`).
    pub reverse: bool,
}

impl RecurrentLayer for LstmLayer {
    type StepWeights = (Tensor<2>, Option<f64>);

    fn input_weight(&self) -> Tensor<2> {
        self.four_blocks(self.input_weight.val())
    }

    fn input_bias(&self) -> Option<Tensor<1>> {
        // Added once to the projection of every step; each vector still gets the full gradient.
        let sum = match (&self.input_bias, &self.hidden_bias) {
            (Some(input), Some(hidden)) => input.val() + hidden.val(),
            (Some(one), None) | (None, Some(one)) => one.val(),
            (None, None) => return None,
        };
        Some(self.four_blocks(sum))
    }

    fn hidden_weight(&self) -> Tensor<2> {
        self.four_blocks(self.hidden_weight.val())
    }

    fn recurrence(&self) -> rnnlm_fused::CellKind {
        rnnlm_fused::CellKind::Lstm(kernel_clip(self.clip))
    }

    fn composite_only(&self) -> bool {
        clip_beyond_kernels(self.clip)
    }

    fn step_weights(&self) -> Self::StepWeights {
        (self.hidden_weight(), self.clip)
    }

    fn step(
        (hidden_weight, clip): &Self::StepWeights,
        projected: Tensor<2>,
        state: LayerState,
    ) -> LayerState {
        let h = state.h.dims()[1];
        let c_prev = state
            .c
            .expect("the engine checked that an LSTM state has a cell");
        let gates = projected + state.h.matmul(hidden_weight.clone());
        // i and f are adjacent: one sigmoid call for both.
        let input_forget = sigmoid(gates.clone().narrow(1, 0, 2 * h));
        let input_gate = input_forget.clone().narrow(1, 0, h);
        let forget_gate = input_forget.narrow(1, h, h);
        let candidate = gates.clone().narrow(1, 2 * h, h).tanh();
        let output_gate = sigmoid(gates.narrow(1, 3 * h, h));
        let mut c = forget_gate * c_prev + input_gate * candidate;
        if let Some(clip) = *clip {
            c = c.clamp(-clip, clip);
        }
        LayerState {
            h: output_gate * c.clone().tanh(),
            c: Some(c),
        }
    }
}

impl_recurrent_core!(DeepLstm, has_cell: true);
