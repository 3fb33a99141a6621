//! Output and state shapes for every model kind × encoding × depth.

use burn::prelude::*;
use rnnlm::{CellKind, InputEncoding, Recurrent, RnnLmConfig};
use rnnlm_tests::{device, ids};

pub const KINDS: [CellKind; 3] = [CellKind::RnnScratch, CellKind::Gru, CellKind::Lstm];

#[test]
fn language_model_shapes() {
    let dev = device();
    let (vocab, hidden, batch, steps) = (11, 6, 3, 5);
    let tokens: Vec<i64> = (0..batch * steps).map(|i| (i * 7 % vocab) as i64).collect();
    for kind in KINDS {
        for encoding in [InputEncoding::OneHot, InputEncoding::Embedding] {
            for layers in [1, 3] {
                let model = RnnLmConfig::new(kind, vocab, hidden)
                    .with_encoding(encoding)
                    .with_num_layers(layers)
                    .init(&dev);
                let state = model.begin_state(batch, &dev);
                assert_eq!(state.hidden.dims(), [layers, batch, hidden]);
                assert_eq!(state.cell.is_some(), kind == CellKind::Lstm);
                let (logits, state) = model.forward(ids(&tokens, [batch, steps], &dev), state);
                let case = format!("{kind} {encoding:?} {layers} layers");
                assert_eq!(logits.dims(), [batch, steps, vocab], "{case}");
                assert_eq!(state.hidden.dims(), [layers, batch, hidden], "{case}");
                if let Some(cell) = state.cell {
                    assert_eq!(cell.dims(), [layers, batch, hidden], "{case}");
                }
            }
        }
    }
}

#[test]
fn core_shapes_dense_one_hot_and_step() {
    let dev = device();
    let (input, hidden, batch, steps) = (4, 5, 2, 7);
    for kind in KINDS {
        let model = RnnLmConfig::new(kind, input, hidden)
            .with_num_layers(2)
            .init(&dev);
        let core = &model.core;
        assert_eq!(
            (core.input_size(), core.hidden_size(), core.num_layers()),
            (input, hidden, 2)
        );
        let x = Tensor::<3>::ones([batch, steps, input], &dev);
        let (out, _) = core.forward(x, core.begin_state(batch, &dev));
        assert_eq!(out.dims(), [batch, steps, hidden], "{kind}");
        let tokens = ids(
            &[0, 1, 2, 3, 0, 1, 2, 3, 2, 1, 0, 3, 2, 1],
            [batch, steps],
            &dev,
        );
        let (out, _) = core.forward_one_hot(tokens, core.begin_state(batch, &dev));
        assert_eq!(out.dims(), [batch, steps, hidden], "{kind}");
        let (out, state) = core.step(
            Tensor::ones([batch, input], &dev),
            core.begin_state(batch, &dev),
        );
        assert_eq!(out.dims(), [batch, hidden], "{kind}");
        assert_eq!(state.hidden.dims(), [2, batch, hidden], "{kind}");
    }
}

#[test]
fn one_hot_gather_equals_dense_one_hot_input() {
    // The row gather must be exactly the product with an explicit one-hot matrix.
    let dev = device();
    let (vocab, batch, steps) = (6, 2, 4);
    let tokens = [5i64, 0, 3, 1, 2, 2, 4, 0];
    for kind in KINDS {
        let model = RnnLmConfig::new(kind, vocab, 8)
            .with_num_layers(2)
            .init(&dev);
        let core = &model.core;
        let tokens = ids(&tokens, [batch, steps], &dev);
        let dense = tokens.clone().one_hot::<3>(vocab).float();
        let (gathered, s1) = core.forward_one_hot(tokens, core.begin_state(batch, &dev));
        let (multiplied, s2) = core.forward(dense, core.begin_state(batch, &dev));
        assert!(
            rnnlm_tests::max_abs_diff(gathered, multiplied) < 1e-6,
            "{kind}"
        );
        assert!(
            rnnlm_tests::max_abs_diff(s1.hidden, s2.hidden) < 1e-6,
            "{kind}"
        );
    }
}
