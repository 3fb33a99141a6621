//! d2l's two minibatch schemes (`seq_data_iter_random`, `seq_data_iter_sequential`), seeded,
//! and their adapters to Burn's data API.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::DataError;

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

    /// The minibatches of one epoch, in training order.
    pub fn epoch(&self, tokens: &[u32], rng: &mut impl Rng) -> Result<Vec<Minibatch>, DataError> {
        self.check(tokens.len(), "the corpus")?;
        let (batch, steps) = (self.batch_size, self.num_steps);
        Ok(match self.sampling {
            Sampling::Random => {
                let corpus = &tokens[rng.random_range(0..steps)..];
                let subsequences = (corpus.len() - 1) / steps;
                let mut starts: Vec<usize> = (0..subsequences).map(|i| i * steps).collect();
                starts.shuffle(rng);
                starts
                    .chunks_exact(batch)
                    .map(|chunk| {
                        Minibatch::from_rows(steps, chunk.iter().map(|&s| &corpus[s..=s + steps]))
                    })
                    .collect()
            }
            Sampling::Sequential => {
                let offset = rng.random_range(0..=steps);
                let columns = (tokens.len() - offset - 1) / batch;
                let stream = |b: usize| &tokens[offset + b * columns..=offset + (b + 1) * columns];
                (0..columns / steps)
                    .map(|i| {
                        Minibatch::from_rows(
                            steps,
                            (0..batch).map(|b| &stream(b)[i * steps..=(i + 1) * steps]),
                        )
                    })
                    .collect()
            }
            Sampling::Overlapping => {
                let mut starts: Vec<usize> = (0..tokens.len() - steps).collect();
                starts.shuffle(rng);
                starts
                    .chunks(batch)
                    .map(|chunk| {
                        Minibatch::from_rows(steps, chunk.iter().map(|&s| &tokens[s..=s + steps]))
                    })
                    .collect()
            }
        })
    }
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
    /// From windows of `num_steps + 1` tokens: X is a window without its last token, Y without
    /// its first.
    fn from_rows<'a>(num_steps: usize, windows: impl Iterator<Item = &'a [u32]>) -> Self {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let mut batch_size = 0;
        for window in windows {
            debug_assert_eq!(window.len(), num_steps + 1);
            x.extend(window[..num_steps].iter().map(|&t| t as i64));
            y.extend(window[1..].iter().map(|&t| t as i64));
            batch_size += 1;
        }
        Self {
            x,
            y,
            batch_size,
            num_steps,
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
