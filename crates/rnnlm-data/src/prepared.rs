//! Prepared token files: a corpus read, cleaned, counted and encoded once, streaming, into a
//! file that training, validation and evaluation memory-map.
//!
//! ```text
//! bytes 0..8    b"RNNLMTOK"
//!       8..12   format version (u32, little-endian)
//!       12..16  id width in bytes: 1, 2 or 4
//!       16..24  header length H (u64)
//!       24..24+H header: JSON (the sources with their sizes, times and sha1s, the options,
//!               the vocabulary, each file's share)
//!       then    zero padding to a multiple of 64
//!       then    the training ids, then the validation ids, in the width above
//! ```
//!
//! The file is written under a temporary name and renamed into place once complete and synced,
//! so a kill or a full disk leaves no partial file that a later run would take; a file whose
//! length is not exactly what its header says is refused as truncated. Files are never written
//! in place, which is what makes mapping them sound (see [`MappedFile`]).

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::hash::hex;
use crate::text::{StreamOptions, Token, TokenStream, stream_text_with_progress};
use crate::tokens::IdWidth;
use crate::vocab::{TokenCounter, TokenEncoder};
use crate::{DataError, TextShare, Tokenizer, Tokens, Vocab};

const MAGIC: &[u8; 8] = b"RNNLMTOK";
/// The format this code writes and reads; a file of another is rebuilt.
pub const PREPARED_FORMAT: u32 = 1;
/// File name extension of prepared token files.
pub const PREPARED_EXTENSION: &str = "tokens";
const PREFIX: usize = 24;
const ALIGN: usize = 64;

/// A text file of a corpus and the name messages give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// The name in messages and `data.csv` (the path as given, or "The Time Machine").
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
}

impl SourceFile {
    /// A file named by its path.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            name: path.display().to_string(),
            path,
        }
    }
}

/// Everything a prepared corpus is made from: the files and the preprocessing options. Two
/// specs with the same files (by canonical path) and options share a prepared file.
#[derive(Clone, Debug, PartialEq)]
pub struct CorpusSpec {
    /// Training texts; without `valid`, each keeps its last `valid_fraction` for validation.
    pub train: Vec<SourceFile>,
    /// Validation texts (all their tokens validate).
    pub valid: Vec<SourceFile>,
    /// Cleaning and token level.
    pub tokenizer: Tokenizer,
    /// The files' encoding label ([`crate::encoding_for`]).
    pub encoding: String,
    /// Tokens seen fewer times become `<unk>`.
    pub min_freq: usize,
    /// Keep only the first tokens of every text (the vocabulary still sees all of them).
    pub max_tokens: Option<usize>,
    /// Each training text's share kept for validation when there are no `valid` texts.
    pub valid_fraction: f64,
    /// Encode with this vocabulary (a trained model's, to score a text) instead of building one
    /// from the texts; tokens it lacks become `<unk>` and are counted
    /// ([`PreparedCorpus::unknown`]). `min_freq` is then unused.
    pub vocab: Option<Vocab>,
}

/// A source file as a prepared file remembers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FileRecord {
    /// Canonical path.
    path: PathBuf,
    bytes: u64,
    /// Modification time, nanoseconds since the epoch, where the platform gives one.
    modified_ns: Option<u128>,
    sha1: String,
}

/// The options of a spec, as stored and compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Options {
    tokenizer: Tokenizer,
    encoding: String,
    min_freq: usize,
    max_tokens: Option<usize>,
    valid_fraction: f64,
    /// The sha1 of a given vocabulary's tokens, for files encoded with one.
    #[serde(default)]
    vocab: Option<String>,
}

/// The JSON header of a prepared file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Header {
    options: Options,
    train_files: Vec<FileRecord>,
    valid_files: Vec<FileRecord>,
    vocab: Vocab,
    width: IdWidth,
    train_tokens: u64,
    valid_tokens: u64,
    /// Per file (training files, then validation files): (tokens kept, for training, for
    /// validation).
    shares: Vec<(u64, u64, u64)>,
    /// With a given vocabulary: the tokens of the texts it lacks, with counts, most frequent
    /// first (the first [`UNKNOWN_LISTED`]).
    #[serde(default)]
    unknown: Vec<(String, u64)>,
}

/// How many distinct unknown tokens a prepared file lists.
pub const UNKNOWN_LISTED: usize = 1000;

impl CorpusSpec {
    fn options(&self) -> Options {
        Options {
            tokenizer: self.tokenizer,
            encoding: self.encoding.trim().to_ascii_lowercase(),
            min_freq: self.min_freq,
            max_tokens: self.max_tokens,
            valid_fraction: self.valid_fraction,
            vocab: self.vocab.as_ref().map(|vocab| {
                let mut hash = Sha1::new();
                for token in vocab.tokens() {
                    hash.update(token.as_bytes());
                    hash.update([0]);
                }
                hex(&hash.finalize())
            }),
        }
    }

    fn check(&self) -> Result<(), DataError> {
        if !(0.0..1.0).contains(&self.valid_fraction) {
            return Err(DataError::Invalid {
                field: "data.valid_fraction",
                value: self.valid_fraction.to_string(),
                expected: "must lie in [0, 1)".to_owned(),
            });
        }
        if self.train.is_empty() {
            return Err(DataError::Empty {
                what: "the corpus".to_owned(),
                hint: ": it names no text file".to_owned(),
            });
        }
        crate::encoding_for(&self.encoding)?;
        Ok(())
    }

    fn files(&self) -> impl Iterator<Item = &SourceFile> {
        self.train.iter().chain(&self.valid)
    }

    /// The file name this spec's prepared corpus gets in a cache directory: the first file's
    /// stem and a hash of the canonical paths and the options.
    ///
    /// # Errors
    /// A file that does not exist.
    pub fn file_name(&self) -> Result<String, DataError> {
        let mut key = Sha1::new();
        for (part, files) in [("train", &self.train), ("valid", &self.valid)] {
            key.update(part);
            for file in files {
                key.update(canonical(&file.path)?.as_os_str().as_encoded_bytes());
                key.update([0]);
            }
        }
        key.update(serde_json::to_vec(&self.options()).expect("options serialise"));
        let stem = self.train[0]
            .path
            .file_stem()
            .map(|s| {
                s.to_string_lossy()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
                    .collect::<String>()
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "corpus".to_owned());
        Ok(format!(
            "{stem}-{}.{PREPARED_EXTENSION}",
            &hex(&key.finalize())[..16]
        ))
    }
}

fn canonical(path: &Path) -> Result<PathBuf, DataError> {
    std::fs::canonicalize(path).map_err(|e| DataError::reading(path, e))
}

fn modified_ns(metadata: &std::fs::Metadata) -> Option<u128> {
    let time = metadata.modified().ok()?;
    Some(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos())
}

/// A read-only memory map of a prepared token file.
///
/// Sound because a mapped file is never changed while mapped: this crate writes prepared files
/// only under a temporary name and renames them into place (a new file; a map of the old one
/// keeps the old contents), and nothing else is meant to write them. A user who edits a
/// prepared file in place while a run maps it breaks that promise.
#[derive(Debug)]
pub struct MappedFile {
    map: memmap2::Mmap,
}

impl MappedFile {
    /// Maps `path`.
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let file = std::fs::File::open(path).map_err(|reason| DataError::Io {
            path: path.to_owned(),
            reason,
        })?;
        // SAFETY: prepared files are replaced by rename, never written in place (the type's
        // promise above), so the mapped bytes do not change under the map.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|reason| DataError::Io {
            path: path.to_owned(),
            reason,
        })?;
        Ok(Self { map })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// A corpus as training reads it: the vocabulary, and the training and validation ids mapped
/// from a prepared token file.
#[derive(Clone, Debug)]
pub struct PreparedCorpus {
    /// The prepared file.
    pub path: PathBuf,
    /// Built from every text, validation parts included.
    pub vocab: Vocab,
    /// Every training text's training part, one after the other.
    pub train: Tokens,
    /// Every validation part, one after the other.
    pub valid: Tokens,
    /// Each text's share, training texts first.
    pub shares: Vec<TextShare>,
    /// With a given vocabulary ([`CorpusSpec::vocab`]): the tokens it lacks, scored as
    /// `<unk>`, with counts, most frequent first (at most [`UNKNOWN_LISTED`]).
    pub unknown: Vec<(String, usize)>,
}

/// Why a prepared file cannot serve a spec.
#[derive(Debug)]
pub enum Unusable {
    /// Not a prepared token file at all (another file at that path): never overwritten.
    Foreign(String),
    /// A prepared file that is truncated, of another format, or made from other sources or
    /// options: rebuilt.
    Stale(String),
}

/// What [`PreparedCorpus::load_or_prepare`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preparation {
    /// The prepared file was up to date and reused.
    Reused,
    /// There was none; it was made.
    Built,
    /// There was one that could not serve (the reason); it was made again.
    Rebuilt(String),
}

/// Progress of a preparation: bytes of text streamed so far over both passes.
#[derive(Clone, Copy, Debug)]
pub struct PrepareProgress {
    /// 1 (counting) or 2 (encoding).
    pub pass: u8,
    /// Bytes read so far, both passes together.
    pub done: u64,
    /// Bytes both passes read in all (twice the sources' sizes).
    pub total: u64,
}

impl PreparedCorpus {
    /// The prepared corpus of `spec` at `path`: reused if the file there is up to date (same
    /// sources, unchanged, and the same options), else made from the sources. `progress` is
    /// called as the text streams past.
    ///
    /// # Errors
    /// A source that cannot be read or decoded (named), a text with no token, a vocabulary
    /// beyond 2^32 tokens, a write that fails (nothing is left at `path` then), or a file at
    /// `path` that is not a prepared token file (it is left alone).
    pub fn load_or_prepare(
        spec: &CorpusSpec,
        path: &Path,
        progress: impl FnMut(PrepareProgress),
    ) -> Result<(Self, Preparation), DataError> {
        spec.check()?;
        let outcome = if path.exists() {
            match Self::open(path, spec)? {
                Ok(corpus) => return Ok((corpus, Preparation::Reused)),
                Err(Unusable::Foreign(reason)) => {
                    return Err(DataError::NotPrepared {
                        path: path.to_owned(),
                        reason,
                    });
                }
                Err(Unusable::Stale(reason)) => Preparation::Rebuilt(reason),
            }
        } else {
            Preparation::Built
        };
        Ok((Self::prepare(spec, path, progress)?, outcome))
    }

    /// Opens the prepared file at `path` for `spec`: `Ok(Err(why))` when it cannot serve it.
    ///
    /// # Errors
    /// The file cannot be read, or a source of `spec` does not exist.
    pub fn open(path: &Path, spec: &CorpusSpec) -> Result<Result<Self, Unusable>, DataError> {
        let mapped = MappedFile::open(path)?;
        let (header, data_offset) = match read_header(mapped.bytes()) {
            Ok(parts) => parts,
            Err(why) => return Ok(Err(why)),
        };
        if let Some(reason) = stale_reason(&header, spec)? {
            return Ok(Err(Unusable::Stale(reason)));
        }
        let (train_len, valid_len) = (header.train_tokens as usize, header.valid_tokens as usize);
        // One map for both parts: the validation ids follow the training ids.
        let all = Tokens::mapped(mapped.map, data_offset, header.width, train_len + valid_len)
            .map_err(|reason| DataError::NotPrepared {
                path: path.to_owned(),
                reason,
            })?;
        let train = all.slice(0..train_len);
        let valid = all.slice(train_len..train_len + valid_len);
        let shares = spec
            .files()
            .zip(&header.shares)
            .map(|(file, &(tokens, train, valid))| TextShare {
                name: file.name.clone(),
                tokens: tokens as usize,
                train: train as usize,
                valid: valid as usize,
            })
            .collect();
        Ok(Ok(Self {
            path: path.to_owned(),
            vocab: header.vocab,
            train,
            valid,
            shares,
            unknown: header
                .unknown
                .into_iter()
                .map(|(t, n)| (t, n as usize))
                .collect(),
        }))
    }

    /// Streams the sources of `spec` twice (counting, then encoding) and writes the prepared
    /// file at `path`, replacing any file there only once the new one is complete.
    ///
    /// # Errors
    /// As [`PreparedCorpus::load_or_prepare`].
    pub fn prepare(
        spec: &CorpusSpec,
        path: &Path,
        mut progress: impl FnMut(PrepareProgress),
    ) -> Result<Self, DataError> {
        spec.check()?;
        let files: Vec<&SourceFile> = spec.files().collect();
        let metadata = files
            .iter()
            .map(|file| {
                std::fs::metadata(&file.path).map_err(|e| DataError::reading(&file.path, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let total = metadata.iter().map(|m| 2 * m.len()).sum();
        let mut done = 0u64;

        // Pass 1: count every token of every text (the vocabulary sees them all).
        let mut counter = TokenCounter::default();
        let mut counts = Vec::with_capacity(files.len());
        let mut records = Vec::with_capacity(files.len());
        for (file, metadata) in files.iter().zip(&metadata) {
            let before = counter.total();
            let mut stream = TokenStream::new(spec.tokenizer);
            let mut add = |token: Token<'_>| counter.add(token);
            let streamed = stream_text_with_progress(
                &file.path,
                &spec.encoding,
                StreamOptions {
                    sha1: true,
                    ..StreamOptions::default()
                },
                |piece| stream.feed(piece, &mut add),
                |bytes| {
                    progress(PrepareProgress {
                        pass: 1,
                        done: done + bytes,
                        total,
                    })
                },
            )?;
            stream.finish(&mut add);
            done += streamed.bytes;
            // Checked per file: a vocabulary has `<unk>` besides the distinct tokens.
            if IdWidth::for_vocab(counter.distinct() + 1).is_none() {
                return Err(DataError::VocabularyTooLarge {
                    path: file.path.clone(),
                    distinct: counter.distinct(),
                });
            }
            let tokens = counter.total() - before;
            if tokens == 0 {
                return Err(DataError::Empty {
                    what: file.name.clone(),
                    hint: format!(
                        " after {:?} preprocessing; the raw mode keeps every character",
                        spec.tokenizer.preprocess
                    ),
                });
            }
            counts.push(tokens);
            records.push(FileRecord {
                path: canonical(&file.path)?,
                bytes: metadata.len(),
                modified_ns: modified_ns(metadata),
                sha1: streamed.sha1.expect("asked for"),
            });
        }
        let (vocab, unknown) = match &spec.vocab {
            Some(vocab) => {
                let unknown: Vec<(String, u64)> = counter
                    .into_counts()
                    .into_iter()
                    .filter(|(token, _, _)| vocab.get(token).is_none())
                    .take(UNKNOWN_LISTED)
                    .map(|(token, count, _)| (token, count))
                    .collect();
                (vocab.clone(), unknown)
            }
            None => (counter.into_vocab(spec.min_freq, &[]), Vec::new()),
        };
        let width = IdWidth::for_vocab(vocab.len()).expect("checked per file");

        // Each text's share: the first `max_tokens`, the last `valid_fraction` of them held out
        // when there are no validation texts.
        let max = spec.max_tokens.map_or(u64::MAX, |m| m as u64);
        let shares: Vec<(u64, u64, u64)> = counts
            .iter()
            .enumerate()
            .map(|(i, &count)| {
                let kept = count.min(max);
                if i >= spec.train.len() {
                    return (kept, 0, kept);
                }
                let held = if spec.valid.is_empty() {
                    (kept as f64 * spec.valid_fraction).round() as u64
                } else {
                    0
                };
                (kept, kept - held, held)
            })
            .collect();
        let train_tokens: u64 = shares.iter().map(|s| s.1).sum();
        let valid_tokens: u64 = shares.iter().map(|s| s.2).sum();
        let (train_files, valid_files) = {
            let mut records = records;
            let valid = records.split_off(spec.train.len());
            (records, valid)
        };
        let header = Header {
            options: spec.options(),
            train_files,
            valid_files,
            vocab,
            width,
            train_tokens,
            valid_tokens,
            shares,
            unknown,
        };

        // Pass 2: encode into a temporary file beside `path`, renamed over it when complete.
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|reason| DataError::Write {
            path: dir.to_owned(),
            reason,
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let temporary = dir.join(format!(".{name}.part-{}", std::process::id()));
        let written = write_prepared(spec, &header, &counts, &temporary, &mut |bytes| {
            progress(PrepareProgress {
                pass: 2,
                done: done + bytes,
                total,
            })
        })
        .and_then(|()| {
            std::fs::rename(&temporary, path).map_err(|reason| DataError::Write {
                path: path.to_owned(),
                reason,
            })
        });
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(error);
        }
        match Self::open(path, spec)? {
            Ok(corpus) => Ok(corpus),
            Err(Unusable::Foreign(why) | Unusable::Stale(why)) => Err(DataError::Changed {
                path: path.to_owned(),
                reason: why,
            }),
        }
    }
}

/// The header and the offset of the ids, or why the bytes are no usable prepared file.
fn read_header(bytes: &[u8]) -> Result<(Header, usize), Unusable> {
    if bytes.len() < PREFIX || &bytes[..8] != MAGIC {
        return Err(Unusable::Foreign(
            "it does not start as a prepared token file does (rnnlm prepare writes them)"
                .to_owned(),
        ));
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let format = word(8);
    if format != PREPARED_FORMAT {
        return Err(Unusable::Stale(format!(
            "it has format {format}, this rnnlm reads format {PREPARED_FORMAT}"
        )));
    }
    let header_len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) as usize;
    let truncated = |expected: u64| {
        Unusable::Stale(format!(
            "it is truncated: {} bytes where its header promises {expected}",
            bytes.len()
        ))
    };
    let header_end = PREFIX.saturating_add(header_len);
    if bytes.len() < header_end {
        return Err(truncated(header_end as u64));
    }
    let header: Header = serde_json::from_slice(&bytes[PREFIX..header_end])
        .map_err(|e| Unusable::Stale(format!("its header is unreadable ({e})")))?;
    let data_offset = header_end.next_multiple_of(ALIGN);
    let width = header.width.bytes() as u64;
    if word(12) as u64 != width || IdWidth::for_vocab(header.vocab.len()) != Some(header.width) {
        return Err(Unusable::Stale(
            "its id width does not fit its vocabulary".to_owned(),
        ));
    }
    let expected = data_offset as u64 + (header.train_tokens + header.valid_tokens) * width;
    if bytes.len() as u64 != expected {
        return Err(truncated(expected));
    }
    Ok((header, data_offset))
}

/// Why `header` does not describe `spec` as its sources are now, if it does not.
fn stale_reason(header: &Header, spec: &CorpusSpec) -> Result<Option<String>, DataError> {
    let options = spec.options();
    let stored = &header.options;
    let differs = |field: &str, was: String, now: String| {
        Some(format!(
            "it was made with {field} = {was}, this run asks for {now}"
        ))
    };
    if stored.tokenizer.preprocess != options.tokenizer.preprocess {
        return Ok(differs(
            "data.preprocess",
            format!("{:?}", stored.tokenizer.preprocess),
            format!("{:?}", options.tokenizer.preprocess),
        ));
    }
    if stored.tokenizer.level != options.tokenizer.level {
        return Ok(differs(
            "data.level",
            format!("{:?}", stored.tokenizer.level),
            format!("{:?}", options.tokenizer.level),
        ));
    }
    if stored.encoding != options.encoding {
        return Ok(differs(
            "data.encoding",
            stored.encoding.clone(),
            options.encoding.clone(),
        ));
    }
    if stored.min_freq != options.min_freq {
        return Ok(differs(
            "data.min_freq",
            stored.min_freq.to_string(),
            options.min_freq.to_string(),
        ));
    }
    if stored.max_tokens != options.max_tokens {
        let show = |m: Option<usize>| m.map_or("0 (all)".to_owned(), |m| m.to_string());
        return Ok(differs(
            "data.max_tokens",
            show(stored.max_tokens),
            show(options.max_tokens),
        ));
    }
    if stored.valid_fraction.to_bits() != options.valid_fraction.to_bits() {
        return Ok(differs(
            "data.valid_fraction",
            stored.valid_fraction.to_string(),
            options.valid_fraction.to_string(),
        ));
    }
    for (part, records, files) in [
        ("training", &header.train_files, &spec.train),
        ("validation", &header.valid_files, &spec.valid),
    ] {
        if records.len() != files.len() {
            return Ok(Some(format!(
                "it was made from {} {part} files, this run names {}",
                records.len(),
                files.len()
            )));
        }
        for (record, file) in records.iter().zip(files) {
            let path = canonical(&file.path)?;
            if path != record.path {
                return Ok(Some(format!(
                    "it was made from {}, this run names {}",
                    record.path.display(),
                    path.display()
                )));
            }
            let metadata = std::fs::metadata(&path).map_err(|e| DataError::reading(&path, e))?;
            if metadata.len() != record.bytes {
                return Ok(Some(format!(
                    "{} changed since: {} bytes, then {}",
                    file.name,
                    metadata.len(),
                    record.bytes
                )));
            }
            // Same size and time: unchanged (as make and cargo judge). A new time alone is
            // checked by content, so a touched or copied file is not prepared again.
            if modified_ns(&metadata) != record.modified_ns || record.modified_ns.is_none() {
                let sha1 = crate::sha1_of_file(&path)?;
                if sha1 != record.sha1 {
                    return Ok(Some(format!(
                        "{} changed since (its sha1 differs)",
                        file.name
                    )));
                }
            }
        }
    }
    Ok(None)
}

/// Writes the prefix, the header and the ids of every text (pass 2) into `path`.
fn write_prepared(
    spec: &CorpusSpec,
    header: &Header,
    counts: &[u64],
    path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(), DataError> {
    let write_error = |reason: std::io::Error| DataError::Write {
        path: path.to_owned(),
        reason,
    };
    let json = serde_json::to_vec(header).expect("a header serialises");
    let data_offset = (PREFIX + json.len()).next_multiple_of(ALIGN);
    let width = header.width;
    let mut head = Vec::with_capacity(data_offset);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&PREPARED_FORMAT.to_le_bytes());
    head.extend_from_slice(&(width.bytes() as u32).to_le_bytes());
    head.extend_from_slice(&(json.len() as u64).to_le_bytes());
    head.extend_from_slice(&json);
    head.resize(data_offset, 0);

    let mut train_out = std::fs::File::create(path).map_err(write_error)?;
    train_out.write_all(&head).map_err(write_error)?;
    // The validation ids go after every training id: a second handle writes them there.
    let mut valid_out = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(write_error)?;
    let valid_at = data_offset as u64 + header.train_tokens * width.bytes() as u64;
    valid_out
        .seek(SeekFrom::Start(valid_at))
        .map_err(write_error)?;
    let (mut train_buf, mut valid_buf) = (Vec::with_capacity(1 << 20), Vec::with_capacity(1 << 20));

    let encoder = TokenEncoder::new(&header.vocab);
    let mut done = 0;
    for ((file, &(kept, train, _)), &count) in spec.files().zip(&header.shares).zip(counts) {
        let mut position = 0u64;
        let mut failed: Option<std::io::Error> = None;
        let mut stream = TokenStream::new(spec.tokenizer);
        let mut put = |token: Token<'_>| {
            if position < kept && failed.is_none() {
                let id = encoder.id(token).unwrap_or(0);
                let (buf, out) = if position < train {
                    (&mut train_buf, &mut train_out)
                } else {
                    (&mut valid_buf, &mut valid_out)
                };
                width.push(id, buf);
                if buf.len() >= 1 << 20 {
                    if let Err(e) = out.write_all(buf) {
                        failed = Some(e);
                    }
                    buf.clear();
                }
            }
            position += 1;
        };
        let streamed = stream_text_with_progress(
            &file.path,
            &spec.encoding,
            StreamOptions::default(),
            |piece| stream.feed(piece, &mut put),
            |bytes| progress(done + bytes),
        )?;
        stream.finish(&mut put);
        done += streamed.bytes;
        if let Some(e) = failed {
            return Err(write_error(e));
        }
        if position != count {
            return Err(DataError::Changed {
                path: file.path.clone(),
                reason: "it changed while it was being prepared".to_owned(),
            });
        }
    }
    for (buf, out) in [(&train_buf, &mut train_out), (&valid_buf, &mut valid_out)] {
        out.write_all(buf).map_err(write_error)?;
    }
    train_out.sync_all().map_err(write_error)?;
    valid_out.sync_all().map_err(write_error)?;
    let len = std::fs::metadata(path).map_err(write_error)?.len();
    let expected =
        data_offset as u64 + (header.train_tokens + header.valid_tokens) * width.bytes() as u64;
    if len != expected {
        return Err(DataError::Changed {
            path: path.to_owned(),
            reason: format!(
                "{len} bytes were written where {expected} were due; a source changed while it was being prepared"
            ),
        });
    }
    Ok(())
}
