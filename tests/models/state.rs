//! Carrying state, dropout, records and seeds.

use burn::module::Param;
use burn::prelude::*;
use rnnlm::{InputEncoding, RecurrentCore, RnnLm, RnnLmConfig, WeightInit};
use rnnlm_tests::{device, ids, max_abs_diff, values};

use crate::shapes::KINDS;

fn tokens(batch: usize, steps: usize, vocab: usize, dev: &Device) -> Tensor<2, Int> {
    let v: Vec<i64> = (0..batch * steps)
        .map(|i| ((i * 5 + i / 3) % vocab) as i64)
        .collect();
    ids(&v, [batch, steps], dev)
}

#[test]
fn running_2k_steps_equals_k_then_k_with_the_returned_state() {
    let dev = device();
    let (vocab, batch, k) = (9, 3, 4);
    for kind in KINDS {
        let model = RnnLmConfig::new(kind, vocab, 7)
            .with_num_layers(2)
            .init(&dev);
        let all = tokens(batch, 2 * k, vocab, &dev);
        let (whole, whole_state) = model.forward(all.clone(), model.begin_state(batch, &dev));
        let (first, state) =
            model.forward(all.clone().narrow(1, 0, k), model.begin_state(batch, &dev));
        let (second, halves_state) = model.forward(all.narrow(1, k, k), state.detach());
        let halves = Tensor::cat(vec![first, second], 1);
        assert!(max_abs_diff(whole, halves) < 1e-6, "{kind} logits");
        assert!(
            max_abs_diff(whole_state.hidden, halves_state.hidden) < 1e-6,
            "{kind} hidden"
        );
        if let (Some(a), Some(b)) = (whole_state.cell, halves_state.cell) {
            assert!(max_abs_diff(a, b) < 1e-6, "{kind} cell");
        }
    }
}

fn set_dropout(model: &mut RnnLm, prob: f64) {
    match &mut model.core {
        RecurrentCore::RnnScratch(core) => core.dropout.prob = prob,
        RecurrentCore::Gru(core) => core.dropout.prob = prob,
        RecurrentCore::Lstm(core) => core.dropout.prob = prob,
    }
}

#[test]
fn dropout_acts_between_layers_in_training_only() {
    let train_device = device().autodiff();
    let (vocab, batch, steps) = (7, 4, 6);
    for kind in KINDS {
        // Weights large enough that a dropped unit shows in the logits (d2l's sigma 0.01 would not).
        let model = RnnLmConfig::new(kind, vocab, 32)
            .with_num_layers(3)
            .with_dropout(0.5)
            .with_init(WeightInit::Normal { sigma: 0.5 })
            .init(&train_device);
        let x = tokens(batch, steps, vocab, &train_device);
        let run = |m: &RnnLm, x: Tensor<2, Int>| {
            m.forward(x.clone(), m.begin_state(batch, &x.device())).0
        };
        // Training: two passes draw different masks.
        assert!(
            max_abs_diff(run(&model, x.clone()), run(&model, x.clone())) > 1e-3,
            "{kind}"
        );
        // Evaluation (no autodiff): deterministic and equal to the same weights without dropout.
        let eval = model.valid();
        let x = x.inner();
        let a = run(&eval, x.clone());
        assert_eq!(values(a.clone()), values(run(&eval, x.clone())), "{kind}");
        let mut no_dropout = eval.clone();
        set_dropout(&mut no_dropout, 0.0);
        assert_eq!(values(a), values(run(&no_dropout, x)), "{kind}");
    }
}

#[test]
fn no_dropout_after_the_last_layer() {
    // One layer: there is no "between", so even in training the output is deterministic.
    let train_device = device().autodiff();
    for kind in KINDS {
        let model = RnnLmConfig::new(kind, 5, 16)
            .with_dropout(0.5)
            .init(&train_device);
        let x = tokens(2, 3, 5, &train_device);
        let a = model
            .forward(x.clone(), model.begin_state(2, &train_device))
            .0;
        let b = model.forward(x, model.begin_state(2, &train_device)).0;
        assert_eq!(values(a), values(b), "{kind}");
    }
}

#[test]
fn output_dropout_acts_on_the_last_layer_in_training_only() {
    let train_device = device().autodiff();
    // vocab = hidden and an identity output layer: the logits are the masked hidden states.
    let (width, batch, steps) = (16, 3, 5);
    for kind in KINDS {
        let mut model = RnnLmConfig::new(kind, width, width)
            .with_output_dropout(0.5)
            .with_init(WeightInit::Normal { sigma: 0.5 })
            .init(&train_device);
        model.output.w_hq = Param::from_tensor(Tensor::eye(width, &train_device));
        model.output.b_q = Param::from_tensor(Tensor::zeros([width], &train_device));
        let x = tokens(batch, steps, width, &train_device);
        let logits = values(model.forward(x.clone(), None).0); // [batch, steps, width]
        let hidden = values(model.forward_hidden(x.clone(), None).0); // [steps, batch, width]
        let mut dropped = 0;
        for t in 0..steps {
            for r in 0..batch {
                for k in 0..width {
                    let (got, h) = (
                        logits[(r * steps + t) * width + k],
                        hidden[(t * batch + r) * width + k],
                    );
                    // Kept units are scaled by 1 / (1 - p) = 2.
                    if got == 0.0 && h != 0.0 {
                        dropped += 1;
                    } else {
                        assert!(
                            (got - 2.0 * h).abs() < 1e-5,
                            "{kind}: {got} is neither 0 nor 2 x {h}"
                        );
                    }
                }
            }
        }
        let total = batch * steps * width;
        assert!(
            (total / 4..3 * total / 4).contains(&dropped),
            "{kind}: {dropped} of {total} dropped"
        );
        // Two passes draw different masks.
        assert_ne!(logits, values(model.forward(x.clone(), None).0), "{kind}");
        // Evaluation (no autodiff): the same weights without output dropout, exactly.
        let eval = model.valid();
        let x = x.inner();
        let mut plain = eval.clone();
        plain.output_dropout.prob = 0.0;
        assert_eq!(
            values(eval.forward(x.clone(), None).0),
            values(plain.forward(x, None).0),
            "{kind}"
        );
    }
}

#[test]
fn saved_and_loaded_model_gives_bit_identical_logits() {
    let dev = device();
    let dir = std::env::temp_dir().join(format!("rnnlm-record-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for kind in KINDS {
        for encoding in [InputEncoding::OneHot, InputEncoding::Embedding] {
            let config = RnnLmConfig::new(kind, 10, 12)
                .with_num_layers(2)
                .with_encoding(encoding);
            let model = config.init(&dev);
            let path = dir.join(format!("{kind}-{encoding:?}"));
            model.clone().save_file(&path).expect("save");
            // A fresh model has other random weights until the record is loaded.
            let fresh = config.init(&dev);
            let x = tokens(2, 5, 10, &dev);
            let run = |m: &RnnLm| values(m.forward(x.clone(), m.begin_state(2, &dev)).0);
            assert_ne!(run(&model), run(&fresh), "{kind}");
            let loaded = fresh.load_file(&path);
            assert_eq!(run(&model), run(&loaded), "{kind} {encoding:?}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
