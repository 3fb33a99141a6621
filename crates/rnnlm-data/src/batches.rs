//! d2l's two minibatch schemes (`seq_data_iter_random`, `seq_data_iter_sequential`), seeded,
//! and their adapters to Burn's data API. An epoch is computed minibatch by minibatch from the
//! ids (memory-mapped for a prepared corpus), so neither a minibatch nor the epoch's order
//! costs memory that grows with the corpus.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{DataError, Tokens};

/// How an epoch is cut into minibatches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Random offset in `0..num_steps`, then non-overlapping subsequences in random order.
    /// Neighbouring minibatches are unrelated, so the trainer resets the state every minibatch.
    Random,
    /// Random offset in `0..=num_steps`, then `batch_size` parallel streams: row `b` of
    /// minibatch `i + 1` continues row `b` of minibatch `i`, so the trainer carries the state.
    Sequential,
    /// The current d2l book's `TimeMachine` dataset: every position starts a window (windows
    /// overlap), in random order; the last minibatch may be smaller. The state is reset every
    /// minibatch.
    Overlapping,
}

impl Sampling {
    /// The scheme's name in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Sampling::Random => "random",
            Sampling::Sequential => "sequential",
            Sampling::Overlapping => "overlapping",
        }
    }

    /// Whether minibatch `i + 1` continues minibatch `i`, so the hidden state may be carried.
    pub fn carries_state(self) -> bool {
        self == Sampling::Sequential
    }

    /// The fewest tokens that give at least one minibatch whatever the random offset.
    pub fn min_tokens(self, batch_size: usize, num_steps: usize) -> usize {
        match self {
            // offset <= steps - 1, then (len - offset - 1) / steps subsequences >= batch
            Sampling::Random => batch_size * num_steps + num_steps,
            // offset <= steps, then (len - offset - 1) / batch columns >= steps
            Sampling::Sequential => batch_size * num_steps + num_steps + 1,
            // one window of num_steps + 1 tokens
            Sampling::Overlapping => num_steps + 1,
        }
    }
}

/// Shape and scheme of the minibatches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchConfig {
    /// Sequences per minibatch.
    pub batch_size: usize,
    /// Tokens per sequence (the truncation length of back-propagation through time).
    pub num_steps: usize,
    /// The scheme.
    pub sampling: Sampling,
}

impl BatchConfig {
    /// Minibatches per epoch when the random offset is 0 (a non-zero offset may remove one).
    pub fn nominal_batches(&self, tokens: usize) -> usize {
        let (batch, steps) = (self.batch_size, self.num_steps);
        match self.sampling {
            // Random: (len - 1) / steps subsequences, then / batch; sequential: (len - 1) / batch
            // columns, then / steps. Both floor to (len - 1) / (batch * steps).
            Sampling::Random | Sampling::Sequential => tokens.saturating_sub(1) / (batch * steps),
            Sampling::Overlapping => tokens.saturating_sub(steps).div_ceil(batch),
        }
    }

    /// Checks the sizes against a token count; `what` names the corpus part in the message.
    pub fn check(&self, tokens: usize, what: &str) -> Result<(), DataError> {
        for (field, value) in [
            ("batch_size", self.batch_size),
            ("num_steps", self.num_steps),
        ] {
            if value == 0 {
                return Err(DataError::Invalid {
                    field: if field == "batch_size" {
                        "data.batch_size"
                    } else {
                        "data.num_steps"
                    },
                    value: "0".to_owned(),
                    expected: "must be at least 1".to_owned(),
                });
            }
        }
        let needed = self.sampling.min_tokens(self.batch_size, self.num_steps);
        if tokens < needed {
            return Err(DataError::TooShort {
                what: what.to_owned(),
                tokens,
                needed,
                batch_size: self.batch_size,
                num_steps: self.num_steps,
                sampling: self.sampling.name(),
            });
        }
        Ok(())
    }

    /// The minibatches of one epoch, in training order, read from `tokens` as they are asked
    /// for: the epoch holds a handle to the ids and a few numbers, whatever the corpus's size.
    pub fn epoch(&self, tokens: impl Into<Tokens>, rng: &mut impl Rng) -> Result<Epoch, DataError> {
        let tokens = tokens.into();
        self.check(tokens.len(), "the corpus")?;
        let (batch, steps) = (self.batch_size, self.num_steps);
        let layout = match self.sampling {
            Sampling::Random => {
                let offset = rng.random_range(0..steps);
                let windows = (tokens.len() - offset - 1) / steps;
                Layout::Windows {
                    offset,
                    stride: steps,
                    order: Permutation::new(windows, rng),
                    batches: windows / batch,
                }
            }
            Sampling::Sequential => {
                let offset = rng.random_range(0..=steps);
                let columns = (tokens.len() - offset - 1) / batch;
                Layout::Streams {
                    offset,
                    columns,
                    tail: false,
                }
            }
            Sampling::Overlapping => {
                let windows = tokens.len() - steps;
                Layout::Windows {
                    offset: 0,
                    stride: 1,
                    order: Permutation::new(windows, rng),
                    batches: windows.div_ceil(batch),
                }
            }
        };
        Ok(Epoch {
            tokens,
            config: *self,
            layout,
        })
    }
}

impl Epoch {
    /// Every token of `tokens` but the first, scored once: up to `streams` contiguous streams
    /// from the start (fewer when the text is short), read `num_steps` at a time in parallel,
    /// the last minibatch narrower where the streams' length is no multiple of `num_steps`.
    /// The cutting of sequential sampling, without its random offset and with its tail: what
    /// `rnnlm eval` reads.
    ///
    /// # Errors
    /// Fewer than 2 tokens, or `streams` or `num_steps` 0.
    pub fn streams(
        tokens: impl Into<Tokens>,
        streams: usize,
        num_steps: usize,
    ) -> Result<Self, DataError> {
        let tokens = tokens.into();
        for (field, value) in [("streams", streams), ("data.num_steps", num_steps)] {
            if value == 0 {
                return Err(DataError::Invalid {
                    field,
                    value: "0".to_owned(),
                    expected: "must be at least 1".to_owned(),
                });
            }
        }
        if tokens.len() < 2 {
            return Err(DataError::TooShort {
                what: "the text".to_owned(),
                tokens: tokens.len(),
                needed: 2,
                batch_size: 1,
                num_steps: 1,
                sampling: "sequential",
            });
        }
        let streams = streams.clamp(1, (tokens.len() - 1).div_ceil(num_steps));
        let columns = (tokens.len() - 1) / streams;
        Ok(Self {
            tokens,
            config: BatchConfig {
                batch_size: streams,
                num_steps,
                sampling: Sampling::Sequential,
            },
            layout: Layout::Streams {
                offset: 0,
                columns,
                tail: true,
            },
        })
    }
}

/// How an epoch's minibatches are cut from the ids.
#[derive(Clone, Debug)]
enum Layout {
    /// Windows of `num_steps + 1` tokens starting at `offset + k * stride`, `k` in the order of
    /// a seeded permutation, `batch_size` a minibatch (random and overlapping sampling).
    Windows {
        offset: usize,
        stride: usize,
        order: Permutation,
        batches: usize,
    },
    /// `batch_size` parallel streams of `columns + 1` tokens from `offset`, read `num_steps`
    /// at a time (sequential sampling); with `tail`, a last, narrower minibatch reads what is
    /// left of the streams (scoring, where every token counts).
    Streams {
        offset: usize,
        columns: usize,
        tail: bool,
    },
}

/// One epoch's minibatches, computed on demand from the ids; also a Burn [`Dataset`] (item `i`
/// is minibatch `i`) for a data loader of batch size 1 without shuffling, which keeps the
/// order sequential partitioning relies on.
#[derive(Clone, Debug)]
pub struct Epoch {
    tokens: Tokens,
    config: BatchConfig,
    layout: Layout,
}

impl Epoch {
    /// Minibatches in the epoch.
    pub fn len(&self) -> usize {
        match &self.layout {
            Layout::Windows { batches, .. } => *batches,
            Layout::Streams {
                columns,
                tail: false,
                ..
            } => columns / self.config.num_steps,
            Layout::Streams {
                columns,
                tail: true,
                ..
            } => columns.div_ceil(self.config.num_steps),
        }
    }

    /// Whether the epoch has no minibatch (never, for ids that passed [`BatchConfig::check`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Minibatch `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<Minibatch> {
        if index >= self.len() {
            return None;
        }
        let (batch, steps) = (self.config.batch_size, self.config.num_steps);
        Some(match &self.layout {
            Layout::Windows {
                offset,
                stride,
                order,
                ..
            } => {
                let first = index * batch;
                let rows = batch.min(order.len() - first);
                let starts = (first..first + rows).map(|k| offset + order.get(k) * stride);
                Minibatch::from_windows(&self.tokens, steps, starts)
            }
            Layout::Streams {
                offset, columns, ..
            } => {
                let width = steps.min(columns - index * steps);
                let starts = (0..batch).map(|b| offset + b * columns + index * steps);
                Minibatch::from_windows(&self.tokens, width, starts)
            }
        })
    }

    /// Every minibatch, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Minibatch> + '_ {
        (0..self.len()).map(|i| self.get(i).expect("index below len"))
    }

    /// Every minibatch collected (memory grows with the corpus: for tests and small texts).
    pub fn to_vec(&self) -> Vec<Minibatch> {
        self.iter().collect()
    }
}

impl Dataset<Minibatch> for Epoch {
    fn get(&self, index: usize) -> Result<Minibatch, DatasetError> {
        Epoch::get(self, index).ok_or_else(|| {
            DatasetError::new(std::io::Error::other(format!(
                "no minibatch {index}: the epoch has {}",
                self.len()
            )))
        })
    }

    fn len(&self) -> usize {
        Epoch::len(self)
    }
}

/// A seeded permutation of `0..len` computed one element at a time, in memory that does not
/// depend on `len`: a balanced Feistel network over the smallest even power of two at least
/// `len`, walking the cycle until it lands inside the range (under four steps on average).
/// Every element appears exactly once, and the order depends only on the generator's state.
#[derive(Clone, Debug)]
pub struct Permutation {
    len: usize,
    half_bits: u32,
    keys: [u64; 6],
}

impl Permutation {
    /// A permutation of `0..len` drawn from `rng`.
    pub fn new(len: usize, rng: &mut impl Rng) -> Self {
        let bits = (usize::BITS - len.saturating_sub(1).leading_zeros()).max(2);
        let half_bits = bits.div_ceil(2);
        Self {
            len,
            half_bits,
            keys: std::array::from_fn(|_| rng.random()),
        }
    }

    /// Elements permuted.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether `len` is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The element at position `index`.
    ///
    /// # Panics
    /// If `index >= len`.
    pub fn get(&self, index: usize) -> usize {
        assert!(
            index < self.len,
            "position {index} of a permutation of {}",
            self.len
        );
        let mut x = index as u64;
        loop {
            x = self.feistel(x);
            if x < self.len as u64 {
                return x as usize;
            }
        }
    }

    fn feistel(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut left, mut right) = (x >> self.half_bits, x & mask);
        for key in self.keys {
            let mixed = mix64(right ^ key) & mask;
            (left, right) = (right, left ^ mixed);
        }
        (left << self.half_bits) | right
    }
}

/// splitmix64's finaliser: a bijective mix of 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The data-order generator of one epoch: a pure function of the seed and the epoch, so a
/// resumed run sees exactly the minibatches an uninterrupted one would.
pub fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64);
    rng
}

/// One minibatch: inputs and targets `[batch_size, num_steps]`, row-major, where the targets are
/// the inputs shifted by one token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Minibatch {
    /// Input ids, `batch_size * num_steps`, row-major.
    pub x: Vec<i64>,
    /// Target ids, same layout.
    pub y: Vec<i64>,
    /// Rows.
    pub batch_size: usize,
    /// Columns.
    pub num_steps: usize,
}

impl Minibatch {
    /// From the windows of `num_steps + 1` tokens at `starts`: X is a window without its last
    /// token, Y without its first.
    fn from_windows(
        tokens: &Tokens,
        num_steps: usize,
        starts: impl Iterator<Item = usize>,
    ) -> Self {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let mut batch_size = 0;
        for start in starts {
            tokens.extend_i64(start..start + num_steps, &mut x);
            tokens.extend_i64(start + 1..start + 1 + num_steps, &mut y);
            batch_size += 1;
        }
        Self {
            x,
            y,
            batch_size,
            num_steps,
        }
    }

    /// The rows `rows` of the minibatch (a rank's or a device's block of its parallel streams).
    ///
    /// # Panics
    /// If `rows` reaches past `batch_size`.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Self {
        assert!(
            rows.end <= self.batch_size,
            "rows {rows:?} of {}",
            self.batch_size
        );
        let cut = |v: &[i64]| v[rows.start * self.num_steps..rows.end * self.num_steps].to_vec();
        Self {
            x: cut(&self.x),
            y: cut(&self.y),
            batch_size: rows.len(),
            num_steps: self.num_steps,
        }
    }

    /// Row `b` of the inputs.
    pub fn x_row(&self, b: usize) -> &[i64] {
        &self.x[b * self.num_steps..(b + 1) * self.num_steps]
    }

    /// Row `b` of the targets.
    pub fn y_row(&self, b: usize) -> &[i64] {
        &self.y[b * self.num_steps..(b + 1) * self.num_steps]
    }
}

/// One epoch's minibatches as a Burn [`Dataset`]: item `i` is minibatch `i`. Use it with a
/// data loader of batch size 1 and no shuffling so the order (which sequential partitioning
/// relies on) is kept.
#[derive(Clone, Debug)]
pub struct MinibatchDataset {
    batches: Vec<Minibatch>,
}

impl MinibatchDataset {
    /// Wraps an epoch's minibatches.
    pub fn new(batches: Vec<Minibatch>) -> Self {
        Self { batches }
    }
}

impl Dataset<Minibatch> for MinibatchDataset {
    fn get(&self, index: usize) -> Result<Minibatch, DatasetError> {
        let len = self.batches.len();
        self.batches.get(index).cloned().ok_or_else(|| {
            DatasetError::new(std::io::Error::other(format!(
                "no minibatch {index}: the epoch has {len}"
            )))
        })
    }

    fn len(&self) -> usize {
        self.batches.len()
    }
}

/// A minibatch on a device.
#[derive(Clone, Debug)]
pub struct SequenceBatch {
    /// Input ids `[batch, steps]`.
    pub x: Tensor<2, Int>,
    /// Target ids `[batch, steps]`.
    pub y: Tensor<2, Int>,
}

impl SequenceBatch {
    /// Moves a minibatch onto `device`.
    pub fn from_minibatch(batch: Minibatch, device: &Device) -> Self {
        let shape = [batch.batch_size, batch.num_steps];
        Self {
            x: Tensor::from_data(TensorData::new(batch.x, shape), device),
            y: Tensor::from_data(TensorData::new(batch.y, shape), device),
        }
    }
}

/// Burn [`Batcher`] from minibatches to tensors; several minibatches are stacked row-wise.
#[derive(Clone, Debug, Default)]
pub struct SequenceBatcher;

impl Batcher<Minibatch, SequenceBatch> for SequenceBatcher {
    fn batch(&self, mut items: Vec<Minibatch>, device: &Device) -> SequenceBatch {
        // The usual case (a loader of batch size 1) moves the minibatch without copying it.
        if items.len() == 1 {
            return SequenceBatch::from_minibatch(items.pop().expect("one item"), device);
        }
        let steps = items.first().map_or(0, |b| b.num_steps);
        let merged = Minibatch {
            x: items.iter().flat_map(|b| b.x.iter().copied()).collect(),
            y: items.iter().flat_map(|b| b.y.iter().copied()).collect(),
            batch_size: items.iter().map(|b| b.batch_size).sum(),
            num_steps: steps,
        };
        SequenceBatch::from_minibatch(merged, device)
    }
}
