//! Continuing a prefix (d2l's `predict`).

use burn::prelude::*;

use crate::{RecurrentState, RnnLm};

/// Greedy continuation of `prefix` by `len` tokens: the state is warmed up on the whole prefix
/// in one forward call, then each step feeds the most likely token back in. Returns only the
/// new tokens. Runs on whatever device `model` lives on; call it on `model.valid()` (no
/// autodiff) when training.
///
/// # Panics
/// If `prefix` is empty or holds an id outside the vocabulary.
pub fn greedy(model: &RnnLm, prefix: &[u32], len: usize, device: &Device) -> Vec<u32> {
    assert!(
        !prefix.is_empty(),
        "greedy: the prefix is empty; give at least one token"
    );
    let ids: Vec<i64> = prefix.iter().map(|&t| t as i64).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, prefix.len()]), device);
    let (logits, mut state): (Tensor<3>, RecurrentState) =
        model.forward(tokens, model.begin_state(1, device));
    let mut next = last_argmax(logits);
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        out.push(next);
        if out.len() == len {
            break;
        }
        let input = Tensor::<2, Int>::from_data(TensorData::new(vec![next as i64], [1, 1]), device);
        let (logits, new_state) = model.forward(input, state);
        state = new_state;
        next = last_argmax(logits);
    }
    out
}

/// Argmax over the vocabulary at the last position of `[1, steps, vocab]` logits.
fn last_argmax(logits: Tensor<3>) -> u32 {
    let [_, steps, vocab] = logits.dims();
    let last = logits.narrow(1, steps - 1, 1).reshape([1, vocab]);
    last.argmax(1).into_scalar::<i64>() as u32
}
