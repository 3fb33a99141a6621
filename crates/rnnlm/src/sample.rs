//! Continuing prefixes: d2l's greedy `predict`, temperature / top-k / top-p sampling, d2l's
//! p^alpha exercise, and beam search. Runs on any device, without autodiff (call it on
//! `model.valid()` when the model lives on an autodiff device).
//!
//! Every strategy warms the state up on the whole prefix in one forward call (prefixes of equal
//! length share a call), then produces one token per step for every sequence of the batch.
//! [`decode`] is the token loop itself, for an engine of one's own. Where the fused scan runs
//! on the host kernels ([`crate::fused::runs_on_host`]), [`generate`] steps a host copy of the weights instead of
//! tensor operations (the same cell rows as the fused scan), several times faster.

use std::ops::ControlFlow;

use burn::prelude::*;

use crate::{RecurrentState, RnnLm};

/// How the next token is chosen from the model's distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decoding {
    /// The most likely token (d2l's `predict`).
    Greedy,
    /// Sample from `softmax(logits / temperature)`, optionally restricted to the `top_k` most
    /// likely tokens and then to the smallest set whose probability reaches `top_p`.
    Sample {
        /// Positive; below 1 sharpens, above 1 flattens. d2l's exercise of sampling from
        /// `p^alpha` is `temperature = 1 / alpha`.
        temperature: f64,
        /// Keep only the k most likely tokens (k >= 1).
        top_k: Option<usize>,
        /// Nucleus: keep the most likely tokens until their probability reaches p, in (0, 1].
        top_p: Option<f64>,
        /// Seed of the sampler's own random generator: same seed, same text.
        seed: u64,
    },
}

impl Decoding {
    /// d2l's exercise: sample from `p^alpha` renormalised, i.e. temperature `1 / alpha`.
    pub fn power(alpha: f64, seed: u64) -> Self {
        Decoding::Sample {
            temperature: 1.0 / alpha,
            top_k: None,
            top_p: None,
            seed,
        }
    }

    /// Checks the parameters; the error names the bad one, its value and what it accepts.
    pub fn validate(&self) -> Result<(), DecodingError> {
        if let Decoding::Sample {
            temperature,
            top_k,
            top_p,
            ..
        } = *self
        {
            if !(temperature.is_finite() && temperature > 0.0) {
                return Err(DecodingError::Temperature(temperature));
            }
            if top_k == Some(0) {
                return Err(DecodingError::TopK);
            }
            if let Some(p) = top_p
                && !(p > 0.0 && p <= 1.0)
            {
                return Err(DecodingError::TopP(p));
            }
        }
        Ok(())
    }
}

/// A [`Decoding`] that cannot run: the parameter, its value and what it accepts. Its message
/// reads as a command-line flag would, e.g. `top-p = 1.5: must lie in (0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum DecodingError {
    /// `temperature` is not a finite number above 0.
    #[error("temperature = {0}: must be a finite number > 0")]
    Temperature(f64),
    /// `top_k` is `Some(0)`.
    #[error("top-k = 0: must be at least 1")]
    TopK,
    /// `top_p` lies outside `(0, 1]`.
    #[error("top-p = {0}: must lie in (0, 1]")]
    TopP(f64),
}

/// SplitMix64: a small, fast generator whose stream depends only on the seed (the model crate
/// takes no dependency beyond burn and serde).
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks one token from a row of logits.
fn choose(logits: &[f32], decoding: &Decoding, rng: &mut SplitMix64) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0 as u32
    };
    let Decoding::Sample {
        temperature,
        top_k,
        top_p,
        ..
    } = *decoding
    else {
        return argmax();
    };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut candidates: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, ((v as f64 - max) / temperature).exp()))
        .collect();
    // Most likely first; ties by index, so the order (and the draw) is deterministic.
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(k) = top_k {
        candidates.truncate(k.max(1));
    }
    let total: f64 = candidates.iter().map(|c| c.1).sum();
    if let Some(p) = top_p {
        let mut mass = 0.0;
        let keep = candidates
            .iter()
            .position(|c| {
                mass += c.1 / total;
                mass >= p
            })
            .map_or(candidates.len(), |i| i + 1);
        candidates.truncate(keep);
    }
    let total: f64 = candidates.iter().map(|c| c.1).sum();
    if !(total.is_finite() && total > 0.0) {
        return argmax();
    }
    let mut target = rng.next_f64() * total;
    for &(token, weight) in &candidates {
        target -= weight;
        if target <= 0.0 {
            return token;
        }
    }
    candidates.last().map_or_else(argmax, |c| c.0)
}

/// Token ids `[rows, cols]`.
fn id_tensor(ids: Vec<i64>, shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids, shape), device)
}

/// Warms up on every prefix: returns the state after each prefix (batch in prefix order) and
/// the logits of each prefix's last position `[batch, vocab]`. Prefixes of the same length go
/// through the model together, each group in a single forward call.
///
/// # Panics
/// If `prefixes` is empty, a prefix is empty, or a prefix holds an id outside the vocabulary.
pub fn warm_up(
    model: &RnnLm,
    prefixes: &[Vec<u32>],
    device: &Device,
) -> (RecurrentState, Tensor<2>) {
    assert!(!prefixes.is_empty(), "warm_up: no prefix given");
    let mut lengths: Vec<usize> = prefixes.iter().map(Vec::len).collect();
    assert!(
        lengths.iter().all(|&n| n > 0),
        "warm_up: a prefix is empty; give at least one token"
    );
    lengths.sort_unstable();
    lengths.dedup();
    let mut order = Vec::with_capacity(prefixes.len());
    let (mut states, mut lasts) = (Vec::new(), Vec::new());
    for length in lengths {
        let members: Vec<usize> = (0..prefixes.len())
            .filter(|&i| prefixes[i].len() == length)
            .collect();
        let ids = members
            .iter()
            .flat_map(|&i| prefixes[i].iter().map(|&t| t as i64))
            .collect();
        let tokens = id_tensor(ids, [members.len(), length], device);
        let (logits, state) = model.forward(tokens, model.begin_state(members.len(), device));
        let vocab = model.vocab_size;
        lasts.push(
            logits
                .narrow(1, length - 1, 1)
                .reshape([members.len(), vocab]),
        );
        states.push(state);
        order.extend(members);
    }
    // Back to the callers' order: position j of the concatenation holds prefix order[j].
    let mut inverse = vec![0i64; order.len()];
    for (position, &prefix) in order.iter().enumerate() {
        inverse[prefix] = position as i64;
    }
    let inverse = Tensor::<1, Int>::from_data(TensorData::new(inverse, [order.len()]), device);
    let state = RecurrentState {
        hidden: Tensor::cat(states.iter().map(|s| s.hidden.clone()).collect(), 1),
        cell: states[0].cell.as_ref().map(|_| {
            Tensor::cat(
                states
                    .iter()
                    .map(|s| s.cell.clone().expect("same core"))
                    .collect(),
                1,
            )
        }),
    }
    .select_batch(inverse.clone());
    (state, Tensor::cat(lasts, 0).select(0, inverse))
}

/// Continues every prefix by `len` tokens, one step for the whole batch at a time. `on_step`
/// receives the tokens of each step (one per prefix, in prefix order) as soon as they exist and
/// may stop early with `ControlFlow::Break`. Returns the new tokens of every prefix.
///
/// The same prefix gives the same tokens alone or in a batch: sampling draws from one
/// generator per prefix, seeded with `seed + index`.
///
/// # Panics
/// If a prefix is empty, holds an id outside the vocabulary, or `decoding` is invalid.
pub fn generate(
    model: &RnnLm,
    prefixes: &[Vec<u32>],
    len: usize,
    decoding: &Decoding,
    device: &Device,
    on_step: impl FnMut(&[u32]) -> ControlFlow<()>,
) -> Vec<Vec<u32>> {
    if let Err(message) = decoding.validate() {
        panic!("generate: {message}");
    }
    if len == 0 {
        return vec![Vec::new(); prefixes.len()];
    }
    if rnnlm_fused::runs_on_host(device) && crate::decoder::runs(model) {
        return generate_on_host(model, prefixes, len, decoding, on_step);
    }
    let (state, logits) = warm_up(model, prefixes, device);
    // Moved into each step's forward call and replaced by its result.
    let mut state = Some(state);
    let batch = prefixes.len();
    let vocab = model.vocab_size;
    let rows = |logits: Tensor<2>| {
        logits
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("float logits")
    };
    decode(batch, vocab, len, decoding, rows(logits), on_step, |step| {
        let input = id_tensor(step.iter().map(|&t| t as i64).collect(), [batch, 1], device);
        let (next_logits, next_state) = model.forward(input, state.take().expect("set"));
        state = Some(next_state);
        rows(next_logits.reshape([batch, vocab]))
    })
}

/// [`generate`] where the fused scan runs: the same choices from the same logits (to float
/// rounding) on a host copy of the weights, with the units of every layer split between
/// threads that stay up for the whole text ([`rnnlm_kernels::decode`]); the prefixes are
/// warmed up token by token on it as well.
fn generate_on_host(
    model: &RnnLm,
    prefixes: &[Vec<u32>],
    len: usize,
    decoding: &Decoding,
    on_step: impl FnMut(&[u32]) -> ControlFlow<()>,
) -> Vec<Vec<u32>> {
    assert!(!prefixes.is_empty(), "generate: no prefix given");
    let vocab = model.vocab_size;
    for (row, prefix) in prefixes.iter().enumerate() {
        assert!(
            !prefix.is_empty(),
            "generate: prefix {row} is empty; give at least one token"
        );
        if let Some(&bad) = prefix.iter().find(|&&t| t as usize >= vocab) {
            panic!(
                "generate: prefix {row} holds token id {bad}, expected ids in 0..{vocab} (the vocabulary size)"
            );
        }
    }
    let decoder = rnnlm_kernels::decode::Decoder::new(&crate::decoder::stack_weights(model));
    let (mut state, first) = decoder.warm_up(prefixes);
    let batch = prefixes.len();
    decoder.session(batch, |session| {
        let mut logits = Vec::new();
        decode(batch, vocab, len, decoding, first, on_step, |step| {
            session.step(step, &mut state, &mut logits);
            logits.clone()
        })
    })
}

/// The token loop of [`generate`], for any engine that computes the logits: chooses a token per
/// row from `logits` `[batch, vocab]` as `decoding` says (sampling draws from one generator per
/// row, seeded with `seed + row`), reports each step's tokens to `on_step`, and asks `next` for
/// the logits `[batch, vocab]` after feeding them, until every row has `len` tokens or
/// `on_step` breaks. Returns the new tokens of every row.
///
/// # Panics
/// If `decoding` is invalid or `logits` does not hold `batch` rows of `vocab`.
pub fn decode(
    batch: usize,
    vocab: usize,
    len: usize,
    decoding: &Decoding,
    mut logits: Vec<f32>,
    mut on_step: impl FnMut(&[u32]) -> ControlFlow<()>,
    mut next: impl FnMut(&[u32]) -> Vec<f32>,
) -> Vec<Vec<u32>> {
    if let Err(message) = decoding.validate() {
        panic!("decode: {message}");
    }
    assert_eq!(
        logits.len(),
        batch * vocab,
        "decode: {} logits, expected [batch, vocab] = [{batch}, {vocab}]",
        logits.len()
    );
    if len == 0 {
        return vec![Vec::new(); batch];
    }
    let seed = match decoding {
        Decoding::Sample { seed, .. } => *seed,
        Decoding::Greedy => 0,
    };
    let mut rngs: Vec<SplitMix64> = (0..batch as u64)
        .map(|i| SplitMix64(seed.wrapping_add(i)))
        .collect();
    let mut out = vec![Vec::with_capacity(len); batch];
    loop {
        let step: Vec<u32> = logits
            .chunks(vocab)
            .zip(rngs.iter_mut())
            .map(|(row, rng)| choose(row, decoding, rng))
            .collect();
        for (sequence, &token) in out.iter_mut().zip(&step) {
            sequence.push(token);
        }
        if on_step(&step).is_break() || out[0].len() == len {
            return out;
        }
        logits = next(&step);
    }
}

/// Greedy continuation of one prefix by `len` tokens (d2l's `predict`); returns the new tokens.
///
/// # Panics
/// If `prefix` is empty or holds an id outside the vocabulary.
pub fn greedy(model: &RnnLm, prefix: &[u32], len: usize, device: &Device) -> Vec<u32> {
    let prefixes = [prefix.to_vec()];
    generate(model, &prefixes, len, &Decoding::Greedy, device, |_| {
        ControlFlow::Continue(())
    })
    .pop()
    .expect("one sequence")
}

/// Beam search: the `width` most likely continuations of `prefix` are extended token by token
/// for `len` steps, and the one with the highest total log-probability is returned with that
/// log-probability. Width 1 is greedy; a width of `vocab^(len-1)` or more is exhaustive.
///
/// # Panics
/// If `width` is 0, `prefix` is empty or holds an id outside the vocabulary.
pub fn beam_search(
    model: &RnnLm,
    prefix: &[u32],
    len: usize,
    width: usize,
    device: &Device,
) -> (Vec<u32>, f64) {
    assert!(width > 0, "beam_search: width = 0; must be at least 1");
    if len == 0 {
        return (Vec::new(), 0.0);
    }
    let vocab = model.vocab_size;
    let (mut state, mut logits) = warm_up(model, &[prefix.to_vec()], device);
    // (tokens, total log-probability); all beams share the same length.
    let mut beams: Vec<(Vec<u32>, f64)> = vec![(Vec::new(), 0.0)];
    loop {
        let log_probs = burn::tensor::activation::log_softmax(logits, 1)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("float log-probabilities");
        let mut candidates: Vec<(usize, u32, f64)> = beams
            .iter()
            .enumerate()
            .flat_map(|(b, (_, score))| {
                log_probs[b * vocab..(b + 1) * vocab]
                    .iter()
                    .enumerate()
                    .map(move |(t, &lp)| (b, t as u32, score + lp as f64))
            })
            .collect();
        candidates.sort_by(|x, y| y.2.total_cmp(&x.2).then((x.0, x.1).cmp(&(y.0, y.1))));
        candidates.truncate(width);
        beams = candidates
            .iter()
            .map(|&(b, t, score)| {
                let mut tokens = beams[b].0.clone();
                tokens.push(t);
                (tokens, score)
            })
            .collect();
        if beams[0].0.len() == len {
            break;
        }
        let parents: Vec<i64> = candidates.iter().map(|c| c.0 as i64).collect();
        let parents = Tensor::<1, Int>::from_data(TensorData::new(parents, [beams.len()]), device);
        let input = id_tensor(
            candidates.iter().map(|c| c.1 as i64).collect(),
            [beams.len(), 1],
            device,
        );
        let (next_logits, next_state) = model.forward(input, state.select_batch(parents));
        state = next_state;
        logits = next_logits.reshape([beams.len(), vocab]);
    }
    beams.swap_remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_one_and_tiny_temperature_are_greedy() {
        let logits = [0.1f32, 2.0, -1.0, 1.9];
        let mut rng = SplitMix64(1);
        let greedy = choose(&logits, &Decoding::Greedy, &mut rng);
        assert_eq!(greedy, 1);
        for seed in 0..50 {
            let top1 = Decoding::Sample {
                temperature: 1.0,
                top_k: Some(1),
                top_p: None,
                seed,
            };
            assert_eq!(choose(&logits, &top1, &mut SplitMix64(seed)), greedy);
            let cold = Decoding::Sample {
                temperature: 1e-6,
                top_k: None,
                top_p: None,
                seed,
            };
            assert_eq!(choose(&logits, &cold, &mut SplitMix64(seed)), greedy);
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus_only() {
        // Probabilities ~ [0.05, 0.6, 0.01, 0.34]: p = 0.9 keeps tokens 1 and 3.
        let logits = [0.05f32.ln(), 0.6f32.ln(), 0.01f32.ln(), 0.34f32.ln()];
        let nucleus = Decoding::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.9),
            seed: 0,
        };
        let mut rng = SplitMix64(3);
        let drawn: Vec<u32> = (0..400)
            .map(|_| choose(&logits, &nucleus, &mut rng))
            .collect();
        assert!(drawn.iter().all(|&t| t == 1 || t == 3));
        let ones = drawn.iter().filter(|&&t| t == 1).count() as f64 / 400.0;
        assert!((ones - 0.6 / 0.94).abs() < 0.08, "{ones}");
    }

    #[test]
    fn invalid_parameters_are_named() {
        let bad = |temperature, top_k, top_p| {
            Decoding::Sample {
                temperature,
                top_k,
                top_p,
                seed: 0,
            }
            .validate()
        };
        assert!(
            bad(0.0, None, None)
                .unwrap_err()
                .to_string()
                .contains("temperature = 0")
        );
        assert_eq!(bad(1.0, Some(0), None), Err(DecodingError::TopK));
        assert!(
            bad(1.0, None, Some(1.5))
                .unwrap_err()
                .to_string()
                .contains("top-p = 1.5: must lie in (0, 1]")
        );
        assert_eq!(bad(1.0, None, Some(0.0)), Err(DecodingError::TopP(0.0)));
        assert_eq!(
            Decoding::power(2.0, 0),
            Decoding::Sample {
                temperature: 0.5,
                top_k: None,
                top_p: None,
                seed: 0
            }
        );
    }
}
