//! Character-level recurrent language models as Burn modules: d2l's vanilla RNN written from
//! scratch, a GRU and a deep LSTM, plus the language model around them.
//!
//! The modules never name a backend: the same code runs on every device compiled into the
//! application (`Device::flex()`, `Device::ndarray()`, `Device::wgpu(..)`, ...). This crate
//! depends on `burn` without backend features, so any Burn project can import it.
//!
//! Every core implements [`Recurrent`] and has an inherent `forward`, as burn-nn's layers do:
//! inputs `[batch, steps, input]`, outputs `[batch, steps, hidden]`, and a [`RecurrentState`]
//! holding every layer (`[num_layers, batch, hidden]`; the LSTM adds its memory cell) that the
//! caller carries from one call to the next, or `None` for zeros.
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
//! step. It runs on flex, ndarray and LibTorch's CPU device (tch) through host kernels, and on
//! Burn's CubeCL backends (wgpu, cuda, cpu) through CubeCL kernels, for `f32` tensors when this
//! crate's feature of the same name is on (the CubeCL ones turn on Burn's `fusion` as well, as
//! Burn's default features do), in training, validation, inference and generation
//! alike, in this crate's models and in any model of your own that holds its cores. Everywhere
//! else (tch on a GPU, another float type, or `RNNLM_FUSED=off`) the layers run the same equations as per-step
//! tensor operations: the same numbers to float rounding, slower. [`fused::status`] says which
//! path a device takes and why.
//!
//! # What it does to your process
//!
//! Everything this crate does beyond your tensors, with the switch for each:
//!
//! | effect | by default | why (measured on 2 cores, flex) | from code | from the environment |
//! |---|---|---|---|---|
//! | glibc's `malloc` keeps freed memory in the process (`mallopt`: mmap threshold 32 MiB, trim threshold 1 GiB, top pad 64 MiB) | set by the first fused scan | otherwise every step hands its activations back to the kernel and page-faults them in again: the primer's classifier (LSTM 512, batch 32) trains at 231 samples/s instead of 410, the 512-wide scratch RNN at half speed | [`fused::set_automatic_allocator_settings`]`(false)` before the first forward pass; [`fused::keep_freed_memory`] to apply it yourself | `RNNLM_MALLOC_DEFAULTS=1` |
//! | helper threads for the kernels, started at the first parallel kernel call and kept; after each parallel part they spin, then yield, for about 2 ms before sleeping (a core looks busy that long after each call) | the machine's parallelism | waking a sleeping thread costs ~50 µs, more than most parts of a time step take | [`fused::set_threads`]`(Some(n))`, `Some(1)` starting no helper; [`fused::set_helper_stay_awake`]`(Some(Duration::ZERO))` to sleep at once | `RNNLM_THREADS=n` |
//! | the fused time loop instead of per-step tensor operations | on, where the backend has it | one autodiff node per layer instead of a dozen per step | [`fused::set_mode`], [`fused::with_mode`] | `RNNLM_FUSED=off` |
//!
//! The environment is read once, at the first use; what code sets takes precedence. Results
//! never depend on any of these, only speed (and, for the allocator, how much memory the
//! process keeps between steps).
//!
//! # Guide
//!
//! ## Adding the crate
//!
//! `rnnlm` enables no backend: the application does, through `burn`'s features, and every
//! module here runs on whichever device it is handed. Turn on rnnlm's feature of the same name
//! next to burn's for the backends it accelerates (`flex`, `ndarray`, `tch`); without it those
//! backends run the composite path ([`fused::status`] says `NotCompiled` and names the feature).
//!
//! ```toml
//! [dependencies]
//! rnnlm = { version = "0.1", features = ["flex"] }
//! # or from a checkout: rnnlm = { path = "../burn-rnnlm/crates/rnnlm", features = ["flex"] }
//! burn = { version = "0.22", default-features = false, features = ["std", "flex"] }
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
//! batch-major, `[batch, steps, input]` (or time-major with `batch_first = false`); outputs
//! `[batch, steps, hidden]` are the last layer's hidden states; the returned
//! [`RecurrentState`] holds every layer's final state, `[num_layers, batch, hidden]` (and the
//! LSTM's memory cell, same shape), and [`RecurrentState::last_hidden`] is the top layer's
//! `[batch, hidden]`. `forward` takes `None` for a zero initial state, as burn-nn's layers do.
//!
//! ```
//! use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
//! use burn::prelude::*;
//! use rnnlm::{DeepLstm, DeepLstmConfig};
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
//!         let inputs = self.embedding.forward(tokens); // [batch, steps, 16]
//!         let (_, state) = self.lstm.forward(inputs, None);
//!         self.head.forward(state.last_hidden()) // [batch, 32] -> [batch, 2]
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
//! The other methods every core shares (`begin_state`, `forward_one_hot`, `step`,
//! `forward_time_major`, the sizes) are the [`Recurrent`] trait's: `use rnnlm::prelude::*`
//! brings it with the cores and their configs.
//!
//! ## Coming from burn-nn or PyTorch
//!
//! | | burn-nn 0.22 | PyTorch | rnnlm |
//! |---|---|---|---|
//! | layer | `Lstm` / `Gru` / `Rnn`, one layer each | `nn.LSTM` / `nn.GRU` / `nn.RNN(nonlinearity=..)`, `num_layers` | [`DeepLstm`] / [`Gru`] / [`RnnScratch`] (tanh or ReLU), `num_layers` |
//! | config | `LstmConfig::new(d_input, d_hidden, bias)` | `nn.LSTM(input_size, hidden_size)` | `DeepLstmConfig::new(input_size, hidden_size)` (`with_bias(false)` for `bias = false`), or `DeepLstmConfig::from_burn_nn(&[LstmConfig])` |
//! | layout | `batch_first` (default `true`) | `batch_first` (default `False`) | `batch_first` (default `true`) |
//! | call | `forward(x, None)` | `lstm(x)` / `lstm(x, (h0, c0))` | `forward(x, None)` / `forward(x, state)` |
//! | returns | `(outputs, LstmState { cell, hidden })`, state `[batch, hidden]` | `(output, (h_n, c_n))`, `[num_layers, batch, hidden]` | `(outputs, RecurrentState { hidden, cell })`, `[num_layers, batch, hidden]`; `last_hidden()` / `last_cell()` give `[batch, hidden]` |
//! | between layers | stack the layers yourself | `dropout=` | `dropout` on the config |
//! | both directions | `BiLstm` / `BiGru` (one layer) | `bidirectional=True`, outputs `[.., 2H]`, state `[num_layers*2, batch, H]` | `bidirectional` on the config, the same shapes and order (per layer forward, then reverse) |
//! | rows of different lengths | pad them (every row runs to the end) | `pack_padded_sequence(x, lengths, enforce_sorted=False)` | `forward_padded(x, &lengths, state)` on the padded batch |
//! | weights | a `GateController` (two `Linear`s) per gate | `weight_ih_l{k}` `[4H, in]`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}` | per layer one packed `input_weight` `[in, 4H]`, `hidden_weight` `[H, 4H]`, `input_bias`, `hidden_bias` `[4H]`: PyTorch's transposed, same gate order (LSTM i, f, g, o; GRU r, z, n) |
//!
//! The same model, on burn-nn's single-layer LSTM and on rnnlm's, side by side:
//!
//! ```
//! use burn::nn::{LstmConfig, LstmState};
//! use burn::prelude::*;
//! use rnnlm::{DeepLstmConfig, RecurrentState};
//!
//! let device = Device::flex();
//! let x = Tensor::<3>::zeros([4, 10, 8], &device); // [batch, steps, input]
//!
//! let burn_lstm = LstmConfig::new(8, 16, true).init(&device);
//! let (outputs, LstmState { hidden, .. }) = burn_lstm.forward(x.clone(), None);
//! assert_eq!((outputs.dims(), hidden.dims()), ([4, 10, 16], [4, 16]));
//!
//! let lstm = DeepLstmConfig::new(8, 16).init(&device);
//! let (outputs, state): (_, RecurrentState) = lstm.forward(x, None);
//! assert_eq!((outputs.dims(), state.last_hidden().dims()), ([4, 10, 16], [4, 16]));
//! assert_eq!(state.hidden.dims(), [1, 4, 16]); // every layer: [num_layers, batch, hidden]
//! ```
//!
//! ### Switching a trained burn-nn model
//!
//! A model on burn-nn's layers, before (two stacked `Lstm`s and a `Gru`, as Burn users write
//! them) and after, line by line; only the marked lines change, the rest of the model (the
//! embedding, the head, the loss, the optimizer) stays:
//!
//! ```text
//! // before (burn-nn)                                  // after (rnnlm)
//! struct Model {                                      struct Model {
//!     embedding: Embedding,                               embedding: Embedding,
//!     lstm: Vec<nn::Lstm>,                     // *       lstm: DeepLstm,
//!     gru: nn::Gru,                            // *       gru: rnnlm::Gru,
//!     head: Linear,                                       head: Linear,
//! }                                                   }
//! // forward                                          // forward
//! let mut x = self.embedding.forward(ids);            let x = self.embedding.forward(ids);
//! for lstm in &self.lstm {                     // *   let (x, _) = self.lstm.forward(x, None);
//!     x = lstm.forward(x, None).0;             // *
//! }                                            // *
//! let x = self.gru.forward(x, None);           // *   let (x, _) = self.gru.forward(x, None);
//! self.head.forward(x)                                self.head.forward(x)
//! ```
//!
//! The configs come from burn-nn's, so sizes and options cannot drift; the trained weights
//! come from the burn-nn layers, on whatever device they live (autodiff included: the core's
//! parameters keep their own tracking and train on), or from the burn-nn model's saved record
//! ([`burn_nn::load_record`], which maps the keys and packs the gates). In the repository,
//! `examples/burn-nn-migration` does all of it and trains on.
//!
//! ```
//! use burn::nn::{self, LstmConfig};
//! use burn::prelude::*;
//! use rnnlm::{DeepLstmConfig, GruConfig};
//!
//! let device = Device::flex().autodiff(); // trained weights live on an autodiff device
//! let lstm_configs = [LstmConfig::new(8, 16, true), LstmConfig::new(16, 16, true)];
//! let gru_config = nn::GruConfig::new(16, 16, true);
//! let stack: Vec<nn::Lstm> = lstm_configs.iter().map(|c| c.init(&device)).collect();
//! let gru = gru_config.init(&device);
//! // ... trained with burn-nn, then:
//! let lstm = DeepLstmConfig::from_burn_nn(&lstm_configs)?.init(&device).load_burn_nn(&stack)?;
//! let gru = GruConfig::from_burn_nn(&[gru_config])?.init(&device).load_burn_nn(&[gru])?;
//! let (x, _) = lstm.forward(Tensor::<3>::zeros([4, 10, 8], &device), None);
//! let (x, _) = gru.forward(x, None);
//! assert_eq!(x.dims(), [4, 10, 16]);
//! // And back, if ever needed: the same layers as burn-nn modules.
//! let again: Vec<nn::Lstm> = lstm.to_burn_nn()?;
//! assert_eq!(again.len(), 2);
//! # Ok::<(), rnnlm::ConfigError>(())
//! ```
//!
//! `BiLstm`, `BiGru` and `BiRnn` stacks load the same way into a core built with
//! `bidirectional = true` (`from_burn_nn(&[nn::BiLstmConfig])` sets it). Every option of
//! burn-nn's recurrent layers either runs or is refused by name, at load and in
//! `from_burn_nn`:
//!
//! | burn-nn | rnnlm | notes |
//! |---|---|---|
//! | `d_input`, `d_hidden` | `input_size`, `hidden_size` | one core for the whole stack: every layer has the same `hidden_size` |
//! | `bias` | `bias` (every core) | without it no bias parameter exists |
//! | `batch_first` | `batch_first` | checked at load: a time-major layer into a batch-first core is an error naming the field |
//! | `reverse` (`Lstm`, `Rnn`) | `reverse` (one-direction cores) | fused, as the reverse direction of a bidirectional core |
//! | `clip` (LSTM: the cell; GRU, RNN: the hidden state) | `clip` | clamped after every step, as burn-nn does, in the fused loop as in the per-step tensor operations |
//! | `input_forget` (LSTM) | `input_forget` | three gate blocks `i g o`; fused, as `[i, -i, g, o]` (`σ(-x) = 1 - σ(x)`) |
//! | `reset_after` (GRU) | `formula`: `GruFormula::PyTorch` (true), `GruFormula::D2l` (false) | d2l's formula keeps one bias per gate: burn-nn's two, summed |
//! | the `Rnn`'s two biases | `b_h` | summed (they only ever appear as their sum) |
//! | `gate_activation` sigmoid, `cell_activation` and `hidden_activation` tanh | the cells' own | anything else is refused, naming the field and what runs |
//! | RNN `hidden_activation` tanh or ReLU | `activation` | others are refused |
//! | `initializer` | `init` | not carried over: the weights are loaded, or drawn by rnnlm's rules |
//! | `BiLstm` / `BiGru` / `BiRnn` | `bidirectional = true` | state `[num_layers·2, batch, hidden]`, forward then reverse per layer |
//! | a state `[batch, hidden]` per layer | [`RecurrentState`] `[num_layers·directions, batch, hidden]` | `last_hidden()` is the top layer's, burn-nn's `state.hidden` |
//!
//! Outputs, states and gradients agree with burn-nn's to float rounding, and so do optimizer
//! steps, except where rnnlm keeps one bias for burn-nn's two (the RNN, d2l's GRU): there the
//! bias moves as one parameter. Shape mistakes name the shape passed, in your layout
//! ([`DeepLstm::try_forward`] returns them as a [`ShapeError`] instead of panicking).
//!
//! PyTorch's time-major default, and a state carried in:
//!
//! ```
//! use burn::prelude::*;
//! use rnnlm::GruConfig;
//!
//! let device = Device::flex();
//! let gru = GruConfig::new(8, 16).with_num_layers(2).with_batch_first(false).init(&device);
//! let x = Tensor::<3>::zeros([10, 4, 8], &device); // [steps, batch, input], as nn.GRU's default
//! let (output, h_n) = gru.forward(x.clone(), None);
//! assert_eq!((output.dims(), h_n.hidden.dims()), ([10, 4, 16], [2, 4, 16]));
//! let (_, h_n) = gru.forward(x, h_n); // continue from the state, as gru(x, h_n)
//! assert_eq!(h_n.hidden.dims(), [2, 4, 16]);
//! ```
//!
//! ## Both directions, rows of different lengths
//!
//! With `bidirectional = true` every layer also runs over the sequence backwards: the two
//! directions' outputs side by side are the next layer's input and the core's outputs,
//! `[batch, steps, 2·hidden]`, and the state holds `num_layers·2` layers, forward before
//! reverse in each, as PyTorch orders `h_n`. The reverse direction is the same fused loop
//! visiting the steps last to first, not a flipped copy of the input.
//!
//! A batch of sequences of different lengths, padded to the longest, goes through
//! [`Recurrent::forward_padded`] with every row's length: each row gets the numbers it would
//! get alone. Its outputs past its length are zero and carry no gradient, its final state is
//! the one after its own last step, and its reverse direction starts at that step: PyTorch's
//! `pack_padded_sequence` (any order of lengths), without packing, and the same numbers
//! (checked against PyTorch in this workspace's tests). A length of 0 or past the steps is a
//! [`LengthsError`] naming the row.
//!
//! ```
//! use burn::nn::{Linear, LinearConfig};
//! use burn::prelude::*;
//! use rnnlm::{DeepLstmConfig, Recurrent};
//!
//! let device = Device::flex();
//! let lstm = DeepLstmConfig::new(8, 16).with_num_layers(2).with_bidirectional(true).init(&device);
//! let head = LinearConfig::new(lstm.output_size(), 3).init(&device); // 2·16 inputs
//! let x = Tensor::<3>::zeros([4, 10, 8], &device); // padded to 10 steps
//! let lengths = [10, 3, 7, 1];
//! let (outputs, state) = lstm.forward_padded(x, &lengths, None)?;
//! assert_eq!(outputs.dims(), [4, 10, 32]); // zero past each row's length
//! assert_eq!(state.hidden.dims(), [4, 4, 16]); // [num_layers·2, batch, hidden]
//! // Both directions' final states of the top layer, as PyTorch's cat(h_n[-2], h_n[-1]):
//! let logits = head.forward(state.top_layer_hidden(lstm.num_directions()));
//! assert_eq!(logits.dims(), [4, 3]);
//! # Ok::<(), rnnlm::LengthsError>(())
//! ```
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
//! modules (same gate order, transposed). The way back is [`export`]: a model as the
//! `state_dict()` of those PyTorch modules, which `rnnlm export` writes as a `.pt` or safetensors file.
#![deny(missing_docs)]

pub mod burn_nn;
mod config;
mod decoder;
pub mod export;
mod gru;
mod lm;
mod lm_config;
mod lstm;
mod recurrent;
mod rnn_scratch;
pub mod sample;

/// The fused time loops: whether they run on a device ([`fused::is_active`], [`fused::status`]),
/// and the switch that forces the composite path ([`fused::set_mode`], [`fused::with_mode`],
/// `RNNLM_FUSED=off`). See the crate documentation's [Speed](crate#speed).
pub use rnnlm_fused as fused;

pub use config::{Activation, CellKind, ConfigError, GruFormula, InputEncoding, WeightInit};
pub use gru::{Gru, GruConfig, GruLayer};
pub use lm::{OutputLayer, RecurrentCore, RnnLm};
pub use lm_config::RnnLmConfig;
pub use lstm::{DeepLstm, DeepLstmConfig, LstmLayer};
pub use recurrent::{
    ForwardError, LengthsError, Recurrent, RecurrentState, SequenceInput, ShapeError, check_lengths,
};
pub use rnn_scratch::{RnnScratch, RnnScratchConfig, RnnScratchLayer};

/// The cores, their configs, the language model and the [`Recurrent`] trait that gives every
/// core `begin_state`, `forward_one_hot`, `step` and `forward_time_major`: `use
/// rnnlm::prelude::*;`.
pub mod prelude {
    pub use crate::{
        DeepLstm, DeepLstmConfig, Gru, GruConfig, LengthsError, Recurrent, RecurrentCore,
        RecurrentState, RnnLm, RnnLmConfig, RnnScratch, RnnScratchConfig, SequenceInput,
    };
}

/// The crate's README, whose example runs as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
