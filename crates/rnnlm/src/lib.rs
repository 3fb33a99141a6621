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
//! # Speed
//!
//! Each layer projects the inputs of all time steps in one matmul (one-hot input is a row
//! gather, never a dense one-hot matmul) and packs its gates so that a time step costs one
//! hidden product. The time loop itself is, where the backend has it, **one Burn operation**
//! per layer with its own backward pass ([`fused`]: a backend extension whose kernels are the
//! crate `rnnlm-kernels`), so that autodiff records one node per layer instead of a dozen per
//! step. It runs on flex and ndarray for `f32` tensors when this crate's feature of the same
//! name is on, in training, validation, inference and generation alike, in this crate's models
//! and in any model of your own that holds its cores. Everywhere else (wgpu, cuda, tch, cpu,
//! another float type, or `RNNLM_FUSED=off`) the layers run the same equations as per-step
//! tensor operations: the same numbers to float rounding, slower. [`fused::status`] says which
//! path a device takes and why.
//!
//! The first fused scan of a process also makes glibc keep freed memory instead of returning
//! it to the kernel after every step ([`fused::keep_freed_memory`]; `RNNLM_MALLOC_DEFAULTS=1`
//! leaves glibc alone): a program of yours gets the same speed as `rnnlm`'s own trainer without
//! setting anything up.
//!
//! # Guide
//!
//! ## Adding the crate
//!
//! `rnnlm` enables no backend: the application does, through `burn`'s features, and every
//! module here runs on whichever device it is handed. Turn on rnnlm's feature of the same name
//! next to burn's for the backends it accelerates (`flex`, `ndarray`); without it those
//! backends run the composite path ([`fused::status`] says `NotCompiled` and names the feature).
//!
//! ```toml
//! [dependencies]
//! rnnlm = { path = "../burn-rnnlm/crates/rnnlm", features = ["flex"] } # wherever the checkout lives
//! burn = { version = "=0.22.1", default-features = false, features = ["std", "flex"] }
//! # training also needs "optim" (which brings autodiff); GPUs: "wgpu", "cuda"; LibTorch: "tch"
//! ```
//!
//! ## The models
//!
//! | core | config | per layer | d2l section |
//! |---|---|---|---|
//! | [`RnnScratch`] | [`RnnScratchConfig`] | `H = φ(X W_xh + H W_hh + b_h)`, φ = tanh or ReLU | 9.5 RNN from scratch |
//! | [`Gru`] | [`GruConfig`] | PyTorch's formula (reset gate after the hidden matmul) or d2l's ([`GruFormula`]) | 10.2 GRU |
//! | [`DeepLstm`] | [`DeepLstmConfig`] | PyTorch's LSTM, gates (i, f, g, o), two bias vectors | 10.1, 10.3 deep LSTM |
//!
//! All cores take `num_layers` and `dropout` (between layers, while training), and implement
//! [`Recurrent`]. [`RnnLm`] puts a one-hot (or [`InputEncoding::Embedding`]) input in front
//! and an [`OutputLayer`] to the vocabulary behind; [`RnnLmConfig`] is its serialisable
//! description (the `[model]` table of the experiment files).
//!
//! ## A core in a model of your own
//!
//! A core is an ordinary Burn module: put it in your `#[derive(Module)]` struct. Inputs are
//! batch-major, `[batch, steps, input]`; outputs `[batch, steps, hidden]` are the last layer's
//! hidden states; the returned [`RecurrentState`] holds every layer's final state,
//! `[num_layers, batch, hidden]` (and the LSTM's memory cell, same shape).
//!
//! ```
//! use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
//! use burn::prelude::*;
//! use rnnlm::{DeepLstm, DeepLstmConfig, Recurrent};
//!
//! /// tokens -> embedding -> 2-layer LSTM -> top layer's last hidden state -> class logits.
//! #[derive(Module, Debug)]
//! struct Classifier {
//!     embedding: Embedding,
//!     lstm: DeepLstm,
//!     head: Linear,
//! }
//!
//! impl Classifier {
//!     /// `[batch, steps]` token ids -> `[batch, classes]` logits.
//!     fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<2> {
//!         let [batch, _] = tokens.dims();
//!         let inputs = self.embedding.forward(tokens); // [batch, steps, 16]
//!         let start = self.lstm.begin_state(batch, &inputs.device());
//!         let (_, state) = self.lstm.forward(inputs, start);
//!         let top = state.hidden.narrow(0, self.lstm.num_layers() - 1, 1).squeeze_dim::<2>(0);
//!         self.head.forward(top)
//!     }
//! }
//!
//! let device = Device::flex();
//! let model = Classifier {
//!     embedding: EmbeddingConfig::new(100, 16).init(&device),
//!     lstm: DeepLstmConfig::new(16, 32).with_num_layers(2).init(&device),
//!     head: LinearConfig::new(32, 2).init(&device),
//! };
//! let tokens = Tensor::<2, Int>::zeros([4, 10], &device);
//! assert_eq!(model.forward(tokens).dims(), [4, 2]);
//! ```
//!
//! `examples/sequence-classifier` in the repository trains such a model to 95 %+ accuracy.
//!
//! ## Training with truncated BPTT
//!
//! Autodiff is a property of the device (`device.autodiff()`). To carry the state from one
//! minibatch to the next without backpropagating into the previous one, pass
//! [`RecurrentState::detach`]ed states (d2l's sequential partitioning). The crate
//! `rnnlm-train` wraps this in a burn-train learning strategy with d2l's global-norm gradient
//! clipping, checkpoints and metrics; by hand it is:
//!
//! ```
//! use burn::nn::loss::CrossEntropyLoss;
//! use burn::optim::{GradientsParams, SgdConfig};
//! use burn::prelude::*;
//! use rnnlm::{CellKind, RnnLmConfig};
//!
//! let device = Device::flex().autodiff();
//! let mut model = RnnLmConfig::new(CellKind::Gru, 28, 32).init(&device);
//! let mut optimizer = SgdConfig::new().init();
//! let mut state = model.begin_state(2, &device);
//! for _ in 0..3 {
//!     // A minibatch: inputs and targets (the inputs shifted by one), [batch, steps].
//!     let x = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4, 5, 6], [2, 3]), &device);
//!     let y = Tensor::<2, Int>::from_data(TensorData::new(vec![2i64, 3, 4, 5, 6, 7], [2, 3]), &device);
//!     let (logits, next) = model.forward(x, state);
//!     state = next.detach(); // carried to the next minibatch, cut from this graph
//!     let loss = CrossEntropyLoss::new(None, &device)
//!         .forward(logits.reshape([6, 28]), y.reshape([6]));
//!     let grads = GradientsParams::from_grads(loss.backward(), &model);
//!     model = optimizer.step(1.0, model, grads);
//! }
//! ```
//!
//! ## Generating text
//!
//! [`sample`] warms the state up on a prefix in one forward call, then feeds back one token per
//! step: greedy (d2l's `predict`), temperature / top-k / top-p sampling with a seed, and beam
//! search. Call it on a model without autodiff (`model.valid()`), since no gradient is needed.
//!
//! ```
//! use burn::prelude::*;
//! use rnnlm::sample::{Decoding, generate, greedy};
//! use rnnlm::{CellKind, RnnLmConfig};
//!
//! let device = Device::flex();
//! let model = RnnLmConfig::new(CellKind::Lstm, 28, 32).init(&device);
//! let prefix = vec![3u32, 1, 4];
//! assert_eq!(greedy(&model, &prefix, 10, &device).len(), 10);
//! let sampling = Decoding::Sample { temperature: 0.8, top_k: Some(5), top_p: None, seed: 42 };
//! let batch = generate(&model, &[prefix.clone(), prefix], 5, &sampling, &device, |_| {
//!     std::ops::ControlFlow::Continue(())
//! });
//! assert_eq!((batch.len(), batch[0].len()), (2, 5));
//! ```
//!
//! ## Saving and loading
//!
//! Weights are a Burn record (`Module::save_file` / `load_file`, burnpack format); the
//! [`RnnLmConfig`] that rebuilds the module serialises with serde (JSON, TOML). Models trained
//! in PyTorch (`nn.RNN`, `nn.GRU`, `nn.LSTM` + `nn.Linear`, or d2l's scratch parameters) load
//! through the `rnnlm-import` crate, which maps PyTorch's packed `weight_ih_l{k}` onto these
//! modules (same gate order, transposed).
#![deny(missing_docs)]

mod config;
mod decoder;
mod gru;
mod lm;
mod lstm;
mod recurrent;
mod rnn_scratch;
pub mod sample;

/// The fused time loops: whether they run on a device ([`fused::is_active`], [`fused::status`]),
/// and the switch that forces the composite path ([`fused::set_mode`], [`fused::with_mode`],
/// `RNNLM_FUSED=off`). See the crate documentation's [Speed](crate#speed).
pub use rnnlm_fused as fused;

pub use config::{
    Activation, CellKind, ConfigError, GruFormula, InputEncoding, RnnLmConfig, WeightInit,
};
pub use gru::{Gru, GruConfig, GruLayer};
pub use lm::{OutputLayer, RecurrentCore, RnnLm};
pub use lstm::{DeepLstm, DeepLstmConfig, LstmLayer};
pub use recurrent::{Recurrent, RecurrentState, SequenceInput};
pub use rnn_scratch::{RnnScratch, RnnScratchConfig, RnnScratchLayer};
