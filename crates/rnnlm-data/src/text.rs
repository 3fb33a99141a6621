//! Reading text and turning it into tokens the way d2l does (or keeping it raw).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::DataError;

/// How raw text is cleaned before tokenising.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preprocess {
    /// d2l's classic chapter (0.17): per line, every run of non-letters becomes one space, the
    /// line is trimmed and lowercased, and lines are joined with no separator
    /// (The Time Machine: 170,580 characters).
    D2lLines,
    /// The current d2l book: the same cleaning on the whole text at once, so line breaks become
    /// spaces (The Time Machine: 173,428 characters).
    D2lWhole,
    /// Keep every character as it is (e.g. tinyshakespeare: 65 distinct characters).
    Raw,
}

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenLevel {
    /// One token per character.
    Char,
    /// One token per whitespace-separated word (d2l's `tokenize(lines, 'word')`).
    Word,
}

/// Preprocessing plus token level: everything needed to turn text into tokens. A checkpoint
/// stores it so text is encoded at generation time exactly as during training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokenizer {
    /// Text cleaning.
    pub preprocess: Preprocess,
    /// Characters or words.
    pub level: TokenLevel,
}

impl Default for Tokenizer {
    /// d2l's classic character-level setting.
    fn default() -> Self {
        Self {
            preprocess: Preprocess::D2lLines,
            level: TokenLevel::Char,
        }
    }
}

/// One token as the stream hands it over: a character (character level) or a word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token<'a> {
    /// A character token.
    Char(char),
    /// A word token.
    Word(&'a str),
}

impl Token<'_> {
    /// Calls `f` with the token as text.
    pub fn with_str<R>(self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            Token::Char(c) => f(c.encode_utf8(&mut [0u8; 4])),
            Token::Word(w) => f(w),
        }
    }
}

/// The tokeniser as a state machine over text given in pieces of any size (a file read in
/// chunks, or a whole string at once): the tokens it calls back with do not depend on where
/// the pieces were cut. Preparation streams a corpus of any size through it, and
/// [`Tokenizer::for_each_token`] runs a whole string through it, so both cut text the same way.
#[derive(Clone, Debug)]
pub struct TokenStream {
    tokenizer: Tokenizer,
    /// d2l-whole: the last character written was a space standing for a run of non-letters.
    in_gap: bool,
    /// d2l-lines: the current line has written a letter (a gap before one is no leading space).
    line_has_letters: bool,
    /// d2l-lines: non-letters since the line's last letter (a space if another letter follows).
    pending_space: bool,
    /// Word level: the word being read, which may span pieces.
    word: String,
}

impl TokenStream {
    /// A stream at the start of a text.
    pub fn new(tokenizer: Tokenizer) -> Self {
        Self {
            tokenizer,
            in_gap: false,
            line_has_letters: false,
            pending_space: false,
            word: String::new(),
        }
    }

    /// Cleans `piece` (the text's next characters) and calls `emit` with every character of
    /// the cleaned text, `\n` separating the lines of [`Preprocess::D2lLines`].
    #[inline]
    fn clean(&mut self, piece: &str, mut emit: impl FnMut(&mut Self, char)) {
        match self.tokenizer.preprocess {
            Preprocess::Raw => piece.chars().for_each(|c| emit(self, c)),
            // d2l's `re.sub('[^A-Za-z]+', ' ', s).lower()` over the whole text.
            Preprocess::D2lWhole => {
                for c in piece.chars() {
                    if c.is_ascii_alphabetic() {
                        emit(self, c.to_ascii_lowercase());
                        self.in_gap = false;
                    } else if !self.in_gap {
                        emit(self, ' ');
                        self.in_gap = true;
                    }
                }
            }
            // The same per line, each line trimmed; Python's universal newlines end a line at
            // \n, \r and \r\n (the empty line between \r and \n adds a separator only).
            Preprocess::D2lLines => {
                for c in piece.chars() {
                    if c.is_ascii_alphabetic() {
                        if self.pending_space && self.line_has_letters {
                            emit(self, ' ');
                        }
                        emit(self, c.to_ascii_lowercase());
                        self.line_has_letters = true;
                        self.pending_space = false;
                    } else if c == '\n' || c == '\r' {
                        emit(self, '\n');
                        self.line_has_letters = false;
                        self.pending_space = false;
                    } else {
                        self.pending_space = true;
                    }
                }
            }
        }
    }

    /// Runs the next piece of the text, calling `f` with every token it completes.
    #[inline]
    pub fn feed(&mut self, piece: &str, f: &mut impl FnMut(Token<'_>)) {
        match self.tokenizer.level {
            TokenLevel::Char => {
                let skip_newlines = self.tokenizer.preprocess == Preprocess::D2lLines;
                self.clean(piece, |_, c| {
                    if !(skip_newlines && c == '\n') {
                        f(Token::Char(c));
                    }
                });
            }
            TokenLevel::Word => self.clean(piece, |stream, c| {
                if c.is_whitespace() {
                    if !stream.word.is_empty() {
                        f(Token::Word(&stream.word));
                        stream.word.clear();
                    }
                } else {
                    stream.word.push(c);
                }
            }),
        }
    }

    /// Ends the text: hands over the word it ends in, if any, and makes the stream ready for
    /// the start of another text.
    pub fn finish(&mut self, f: &mut impl FnMut(Token<'_>)) {
        if !self.word.is_empty() {
            f(Token::Word(&self.word));
        }
        *self = Self::new(self.tokenizer);
    }
}

impl Tokenizer {
    /// The text as the model sees it, before splitting into tokens. For
    /// [`Preprocess::D2lLines`] the lines come back joined with `\n` so word splitting still
    /// sees their boundaries; character tokenising skips those separators.
    pub fn clean(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        TokenStream::new(*self).clean(text, |_, c| out.push(c));
        out
    }

    /// Calls `f` with every token of `text`, in order, without allocating per token.
    pub fn for_each_token(&self, text: &str, mut f: impl FnMut(&str)) {
        let mut f = |token: Token<'_>| token.with_str(&mut f);
        let mut stream = TokenStream::new(*self);
        stream.feed(text, &mut f);
        stream.finish(&mut f);
    }

    /// The tokens of `text`, in order.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        let mut tokens = Vec::new();
        self.for_each_token(text, |t| tokens.push(t.to_owned()));
        tokens
    }

    /// How decoded tokens are joined back into text: nothing between characters, a space
    /// between words.
    pub fn separator(&self) -> &'static str {
        match self.level {
            TokenLevel::Char => "",
            TokenLevel::Word => " ",
        }
    }
}

/// Reads a UTF-8 text file, with an error that names the file and the problem.
pub fn read_text(path: &Path) -> Result<String, DataError> {
    read_text_in(path, UTF_8)
}

/// The label of UTF-8, the default encoding.
pub const UTF_8: &str = "utf-8";

/// The decoder of an encoding label: any label of the WHATWG Encoding Standard
/// (`utf-8`, `windows-1252`, `latin1`, `iso-8859-15`, `koi8-r`, `shift_jis`, ...), plus
/// `latin-1`, which names `latin1` (decoded as `windows-1252`, as browsers do).
pub fn encoding_for(label: &str) -> Result<&'static encoding_rs::Encoding, DataError> {
    let normalised = label.trim().to_ascii_lowercase();
    let normalised = match normalised.as_str() {
        "latin-1" | "iso-latin-1" => "latin1",
        other => other,
    };
    encoding_rs::Encoding::for_label_no_replacement(normalised.as_bytes()).ok_or_else(|| {
        DataError::Invalid {
            field: "data.encoding",
            value: format!("{label:?}"),
            expected: "an encoding label such as \"utf-8\", \"windows-1252\", \"latin-1\" or \
                       \"iso-8859-15\" (the WHATWG Encoding Standard's labels)"
                .to_owned(),
        }
    })
}

/// Reads a text file in the encoding `label` names ([`encoding_for`]), with an error that names
/// the file and the problem. UTF-8 is read strictly (an invalid byte is an error that says how
/// to name another encoding); other encodings decode every byte they define, and a byte one
/// leaves undefined is an error naming its offset. A file that is valid UTF-8 with non-ASCII
/// characters is refused under another encoding (corpora in different encodings).
pub fn read_text_in(path: &Path, label: &str) -> Result<String, DataError> {
    let mut text = String::new();
    stream_text(path, label, StreamOptions::default(), |piece| {
        text.push_str(piece)
    })?;
    Ok(text)
}

/// How [`stream_text`] reads.
#[derive(Clone, Copy, Debug)]
pub struct StreamOptions {
    /// Bytes read at a time (the text is handed over in pieces of about this size).
    pub chunk_bytes: usize,
    /// Whether to compute the file's sha1 on the way.
    pub sha1: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            chunk_bytes: 1 << 20,
            sha1: false,
        }
    }
}

/// What [`stream_text`] learned about the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamedFile {
    /// Its size in bytes.
    pub bytes: u64,
    /// Its sha1, lowercase hex, when asked for.
    pub sha1: Option<String>,
}

/// Reads a text file in pieces, decoding it as [`read_text_in`] does (with the same errors),
/// and calls `f` with each decoded piece in order; memory stays that of one chunk whatever the
/// file's size. Pieces never split a character. `progress`-like callers count the bytes through
/// [`stream_text_with_progress`].
pub fn stream_text(
    path: &Path,
    label: &str,
    options: StreamOptions,
    f: impl FnMut(&str),
) -> Result<StreamedFile, DataError> {
    stream_text_with_progress(path, label, options, f, |_| {})
}

/// [`stream_text`], calling `progress` with the number of bytes read after every chunk.
pub fn stream_text_with_progress(
    path: &Path,
    label: &str,
    options: StreamOptions,
    mut f: impl FnMut(&str),
    mut progress: impl FnMut(u64),
) -> Result<StreamedFile, DataError> {
    use sha1::Digest;
    let encoding = encoding_for(label)?;
    let io = |source: std::io::Error| DataError::Io {
        path: path.to_owned(),
        reason: source,
    };
    let metadata = std::fs::metadata(path).map_err(|e| DataError::reading(path, e))?;
    if metadata.is_dir() {
        return Err(DataError::IsDirectory {
            path: path.to_owned(),
        });
    }
    let mut file = std::fs::File::open(path).map_err(io)?;
    let chunk = options.chunk_bytes.max(4);
    // A chunk, after the up to 3 bytes of a character the previous chunk cut.
    let mut buf = vec![0u8; chunk + 4];
    let mut carried = 0;
    // File offset of buf[0].
    let mut offset: u64 = 0;
    let mut hasher = options.sha1.then(sha1::Sha1::new);
    let mut decoder =
        (encoding != encoding_rs::UTF_8).then(|| encoding.new_decoder_without_bom_handling());
    let mut decoded = String::new();
    // Under another encoding: whether the file is valid UTF-8 holding non-ASCII text, which is
    // almost never a single-byte encoding's text but a UTF-8 file among other corpora.
    let mut utf8 = Utf8Check::default();
    let mut malformed: Option<u64> = None;
    loop {
        let read = read_full(&mut file, &mut buf[carried..carried + chunk]).map_err(io)?;
        if let Some(hasher) = &mut hasher {
            hasher.update(&buf[carried..carried + read]);
        }
        let end = carried + read;
        let last = read == 0;
        if last && offset == 0 && carried == 0 {
            return Err(DataError::Empty {
                what: path.display().to_string(),
                hint: String::new(),
            });
        }
        match &mut decoder {
            None => {
                // A UTF-8 byte-order mark is no character of the text.
                let start = if offset == 0 && buf[..end].starts_with(b"\xEF\xBB\xBF") {
                    3
                } else {
                    0
                };
                let (valid, rest) = match std::str::from_utf8(&buf[start..end]) {
                    Ok(text) => (text, 0),
                    // A character cut by the chunk's end: kept for the next chunk.
                    Err(e) if e.error_len().is_none() && !last => {
                        let valid = e.valid_up_to();
                        let text =
                            std::str::from_utf8(&buf[start..start + valid]).expect("valid prefix");
                        (text, end - start - valid)
                    }
                    Err(e) => {
                        return Err(DataError::NotUtf8 {
                            path: path.to_owned(),
                            offset: (offset as usize) + start + e.valid_up_to(),
                        });
                    }
                };
                if !valid.is_empty() {
                    f(valid);
                }
                buf.copy_within(end - rest..end, 0);
                offset += (end - rest) as u64;
                carried = rest;
            }
            Some(decoder) => {
                utf8.push(&buf[..end]);
                if malformed.is_none() {
                    let mut consumed = 0;
                    loop {
                        decoded.clear();
                        decoded.reserve(chunk + 16);
                        let (result, read) = decoder.decode_to_string_without_replacement(
                            &buf[consumed..end],
                            &mut decoded,
                            last,
                        );
                        if !decoded.is_empty() {
                            f(&decoded);
                        }
                        consumed += read;
                        match result {
                            encoding_rs::DecoderResult::InputEmpty => break,
                            encoding_rs::DecoderResult::OutputFull => {}
                            encoding_rs::DecoderResult::Malformed(bad, after) => {
                                let at = offset + consumed as u64 - bad as u64 - after as u64;
                                malformed = Some(at);
                                break;
                            }
                        }
                    }
                }
                offset += end as u64;
                carried = 0;
            }
        }
        progress(offset + carried as u64);
        if last {
            break;
        }
    }
    if decoder.is_some() {
        if utf8.is_non_ascii_utf8() {
            return Err(DataError::EncodingMismatch {
                path: path.to_owned(),
                encoding: encoding.name(),
            });
        }
        if let Some(offset) = malformed {
            return Err(DataError::Malformed {
                path: path.to_owned(),
                encoding: encoding.name(),
                offset: offset as usize,
            });
        }
    }
    Ok(StreamedFile {
        bytes: offset,
        sha1: hasher.map(|h| crate::hash::hex(&h.finalize())),
    })
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Whether bytes given in pieces are valid UTF-8 with a non-ASCII character.
#[derive(Default)]
struct Utf8Check {
    invalid: bool,
    non_ascii: bool,
    /// The start of a character the last piece cut.
    tail: Vec<u8>,
}

impl Utf8Check {
    fn push(&mut self, piece: &[u8]) {
        if self.invalid {
            return;
        }
        if self.tail.is_empty() && piece.is_ascii() {
            return;
        }
        self.non_ascii = true;
        let mut bytes = std::mem::take(&mut self.tail);
        bytes.extend_from_slice(piece);
        match std::str::from_utf8(&bytes) {
            Ok(_) => {}
            Err(e) if e.error_len().is_none() => self.tail = bytes[e.valid_up_to()..].to_vec(),
            Err(_) => self.invalid = true,
        }
    }

    fn is_non_ascii_utf8(&self) -> bool {
        !self.invalid && self.non_ascii && self.tail.is_empty()
    }
}

/// The text files `paths` name, in order: a file as it is, a directory as the `*.txt` files
/// directly inside it, in name order.
pub fn text_files(paths: &[std::path::PathBuf]) -> Result<Vec<std::path::PathBuf>, DataError> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            if !path.exists() {
                return Err(DataError::NotFound { path: path.clone() });
            }
            files.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|source| DataError::Io {
            path: path.clone(),
            reason: source,
        })?;
        let mut inside = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| DataError::Io {
                path: path.clone(),
                reason: source,
            })?;
            let file = entry.path();
            if file.is_file() && file.extension().is_some_and(|e| e == "txt") {
                inside.push(file);
            }
        }
        if inside.is_empty() {
            return Err(DataError::NoTextFiles { path: path.clone() });
        }
        inside.sort();
        files.extend(inside);
    }
    Ok(files)
}
