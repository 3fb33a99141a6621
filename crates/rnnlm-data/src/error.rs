use std::path::PathBuf;

/// Everything that can go wrong between a file name (or the network) and a minibatch.
/// Each message names the input and what would fix it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The named text file does not exist.
    #[error("corpus file {path} does not exist; pass an existing UTF-8 text file")]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// The named path is a directory.
    #[error("corpus path {path} is a directory; pass a UTF-8 text file inside it")]
    IsDirectory {
        /// The path as given.
        path: PathBuf,
    },
    /// The file could not be read. The message holds the reason, so it is not also given as
    /// the error's source (which would print it twice in a chain).
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: std::io::Error,
    },
    /// The file is not UTF-8.
    #[error(
        "{path} is not UTF-8 text (invalid byte at offset {offset}); name its encoding with \
         data.encoding (--encoding), e.g. \"windows-1252\" for many Project Gutenberg files, or \
         convert it to UTF-8"
    )]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The file holds a byte its encoding does not define.
    #[error(
        "{path} is not {encoding} text (undefined byte at offset {offset}); check data.encoding (--encoding)"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The encoding it was read in.
        encoding: &'static str,
        /// Offset of the first undefined byte.
        offset: usize,
    },
    /// A UTF-8 file read under another encoding (corpora in different encodings).
    #[error(
        "{path} is UTF-8 text with non-ASCII characters, but data.encoding (--encoding) says \
         {encoding}: all corpora of a run share one encoding; convert this file to {encoding}, \
         or the others to UTF-8"
    )]
    EncodingMismatch {
        /// The file.
        path: PathBuf,
        /// The encoding the run reads its files in.
        encoding: &'static str,
    },
    /// A directory of corpora without a text file.
    #[error("{path} holds no *.txt file; put the corpora there, or name the files themselves")]
    NoTextFiles {
        /// The directory.
        path: PathBuf,
    },
    /// The file, or what preprocessing left of it, holds no token.
    #[error("{what} holds no tokens{hint}")]
    Empty {
        /// The file or corpus.
        what: String,
        /// How to get tokens (e.g. another preprocessing mode).
        hint: String,
    },
    /// Too few tokens for a single minibatch.
    #[error(
        "{what} has {tokens} tokens, but one minibatch of batch_size {batch_size} x num_steps {num_steps} \
         with {sampling} sampling needs at least {needed}; use a longer text or smaller batch_size / num_steps"
    )]
    TooShort {
        /// Which part of the corpus (training or validation).
        what: String,
        /// Tokens available.
        tokens: usize,
        /// Tokens needed.
        needed: usize,
        /// Configured batch size.
        batch_size: usize,
        /// Configured sequence length.
        num_steps: usize,
        /// The sampling scheme's name.
        sampling: &'static str,
    },
    /// An option is out of range.
    #[error("invalid {field} = {value}: {expected}")]
    Invalid {
        /// The option's name.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// The download failed (no network, refused, HTTP error).
    #[error(
        "could not download {url}: {reason}. Without network, pass a local copy with --data FILE \
         or place it at {cache_path}"
    )]
    Download {
        /// Where from.
        url: String,
        /// What went wrong.
        reason: String,
        /// Where a manually placed copy would be found.
        cache_path: PathBuf,
    },
    /// The downloaded bytes are not the expected file.
    #[error(
        "download from {url} has sha1 {actual}, expected {expected}; the partial file was removed{kept}"
    )]
    Checksum {
        /// Where from.
        url: String,
        /// Expected sha1 (hex).
        expected: String,
        /// Sha1 of what arrived (hex).
        actual: String,
        /// Says whether a previous cached copy was kept.
        kept: String,
    },
    /// A prepared token file could not be written (a full disk, say); nothing is left at its
    /// path. The message holds the reason.
    #[error(
        "cannot write the prepared tokens {path}: {reason}; nothing was kept there (free space on its disk, or prepare elsewhere with data.prepared)"
    )]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: std::io::Error,
    },
    /// A file at a prepared file's path is not a prepared token file; it is left alone.
    #[error(
        "{path} is not a prepared token file: {reason}; name another path in data.prepared (or move that file)"
    )]
    NotPrepared {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A source or the prepared file changed while it was being prepared.
    #[error("{path}: {reason}; prepare again once nothing writes to the corpus")]
    Changed {
        /// The file.
        path: PathBuf,
        /// What happened.
        reason: String,
    },
    /// More distinct tokens than 32-bit ids can number.
    #[error(
        "the vocabulary outgrows 32-bit ids at {path}: {distinct} distinct tokens so far (every \
         token is counted before data.min_freq applies, so it cannot help); use character level \
         or a smaller corpus"
    )]
    VocabularyTooLarge {
        /// The file being read when the count passed 2^32.
        path: PathBuf,
        /// Distinct tokens counted.
        distinct: usize,
    },
    /// No cache directory could be determined.
    #[error("no cache directory: set RNNLM_CACHE_DIR or pass --cache-dir")]
    NoCacheDir,
}

impl DataError {
    /// The error of reading `path`: [`DataError::NotFound`] when it does not exist, else
    /// [`DataError::Io`] with the system's reason.
    pub(crate) fn reading(path: &std::path::Path, source: std::io::Error) -> Self {
        match source.kind() {
            std::io::ErrorKind::NotFound => DataError::NotFound {
                path: path.to_owned(),
            },
            _ => DataError::Io {
                path: path.to_owned(),
                reason: source,
            },
        }
    }
}
