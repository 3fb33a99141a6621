//! Forward-time mistakes panic with a message naming the tensor, its shape and the expected one.

use burn::prelude::*;
use rnnlm::{CellKind, Recurrent, RecurrentState, RnnLmConfig};
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
    expected = "DeepLstm: state.hidden has shape [1, 3, 16], expected [num_layers, batch, hidden] = [2, 3, 16]"
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
    expected = "Gru: state.hidden has shape [1, 4, 16], expected [num_layers, batch, hidden] = [1, 3, 16]"
)]
fn state_for_another_batch_size() {
    let dev = device();
    let model = RnnLmConfig::new(CellKind::Gru, 10, 16).init(&dev);
    model.forward(ids(&[1; 6], [3, 2], &dev), model.begin_state(4, &dev));
}

#[test]
#[should_panic(expected = "DeepLstm: state.cell is missing")]
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
    expected = "RnnScratch: input has shape [steps, batch, input] = [2, 1, 5], expected [steps >= 1, batch >= 1, 4]"
)]
fn dense_input_of_the_wrong_width() {
    let dev = device();
    let model = RnnLmConfig::new(CellKind::RnnScratch, 4, 16).init(&dev);
    // forward is batch-major; the message reports the time-major layout the core works in.
    model.core.forward(
        Tensor::zeros([1, 2, 5], &dev),
        model.core.begin_state(1, &dev),
    );
}
