//! Forward-time mistakes panic with a message naming the tensor, its shape (in the caller's
//! layout) and the expected one; `try_forward` returns the same as an error.

use burn::prelude::*;
use rnnlm::{
    CellKind, DeepLstmConfig, ForwardError, GruConfig, Recurrent, RecurrentState, RnnLmConfig,
    RnnScratchConfig, SequenceInput,
};
use rnnlm_tests::{device, ids};

#[test]
#[should_panic(expected = "RnnLm::forward: tokens holds token id 28, expected ids in 0..28")]
fn token_id_beyond_the_vocabulary_embedding() {
    let dev = device();
    let model = RnnLmConfig::new(CellKind::Gru, 28, 8)
        .with_embedding(4)
        .init(&dev);
    model.forward(ids(&[1, 28], [1, 2], &dev), model.begin_state(1, &dev));
}

#[test]
#[should_panic(expected = "token input holds token id 30, expected ids in 0..28")]
fn token_id_beyond_the_vocabulary_one_hot() {
    let dev = device();
    let model = RnnLmConfig::new(CellKind::RnnScratch, 28, 8).init(&dev);
    model.forward(ids(&[1, 30], [1, 2], &dev), model.begin_state(1, &dev));
}

#[test]
#[should_panic(expected = "holds token id -1")]
fn negative_token_id() {
    let dev = device();
    let model = RnnLmConfig::new(CellKind::Lstm, 28, 8).init(&dev);
    model.forward(ids(&[-1, 3], [1, 2], &dev), model.begin_state(1, &dev));
}

#[test]
#[should_panic(
    expected = "DeepLstm: state.hidden has shape [num_layers, batch, hidden] = [1, 3, 16], expected [2, 3, 16] (2 layers, the input's batch of 3, hidden_size 16)"
)]
fn state_with_too_few_layers() {
    let dev = device();
    let model = RnnLmConfig::new(CellKind::Lstm, 10, 16)
        .with_num_layers(2)
        .init(&dev);
    let wrong = RecurrentState::zeros(1, 3, 16, true, &dev);
    model.forward(ids(&[1; 6], [3, 2], &dev), wrong);
}

#[test]
#[should_panic(
    expected = "Gru: state.hidden has shape [num_layers, batch, hidden] = [1, 4, 16], expected [1, 3, 16]"
)]
fn state_for_another_batch_size() {
    let dev = device();
    let model = RnnLmConfig::new(CellKind::Gru, 10, 16).init(&dev);
    model.forward(ids(&[1; 6], [3, 2], &dev), model.begin_state(4, &dev));
}

#[test]
#[should_panic(expected = "DeepLstm: state.cell is missing, expected a tensor of shape [1, 1, 16]")]
fn lstm_state_without_cell() {
    let dev = device();
    let model = RnnLmConfig::new(CellKind::Lstm, 10, 16).init(&dev);
    model.forward(
        ids(&[1; 2], [1, 2], &dev),
        RecurrentState::zeros(1, 1, 16, false, &dev),
    );
}

#[test]
#[should_panic(
    expected = "RnnScratch: input has shape [batch, steps, input] = [1, 2, 5], expected [batch >= 1, steps >= 1, 4] (the core's input_size is 4)"
)]
fn dense_input_of_the_wrong_width() {
    let dev = device();
    let model = RnnLmConfig::new(CellKind::RnnScratch, 4, 16).init(&dev);
    // forward is batch-major here; the message names the shape as the caller laid it out.
    model.core.forward(
        Tensor::zeros([1, 2, 5], &dev),
        model.core.begin_state(1, &dev),
    );
}

#[test]
fn try_forward_returns_shape_mistakes_in_the_callers_layout() {
    let dev = device();
    // A burn-nn user's classic: [batch, steps, features] with the wrong feature size.
    let lstm = DeepLstmConfig::new(28, 16).with_num_layers(2).init(&dev);
    let error = lstm
        .try_forward(Tensor::zeros([4, 10, 27], &dev), None)
        .unwrap_err();
    assert_eq!(
        (error.tensor, error.given.clone()),
        ("input", Some(vec![4, 10, 27]))
    );
    assert_eq!(
        error.to_string(),
        "DeepLstm: input has shape [batch, steps, input] = [4, 10, 27], expected [batch >= 1, steps >= 1, 28] (the core's input_size is 28)"
    );
    // Time-major cores name the time-major layout.
    let time_major = GruConfig::new(28, 16).with_batch_first(false).init(&dev);
    let error = time_major
        .try_forward(Tensor::zeros([10, 4, 27], &dev), None)
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("input has shape [steps, batch, input] = [10, 4, 27]"),
        "{error}"
    );
    // A state of the wrong depth or batch.
    let shallow = RecurrentState::zeros(1, 4, 16, true, &dev);
    let error = lstm
        .try_forward(Tensor::zeros([4, 10, 28], &dev), shallow)
        .unwrap_err();
    assert_eq!(error.tensor, "state.hidden");
    assert!(
        error
            .to_string()
            .contains("= [1, 4, 16], expected [2, 4, 16] (2 layers"),
        "{error}"
    );
    let other_batch = lstm.begin_state(3, &dev);
    let error = lstm
        .try_forward(Tensor::zeros([4, 10, 28], &dev), other_batch)
        .unwrap_err();
    assert!(
        error.to_string().contains("the input's batch of 4"),
        "{error}"
    );
    let without_cell = RecurrentState::zeros(2, 4, 16, false, &dev);
    let error = lstm
        .try_forward(Tensor::zeros([4, 10, 28], &dev), without_cell)
        .unwrap_err();
    assert_eq!((error.tensor, error.given), ("state.cell", None));
    // No steps.
    let error = lstm
        .try_forward(Tensor::zeros([4, 0, 28], &dev), None)
        .unwrap_err();
    assert!(
        error.to_string().contains("at least one step and one row"),
        "{error}"
    );
    // What fits runs.
    let (outputs, state) = lstm
        .try_forward(Tensor::zeros([4, 10, 28], &dev), None)
        .unwrap();
    assert_eq!(
        (outputs.dims(), state.hidden.dims()),
        ([4, 10, 16], [2, 4, 16])
    );
}

#[test]
fn the_time_major_entry_point_returns_every_mistake_as_an_error() {
    let dev = device();
    let rnn = RnnScratchConfig::new(5, 8).init(&dev);
    let error = rnn
        .try_forward_time_major_padded(
            SequenceInput::OneHot(ids(&[1, 7], [2, 1], &dev)),
            None,
            None,
        )
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        error,
        ForwardError::TokenId {
            core: "RnnScratch",
            id: 7,
            limit: 5
        }
    );
    let error = rnn
        .try_forward_time_major_padded(
            SequenceInput::Dense(Tensor::zeros([2, 3, 5], &dev)),
            Some(&[2, 3]),
            None,
        )
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(error, ForwardError::Lengths(_)), "{error}");
}
