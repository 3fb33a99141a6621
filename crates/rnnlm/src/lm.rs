//! The language model around a recurrent core.

use burn::module::Param;
use burn::nn::{Dropout, Embedding};
use burn::prelude::*;

use crate::config::{CellKind, WeightInit};
use crate::recurrent::{ForwardError, Recurrent, RecurrentState, SequenceInput, check_ids};
use crate::{DeepLstm, Gru, RnnScratch};

/// Any of the three cores, chosen at run time (e.g. from a checkpoint's config).
#[derive(Module, Debug)]
pub enum RecurrentCore {
    /// d2l's vanilla RNN.
    RnnScratch(RnnScratch),
    /// Gated recurrent unit.
    Gru(Gru),
    /// Multi-layer LSTM.
    Lstm(DeepLstm),
}

impl RecurrentCore {
    /// Which kind of core this is.
    pub fn kind(&self) -> CellKind {
        match self {
            RecurrentCore::RnnScratch(_) => CellKind::RnnScratch,
            RecurrentCore::Gru(_) => CellKind::Gru,
            RecurrentCore::Lstm(_) => CellKind::Lstm,
        }
    }

    /// Runs the whole sequence on whichever core this is: the same as
    /// [`Recurrent::forward`], callable without importing the trait.
    ///
    /// - `inputs`: `[batch, steps, input]` (`[steps, batch, input]` when the core was built
    ///   with `batch_first = false`)
    /// - `state`: `None` for zeros, or `[num_layers, batch, hidden]` per tensor
    /// - returns the last layer's outputs `[batch, steps, hidden]` and every layer's final
    ///   state.
    ///
    /// # Panics
    /// On an input or a state of the wrong shape.
    pub fn forward(
        &self,
        inputs: Tensor<3>,
        state: impl Into<Option<RecurrentState>>,
    ) -> (Tensor<3>, RecurrentState) {
        <Self as Recurrent>::forward(self, inputs, state)
    }
}

/// Calls the same method on whichever core `$self` holds.
macro_rules! on_core {
    ($self:ident, $core:ident => $call:expr) => {
        match $self {
            RecurrentCore::RnnScratch($core) => $call,
            RecurrentCore::Gru($core) => $call,
            RecurrentCore::Lstm($core) => $call,
        }
    };
}

impl Recurrent for RecurrentCore {
    fn input_size(&self) -> usize {
        on_core!(self, core => core.input_size())
    }

    fn hidden_size(&self) -> usize {
        on_core!(self, core => core.hidden_size())
    }

    fn num_layers(&self) -> usize {
        on_core!(self, core => core.num_layers())
    }

    fn has_cell(&self) -> bool {
        on_core!(self, core => core.has_cell())
    }

    fn batch_first(&self) -> bool {
        on_core!(self, core => core.batch_first())
    }

    fn bidirectional(&self) -> bool {
        on_core!(self, core => core.bidirectional())
    }

    fn reverse(&self) -> bool {
        on_core!(self, core => core.reverse())
    }

    fn core_name(&self) -> &'static str {
        on_core!(self, core => core.core_name())
    }

    fn try_forward_time_major_padded(
        &self,
        input: SequenceInput,
        lengths: Option<&[usize]>,
        state: impl Into<Option<RecurrentState>>,
    ) -> Result<(Tensor<3>, RecurrentState), ForwardError> {
        let state = state.into();
        on_core!(self, core => core.try_forward_time_major_padded(input, lengths, state))
    }
}

/// The affine map from hidden states to vocabulary logits, d2l's `W_hq`, `b_q`.
#[derive(Module, Debug)]
pub struct OutputLayer {
    /// `W_hq`: `[hidden, vocab]`.
    pub w_hq: Param<Tensor<2>>,
    /// `b_q`: `[vocab]`.
    pub b_q: Param<Tensor<1>>,
}

impl OutputLayer {
    pub(crate) fn new(hidden: usize, vocab: usize, init: WeightInit, device: &Device) -> Self {
        // nn.Linear's U(-1/√fan_in, 1/√fan_in) is PyTorch's rule with fan_in = hidden.
        Self {
            w_hq: Param::from_tensor(init.weight([hidden, vocab], hidden, device)),
            b_q: Param::from_tensor(init.bias(vocab, hidden, device)),
        }
    }

    /// `[rows, hidden]` -> `[rows, vocab]`.
    ///
    /// # Panics
    /// If `hidden`'s second dimension is not this layer's hidden size.
    pub fn forward(&self, hidden: Tensor<2>) -> Tensor<2> {
        hidden.matmul(self.w_hq.val()) + self.b_q.val().unsqueeze_dim(0)
    }
}

/// A character (or word) language model: token ids in, next-token logits out.
///
/// `tokens [batch, steps]` → encoding (one-hot as d2l, gathered rather than multiplied, or a
/// learnable embedding) → recurrent core → [`OutputLayer`] → `logits [batch, steps, vocab]`.
/// Build it with [`RnnLmConfig`](crate::RnnLmConfig).
#[derive(Module, Debug)]
pub struct RnnLm {
    /// Embedding table `[vocab, embedding_dim]`, or `None` for one-hot input.
    pub embedding: Option<Embedding>,
    /// The recurrent core.
    pub core: RecurrentCore,
    /// Hidden state to logits.
    pub output: OutputLayer,
    /// Dropout on the core's outputs before [`output`](Self::output), while training.
    pub output_dropout: Dropout,
    /// Number of tokens in the vocabulary.
    pub vocab_size: usize,
}

impl RnnLm {
    /// The zero state for `batch_size` sequences: `[num_layers, batch, hidden]` per tensor.
    pub fn begin_state(&self, batch_size: usize, device: &Device) -> RecurrentState {
        self.core.begin_state(batch_size, device)
    }

    /// Next-token logits for every position.
    ///
    /// - `tokens`: `[batch, steps]`, ids in `0..vocab_size`
    /// - `state`: `None` for zeros, or one from [`begin_state`](Self::begin_state) or a previous
    ///   call, `[num_layers, batch, hidden]` per tensor
    /// - returns `logits` `[batch, steps, vocab]` (position `t` predicts token `t + 1`) and the
    ///   state after the last step.
    ///
    /// # Panics
    /// On an id outside the vocabulary or a state of the wrong shape, naming the tensor, what it
    /// holds and what was expected.
    pub fn forward(
        &self,
        tokens: Tensor<2, Int>,
        state: impl Into<Option<RecurrentState>>,
    ) -> (Tensor<3>, RecurrentState) {
        let [batch, steps] = tokens.dims();
        let (hidden, state) = self.forward_hidden(tokens, state);
        let hidden = self.output_dropout.forward(hidden);
        let logits = self
            .output
            .forward(hidden.reshape([steps * batch, self.core.hidden_size()]));
        (
            logits
                .reshape([steps, batch, self.vocab_size])
                .swap_dims(0, 1),
            state,
        )
    }

    /// The last layer's hidden states, time-major: `[steps, batch, hidden]`, for `tokens`
    /// `[batch, steps]`, and the final state (`None` in: zeros).
    ///
    /// # Panics
    /// As [`forward`](Self::forward).
    pub fn forward_hidden(
        &self,
        tokens: Tensor<2, Int>,
        state: impl Into<Option<RecurrentState>>,
    ) -> (Tensor<3>, RecurrentState) {
        // Time-major from here on: the core reads one contiguous [batch, ..] block per step.
        let tokens = tokens.swap_dims(0, 1);
        let input = match &self.embedding {
            Some(embedding) => {
                check_ids(&tokens, self.vocab_size, "RnnLm::forward: tokens");
                SequenceInput::Dense(embedding.forward(tokens))
            }
            None => SequenceInput::OneHot(tokens),
        };
        self.core.forward_time_major(input, state)
    }
}
