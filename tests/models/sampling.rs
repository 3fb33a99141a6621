//! The sampler: greedy against a step-by-step loop, sampling settings that reduce to greedy,
//! beam search against exhaustive enumeration, seeds, batching, warm-up.

use std::ops::ControlFlow;

use rnnlm::sample::{Decoding, beam_search, generate, greedy, warm_up};
use rnnlm::{CellKind, RnnLm, RnnLmConfig, WeightInit};
use rnnlm_tests::{device, ids, max_abs_diff, values};

use crate::shapes::KINDS;

fn model(kind: CellKind, vocab: usize) -> RnnLm {
    // Large weights: a peaked, input-dependent distribution, so wrong wiring shows. Fixed ones
    // (not drawn from the generator the tests running beside share), so that every run
    // samples from the same logits: at temperature 1e-4 a near tie between two tokens would
    // otherwise make a run now and then differ from greedy decoding.
    let model = RnnLmConfig::new(kind, vocab, 12)
        .with_num_layers(2)
        .with_init(WeightInit::Normal { sigma: 0.8 })
        .init(&device());
    burn::module::Module::map(
        model,
        &mut rnnlm_tests::Patterned {
            scale: 0.8,
            next: 0,
        },
    )
}

fn argmax(row: &[f32]) -> u32 {
    row.iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
        .0 as u32
}

/// d2l's predict, literally: feed the prefix one token at a time, then argmax and feed back.
fn reference_greedy(m: &RnnLm, prefix: &[u32], len: usize) -> Vec<u32> {
    let dev = device();
    let mut state = m.begin_state(1, &dev);
    let mut last = Vec::new();
    for &t in prefix {
        let (logits, s) = m.forward(ids(&[t as i64], [1, 1], &dev), state);
        state = s;
        last = values(logits);
    }
    let mut out = Vec::new();
    for _ in 0..len {
        let next = argmax(&last);
        out.push(next);
        let (logits, s) = m.forward(ids(&[next as i64], [1, 1], &dev), state);
        state = s;
        last = values(logits);
    }
    out
}

fn no_stop(_: &[u32]) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

#[test]
fn greedy_equals_a_step_by_step_loop() {
    for kind in KINDS {
        let m = model(kind, 9);
        let prefix = [3, 1, 4, 1, 5];
        assert_eq!(
            greedy(&m, &prefix, 20, &device()),
            reference_greedy(&m, &prefix, 20),
            "{kind}"
        );
    }
}

#[test]
fn warm_up_in_one_call_equals_token_by_token() {
    let dev = device();
    for kind in KINDS {
        let m = model(kind, 9);
        let prefix = [2u32, 7, 1, 8, 2, 8];
        let (state, last) = warm_up(&m, &[prefix.to_vec()], &dev);
        let mut step_state = m.begin_state(1, &dev);
        let mut step_logits = None;
        for &t in &prefix {
            let (logits, s) = m.forward(ids(&[t as i64], [1, 1], &dev), step_state);
            step_state = s;
            step_logits = Some(logits.reshape([1, 9]));
        }
        assert!(
            max_abs_diff(state.hidden, step_state.hidden) < 1e-5,
            "{kind}"
        );
        if let (Some(a), Some(b)) = (state.cell, step_state.cell) {
            assert!(max_abs_diff(a, b) < 1e-5, "{kind}");
        }
        assert!(max_abs_diff(last, step_logits.unwrap()) < 1e-5, "{kind}");
    }
}

#[test]
fn top_k_one_and_near_zero_temperature_equal_greedy() {
    let m = model(CellKind::Lstm, 9);
    let prefix = vec![1u32, 2, 3];
    let expected = greedy(&m, &prefix, 25, &device());
    for decoding in [
        Decoding::Sample {
            temperature: 1.0,
            top_k: Some(1),
            top_p: None,
            seed: 5,
        },
        Decoding::Sample {
            temperature: 1e-4,
            top_k: None,
            top_p: None,
            seed: 5,
        },
    ] {
        let got = generate(
            &m,
            std::slice::from_ref(&prefix),
            25,
            &decoding,
            &device(),
            no_stop,
        );
        assert_eq!(got[0], expected, "{decoding:?}");
    }
}

#[test]
fn seeded_sampling_repeats_exactly() {
    let m = model(CellKind::Gru, 9);
    let prefix = vec![vec![4u32, 4, 2]];
    let run = |seed| {
        let d = Decoding::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.95),
            seed,
        };
        generate(&m, &prefix, 40, &d, &device(), no_stop)
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

#[test]
fn batched_generation_equals_each_prompt_alone() {
    let m = model(CellKind::Lstm, 9);
    let prompts = vec![
        vec![1u32, 2, 3, 4],
        vec![5u32],
        vec![6u32, 7],
        vec![8u32, 0, 1, 2],
    ];
    for decoding in [
        Decoding::Greedy,
        Decoding::Sample {
            temperature: 0.9,
            top_k: Some(5),
            top_p: None,
            seed: 2,
        },
    ] {
        let together = generate(&m, &prompts, 15, &decoding, &device(), no_stop);
        for (i, prompt) in prompts.iter().enumerate() {
            // Alone, prompt i must use the generator it had at position i of the batch.
            let alone_decoding = match decoding {
                Decoding::Sample {
                    temperature,
                    top_k,
                    top_p,
                    seed,
                } => Decoding::Sample {
                    temperature,
                    top_k,
                    top_p,
                    seed: seed + i as u64,
                },
                Decoding::Greedy => Decoding::Greedy,
            };
            let alone = generate(
                &m,
                std::slice::from_ref(prompt),
                15,
                &alone_decoding,
                &device(),
                no_stop,
            );
            assert_eq!(together[i], alone[0], "prompt {i} with {decoding:?}");
        }
    }
}

#[test]
fn streaming_yields_each_step_and_can_stop() {
    let m = model(CellKind::RnnScratch, 9);
    let mut seen = Vec::new();
    let out = generate(
        &m,
        &[vec![1, 2]],
        30,
        &Decoding::Greedy,
        &device(),
        |step| {
            seen.push(step[0]);
            if seen.len() == 7 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    );
    assert_eq!(out[0], seen);
    assert_eq!(seen, greedy(&m, &[1, 2], 7, &device()));
}

/// Log-probability of `continuation` after `prefix`, one forward call.
fn log_prob(m: &RnnLm, prefix: &[u32], continuation: &[u32]) -> f64 {
    let dev = device();
    let all: Vec<i64> = prefix
        .iter()
        .chain(continuation)
        .map(|&t| t as i64)
        .collect();
    let (logits, _) = m.forward(ids(&all, [1, all.len()], &dev), m.begin_state(1, &dev));
    let vocab = m.vocab_size;
    let lp = values(burn::tensor::activation::log_softmax(
        logits.reshape([all.len(), vocab]),
        1,
    ));
    continuation
        .iter()
        .enumerate()
        .map(|(i, &t)| lp[(prefix.len() - 1 + i) * vocab + t as usize] as f64)
        .sum()
}

#[test]
fn beam_search_finds_the_most_likely_sequence() {
    let vocab = 3;
    let len = 4;
    for kind in KINDS {
        let m = model(kind, vocab);
        let prefix = [1u32, 0];
        let mut best = (Vec::new(), f64::NEG_INFINITY);
        for code in 0..vocab.pow(len as u32) {
            let seq: Vec<u32> = (0..len)
                .map(|i| (code / vocab.pow(i as u32) % vocab) as u32)
                .collect();
            let score = log_prob(&m, &prefix, &seq);
            if score > best.1 {
                best = (seq, score);
            }
        }
        let (found, score) = beam_search(&m, &prefix, len, vocab.pow(len as u32 - 1), &device());
        assert_eq!(found, best.0, "{kind}");
        assert!(
            (score - best.1).abs() < 1e-4,
            "{kind}: {score} vs {}",
            best.1
        );
        // Width 1 is greedy.
        assert_eq!(
            beam_search(&m, &prefix, 6, 1, &device()).0,
            greedy(&m, &prefix, 6, &device()),
            "{kind}"
        );
    }
}
