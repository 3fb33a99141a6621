//! The generation engine (`rnnlm_host::HostLm`) against the tensor path: the same logits and
//! states step by step for every cell, the same tokens from `rnnlm_host::generate` as from
//! `rnnlm::sample::generate`, and its errors.

use std::ops::ControlFlow;

use burn::prelude::*;
use rnnlm::sample::{Decoding, generate};
use rnnlm::{
    Activation, CellKind, GruFormula, RecurrentCore, RecurrentState, RnnLm, RnnLmConfig, WeightInit,
};
use rnnlm_host::{HostLm, Isa};
use rnnlm_tests::{device, ids, max_diff, rounding_bound, values};

pub(crate) const VOCAB: usize = 11;

/// Every instruction set this CPU runs, best first: the paths the host engines take on this CPU
/// and on lesser ones.
pub(crate) fn instruction_sets() -> Vec<Isa> {
    [Isa::Avx512, Isa::Avx2, Isa::Baseline]
        .into_iter()
        .filter(|isa| isa.supported())
        .collect()
}

pub(crate) fn models() -> Vec<(&'static str, RnnLm)> {
    models_on(&device())
}

/// The models of [`models`] on `dev`.
pub(crate) fn models_on(dev: &Device) -> Vec<(&'static str, RnnLm)> {
    let dev = dev.clone();
    // Weights large enough that every gate works away from its linear middle; hidden 21 so the
    // vector kernels meet partial blocks (8 rows, 32 and 8 columns) as well as whole ones.
    let init = WeightInit::Normal { sigma: 0.5 };
    let config = |kind| RnnLmConfig::new(kind, VOCAB, 21).with_init(init);
    let mut no_bias = config(CellKind::Gru).with_num_layers(2).init(&dev);
    if let RecurrentCore::Gru(core) = &mut no_bias.core {
        for layer in &mut core.layers {
            layer.hidden_bias = None;
        }
    }
    vec![
        (
            "rnn-scratch tanh, 2 layers",
            config(CellKind::RnnScratch).with_num_layers(2).init(&dev),
        ),
        (
            "rnn-scratch relu",
            config(CellKind::RnnScratch)
                .with_activation(Activation::Relu)
                .with_init(WeightInit::Normal { sigma: 0.2 })
                .init(&dev),
        ),
        (
            "gru (PyTorch), 2 layers",
            config(CellKind::Gru).with_num_layers(2).init(&dev),
        ),
        ("gru (PyTorch) without b_hh", no_bias),
        (
            "gru (d2l), 2 layers",
            config(CellKind::Gru)
                .with_num_layers(2)
                .with_gru_formula(GruFormula::D2l)
                .init(&dev),
        ),
        (
            "lstm, 3 layers",
            config(CellKind::Lstm).with_num_layers(3).init(&dev),
        ),
        (
            "lstm with an embedding",
            config(CellKind::Lstm).with_embedding(7).init(&dev),
        ),
    ]
}

/// A non-zero start state, so the state's wiring matters from the first step.
pub(crate) fn start_state(model: &RnnLm, batch: usize) -> RecurrentState {
    let zero = model.begin_state(batch, &device());
    let random = |t: Tensor<3>| {
        Tensor::<3>::random(
            t.dims(),
            burn::tensor::Distribution::Uniform(-0.9, 0.9),
            &device(),
        )
    };
    RecurrentState {
        hidden: random(zero.hidden),
        cell: zero.cell.map(random),
    }
}

#[test]
fn host_steps_match_the_tensor_forward_for_every_cell() {
    let dev = device();
    dev.seed(7);
    let tokens: [i64; 18] = [3, 0, 10, 5, 5, 1, 9, 2, 4, 7, 7, 6, 8, 0, 1, 10, 3, 2];
    let (batch, steps) = (3, 6);
    for (name, model) in models() {
        let start = start_state(&model, batch);
        let (logits, end) = model.forward(ids(&tokens, [batch, steps], &dev), start.clone());
        let expected = values(logits); // [batch, steps, vocab]

        let host = HostLm::new(&model);
        let bound = rounding_bound(&expected);
        for isa in instruction_sets() {
            let name = format!("{name} ({isa:?})");
            let mut state = host.state_from(start.clone());
            let mut step_logits = Vec::new();
            for t in 0..steps {
                let column: Vec<u32> = (0..batch).map(|b| tokens[b * steps + t] as u32).collect();
                host.step_with(&column, &mut state, &mut step_logits, isa);
                for b in 0..batch {
                    let want = &expected[(b * steps + t) * VOCAB..(b * steps + t + 1) * VOCAB];
                    let got = &step_logits[b * VOCAB..(b + 1) * VOCAB];
                    let diff = max_diff(got, want);
                    assert!(
                        diff <= bound,
                        "{name}: step {t}, row {b}: logits differ by {diff} (bound {bound})"
                    );
                }
            }
            let end_host = host.state_to_tensor(&state, &dev);
            let want = values(end.hidden.clone());
            let diff = max_diff(&values(end_host.hidden), &want);
            let state_bound = rounding_bound(&want);
            assert!(
                diff <= state_bound,
                "{name}: final hidden state differs by {diff} (bound {state_bound})"
            );
            if let (Some(host_cell), Some(cell)) = (end_host.cell, end.cell.clone()) {
                let want = values(cell);
                let diff = max_diff(&values(host_cell), &want);
                let cell_bound = rounding_bound(&want);
                assert!(
                    diff <= cell_bound,
                    "{name}: final cell state differs by {diff} (bound {cell_bound})"
                );
            }
        }
    }
}

#[test]
fn generation_on_the_host_chooses_the_same_tokens() {
    let dev = device();
    let prefixes = vec![vec![1u32, 2, 3], vec![4], vec![10, 0, 5, 5, 9]];
    let sampling = Decoding::Sample {
        temperature: 0.9,
        top_k: Some(6),
        top_p: Some(0.95),
        seed: 3,
    };
    for (name, model) in models() {
        let host = HostLm::new(&model);
        for decoding in [Decoding::Greedy, sampling] {
            let on_device = generate(&model, &prefixes, 30, &decoding, &dev, |_| {
                ControlFlow::Continue(())
            });
            let on_host = rnnlm_host::generate(&host, &prefixes, 30, &decoding, |_| {
                ControlFlow::Continue(())
            });
            assert_eq!(on_host, on_device, "{name}, {decoding:?}");
        }
        // Early stop after the third step, as the streaming CLI may ask for.
        let mut calls = 0;
        let stopped = rnnlm_host::generate(&host, &prefixes, 30, &Decoding::Greedy, |_| {
            calls += 1;
            if calls == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert!(stopped.iter().all(|s| s.len() == 3), "{name}: {stopped:?}");
    }
}

#[test]
fn a_host_state_round_trips_through_tensors() {
    let dev = device();
    let model = RnnLmConfig::new(CellKind::Lstm, VOCAB, 8)
        .with_num_layers(2)
        .init(&dev);
    let host = HostLm::new(&model);
    let start = start_state(&model, 4);
    let state = host.state_from(start.clone());
    assert_eq!(
        (state.batch, state.hidden.len(), state.cell.len()),
        (4, 2, 2)
    );
    let back = host.state_to_tensor(&state, &dev);
    assert_eq!(values(back.hidden), values(start.hidden));
    assert_eq!(values(back.cell.unwrap()), values(start.cell.unwrap()));
    assert_eq!(host.begin_state(3).hidden, vec![vec![0.0; 24]; 2]);
}

#[test]
#[should_panic(expected = "HostLm::step: token id 11, expected ids in 0..11 (the vocabulary size)")]
fn a_token_outside_the_vocabulary_is_named() {
    let model = RnnLmConfig::new(CellKind::Gru, VOCAB, 8).init(&device());
    let host = HostLm::new(&model);
    let mut state = host.begin_state(2);
    host.step(&[1, 11], &mut state, &mut Vec::new());
}

#[test]
#[should_panic(expected = "HostLm::step: 1 tokens for a state of 2 rows")]
fn a_batch_mismatch_is_named() {
    let model = RnnLmConfig::new(CellKind::RnnScratch, VOCAB, 8).init(&device());
    let host = HostLm::new(&model);
    let mut state = host.begin_state(2);
    host.step(&[1], &mut state, &mut Vec::new());
}

#[test]
fn splitting_the_units_between_threads_changes_no_bit() {
    // Wide enough for three parts of at least 64 units; d2l's GRU always runs as one part.
    let dev = device();
    let init = WeightInit::Normal { sigma: 0.2 };
    let wide = |kind| RnnLmConfig::new(kind, VOCAB, 192).with_init(init);
    let models = [
        (
            "lstm 2 x 192",
            wide(CellKind::Lstm).with_num_layers(2).init(&dev),
        ),
        ("gru (PyTorch) 192", wide(CellKind::Gru).init(&dev)),
        (
            "rnn-scratch relu 192",
            wide(CellKind::RnnScratch)
                .with_activation(Activation::Relu)
                .init(&dev),
        ),
        (
            "gru (d2l) 192",
            wide(CellKind::Gru)
                .with_gru_formula(GruFormula::D2l)
                .init(&dev),
        ),
    ];
    let prefixes = vec![vec![1u32, 2, 3], vec![4, 9]];
    for (name, model) in models {
        let runs: Vec<Vec<Vec<u32>>> = [1, 2, 3]
            .into_iter()
            .map(|parts| {
                let host = HostLm::with_parts(&model, parts);
                rnnlm_host::generate(&host, &prefixes, 25, &Decoding::Greedy, |_| {
                    ControlFlow::Continue(())
                })
            })
            .collect();
        assert!(runs[1] == runs[0] && runs[2] == runs[0], "{name}: {runs:?}");
        let tensor = generate(&model, &prefixes, 25, &Decoding::Greedy, &dev, |_| {
            ControlFlow::Continue(())
        });
        assert_eq!(runs[0], tensor, "{name}: host and tensor paths");
        // And step by step, the same logits and states to the bit for every split.
        let mut outcomes = Vec::new();
        for parts in [1, 3] {
            let host = HostLm::with_parts(&model, parts);
            let mut state = host.begin_state(2);
            let mut logits = Vec::new();
            for tokens in [[1u32, 4], [5, 6], [0, 10]] {
                host.step(&tokens, &mut state, &mut logits);
            }
            outcomes.push((logits, state));
        }
        assert!(outcomes[0] == outcomes[1], "{name}: 1 and 3 parts differ");
    }
}
