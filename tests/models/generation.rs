//! Generation where the fused scan runs (`rnnlm::sample::generate` on a host copy of the
//! weights, `rnnlm_kernels::decode`) against the composite path: the same tokens for every
//! cell, greedy and sampled, an early stop, and its errors. (Step-by-step logits against the
//! scan, the instruction sets and the split of the units between threads are the kernel
//! crate's unit tests.)

use std::ops::ControlFlow;

use burn::prelude::*;
use rnnlm::fused::{Mode, with_mode};
use rnnlm::sample::{Decoding, generate};
use rnnlm::{Activation, CellKind, GruFormula, RecurrentCore, RnnLm, RnnLmConfig, WeightInit};
use rnnlm_tests::device;

const VOCAB: usize = 11;

fn models() -> Vec<(&'static str, RnnLm)> {
    models_on(&device())
}

/// The models of [`models`] with weights that no random generator decides ([`Patterned`]: a
/// sine of each entry's index, at the magnitude each model is built with): the sampled tokens
/// of the two paths can part where two float-rounded probabilities sit on either side of a
/// top-p or top-k threshold, and weights drawn from the device's generator (which other tests
/// reseed meanwhile) would make that a matter of luck; fixed ones make the test repeatable.
///
/// [`Patterned`]: rnnlm_tests::Patterned
fn fixed_models() -> Vec<(&'static str, RnnLm)> {
    models()
        .into_iter()
        .map(|(name, model)| {
            let scale = if name.contains("relu") || name.contains("192") {
                0.2
            } else {
                0.5
            };
            let model =
                burn::module::Module::map(model, &mut rnnlm_tests::Patterned { scale, next: 0 });
            (name, model)
        })
        .collect()
}

/// The models of [`models`] on `dev`.
fn models_on(dev: &Device) -> Vec<(&'static str, RnnLm)> {
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
        (
            // Wide enough for the units to be split between threads.
            "lstm 2 x 192",
            RnnLmConfig::new(CellKind::Lstm, VOCAB, 192)
                .with_num_layers(2)
                .with_init(WeightInit::Normal { sigma: 0.2 })
                .init(&dev),
        ),
    ]
}

fn on_every_step(_: &[u32]) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

#[test]
fn generation_chooses_the_same_tokens_on_both_paths() {
    let dev = device();
    assert!(
        rnnlm::fused::is_active(&dev),
        "{}",
        rnnlm::fused::status(&dev)
    );
    let prefixes = vec![vec![1u32, 2, 3], vec![4], vec![10, 0, 5, 5, 9]];
    let sampling = Decoding::Sample {
        temperature: 0.9,
        top_k: Some(6),
        top_p: Some(0.95),
        seed: 3,
    };
    for (name, model) in fixed_models() {
        for decoding in [Decoding::Greedy, sampling] {
            let fused = generate(&model, &prefixes, 30, &decoding, &dev, on_every_step);
            let composite = with_mode(Mode::Composite, || {
                generate(&model, &prefixes, 30, &decoding, &dev, on_every_step)
            });
            assert_eq!(fused, composite, "{name}, {decoding:?}");
            assert!(fused.iter().all(|row| row.len() == 30));
        }
        // Early stop after the third step, as the streaming CLI may ask for.
        let mut calls = 0;
        let stopped = generate(&model, &prefixes, 30, &Decoding::Greedy, &dev, |_| {
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
#[should_panic(
    expected = "generate: prefix 1 holds token id 11, expected ids in 0..11 (the vocabulary size)"
)]
fn a_token_outside_the_vocabulary_is_named() {
    let model = RnnLmConfig::new(CellKind::Gru, VOCAB, 8).init(&device());
    generate(
        &model,
        &[vec![1], vec![2, 11]],
        5,
        &Decoding::Greedy,
        &device(),
        on_every_step,
    );
}

#[test]
#[should_panic(expected = "generate: prefix 0 is empty; give at least one token")]
fn an_empty_prefix_is_named() {
    let model = RnnLmConfig::new(CellKind::Lstm, VOCAB, 8).init(&device());
    generate(
        &model,
        &[vec![]],
        5,
        &Decoding::Greedy,
        &device(),
        on_every_step,
    );
}
