//! Text data for character-level language models, with d2l's semantics: The Time Machine
//! (downloaded once, checked, cached) or any UTF-8 file; d2l's preprocessing; a vocabulary
//! with `<unk>` at index 0 ordered by frequency; and d2l's random and sequential minibatch
//! schemes, seeded, with adapters to Burn's `Dataset` / `Batcher`. Corpora of any size are
//! streamed into a prepared token file ([`PreparedCorpus`]) whose ids are memory-mapped
//! ([`Tokens`]); an [`Epoch`] computes its minibatches one at a time from them.
//!
//! ```
//! use rnnlm_data::{BatchConfig, Corpus, CorpusOptions, Sampling, Tokenizer, epoch_rng};
//! let corpus = Corpus::build("The Time Machine, by H. G. Wells", &Tokenizer::default(),
//!                            &CorpusOptions::default(), "example").unwrap();
//! assert_eq!(corpus.vocab.token(0), Some("<unk>"));
//! let batches = BatchConfig { batch_size: 2, num_steps: 5, sampling: Sampling::Sequential }
//!     .epoch(&corpus.tokens, &mut epoch_rng(0, 1)).unwrap();
//! assert_eq!(batches.get(0).unwrap().x.len(), 2 * 5);
//! ```
#![deny(missing_docs)]

mod batches;
mod corpus;
mod error;
mod hash;
mod prepared;
mod text;
mod tokens;
mod vocab;

pub use batches::{
    BatchConfig, Epoch, Minibatch, MinibatchDataset, Permutation, Sampling, SequenceBatch,
    SequenceBatcher, epoch_rng,
};
pub use corpus::{
    CACHE_DIR_ENV, Corpus, CorpusOptions, CorpusSource, RemoteFile, TIME_MACHINE_FILE,
    TIME_MACHINE_SHA1, TIME_MACHINE_URL, TextShare, default_cache_dir, encode,
};
pub use error::DataError;
pub use hash::sha1_of_file;
pub use prepared::{
    CorpusSpec, MappedFile, PREPARED_EXTENSION, PREPARED_FORMAT, Preparation, PrepareProgress,
    PreparedCorpus, SourceFile, UNKNOWN_LISTED, Unusable,
};
pub use text::{
    Preprocess, StreamOptions, StreamedFile, Token, TokenLevel, TokenStream, Tokenizer, UTF_8,
    encoding_for, read_text, read_text_in, stream_text, stream_text_with_progress, text_files,
};
pub use tokens::{IdWidth, Tokens};
pub use vocab::{TokenCounter, TokenEncoder, UNK, Vocab};

/// The crate's README, whose example runs as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
