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

/// d2l's `re.sub('[^A-Za-z]+', ' ', s).lower()`.
fn letters_only(s: &str, out: &mut String) {
    let mut in_gap = false;
    for c in s.chars() {
        if c.is_ascii_alphabetic() {
            out.push(c.to_ascii_lowercase());
            in_gap = false;
        } else if !in_gap {
            out.push(' ');
            in_gap = true;
        }
    }
}

impl Tokenizer {
    /// The text as the model sees it, before splitting into tokens. For
    /// [`Preprocess::D2lLines`] the lines come back joined with `\n` so word splitting still
    /// sees their boundaries; character tokenising skips those separators.
    pub fn clean(&self, text: &str) -> String {
        match self.preprocess {
            Preprocess::Raw => text.to_owned(),
            Preprocess::D2lWhole => {
                let mut out = String::with_capacity(text.len());
                letters_only(text, &mut out);
                out
            }
            Preprocess::D2lLines => {
                let mut out = String::with_capacity(text.len());
                let mut line_buf = String::new();
                // Python reads text with universal newlines: \n, \r and \r\n all end a line
                // (an empty line between \r and \n adds nothing).
                for (i, line) in text.split(['\n', '\r']).enumerate() {
                    line_buf.clear();
                    letters_only(line, &mut line_buf);
                    if i > 0 {
                        out.push('\n');
                    }
                    out.push_str(line_buf.trim_matches(' '));
                }
                out
            }
        }
    }

    /// Calls `f` with every token of `text`, in order, without allocating per token.
    pub fn for_each_token(&self, text: &str, mut f: impl FnMut(&str)) {
        let cleaned = self.clean(text);
        match self.level {
            TokenLevel::Char => {
                let skip_newlines = self.preprocess == Preprocess::D2lLines;
                let mut buf = [0u8; 4];
                for c in cleaned.chars() {
                    if !(skip_newlines && c == '\n') {
                        f(c.encode_utf8(&mut buf));
                    }
                }
            }
            TokenLevel::Word => cleaned.split_whitespace().for_each(f),
        }
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
    let encoding = encoding_for(label)?;
    let metadata = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::NotFound {
            path: path.to_owned(),
        },
        _ => DataError::Io {
            path: path.to_owned(),
            reason: source,
        },
    })?;
    if metadata.is_dir() {
        return Err(DataError::IsDirectory {
            path: path.to_owned(),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_owned(),
        reason: source,
    })?;
    if bytes.is_empty() {
        return Err(DataError::Empty {
            what: path.display().to_string(),
            hint: String::new(),
        });
    }
    if encoding == encoding_rs::UTF_8 {
        // A UTF-8 byte-order mark is no character of the text.
        let start = if bytes.starts_with(b"\xEF\xBB\xBF") { 3 } else { 0 };
        let mut bytes = bytes;
        bytes.drain(..start);
        return String::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
            path: path.to_owned(),
            offset: e.utf8_error().valid_up_to() + start,
        });
    }
    // Valid UTF-8 holding non-ASCII text is almost never a single-byte encoding's text: it is a
    // UTF-8 file among corpora in another encoding, which decoding would turn into mojibake.
    if !bytes.is_ascii() && std::str::from_utf8(&bytes).is_ok() {
        return Err(DataError::EncodingMismatch {
            path: path.to_owned(),
            encoding: encoding.name(),
        });
    }
    match encoding.decode_without_bom_handling_and_without_replacement(&bytes) {
        Some(text) => Ok(text.into_owned()),
        None => {
            // Where: decode with replacement and find the first replacement character's byte.
            let mut decoder = encoding.new_decoder_without_bom_handling();
            let offset = first_malformed_byte(&mut decoder, &bytes);
            Err(DataError::Malformed {
                path: path.to_owned(),
                encoding: encoding.name(),
                offset,
            })
        }
    }
}

/// The offset of the first byte `decoder` cannot decode.
fn first_malformed_byte(decoder: &mut encoding_rs::Decoder, bytes: &[u8]) -> usize {
    let mut out = String::with_capacity(64);
    let mut read = 0;
    loop {
        out.clear();
        let (result, consumed) =
            decoder.decode_to_string_without_replacement(&bytes[read..], &mut out, true);
        match result {
            encoding_rs::DecoderResult::Malformed(bad, _) => {
                return (read + consumed).saturating_sub(bad as usize);
            }
            encoding_rs::DecoderResult::InputEmpty => return bytes.len(),
            encoding_rs::DecoderResult::OutputFull => {
                read += consumed;
                out.reserve(64);
            }
        }
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
