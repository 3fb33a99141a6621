//! Loads weights trained elsewhere into [`rnnlm`]'s modules: PyTorch's `nn.RNN` (tanh or
//! ReLU), `nn.GRU` and `nn.LSTM` with any number of layers, with or without biases, followed by
//! an `nn.Linear` (and optionally preceded by an `nn.Embedding`); and d2l's scratch RNN
//! (`W_xh, W_hh, b_h, W_hq, b_q`). A core alone ([`import_core`]) may also be bidirectional
//! (`weight_ih_l{k}_reverse` ...), for a classifier or an encoder of one's own. Files are `torch.save` checkpoints (read by burn-store's
//! PyTorch reader, no Python needed) or safetensors.
//!
//! PyTorch packs each layer's gates into `weight_ih_l{k}` `[gates·hidden, input]`; rnnlm packs
//! them in the same order, (r, z, n) for the GRU and (i, f, g, o) for the LSTM, as
//! `[input, gates·hidden]`, so import is a transpose per matrix and nothing else. The two
//! models then compute the same function (checked to 1e-5 against PyTorch's own outputs in
//! this workspace's tests).
//!
//! ```no_run
//! use burn::prelude::*;
//! use rnnlm_import::{ImportOptions, StateDict, import_lm};
//!
//! let device = Device::flex();
//! let weights = StateDict::read("lstm.pt".as_ref())?;
//! let imported = import_lm(&weights, &ImportOptions::default(), &device)?;
//! println!("{}", imported.description); // 2-layer nn.LSTM(28, 256) + nn.Linear(256, 28)
//! let model = imported.model; // an rnnlm::RnnLm
//! # Ok::<(), rnnlm_import::ImportError>(())
//! ```
//!
//! The way out: [`write_pytorch`] and [`write_safetensors`] write named tensors (such as
//! `rnnlm::export::export_lm`'s state dict) as files that `torch.load` and
//! `safetensors.torch.load_file` read, atomically; [`StateDict::read`] reads them back.
//!
//! Anything that does not fit (missing, unexpected or misshapen keys, `proj_size`, a
//! bidirectional language model) is an [`ImportError`] that lists every offending key with the
//! shape expected, or says why.
#![deny(missing_docs)]

mod error;
mod import;
mod state_dict;
mod write;

pub use error::{ImportError, KeyProblem};
pub use import::{ImportOptions, ImportedCore, ImportedLm, import_core, import_lm};
pub use state_dict::StateDict;
pub use write::{
    WeightFormat, WriteError, write_atomic, write_pytorch, write_safetensors, write_weights,
};

/// The crate's README, whose example runs as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
