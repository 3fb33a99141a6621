//! Token <-> index mapping.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::text::Token;

/// The unknown token, always index 0.
pub const UNK: &str = "<unk>";

/// A vocabulary: `<unk>` at index 0, then the reserved tokens, then every token seen at least
/// `min_freq` times by descending frequency; ties keep the order of first appearance (what
/// d2l's stable sort over a `Counter` gives), so the same text always yields the same indices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "VocabRecord", into = "VocabRecord")]
pub struct Vocab {
    tokens: Vec<String>,
    frequencies: Vec<usize>,
    index: HashMap<String, u32>,
}

/// What a vocabulary file holds: tokens in index order with their training-text frequencies.
#[derive(Serialize, Deserialize)]
struct VocabRecord {
    tokens: Vec<String>,
    frequencies: Vec<usize>,
}

impl TryFrom<VocabRecord> for Vocab {
    type Error = String;

    fn try_from(record: VocabRecord) -> Result<Self, String> {
        let VocabRecord {
            tokens,
            frequencies,
        } = record;
        if tokens.first().map(String::as_str) != Some(UNK) {
            return Err(format!(
                "a vocabulary starts with {UNK:?}, this one with {:?}",
                tokens.first()
            ));
        }
        if frequencies.len() != tokens.len() {
            return Err(format!(
                "{} tokens but {} frequencies",
                tokens.len(),
                frequencies.len()
            ));
        }
        let vocab = Self::from_parts(tokens, frequencies);
        if vocab.index.len() != vocab.tokens.len() {
            return Err("the vocabulary lists a token twice".to_owned());
        }
        Ok(vocab)
    }
}

impl From<Vocab> for VocabRecord {
    fn from(vocab: Vocab) -> Self {
        Self {
            tokens: vocab.tokens,
            frequencies: vocab.frequencies,
        }
    }
}

impl Vocab {
    /// Builds a vocabulary from a token stream.
    pub fn build<'a>(
        tokens: impl IntoIterator<Item = &'a str>,
        min_freq: usize,
        reserved: &[&str],
    ) -> Self {
        let mut counter = TokenCounter::default();
        for token in tokens {
            counter.add(Token::Word(token));
        }
        counter.into_vocab(min_freq, reserved)
    }

    /// A vocabulary given as its tokens in index order (d2l's `vocab.idx_to_token`), e.g. for
    /// weights trained elsewhere. Frequencies are unknown and recorded as 0. The first token
    /// must be `<unk>` and no token may appear twice.
    pub fn from_tokens(tokens: Vec<String>) -> Result<Self, String> {
        let frequencies = vec![0; tokens.len()];
        Self::try_from(VocabRecord {
            tokens,
            frequencies,
        })
    }

    fn push(&mut self, token: &str, frequency: usize) {
        self.index
            .insert(token.to_owned(), self.tokens.len() as u32);
        self.tokens.push(token.to_owned());
        self.frequencies.push(frequency);
    }

    fn from_parts(tokens: Vec<String>, frequencies: Vec<usize>) -> Self {
        let index = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        Self {
            tokens,
            frequencies,
            index,
        }
    }

    /// Number of entries, `<unk>` included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Never true: `<unk>` is always there.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The index of `token`, or `None` if it is not in the vocabulary.
    pub fn get(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }

    /// The index of `token`, with unknown tokens mapped to `<unk>` (0).
    pub fn index_of(&self, token: &str) -> u32 {
        self.get(token).unwrap_or(0)
    }

    /// The token at `index`, if there is one.
    pub fn token(&self, index: u32) -> Option<&str> {
        self.tokens.get(index as usize).map(String::as_str)
    }

    /// Every token in index order.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// How often the token at `index` occurred in the text the vocabulary was built from.
    pub fn frequency(&self, index: u32) -> usize {
        self.frequencies.get(index as usize).copied().unwrap_or(0)
    }

    /// Joins the tokens at `indices` with `separator`; out-of-range ids decode as `<unk>`.
    pub fn decode(&self, indices: impl IntoIterator<Item = u32>, separator: &str) -> String {
        let parts: Vec<&str> = indices
            .into_iter()
            .map(|i| self.token(i).unwrap_or(UNK))
            .collect();
        parts.join(separator)
    }
}

/// Counts tokens as they stream past (with the position each was first seen), for a
/// vocabulary that orders them as [`Vocab::build`] does. Characters below 128 are counted in a
/// table: character-level corpora, nearly all ASCII, are counted without hashing.
#[derive(Clone, Debug)]
pub struct TokenCounter {
    ascii: Box<[(u64, u64); 128]>,
    chars: HashMap<char, (u64, u64)>,
    words: HashMap<String, (u64, u64)>,
    position: u64,
}

impl Default for TokenCounter {
    fn default() -> Self {
        Self {
            ascii: Box::new([(0, 0); 128]),
            chars: HashMap::new(),
            words: HashMap::new(),
            position: 0,
        }
    }
}

impl TokenCounter {
    /// Counts one token.
    #[inline]
    pub fn add(&mut self, token: Token<'_>) {
        let position = self.position;
        self.position += 1;
        let entry = match token {
            Token::Char(c) if (c as u32) < 128 => &mut self.ascii[c as usize],
            Token::Char(c) => self.chars.entry(c).or_insert((0, position)),
            Token::Word(w) => match self.words.get_mut(w) {
                Some(entry) => entry,
                None => self.words.entry(w.to_owned()).or_insert((0, position)),
            },
        };
        if entry.0 == 0 {
            entry.1 = position;
        }
        entry.0 += 1;
    }

    /// Tokens counted so far.
    pub fn total(&self) -> u64 {
        self.position
    }

    /// Distinct tokens counted so far.
    pub fn distinct(&self) -> usize {
        self.ascii.iter().filter(|(n, _)| *n > 0).count() + self.chars.len() + self.words.len()
    }

    /// The vocabulary: `<unk>`, the reserved tokens, then every token seen at least `min_freq`
    /// times by descending count, ties in order of first appearance.
    pub fn into_vocab(self, min_freq: usize, reserved: &[&str]) -> Vocab {
        let by_frequency = self.into_counts();

        let mut vocab = Vocab::from_parts(vec![UNK.to_owned()], vec![0]);
        for token in reserved {
            if vocab.get(token).is_none() {
                vocab.push(token, 0);
            }
        }
        for (token, count, _) in by_frequency {
            if (count as usize) < min_freq {
                break;
            }
            match vocab.get(&token) {
                // A reserved token that also occurs in the text keeps its reserved index.
                Some(i) => vocab.frequencies[i as usize] = count as usize,
                None => vocab.push(&token, count as usize),
            }
        }
        vocab
    }

    /// Every token counted with its count and the position it was first seen at, by descending
    /// count, ties in order of first appearance.
    pub fn into_counts(self) -> Vec<(String, u64, u64)> {
        let mut by_frequency: Vec<(String, u64, u64)> = Vec::with_capacity(self.distinct());
        let mut buf = [0u8; 4];
        for (code, &(count, first)) in self.ascii.iter().enumerate() {
            if count > 0 {
                let c = char::from(code as u8);
                by_frequency.push((c.encode_utf8(&mut buf).to_owned(), count, first));
            }
        }
        for (c, (count, first)) in self.chars {
            by_frequency.push((c.encode_utf8(&mut buf).to_owned(), count, first));
        }
        for (word, (count, first)) in self.words {
            by_frequency.push((word, count, first));
        }
        by_frequency.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        by_frequency
    }
}

/// Maps streamed tokens to a vocabulary's ids, characters below 128 through a table.
#[derive(Clone, Debug)]
pub struct TokenEncoder<'v> {
    vocab: &'v Vocab,
    ascii: [Option<u32>; 128],
}

impl<'v> TokenEncoder<'v> {
    /// An encoder for `vocab`.
    pub fn new(vocab: &'v Vocab) -> Self {
        let mut ascii = [None; 128];
        for (code, slot) in ascii.iter_mut().enumerate() {
            *slot = vocab.get(char::from(code as u8).encode_utf8(&mut [0u8; 4]));
        }
        Self { vocab, ascii }
    }

    /// The id of `token`, `None` when the vocabulary does not hold it.
    #[inline]
    pub fn id(&self, token: Token<'_>) -> Option<u32> {
        match token {
            Token::Char(c) if (c as u32) < 128 => self.ascii[c as usize],
            Token::Char(c) => self.vocab.get(c.encode_utf8(&mut [0u8; 4])),
            Token::Word(w) => self.vocab.get(w),
        }
    }
}
