//! Where the text comes from (The Time Machine, downloaded and cached, or a user's file), and
//! the encoded corpus built from it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::hash::{hex, sha1_of_file};

use crate::text::read_text;
use crate::text::{Token, TokenStream};
use crate::vocab::{TokenCounter, TokenEncoder};
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
        let mut counter = TokenCounter::default();
        let mut stream = TokenStream::new(*tokenizer);
        let mut add = |token: Token<'_>| counter.add(token);
        stream.feed(text, &mut add);
        stream.finish(&mut add);
        if counter.total() == 0 {
            return Err(DataError::Empty {
                what: what.to_owned(),
                hint: format!(
                    " after {:?} preprocessing; the raw mode keeps every character",
                    tokenizer.preprocess
                ),
            });
        }
        let keep = options
            .max_tokens
            .unwrap_or(usize::MAX)
            .min(counter.total() as usize);
        let reserved: Vec<&str> = options.reserved.iter().map(String::as_str).collect();
        let vocab = counter.into_vocab(options.min_freq, &reserved);
        let encoder = TokenEncoder::new(&vocab);
        let mut tokens = Vec::with_capacity(keep);
        let mut put = |token: Token<'_>| {
            if tokens.len() < keep {
                tokens.push(encoder.id(token).unwrap_or(0));
            }
        };
        stream.feed(text, &mut put);
        stream.finish(&mut put);
        Ok(Self { vocab, tokens })
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

/// One text's share of a corpus, in tokens.
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
