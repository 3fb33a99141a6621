//! Where the text comes from (The Time Machine, downloaded and cached, or a user's file), and
//! the encoded corpus built from it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::text::read_text;
use crate::{DataError, Tokenizer, Vocab};

/// d2l's copy of The Time Machine.
pub const TIME_MACHINE_URL: &str = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt";
/// Its sha1.
pub const TIME_MACHINE_SHA1: &str = "090b5e7e70c295757f55df93cb0a180b9691891a";
/// File name in the cache directory.
pub const TIME_MACHINE_FILE: &str = "timemachine.txt";
/// Environment variable that overrides the cache directory.
pub const CACHE_DIR_ENV: &str = "RNNLM_CACHE_DIR";

/// The cache directory: `$RNNLM_CACHE_DIR`, else the platform cache dir (`$XDG_CACHE_HOME` or
/// `~/.cache` on Linux) + `/rnnlm`.
pub fn default_cache_dir() -> Result<PathBuf, DataError> {
    if let Some(dir) = std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::cache_dir()
        .map(|d| d.join("rnnlm"))
        .ok_or(DataError::NoCacheDir)
}

/// A file to download once, check, and keep.
#[derive(Clone, Debug)]
pub struct RemoteFile {
    /// Where from.
    pub url: String,
    /// Expected sha1, lowercase hex.
    pub sha1: String,
    /// Name inside the cache directory.
    pub file_name: String,
}

impl RemoteFile {
    /// d2l's The Time Machine.
    pub fn time_machine() -> Self {
        Self {
            url: TIME_MACHINE_URL.to_owned(),
            sha1: TIME_MACHINE_SHA1.to_owned(),
            file_name: TIME_MACHINE_FILE.to_owned(),
        }
    }

    /// The path of a verified copy in `cache_dir`, downloading it first if there is none.
    ///
    /// A cached file whose sha1 matches is used without touching the network. A download goes
    /// to a temporary file in the same directory and is renamed over the cached path only
    /// once its sha1 matches, so an interrupted or corrupt download never replaces anything.
    pub fn fetch(&self, cache_dir: &Path) -> Result<PathBuf, DataError> {
        let path = cache_dir.join(&self.file_name);
        if path.is_file() && sha1_of_file(&path).is_ok_and(|s| s == self.sha1) {
            return Ok(path);
        }
        let had_copy = path.exists();
        std::fs::create_dir_all(cache_dir).map_err(|source| DataError::Io {
            path: cache_dir.to_owned(),
            reason: source,
        })?;
        let partial = cache_dir.join(format!(".{}.part-{}", self.file_name, std::process::id()));
        let result = self.download_to(&partial, &path, had_copy);
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result?;
        std::fs::rename(&partial, &path).map_err(|source| DataError::Io {
            path: path.clone(),
            reason: source,
        })?;
        Ok(path)
    }

    fn download_to(
        &self,
        partial: &Path,
        final_path: &Path,
        had_copy: bool,
    ) -> Result<(), DataError> {
        let download_error = |reason: String| DataError::Download {
            url: self.url.clone(),
            reason,
            cache_path: final_path.to_owned(),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(120)))
            .build()
            .into();
        let mut response = agent
            .get(&self.url)
            .call()
            .map_err(|e| download_error(e.to_string()))?;
        let mut reader = response.body_mut().with_config().limit(64 << 20).reader();
        let mut file = std::fs::File::create(partial).map_err(|source| DataError::Io {
            path: partial.to_owned(),
            reason: source,
        })?;
        let mut hasher = Sha1::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| download_error(e.to_string()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(|source| DataError::Io {
                path: partial.to_owned(),
                reason: source,
            })?;
        }
        file.sync_all().map_err(|source| DataError::Io {
            path: partial.to_owned(),
            reason: source,
        })?;
        let actual = hex(&hasher.finalize());
        if actual != self.sha1 {
            return Err(DataError::Checksum {
                url: self.url.clone(),
                expected: self.sha1.clone(),
                actual,
                kept: if had_copy {
                    format!("; the cached {} was left as it was", final_path.display())
                } else {
                    String::new()
                },
            });
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sha1 of a file, lowercase hex.
pub fn sha1_of_file(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_owned(),
        reason: source,
    })?;
    Ok(hex(&Sha1::digest(&bytes)))
}

/// Where a corpus comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CorpusSource {
    /// The Time Machine, fetched into the cache directory.
    TimeMachine,
    /// A UTF-8 text file.
    File(PathBuf),
}

impl CorpusSource {
    /// The text, fetching The Time Machine into `cache_dir` (or the default cache) if needed.
    pub fn read(&self, cache_dir: Option<&Path>) -> Result<String, DataError> {
        match self {
            CorpusSource::File(path) => read_text(path),
            CorpusSource::TimeMachine => {
                let dir = match cache_dir {
                    Some(dir) => dir.to_owned(),
                    None => default_cache_dir()?,
                };
                read_text(&RemoteFile::time_machine().fetch(&dir)?)
            }
        }
    }
}

/// A text encoded as token ids with its vocabulary.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// The vocabulary built from the whole text.
    pub vocab: Vocab,
    /// Token ids, in text order.
    pub tokens: Vec<u32>,
}

/// Options for [`Corpus::build`].
#[derive(Clone, Debug, Default)]
pub struct CorpusOptions {
    /// Keep only the first `max_tokens` tokens (d2l's old experiments use 10,000); `None` keeps
    /// all. The vocabulary still comes from the whole text, as in d2l.
    pub max_tokens: Option<usize>,
    /// Tokens seen fewer times are left out of the vocabulary (and become `<unk>`).
    pub min_freq: usize,
    /// Tokens given indices 1.. right after `<unk>`.
    pub reserved: Vec<String>,
}

impl Corpus {
    /// Tokenises `text`, builds the vocabulary and encodes (d2l's `load_corpus_time_machine`).
    /// `what` names the text in errors.
    pub fn build(
        text: &str,
        tokenizer: &Tokenizer,
        options: &CorpusOptions,
        what: &str,
    ) -> Result<Self, DataError> {
        let tokens = tokenizer.tokenize(text);
        if tokens.is_empty() {
            return Err(DataError::Empty {
                what: what.to_owned(),
                hint: format!(
                    " after {:?} preprocessing; the raw mode keeps every character",
                    tokenizer.preprocess
                ),
            });
        }
        let reserved: Vec<&str> = options.reserved.iter().map(String::as_str).collect();
        let vocab = Vocab::build(
            tokens.iter().map(String::as_str),
            options.min_freq,
            &reserved,
        );
        let keep = options.max_tokens.unwrap_or(usize::MAX).min(tokens.len());
        let ids = tokens[..keep].iter().map(|t| vocab.index_of(t)).collect();
        Ok(Self { vocab, tokens: ids })
    }

    /// Splits off the last `valid_fraction` of the tokens for validation:
    /// `(training, validation)`.
    pub fn split(&self, valid_fraction: f64) -> Result<(&[u32], &[u32]), DataError> {
        if !(0.0..1.0).contains(&valid_fraction) {
            return Err(DataError::Invalid {
                field: "data.valid_fraction",
                value: valid_fraction.to_string(),
                expected: "must lie in [0, 1)".to_owned(),
            });
        }
        let valid = (self.tokens.len() as f64 * valid_fraction).round() as usize;
        Ok(self.tokens.split_at(self.tokens.len() - valid))
    }
}

/// A text of a corpus with the name that messages and summaries give it (its path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedText {
    /// The file's path, or "The Time Machine".
    pub name: String,
    /// Its contents.
    pub text: String,
}

/// One text's share of a [`SplitCorpus`], in tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextShare {
    /// The text's name.
    pub name: String,
    /// Its tokens (after preprocessing and `max_tokens`).
    pub tokens: usize,
    /// Of them, for training.
    pub train: usize,
    /// Of them, for validation.
    pub valid: usize,
}

/// The training and validation tokens of one or more texts under one vocabulary: d2l's
/// "increase the training data to include multiple books".
#[derive(Clone, Debug)]
pub struct SplitCorpus {
    /// Built from every text, validation parts included (as d2l builds it from a whole book).
    pub vocab: Vocab,
    /// Every training text's training part, one after the other.
    pub train: Vec<u32>,
    /// Every validation part, one after the other.
    pub valid: Vec<u32>,
    /// Each text's share, training texts first.
    pub shares: Vec<TextShare>,
}

impl SplitCorpus {
    /// Tokenises every text and builds one vocabulary over all of them. Without `valid_texts`,
    /// each text keeps its last `valid_fraction` of tokens for validation; with them, the
    /// `texts` train whole and the `valid_texts` validate. `options.max_tokens` keeps the first
    /// tokens of every text.
    ///
    /// # Errors
    /// A text with no token after preprocessing (named), an invalid `valid_fraction`, or no
    /// text at all.
    pub fn build(
        texts: &[NamedText],
        valid_texts: &[NamedText],
        tokenizer: &Tokenizer,
        options: &CorpusOptions,
        valid_fraction: f64,
    ) -> Result<Self, DataError> {
        if !(0.0..1.0).contains(&valid_fraction) {
            return Err(DataError::Invalid {
                field: "data.valid_fraction",
                value: valid_fraction.to_string(),
                expected: "must lie in [0, 1)".to_owned(),
            });
        }
        if texts.is_empty() {
            return Err(DataError::Empty {
                what: "the corpus".to_owned(),
                hint: ": it names no text file".to_owned(),
            });
        }
        let tokenize = |named: &NamedText| -> Result<Vec<String>, DataError> {
            let tokens = tokenizer.tokenize(&named.text);
            if tokens.is_empty() {
                return Err(DataError::Empty {
                    what: named.name.clone(),
                    hint: format!(
                        " after {:?} preprocessing; the raw mode keeps every character",
                        tokenizer.preprocess
                    ),
                });
            }
            Ok(tokens)
        };
        let train_tokens = texts.iter().map(tokenize).collect::<Result<Vec<_>, _>>()?;
        let valid_tokens = valid_texts.iter().map(tokenize).collect::<Result<Vec<_>, _>>()?;
        let reserved: Vec<&str> = options.reserved.iter().map(String::as_str).collect();
        let vocab = Vocab::build(
            train_tokens.iter().chain(&valid_tokens).flatten().map(String::as_str),
            options.min_freq,
            &reserved,
        );
        let ids = |tokens: &[String]| -> Vec<u32> {
            let keep = options.max_tokens.unwrap_or(usize::MAX).min(tokens.len());
            tokens[..keep].iter().map(|t| vocab.index_of(t)).collect()
        };
        let (mut train, mut valid, mut shares) = (Vec::new(), Vec::new(), Vec::new());
        for (named, tokens) in texts.iter().zip(&train_tokens) {
            let ids = ids(tokens);
            let held = if valid_texts.is_empty() {
                (ids.len() as f64 * valid_fraction).round() as usize
            } else {
                0
            };
            let (own_train, own_valid) = ids.split_at(ids.len() - held);
            shares.push(TextShare {
                name: named.name.clone(),
                tokens: ids.len(),
                train: own_train.len(),
                valid: own_valid.len(),
            });
            train.extend_from_slice(own_train);
            valid.extend_from_slice(own_valid);
        }
        for (named, tokens) in valid_texts.iter().zip(&valid_tokens) {
            let ids = ids(tokens);
            shares.push(TextShare {
                name: named.name.clone(),
                tokens: ids.len(),
                train: 0,
                valid: ids.len(),
            });
            valid.extend_from_slice(&ids);
        }
        Ok(Self {
            vocab,
            train,
            valid,
            shares,
        })
    }
}

/// Encodes `text` with an existing vocabulary: ids, plus every token not in it with its count
/// (all mapped to `<unk>`), so the caller can report them.
pub fn encode(
    text: &str,
    tokenizer: &Tokenizer,
    vocab: &Vocab,
) -> (Vec<u32>, Vec<(String, usize)>) {
    let mut ids = Vec::new();
    let mut unknown: Vec<(String, usize)> = Vec::new();
    tokenizer.for_each_token(text, |token| match vocab.get(token) {
        Some(id) => ids.push(id),
        None => {
            ids.push(0);
            match unknown.iter_mut().find(|(t, _)| t == token) {
                Some((_, n)) => *n += 1,
                None => unknown.push((token.to_owned(), 1)),
            }
        }
    });
    (ids, unknown)
}
