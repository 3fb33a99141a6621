//! The interface shared by the three recurrent cores, and the layer-stacking engine behind it.
//!
//! Every core is a stack of layers. A layer's work splits into two parts:
//! - the input projection `X W_x + b` for **all** time steps at once, one large matmul
//!   (or, for one-hot input, a row gather: a one-hot row times `W_x` is a row of `W_x`);
//! - the time loop, where each step costs one `[batch, hidden] x [hidden, gates·hidden]` matmul
//!   plus element-wise gate arithmetic.
//!
//! Where the device runs it, both parts are one fused operation ([`rnnlm_fused::try_layer`],
//! with its own backward pass); everywhere else the projection is one Burn matmul (or row
//! gather) and the time loop per-step tensor operations (the composite path, each cell's
//! [`RecurrentLayer::step`]), which stay the reference the fused layers are tested against.
//!
//! The engine works time-major (`[steps, batch, ..]`) so that step `t` is a contiguous
//! `[batch, ..]` block and the per-step outputs, stacked once at the end, are directly the next
//! layer's input without a transpose.

use burn::nn::Dropout;
use burn::prelude::*;

/// The state of every layer of a recurrent core, carried from one call to the next
/// (truncated back-propagation through time).
#[derive(Clone, Debug)]
pub struct RecurrentState {
    /// Hidden state `h` of every layer: `[num_layers, batch, hidden]`.
    pub hidden: Tensor<3>,
    /// Memory cell `c` of every layer, `[num_layers, batch, hidden]`; `Some` for LSTM only.
    pub cell: Option<Tensor<3>>,
}

impl RecurrentState {
    /// All-zero state: `hidden` `[num_layers, batch, hidden]`, and `cell` of the same shape
    /// when `with_cell`.
    pub fn zeros(
        num_layers: usize,
        batch_size: usize,
        hidden_size: usize,
        with_cell: bool,
        device: &Device,
    ) -> Self {
        let shape = [num_layers, batch_size, hidden_size];
        Self {
            hidden: Tensor::zeros(shape, device),
            cell: with_cell.then(|| Tensor::zeros(shape, device)),
        }
    }

    /// Cuts the autodiff graph behind the state, keeping its values. Call it between
    /// minibatches when the state is carried over, so the next backward pass stops here.
    pub fn detach(self) -> Self {
        Self {
            hidden: self.hidden.detach(),
            cell: self.cell.map(Tensor::detach),
        }
    }

    /// Number of parallel sequences (the state's middle axis).
    pub fn batch_size(&self) -> usize {
        self.hidden.dims()[1]
    }

    /// Number of layers the state holds (the first axis).
    pub fn num_layers(&self) -> usize {
        self.hidden.dims()[0]
    }

    /// The last layer's hidden state, `[batch, hidden]`: burn-nn's `state.hidden` of a single
    /// layer, PyTorch's `h_n[-1]`, what a classifier on the final step reads.
    pub fn last_hidden(&self) -> Tensor<2> {
        last_layer(&self.hidden)
    }

    /// The last layer's memory cell, `[batch, hidden]` (PyTorch's `c_n[-1]`); `None` for cores
    /// without one.
    pub fn last_cell(&self) -> Option<Tensor<2>> {
        self.cell.as_ref().map(last_layer)
    }

    /// The top layer's final `h` of each of its `directions` (1, or 2 for a bidirectional
    /// core: [`Recurrent::num_directions`]) side by side, `[batch, directions·hidden]`: what a
    /// classifier on a bidirectional core reads, PyTorch's `cat(h_n[-2], h_n[-1])`. With one
    /// direction, [`last_hidden`](Self::last_hidden).
    ///
    /// # Panics
    /// If the state holds fewer than `directions` layers, or `directions` is 0.
    pub fn top_layer_hidden(&self, directions: usize) -> Tensor<2> {
        let entries = self.num_layers();
        assert!(
            (1..=entries).contains(&directions),
            "RecurrentState::top_layer_hidden: {directions} directions, but the state holds {entries} layers"
        );
        let top = self
            .hidden
            .clone()
            .narrow(0, entries - directions, directions);
        // [directions, batch, hidden] -> [batch, directions·hidden]
        let [_, batch, hidden] = top.dims();
        top.swap_dims(0, 1).reshape([batch, directions * hidden])
    }

    /// The rows of the given sequences, in that order: every tensor becomes
    /// `[num_layers, indices.len(), hidden]`.
    ///
    /// # Panics
    /// If an index is not below [`batch_size`](Self::batch_size).
    pub fn select_batch(self, indices: Tensor<1, Int>) -> Self {
        Self {
            hidden: self.hidden.select(1, indices.clone()),
            cell: self.cell.map(|c| c.select(1, indices)),
        }
    }

    fn layer(&self, index: usize) -> LayerState {
        let take = |t: &Tensor<3>| t.clone().narrow(0, index, 1).squeeze_dim::<2>(0);
        LayerState {
            h: take(&self.hidden),
            c: self.cell.as_ref().map(take),
        }
    }

    fn from_layers(layers: Vec<LayerState>) -> Self {
        let (hidden, cell): (Vec<_>, Vec<_>) = layers.into_iter().map(|s| (s.h, s.c)).unzip();
        let cell: Option<Vec<_>> = cell.into_iter().collect();
        Self {
            hidden: Tensor::stack(hidden, 0),
            cell: cell.map(|c| Tensor::stack(c, 0)),
        }
    }
}

fn last_layer(t: &Tensor<3>) -> Tensor<2> {
    let layers = t.dims()[0];
    t.clone().narrow(0, layers - 1, 1).squeeze_dim::<2>(0)
}

/// Input to [`Recurrent::forward_time_major`], time-major: feature vectors
/// `[steps, batch, input]` (in any layout: a swapped batch-first tensor is read where it lies by
/// the fused layers) or token ids `[steps, batch]`, each below `input_size`, standing for
/// one-hot vectors of width `input_size` without building them.
pub use rnnlm_fused::LayerInput as SequenceInput;

/// Lengths that cannot describe a batch of padded sequences: which row, which value, and what
/// fits ([`Recurrent::forward_padded`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LengthsError {
    /// Not one length per row.
    #[error("lengths holds {given} values, expected one per row of the batch ({batch})")]
    Count {
        /// Lengths given.
        given: usize,
        /// Rows in the batch.
        batch: usize,
    },
    /// A length of 0 or past the input's steps.
    #[error(
        "lengths[{row}] = {length}: every row's length must lie in 1..={steps} (the input's steps)"
    )]
    OutOfRange {
        /// The row.
        row: usize,
        /// Its length.
        length: usize,
        /// The input's steps.
        steps: usize,
    },
}

/// Checks that `lengths` gives every row of `batch` a length in `1..=steps`.
pub fn check_lengths(lengths: &[usize], batch: usize, steps: usize) -> Result<(), LengthsError> {
    if lengths.len() != batch {
        return Err(LengthsError::Count {
            given: lengths.len(),
            batch,
        });
    }
    match lengths
        .iter()
        .enumerate()
        .find(|(_, length)| !(1..=steps).contains(*length))
    {
        Some((row, &length)) => Err(LengthsError::OutOfRange { row, length, steps }),
        None => Ok(()),
    }
}

/// A tensor of the wrong shape handed to a core: which core and tensor, the shape passed, named
/// axis by axis in the caller's own layout, and the shape expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{core}: {tensor} {}, expected {expected}", describe_given(.layout, .given))]
pub struct ShapeError {
    /// The core: `DeepLstm`, `Gru`, `RnnScratch`.
    pub core: &'static str,
    /// The tensor: `input`, `token input`, `state.hidden`, `state.cell`.
    pub tensor: &'static str,
    /// Its axes as the caller laid them out, e.g. `[batch, steps, input]`.
    pub layout: &'static str,
    /// The shape passed; `None` for a tensor that is missing.
    pub given: Option<Vec<usize>>,
    /// What fits, with the reason.
    pub expected: String,
}

fn describe_given(layout: &str, given: &Option<Vec<usize>>) -> String {
    match given {
        Some(dims) => format!("has shape {layout} = {dims:?}"),
        None => "is missing".to_owned(),
    }
}

/// What a forward pass refuses ([`Recurrent::try_forward_time_major_padded`]): a tensor of the
/// wrong shape, lengths that do not fit the batch, or a token id outside the input width.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// A tensor of the wrong shape.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// Lengths that do not describe the batch.
    #[error(transparent)]
    Lengths(#[from] LengthsError),
    /// A token id outside `0..input_size`.
    #[error(
        "{core}: token input holds token id {id}, expected ids in 0..{limit} (the core's input_size)"
    )]
    TokenId {
        /// The core.
        core: &'static str,
        /// The offending id.
        id: i64,
        /// The core's input width.
        limit: usize,
    },
}

/// One interface for every recurrent core ([`RnnScratch`](crate::RnnScratch),
/// [`Gru`](crate::Gru), [`DeepLstm`](crate::DeepLstm) and the [`RecurrentCore`](crate::RecurrentCore)
/// enum over them): sizes, a zero state, a whole-sequence forward and a single step.
///
/// Every method that takes a state takes `impl Into<Option<RecurrentState>>`: `None` starts
/// from zeros (as burn-nn's layers and PyTorch's `hx=None`), and a [`RecurrentState`] (or
/// `Some` of one) continues from it. The cores also have [`forward`](Self::forward) as an
/// inherent method, so a model that only calls `forward` needs no `use rnnlm::Recurrent`.
///
/// Shape mistakes panic with a message naming the tensor, its shape and the expected one.
pub trait Recurrent {
    /// Width of each input vector (the one-hot width for token input).
    fn input_size(&self) -> usize;
    /// Width of every layer's state and of the outputs.
    fn hidden_size(&self) -> usize;
    /// Number of stacked layers.
    fn num_layers(&self) -> usize;
    /// Whether the state has a memory cell (LSTM).
    fn has_cell(&self) -> bool;
    /// Whether [`forward`](Self::forward) and [`forward_one_hot`](Self::forward_one_hot) take
    /// and return batch-major tensors (`[batch, steps, ..]`, burn-nn's default and this crate's)
    /// rather than time-major ones (`[steps, batch, ..]`, PyTorch's default).
    fn batch_first(&self) -> bool {
        true
    }
    /// Whether every layer also runs over the sequence backwards (PyTorch's
    /// `bidirectional=True`).
    fn bidirectional(&self) -> bool {
        false
    }
    /// Whether a one-direction core runs over the sequence last step first (burn-nn's
    /// `reverse`).
    fn reverse(&self) -> bool {
        false
    }
    /// Directions per layer: 2 for a bidirectional core, else 1. The state holds
    /// `num_layers·num_directions` layers.
    fn num_directions(&self) -> usize {
        1 + usize::from(self.bidirectional())
    }
    /// Width of the outputs: `hidden·num_directions` (both directions side by side).
    fn output_size(&self) -> usize {
        self.hidden_size() * self.num_directions()
    }

    /// The core's name in messages (`DeepLstm`, `Gru`, `RnnScratch`).
    #[doc(hidden)]
    fn core_name(&self) -> &'static str {
        "recurrent core"
    }

    /// [`forward_time_major_padded`](Self::forward_time_major_padded), with every mistake in
    /// its arguments returned instead of a panic: a tensor of the wrong shape (named in the
    /// time-major layout this method takes), lengths that do not fit, a token id out of range.
    ///
    /// # Errors
    /// [`ForwardError`], naming the tensor, what was passed and what fits.
    fn try_forward_time_major_padded(
        &self,
        input: SequenceInput,
        lengths: Option<&[usize]>,
        state: impl Into<Option<RecurrentState>>,
    ) -> Result<(Tensor<3>, RecurrentState), ForwardError>;

    /// Runs a batch whose rows may end before the last step, in the core's native time-major
    /// layout, whatever [`batch_first`](Self::batch_first) says.
    ///
    /// - `input`: [`SequenceInput::Dense`] `[steps, batch, input]` or
    ///   [`SequenceInput::OneHot`] `[steps, batch]`
    /// - `lengths`: `None` when every row takes every step, else every row's own number of
    ///   steps `[batch]`, each in `1..=steps` (PyTorch's `pack_padded_sequence` lengths,
    ///   in any order)
    /// - `state`: `[num_layers·num_directions, batch, hidden]` (and the cell, for LSTM), or
    ///   `None` for zeros
    /// - returns the last layer's outputs `[steps, batch, hidden·num_directions]`, zero past
    ///   each row's length, and the final state: every row's state after its own last step
    ///   (the reverse direction's after step 0, having started at the row's last step).
    ///
    /// # Errors
    /// [`LengthsError`] when `lengths` does not give every row a length in `1..=steps`.
    ///
    /// # Panics
    /// On an input or a state of the wrong shape, or a token id outside `0..input_size`, with
    /// [`try_forward_time_major_padded`](Self::try_forward_time_major_padded)'s message.
    fn forward_time_major_padded(
        &self,
        input: SequenceInput,
        lengths: Option<&[usize]>,
        state: impl Into<Option<RecurrentState>>,
    ) -> Result<(Tensor<3>, RecurrentState), LengthsError> {
        match self.try_forward_time_major_padded(input, lengths, state) {
            Ok(result) => Ok(result),
            Err(ForwardError::Lengths(error)) => Err(error),
            Err(error) => panic!("{error}"),
        }
    }

    /// Runs the whole sequence in the core's native time-major layout, whatever
    /// [`batch_first`](Self::batch_first) says.
    ///
    /// - `input`: [`SequenceInput::Dense`] `[steps, batch, input]` or
    ///   [`SequenceInput::OneHot`] `[steps, batch]`
    /// - `state`: `[num_layers·num_directions, batch, hidden]` (and the cell, for LSTM), or
    ///   `None` for zeros
    /// - returns the last layer's outputs `[steps, batch, hidden·num_directions]` and the
    ///   final state.
    ///
    /// # Panics
    /// On an input or a state of the wrong shape, or a token id outside `0..input_size`.
    fn forward_time_major(
        &self,
        input: SequenceInput,
        state: impl Into<Option<RecurrentState>>,
    ) -> (Tensor<3>, RecurrentState) {
        match self.forward_time_major_padded(input, None, state) {
            Ok(result) => result,
            Err(_) => unreachable!("a forward pass without lengths has no length to refuse"),
        }
    }

    /// The zero state for `batch_size` sequences: `[num_layers·num_directions, batch, hidden]`
    /// per tensor.
    fn begin_state(&self, batch_size: usize, device: &Device) -> RecurrentState {
        RecurrentState::zeros(
            self.num_layers() * self.num_directions(),
            batch_size,
            self.hidden_size(),
            self.has_cell(),
            device,
        )
    }

    /// Runs the whole sequence.
    ///
    /// - `inputs`: `[batch, steps, input]` (`[steps, batch, input]` when the core was built
    ///   with `batch_first = false`)
    /// - `state`: `[num_layers·num_directions, batch, hidden]` (and the cell, for LSTM), or
    ///   `None` for zeros
    /// - returns the last layer's outputs `[batch, steps, hidden·num_directions]` (time-major
    ///   when not `batch_first`) and the final state of every layer; its
    ///   [`last_hidden`](RecurrentState::last_hidden) is the top layer's `[batch, hidden]`
    ///   ([`top_layer_hidden`](RecurrentState::top_layer_hidden) for both directions).
    ///
    /// # Panics
    /// On an input or a state of the wrong shape, with [`try_forward`](Self::try_forward)'s
    /// message.
    fn forward(
        &self,
        inputs: Tensor<3>,
        state: impl Into<Option<RecurrentState>>,
    ) -> (Tensor<3>, RecurrentState) {
        self.try_forward(inputs, state)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`forward`](Self::forward), with a tensor of the wrong shape returned as an error that
    /// names it, the shape passed in the caller's layout (`[batch, steps, input]`, or `[steps,
    /// batch, input]` for a core built with `batch_first = false`) and the shape that fits.
    ///
    /// # Errors
    /// [`ShapeError`] for an input whose feature size is not [`input_size`](Self::input_size)
    /// or that has no step or no row, and for a state whose layers, batch or width do not fit.
    fn try_forward(
        &self,
        inputs: Tensor<3>,
        state: impl Into<Option<RecurrentState>>,
    ) -> Result<(Tensor<3>, RecurrentState), ShapeError> {
        let batch_first = self.batch_first();
        check_dense(
            self.core_name(),
            self.input_size(),
            inputs.dims(),
            batch_first,
        )?;
        let input = if batch_first {
            inputs.swap_dims(0, 1)
        } else {
            inputs
        };
        let (outputs, state) = self
            .try_forward_time_major_padded(SequenceInput::Dense(input), None, state)
            .map_err(|error| match error {
                ForwardError::Shape(error) => error,
                other => unreachable!("a dense forward pass without lengths: {other}"),
            })?;
        Ok((
            if batch_first {
                outputs.swap_dims(0, 1)
            } else {
                outputs
            },
            state,
        ))
    }

    /// Runs a batch of sequences of different lengths, padded to the longest: PyTorch's
    /// `pack_padded_sequence` (in any order, `enforce_sorted=False`) without the packing.
    /// Every row gives the same numbers as when run alone at its own length: its outputs past
    /// its length are zero and carry no gradient, its final state is the one after its own
    /// last step, and the reverse direction of a bidirectional core starts there.
    ///
    /// - `inputs`: `[batch, steps, input]` (`[steps, batch, input]` when not `batch_first`);
    ///   what lies past a row's length changes nothing (and gets a zero gradient)
    /// - `lengths`: every row's own number of steps, `[batch]`, each in `1..=steps`
    /// - `state`: as for [`forward`](Self::forward)
    /// - returns the outputs `[batch, steps, hidden·num_directions]` (time-major when not
    ///   `batch_first`) and every row's final state.
    ///
    /// # Errors
    /// [`LengthsError`], naming the row and its length, when `lengths` does not give every row
    /// a length in `1..=steps`.
    ///
    /// # Panics
    /// On an input or a state of the wrong shape.
    fn forward_padded(
        &self,
        inputs: Tensor<3>,
        lengths: &[usize],
        state: impl Into<Option<RecurrentState>>,
    ) -> Result<(Tensor<3>, RecurrentState), LengthsError> {
        if let Err(error) = check_dense(
            self.core_name(),
            self.input_size(),
            inputs.dims(),
            self.batch_first(),
        ) {
            panic!("{error}");
        }
        if !self.batch_first() {
            return self.forward_time_major_padded(
                SequenceInput::Dense(inputs),
                Some(lengths),
                state,
            );
        }
        let (outputs, state) = self.forward_time_major_padded(
            SequenceInput::Dense(inputs.swap_dims(0, 1)),
            Some(lengths),
            state,
        )?;
        Ok((outputs.swap_dims(0, 1), state))
    }

    /// Same as [`forward`](Self::forward) on the one-hot encoding of `tokens`, computed by
    /// gathering weight rows.
    ///
    /// - `tokens`: `[batch, steps]` (`[steps, batch]` when not `batch_first`), ids below
    ///   `input_size`
    /// - returns `[batch, steps, hidden]` (time-major when not `batch_first`) and the final
    ///   state.
    ///
    /// # Panics
    /// On a state of the wrong shape or a token id outside `0..input_size`.
    fn forward_one_hot(
        &self,
        tokens: Tensor<2, Int>,
        state: impl Into<Option<RecurrentState>>,
    ) -> (Tensor<3>, RecurrentState) {
        if !self.batch_first() {
            return self.forward_time_major(SequenceInput::OneHot(tokens), state);
        }
        let (outputs, state) =
            self.forward_time_major(SequenceInput::OneHot(tokens.swap_dims(0, 1)), state);
        (outputs.swap_dims(0, 1), state)
    }

    /// One time step.
    ///
    /// - `input`: `[batch, input]`
    /// - returns the last layer's output `[batch, hidden·num_directions]` and the new state.
    ///
    /// A bidirectional core has no step of its own (its reverse direction starts at the
    /// sequence's end): this runs a sequence of one step through both directions.
    ///
    /// # Panics
    /// On an input or a state of the wrong shape.
    fn step(
        &self,
        input: Tensor<2>,
        state: impl Into<Option<RecurrentState>>,
    ) -> (Tensor<2>, RecurrentState) {
        let (outputs, state) =
            self.forward_time_major(SequenceInput::Dense(input.unsqueeze_dim(0)), state);
        (outputs.squeeze_dim(0), state)
    }
}

/// Implements [`Recurrent`] for a core made of `layers: Vec<L>` (with `L: RecurrentLayer`),
/// `dropout`, `input_size` and `hidden_size`: every core runs the same engine, so only its name
/// and whether its state has a memory cell differ.
macro_rules! impl_recurrent_core {
    ($core:ty, has_cell: $has_cell:expr) => {
        impl $crate::recurrent::Recurrent for $core {
            fn input_size(&self) -> usize {
                self.input_size
            }

            fn hidden_size(&self) -> usize {
                self.hidden_size
            }

            fn num_layers(&self) -> usize {
                self.layers.len() / (1 + usize::from(self.bidirectional))
            }

            fn has_cell(&self) -> bool {
                $has_cell
            }

            fn batch_first(&self) -> bool {
                self.batch_first
            }

            fn bidirectional(&self) -> bool {
                self.bidirectional
            }

            fn reverse(&self) -> bool {
                self.reverse
            }

            fn core_name(&self) -> &'static str {
                stringify!($core)
            }

            fn try_forward_time_major_padded(
                &self,
                input: $crate::recurrent::SequenceInput,
                lengths: Option<&[usize]>,
                state: impl Into<Option<$crate::recurrent::RecurrentState>>,
            ) -> Result<(Tensor<3>, $crate::recurrent::RecurrentState), $crate::recurrent::ForwardError> {
                let shape = $crate::recurrent::CoreShape {
                    name: stringify!($core),
                    input_size: self.input_size,
                    hidden_size: self.hidden_size,
                    has_cell: $has_cell,
                    bidirectional: self.bidirectional,
                    reverse: self.reverse,
                };
                $crate::recurrent::run_layers(
                    shape,
                    &self.layers,
                    &self.dropout,
                    input,
                    lengths,
                    state.into(),
                )
            }
        }

        impl $core {
            /// Runs the whole sequence, as burn-nn's layers do: the same as
            /// [`Recurrent::forward`](crate::Recurrent::forward), callable without importing
            /// the trait.
            ///
            /// - `inputs`: `[batch, steps, input]` (`[steps, batch, input]` when built with
            ///   `batch_first = false`)
            /// - `state`: `None` for zeros, or a [`RecurrentState`](crate::RecurrentState)
            ///   `[num_layers·num_directions, batch, hidden]` per tensor (the LSTM's with its
            ///   cell)
            /// - returns the last layer's outputs `[batch, steps, hidden·num_directions]`
            ///   (time-major when not `batch_first`) and every layer's final state.
            ///
            /// # Panics
            /// On an input or a state of the wrong shape, naming the tensor, its shape (in the
            /// caller's layout) and the expected one; [`try_forward`](Self::try_forward)
            /// returns the error instead.
            pub fn forward(
                &self,
                inputs: Tensor<3>,
                state: impl Into<Option<$crate::recurrent::RecurrentState>>,
            ) -> (Tensor<3>, $crate::recurrent::RecurrentState) {
                <Self as $crate::recurrent::Recurrent>::forward(self, inputs, state)
            }

            /// [`forward`](Self::forward), with a tensor of the wrong shape returned as an
            /// error naming it, the shape passed in the caller's layout and the shape that
            /// fits: the same as [`Recurrent::try_forward`](crate::Recurrent::try_forward),
            /// callable without importing the trait.
            ///
            /// # Errors
            /// [`ShapeError`](crate::ShapeError) for an input or a state of the wrong shape.
            pub fn try_forward(
                &self,
                inputs: Tensor<3>,
                state: impl Into<Option<$crate::recurrent::RecurrentState>>,
            ) -> Result<(Tensor<3>, $crate::recurrent::RecurrentState), $crate::recurrent::ShapeError> {
                <Self as $crate::recurrent::Recurrent>::try_forward(self, inputs, state)
            }

            /// Runs a batch of sequences of different lengths, padded to the longest
            /// (PyTorch's `pack_padded_sequence`): the same as
            /// [`Recurrent::forward_padded`](crate::Recurrent::forward_padded), callable
            /// without importing the trait.
            ///
            /// - `inputs`: `[batch, steps, input]` (`[steps, batch, input]` when built with
            ///   `batch_first = false`)
            /// - `lengths`: every row's number of steps, `[batch]`, each in `1..=steps`
            /// - `state`: as for `forward`
            /// - returns the outputs `[batch, steps, hidden·num_directions]`, zero past each
            ///   row's length, and every row's final state.
            ///
            /// # Errors
            /// [`LengthsError`](crate::LengthsError) naming the row and its length.
            ///
            /// # Panics
            /// On an input or a state of the wrong shape.
            pub fn forward_padded(
                &self,
                inputs: Tensor<3>,
                lengths: &[usize],
                state: impl Into<Option<$crate::recurrent::RecurrentState>>,
            ) -> Result<(Tensor<3>, $crate::recurrent::RecurrentState), $crate::recurrent::LengthsError> {
                <Self as $crate::recurrent::Recurrent>::forward_padded(self, inputs, lengths, state)
            }
        }
    };
}
pub(crate) use impl_recurrent_core;

/// The state of one layer: `h` `[batch, hidden]`, `c` `[batch, hidden]` for LSTM.
#[derive(Clone, Debug)]
pub(crate) struct LayerState {
    pub h: Tensor<2>,
    pub c: Option<Tensor<2>>,
}

/// What a cell type contributes to the engine: its weights, its per-step update for the
/// composite path, and which recurrence the fused scan runs for it.
pub(crate) trait RecurrentLayer {
    /// Per-step weights of the composite path, fetched (and for the d2l GRU, split) once per
    /// sequence, not per step.
    type StepWeights;

    /// `W_x`: `[input, gates·hidden]`.
    fn input_weight(&self) -> Tensor<2>;
    /// Bias added to the input projection: `[gates·hidden]`.
    fn input_bias(&self) -> Option<Tensor<1>>;
    /// `W_h`: `[hidden, gates·hidden]`.
    fn hidden_weight(&self) -> Tensor<2>;
    /// PyTorch's GRU's `b_hh`: `[gates·hidden]`; `None` for the other cells.
    fn hidden_bias(&self) -> Option<Tensor<1>> {
        None
    }
    /// Whether the layer has what the fused operation does not (a clip that is not a positive
    /// bound, set on the field past the config's check): it then runs the composite path.
    fn composite_only(&self) -> bool {
        false
    }
    /// The recurrence, for the fused scan.
    fn recurrence(&self) -> rnnlm_fused::CellKind;
    fn step_weights(&self) -> Self::StepWeights;
    /// One step of the composite path from the projected input `[batch, gates·hidden]`.
    fn step(weights: &Self::StepWeights, projected: Tensor<2>, state: LayerState) -> LayerState;
}

/// Describes a core to the engine, for shape checks and messages.
pub(crate) struct CoreShape {
    pub name: &'static str,
    pub input_size: usize,
    pub hidden_size: usize,
    pub has_cell: bool,
    pub bidirectional: bool,
    /// A one-direction core that runs last step first.
    pub reverse: bool,
}

impl CoreShape {
    fn directions(&self) -> usize {
        1 + usize::from(self.bidirectional)
    }
}

/// Runs a stack of layers over a sequence: per layer, each direction projects the layer's
/// input and scans it (the reverse direction in reverse order), their outputs side by side
/// feed the next layer, with dropout between layers.
pub(crate) fn run_layers<L: RecurrentLayer>(
    shape: CoreShape,
    layers: &[L],
    dropout: &Dropout,
    input: SequenceInput,
    lengths: Option<&[usize]>,
    state: Option<RecurrentState>,
) -> Result<(Tensor<3>, RecurrentState), ForwardError> {
    let [steps, batch] = input.steps_and_batch();
    check_input(&shape, &input)?;
    if let Some(lengths) = lengths {
        check_lengths(lengths, batch, steps)?;
    }
    let directions = shape.directions();
    let state = match state {
        Some(state) => {
            check_state(&shape, layers.len(), batch, &state)?;
            state
        }
        None => RecurrentState::zeros(
            layers.len(),
            batch,
            shape.hidden_size,
            shape.has_cell,
            &input.device(),
        ),
    };
    // Rows that all take every step need no lengths: the loops' plain path.
    let lengths = match lengths {
        Some(lengths) if lengths.iter().any(|&length| length < steps) => lengths.to_vec(),
        _ => Vec::new(),
    };
    if let Some(sorted) = SortedRows::new(&lengths) {
        let device = input.device();
        let input = match input {
            SequenceInput::Dense(x) => {
                SequenceInput::Dense(sorted.steps_in(x, &sorted.order, &device))
            }
            SequenceInput::OneHot(ids) => {
                SequenceInput::OneHot(ids.select(1, sorted.ids(&sorted.order, &device)))
            }
        };
        let state = sorted.layers_in(state, &sorted.order, &device);
        let (outputs, state) = run_stack(
            layers,
            dropout,
            input,
            sorted.lengths.clone(),
            state,
            directions,
            shape.reverse,
        );
        return Ok((
            sorted.steps_in(outputs, &sorted.inverse, &device),
            sorted.layers_in(state, &sorted.inverse, &device),
        ));
    }
    Ok(run_stack(
        layers,
        dropout,
        input,
        lengths,
        state,
        directions,
        shape.reverse,
    ))
}

/// A batch's rows sorted by length, longest first (ties in row order), for the whole stack at
/// once: each layer's loop then finds the rows that take a step in one run per thread, and the
/// kernels need not sort every layer's projection and outputs themselves (rnnlm_kernels' own
/// sorting, for its direct callers, costs ten times more here: it moves each layer's widest
/// tensors).
struct SortedRows {
    /// `order[place]`: the row at that place of the sorted batch.
    order: Vec<usize>,
    /// `inverse[row]`: the place of that row.
    inverse: Vec<usize>,
    /// The lengths in the sorted order.
    lengths: Vec<usize>,
}

impl SortedRows {
    /// `None` without lengths, or when the rows are already longest first.
    fn new(lengths: &[usize]) -> Option<Self> {
        // The kernels' own order, so that they find the rows sorted and move nothing.
        let order = rnnlm_kernels::scan::longest_first(lengths)?;
        let mut inverse = vec![0; order.len()];
        for (place, &row) in order.iter().enumerate() {
            inverse[row] = place;
        }
        let lengths = order.iter().map(|&row| lengths[row]).collect();
        Some(Self {
            order,
            inverse,
            lengths,
        })
    }

    fn ids(&self, rows: &[usize], device: &Device) -> Tensor<1, Int> {
        let ids: Vec<i64> = rows.iter().map(|&row| row as i64).collect();
        Tensor::from_data(TensorData::new(ids, [rows.len()]), device)
    }

    /// `[steps, batch, width]` with every step's rows taken in the order `rows`: one row gather
    /// (whose backward pass, on the fused backends, is one scatter).
    fn steps_in(&self, x: Tensor<3>, rows: &[usize], device: &Device) -> Tensor<3> {
        let [steps, batch, width] = x.dims();
        let ids: Vec<i64> = (0..steps)
            .flat_map(|t| rows.iter().map(move |&row| (t * batch + row) as i64))
            .collect();
        let ids = Tensor::from_data(TensorData::new(ids, [steps * batch]), device);
        rnnlm_fused::gather_rows(x.reshape([steps * batch, width]), ids)
            .reshape([steps, batch, width])
    }

    /// A state `[layers, batch, hidden]` with its rows in the order `rows`.
    fn layers_in(&self, state: RecurrentState, rows: &[usize], device: &Device) -> RecurrentState {
        let ids = self.ids(rows, device);
        RecurrentState {
            hidden: state.hidden.select(1, ids.clone()),
            cell: state.cell.map(|cell| cell.select(1, ids)),
        }
    }
}

/// The layers of [`run_layers`] on checked inputs; `lengths` empty when every row takes every
/// step; `reverse` runs a one-direction stack last step first.
fn run_stack<L: RecurrentLayer>(
    layers: &[L],
    dropout: &Dropout,
    input: SequenceInput,
    lengths: Vec<usize>,
    state: RecurrentState,
    directions: usize,
    reverse: bool,
) -> (Tensor<3>, RecurrentState) {
    let last = layers.len() / directions - 1;
    let mut layer_input = input;
    let mut finals = Vec::with_capacity(layers.len());
    for (index, both) in layers.chunks(directions).enumerate() {
        let mut outputs = Vec::with_capacity(directions);
        for (direction, layer) in both.iter().enumerate() {
            let order = rnnlm_fused::ScanOrder {
                reverse: direction == 1 || reverse,
                lengths: lengths.clone(),
            };
            let entry = index * directions + direction;
            let (output, final_state) =
                run_layer(layer, layer_input.clone(), state.layer(entry), order);
            outputs.push(output);
            finals.push(final_state);
        }
        let outputs = if directions == 1 {
            outputs.remove(0)
        } else {
            Tensor::cat(outputs, 2)
        };
        if index == last {
            return (outputs, RecurrentState::from_layers(finals));
        }
        // Dropout sits between layers only: the last layer's outputs go to the caller as they are.
        layer_input = SequenceInput::Dense(dropout.forward(outputs));
    }
    unreachable!("a core has at least one layer")
}

/// One layer over the whole sequence: one fused operation where it runs
/// ([`rnnlm_fused::try_layer`]: the projection of every step written into its gates, the bias
/// added inside its loop), else the projection as one matmul or gather and the time loop as
/// per-step tensor operations.
fn run_layer<L: RecurrentLayer>(
    layer: &L,
    input: SequenceInput,
    state: LayerState,
    order: rnnlm_fused::ScanOrder,
) -> (Tensor<3>, LayerState) {
    let [steps, batch] = input.steps_and_batch();
    let recurrence = layer.recurrence();
    let input_weight = layer.input_weight();
    let width = input_weight.dims()[1];
    let bias = layer
        .input_bias()
        .unwrap_or_else(|| Tensor::zeros([width], &input_weight.device()));
    let (weight, hidden_bias) = (layer.hidden_weight(), layer.hidden_bias());
    let tensors = rnnlm_fused::LayerTensors {
        input,
        input_weight: &input_weight,
        input_bias: &bias,
        h0: &state.h,
        c0: state.c.as_ref(),
        weight: &weight,
        hidden_bias: hidden_bias.as_ref(),
        order,
    };
    let fused = if layer.composite_only() {
        Err(tensors)
    } else {
        rnnlm_fused::try_layer(recurrence, tensors)
    };
    match fused {
        Ok(out) => {
            // Every step's h, then every row's final h and (LSTM) final cell: views, no copies.
            let last = |index: usize| out.clone().narrow(0, index, 1).squeeze_dim(0);
            let state = LayerState {
                h: last(steps),
                c: recurrence.has_cell().then(|| last(steps + 1)),
            };
            (out.narrow(0, 0, steps), state)
        }
        Err(rnnlm_fused::LayerTensors { input, order, .. }) => {
            let flat = match input {
                SequenceInput::Dense(x) => {
                    let features = x.dims()[2];
                    x.reshape([steps * batch, features]).matmul(input_weight)
                }
                SequenceInput::OneHot(ids) => {
                    rnnlm_fused::gather_rows(input_weight, ids.reshape([steps * batch]))
                }
            };
            let projected = flat.reshape([steps, batch, width]) + bias.reshape([1, 1, width]);
            composite_scan(layer, projected, state, &order)
        }
    }
}

/// The time loop as per-step tensor operations. Outputs are stacked once at the end: one copy,
/// instead of a `slice_assign` into a preallocated tensor per step (each of which the autodiff
/// graph records as a full-size operation).
///
/// Rows of different lengths step all together; a 0/1 column per step keeps the state of the
/// rows past their length and zeroes their outputs (exact: `1·x + 0·y` is `x`).
fn composite_scan<L: RecurrentLayer>(
    layer: &L,
    projected: Tensor<3>,
    mut state: LayerState,
    order: &rnnlm_fused::ScanOrder,
) -> (Tensor<3>, LayerState) {
    let weights = layer.step_weights();
    let [steps, batch, _] = projected.dims();
    let takes = (!order.lengths.is_empty()).then(|| {
        let values: Vec<f32> = (0..steps)
            .flat_map(|t| {
                order
                    .lengths
                    .iter()
                    .map(move |&length| f32::from(u8::from(t < length)))
            })
            .collect();
        Tensor::<2>::from_data(TensorData::new(values, [steps, batch]), &projected.device())
            .cast(projected.dtype())
    });
    let inputs: Vec<Tensor<3>> = projected.iter_dim(0).collect();
    let mut outputs: Vec<Option<Tensor<2>>> = vec![None; steps];
    let visit: Vec<usize> = if order.reverse {
        (0..steps).rev().collect()
    } else {
        (0..steps).collect()
    };
    for t in visit {
        let next = L::step(&weights, inputs[t].clone().squeeze_dim(0), state.clone());
        let Some(takes) = &takes else {
            outputs[t] = Some(next.h.clone());
            state = next;
            continue;
        };
        // `[batch, 1]`: 1 where the row takes step t.
        let take = takes.clone().narrow(0, t, 1).reshape([batch, 1]);
        let keep = take.clone().neg() + 1.0;
        let blend =
            |next: Tensor<2>, previous: Tensor<2>| next * take.clone() + previous * keep.clone();
        outputs[t] = Some(next.h.clone() * take.clone());
        state = LayerState {
            h: blend(next.h, state.h),
            c: next
                .c
                .zip(state.c)
                .map(|(next, previous)| blend(next, previous)),
        };
    }
    let outputs = outputs
        .into_iter()
        .map(|output| output.expect("every step is visited once"))
        .collect();
    (Tensor::stack(outputs, 0), state)
}

/// A dense input `dims` against the core's `input_size`, in the caller's layout.
pub(crate) fn check_dense(
    core: &'static str,
    input_size: usize,
    dims: [usize; 3],
    batch_first: bool,
) -> Result<(), ShapeError> {
    if dims[0] > 0 && dims[1] > 0 && dims[2] == input_size {
        return Ok(());
    }
    let (layout, expected) = if batch_first {
        (
            "[batch, steps, input]",
            format!("[batch >= 1, steps >= 1, {input_size}]"),
        )
    } else {
        (
            "[steps, batch, input]",
            format!("[steps >= 1, batch >= 1, {input_size}]"),
        )
    };
    let why = if dims[2] != input_size {
        format!(" (the core's input_size is {input_size})")
    } else {
        " (at least one step and one row)".to_owned()
    };
    Err(ShapeError {
        core,
        tensor: "input",
        layout,
        given: Some(dims.to_vec()),
        expected: expected + &why,
    })
}

fn check_input(shape: &CoreShape, input: &SequenceInput) -> Result<(), ForwardError> {
    let name = shape.name;
    match input {
        SequenceInput::Dense(x) => check_dense(name, shape.input_size, x.dims(), false)?,
        SequenceInput::OneHot(ids) => {
            let dims = ids.dims();
            if dims[0] == 0 || dims[1] == 0 {
                return Err(ShapeError {
                    core: name,
                    tensor: "token input",
                    layout: "[steps, batch]",
                    given: Some(dims.to_vec()),
                    expected: "[steps >= 1, batch >= 1]".to_owned(),
                }
                .into());
            }
            if let Some(id) = id_out_of_range(ids, shape.input_size) {
                return Err(ForwardError::TokenId {
                    core: name,
                    id,
                    limit: shape.input_size,
                });
            }
        }
    }
    Ok(())
}

fn check_state(
    shape: &CoreShape,
    entries: usize,
    batch: usize,
    state: &RecurrentState,
) -> Result<(), ShapeError> {
    let name = shape.name;
    let expected = [entries, batch, shape.hidden_size];
    let layout = if shape.bidirectional {
        "[num_layers*2, batch, hidden]"
    } else {
        "[num_layers, batch, hidden]"
    };
    let why = format!(
        "{expected:?} ({entries} {}, the input's batch of {batch}, hidden_size {})",
        if shape.bidirectional {
            "layers and directions"
        } else {
            "layers"
        },
        shape.hidden_size
    );
    let error = |tensor, given: Option<Vec<usize>>, expected: String| ShapeError {
        core: name,
        tensor,
        layout,
        given,
        expected,
    };
    let hidden = state.hidden.dims();
    if hidden != expected {
        return Err(error("state.hidden", Some(hidden.to_vec()), why));
    }
    match (&state.cell, shape.has_cell) {
        (Some(cell), true) if cell.dims() != expected => {
            Err(error("state.cell", Some(cell.dims().to_vec()), why))
        }
        (None, true) => Err(error(
            "state.cell",
            None,
            format!("a tensor of shape {why}: an LSTM state has a memory cell (use begin_state)"),
        )),
        (Some(cell), false) => Err(error(
            "state.cell",
            Some(cell.dims().to_vec()),
            "None: this core has no memory cell (use begin_state)".to_owned(),
        )),
        _ => Ok(()),
    }
}

/// The first id outside `0..limit` (the lowest if negative, else the highest), if any. Costs one
/// small reduction and a device sync, which is what it takes to report the id instead of an
/// out-of-bounds failure deep inside a backend.
fn id_out_of_range<const D: usize>(ids: &Tensor<D, Int>, limit: usize) -> Option<i64> {
    let bounds = Tensor::cat(vec![ids.clone().min(), ids.clone().max()], 0)
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .expect("token bounds are integers");
    let (lowest, highest) = (bounds[0], bounds[1]);
    if lowest < 0 {
        Some(lowest)
    } else if highest >= limit as i64 {
        Some(highest)
    } else {
        None
    }
}

/// Panics unless every id lies in `0..limit`, naming `what` and the offending id.
pub(crate) fn check_ids<const D: usize>(ids: &Tensor<D, Int>, limit: usize, what: &str) {
    if let Some(id) = id_out_of_range(ids, limit) {
        panic!("{what} holds token id {id}, expected ids in 0..{limit} (the vocabulary size)");
    }
}
