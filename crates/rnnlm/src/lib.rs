//! Character-level recurrent language models as Burn modules: d2l's vanilla RNN written from
//! scratch, a GRU and a deep LSTM, plus the language model around them.
//!
//! The modules never name a backend: the same code runs on every device compiled into the
//! application (`Device::flex()`, `Device::ndarray()`, `Device::wgpu(..)`, ...). This crate
//! depends on `burn` without backend features, so any Burn project can import it.
//!
//! Every core implements [`Recurrent`]: inputs `[batch, steps, input]`, outputs
//! `[batch, steps, hidden]`, and a [`RecurrentState`] holding every layer
//! (`[num_layers, batch, hidden]`; the LSTM adds its memory cell) that the caller carries from
//! one call to the next.
//!
//! ```
//! use burn::prelude::*;
//! use rnnlm::{CellKind, RnnLmConfig};
//!
//! let device = Device::flex();
//! let model = RnnLmConfig::new(CellKind::Lstm, 28, 64).with_num_layers(2).init(&device);
//! let tokens = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4, 5, 6], [2, 3]), &device);
//! let (logits, state) = model.forward(tokens, model.begin_state(2, &device));
//! assert_eq!(logits.dims(), [2, 3, 28]);
//! // Carry the state into the next call; detach it first when training.
//! let next = Tensor::<2, Int>::from_data(TensorData::new(vec![7i64, 8], [2, 1]), &device);
//! let (logits, _) = model.forward(next, state.detach());
//! assert_eq!(logits.dims(), [2, 1, 28]);
//! ```
//!
//! Speed comes from the layout, not from changing the math: each layer projects the inputs of
//! all time steps in one matmul (one-hot input is a row gather, never a dense one-hot matmul),
//! packs its gates so a time step costs one hidden matmul, and stacks its per-step outputs once.
#![deny(missing_docs)]

mod config;
mod gru;
mod lm;
mod lstm;
mod recurrent;
mod rnn_scratch;
pub mod sample;

pub use config::{
    Activation, CellKind, ConfigError, GruFormula, InputEncoding, RnnLmConfig, WeightInit,
};
pub use gru::{Gru, GruConfig, GruLayer};
pub use lm::{OutputLayer, RecurrentCore, RnnLm};
pub use lstm::{DeepLstm, DeepLstmConfig, LstmLayer};
pub use recurrent::{Recurrent, RecurrentState, SequenceInput};
pub use rnn_scratch::{RnnScratch, RnnScratchConfig, RnnScratchLayer};
