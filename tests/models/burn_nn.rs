//! The drop-in path from burn-nn: a stack of burn-nn's `Rnn`, `Lstm` and `Gru` layers (one
//! module per layer, as a user stacks them) and the rnnlm core that loaded their weights give
//! the same outputs and final states, for 1 to 3 layers, on the fused and the composite path;
//! and every layer that does not fit is refused with its layer, field and values. Then the
//! drop-in calling conventions: `forward(x, None)`, `batch_first = false`, the last layer's
//! state, `try_init`.

use burn::nn::{self, GruConfig as NnGruConfig, LstmConfig, RnnConfig};
use burn::prelude::*;
use rnnlm::fused::{Mode, with_mode};
use rnnlm::{
    Activation, DeepLstmConfig, GruConfig, GruFormula, Recurrent, RecurrentState, RnnScratchConfig,
};
use rnnlm_tests::{device, fill_gate as fill, max_diff, pattern_tensor as tensor, values};

const BATCH: usize = 3;
const STEPS: usize = 5;
const INPUT: usize = 6;
const HIDDEN: usize = 7;
const TOLERANCE: f32 = 1e-5;

fn input(dev: &Device) -> Tensor<3> {
    tensor([BATCH, STEPS, INPUT], 99, 1.0, dev)
}

fn layer_input(index: usize) -> usize {
    if index == 0 { INPUT } else { HIDDEN }
}

fn assert_close(what: &str, got: Tensor<2>, want: Tensor<2>) {
    let diff = max_diff(&values(got), &values(want));
    assert!(diff <= TOLERANCE, "{what}: max difference {diff}");
}

fn assert_close3(what: &str, got: Tensor<3>, want: Tensor<3>) {
    let diff = max_diff(&values(got), &values(want));
    assert!(diff <= TOLERANCE, "{what}: max difference {diff}");
}

/// Layer `index` of a state, `[batch, hidden]`.
fn layer(state: &Tensor<3>, index: usize) -> Tensor<2> {
    state.clone().narrow(0, index, 1).squeeze_dim(0)
}

fn lstm_stack(layers: usize, dev: &Device) -> Vec<nn::Lstm> {
    (0..layers)
        .map(|index| {
            let mut lstm = LstmConfig::new(layer_input(index), HIDDEN, true).init(dev);
            fill(&mut lstm.input_gate, index * 10, dev);
            fill(lstm.forget_gate.as_mut().unwrap(), index * 10 + 1, dev);
            fill(&mut lstm.cell_gate, index * 10 + 2, dev);
            fill(&mut lstm.output_gate, index * 10 + 3, dev);
            lstm
        })
        .collect()
}

fn gru_stack(layers: usize, reset_after: bool, dev: &Device) -> Vec<nn::Gru> {
    (0..layers)
        .map(|index| {
            let mut gru = NnGruConfig::new(layer_input(index), HIDDEN, true)
                .with_reset_after(reset_after)
                .init(dev);
            fill(&mut gru.reset_gate, index * 10, dev);
            fill(&mut gru.update_gate, index * 10 + 1, dev);
            fill(&mut gru.new_gate, index * 10 + 2, dev);
            gru
        })
        .collect()
}

fn rnn_stack(layers: usize, relu: bool, dev: &Device) -> Vec<nn::Rnn> {
    (0..layers)
        .map(|index| {
            let mut config = RnnConfig::new(layer_input(index), HIDDEN, true);
            if relu {
                config = config.with_hidden_activation(nn::activation::ActivationConfig::Relu);
            }
            let mut rnn = config.init(dev);
            fill(&mut rnn.gate, index * 10, dev);
            rnn
        })
        .collect()
}

/// What a stack of burn-nn layers gave for [`input`]: the top layer's outputs, and every
/// layer's final `h` (and `c`, for the LSTM), `[batch, hidden]` each.
struct Stack {
    outputs: Tensor<3>,
    hidden: Vec<Tensor<2>>,
    cell: Option<Vec<Tensor<2>>>,
}

/// The loaded core gives the stack's outputs and final states on both paths (fused and
/// composite), its `last_hidden` / `last_cell` the top layer's.
fn assert_matches_stack(what: &str, core: &impl Recurrent, want: &Stack) {
    let dev = device();
    for mode in [Mode::Fused, Mode::Composite] {
        with_mode(mode, || {
            let (outputs, state) = core.forward(input(&dev), None);
            let what = format!("{what}, {mode:?}");
            assert_close3(&format!("{what}: outputs"), outputs, want.outputs.clone());
            for (index, h) in want.hidden.iter().enumerate() {
                let got = layer(&state.hidden, index);
                assert_close(&format!("{what}: h of layer {index}"), got, h.clone());
            }
            let top = want.hidden.last().expect("at least one layer").clone();
            assert_close(&format!("{what}: last_hidden"), state.last_hidden(), top);
            match &want.cell {
                Some(cells) => {
                    let cell = state.cell.as_ref().expect("an LSTM state has a cell");
                    for (index, c) in cells.iter().enumerate() {
                        let got = layer(cell, index);
                        assert_close(&format!("{what}: c of layer {index}"), got, c.clone());
                    }
                    let top = cells.last().expect("at least one layer").clone();
                    let last = state.last_cell().expect("an LSTM state has a cell");
                    assert_close(&format!("{what}: last_cell"), last, top);
                }
                None => assert!(state.cell.is_none(), "{what}: a cell where none belongs"),
            }
        });
    }
}

#[test]
fn a_stack_of_burn_nn_lstms_equals_the_loaded_deep_lstm() {
    let dev = device();
    for layers in 1..=3 {
        let stack = lstm_stack(layers, &dev);
        // burn-nn: each layer reads the previous one's outputs.
        let mut x = input(&dev);
        let mut finals = Vec::new();
        for lstm in &stack {
            let (outputs, state) = lstm.forward(x, None);
            finals.push(state);
            x = outputs;
        }
        let core = DeepLstmConfig::new(INPUT, HIDDEN)
            .with_num_layers(layers)
            .init(&dev)
            .load_burn_nn(&stack)
            .expect("the stack fits the core");
        let want = Stack {
            outputs: x,
            hidden: finals.iter().map(|s| s.hidden.clone()).collect(),
            cell: Some(finals.into_iter().map(|s| s.cell).collect()),
        };
        assert_matches_stack(&format!("{layers} layers"), &core, &want);
    }
}

#[test]
fn a_stack_of_burn_nn_grus_equals_the_loaded_gru_with_either_reset_setting() {
    let dev = device();
    for (reset_after, formula) in [(true, GruFormula::PyTorch), (false, GruFormula::D2l)] {
        for layers in 1..=3 {
            let stack = gru_stack(layers, reset_after, &dev);
            let mut x = input(&dev);
            let mut finals = Vec::new();
            for gru in &stack {
                // burn-nn's GRU returns its outputs only: the final state is the last step's.
                x = gru.forward(x, None);
                finals.push(x.clone().narrow(1, STEPS - 1, 1).squeeze_dim::<2>(1));
            }
            let core = GruConfig::new(INPUT, HIDDEN)
                .with_num_layers(layers)
                .with_formula(formula)
                .init(&dev)
                .load_burn_nn(&stack)
                .expect("the stack fits the core");
            let want = Stack {
                outputs: x,
                hidden: finals,
                cell: None,
            };
            let what = format!("reset_after {reset_after}, {layers} layers");
            assert_matches_stack(&what, &core, &want);
        }
    }
}

#[test]
fn a_stack_of_burn_nn_rnns_equals_the_loaded_rnn_scratch() {
    let dev = device();
    for (relu, activation) in [(false, Activation::Tanh), (true, Activation::Relu)] {
        for layers in 1..=3 {
            let stack = rnn_stack(layers, relu, &dev);
            let mut x = input(&dev);
            let mut finals = Vec::new();
            for rnn in &stack {
                let (outputs, state) = rnn.forward(x, None);
                finals.push(state.hidden);
                x = outputs;
            }
            let core = RnnScratchConfig::new(INPUT, HIDDEN)
                .with_num_layers(layers)
                .with_activation(activation)
                .init(&dev)
                .load_burn_nn(&stack)
                .expect("the stack fits the core");
            let want = Stack {
                outputs: x,
                hidden: finals,
                cell: None,
            };
            let what = format!("{activation:?}, {layers} layers");
            assert_matches_stack(&what, &core, &want);
        }
    }
}

/// The error's message, which must name the layer, the field and both values.
fn refused<T: std::fmt::Debug>(result: Result<T, rnnlm::ConfigError>) -> String {
    result.expect_err("the layer does not fit").to_string()
}

#[test]
fn burn_nn_layers_that_do_not_fit_are_refused_by_layer_field_and_value() {
    let dev = device();
    let two = || {
        DeepLstmConfig::new(INPUT, HIDDEN)
            .with_num_layers(2)
            .init(&dev)
    };

    let message = refused(two().load_burn_nn(&lstm_stack(1, &dev)));
    assert!(
        message.contains("burn-nn layers")
            && message.contains("= 1")
            && message.contains("2, the core's num_layers"),
        "{message}"
    );

    // Layer 1 reads 6 inputs where the core's second layer reads the first one's 7 outputs.
    let mut stack = lstm_stack(2, &dev);
    stack[1] = LstmConfig::new(INPUT, HIDDEN, true).init(&dev);
    let message = refused(two().load_burn_nn(&stack));
    assert!(
        message.contains("layer 1")
            && message.contains("d_input = 6")
            && message.contains("7 (the outputs of layer 0)"),
        "{message}"
    );

    let wide = vec![LstmConfig::new(INPUT, HIDDEN + 1, true).init(&dev)];
    let message = refused(
        DeepLstmConfig::new(INPUT, HIDDEN)
            .init(&dev)
            .load_burn_nn(&wide),
    );
    assert!(
        message.contains("layer 0")
            && message.contains("d_hidden = 8")
            && message.contains("7 (the core's hidden_size)"),
        "{message}"
    );

    // bias = false, clip, input_forget and reverse load into a core built with them
    // (burn_nn_switch.rs); into one built without, they are refused there.
    let one = || DeepLstmConfig::new(INPUT, HIDDEN).init(&dev);
    let relu = vec![
        LstmConfig::new(INPUT, HIDDEN, true)
            .with_cell_activation(nn::activation::ActivationConfig::Relu)
            .init(&dev),
    ];
    let message = refused(one().load_burn_nn(&relu));
    assert!(
        message.contains("cell_activation = \"Relu\"") && message.contains("Tanh"),
        "{message}"
    );

    // The GRU's formula must match reset_after; the RNN's activation the core's.
    let message = refused(
        GruConfig::new(INPUT, HIDDEN)
            .init(&dev)
            .load_burn_nn(&gru_stack(1, false, &dev)),
    );
    assert!(
        message.contains("reset_after = false") && message.contains("GruFormula::D2l"),
        "{message}"
    );
    let message = refused(
        RnnScratchConfig::new(INPUT, HIDDEN)
            .init(&dev)
            .load_burn_nn(&rnn_stack(1, true, &dev)),
    );
    assert!(
        message.contains("hidden_activation = \"Relu\"") && message.contains("Tanh"),
        "{message}"
    );
}

#[test]
fn none_is_the_zero_state_and_the_forward_needs_no_trait_import() {
    let dev = device();
    let lstm = DeepLstmConfig::new(INPUT, HIDDEN)
        .with_num_layers(2)
        .init(&dev);
    let (a, state_a) = lstm.forward(input(&dev), None);
    let (b, state_b) = Recurrent::forward(&lstm, input(&dev), lstm.begin_state(BATCH, &dev));
    assert_eq!(values(a), values(b));
    assert_eq!(values(state_a.hidden), values(state_b.hidden));
    assert_eq!(values(state_a.cell.unwrap()), values(state_b.cell.unwrap()));
    // A state carried in as Some or as itself.
    let state = RecurrentState::zeros(2, BATCH, HIDDEN, true, &dev);
    let (c, _) = lstm.forward(input(&dev), Some(state.clone()));
    let (d, _) = lstm.forward(input(&dev), state);
    assert_eq!(values(c), values(d));
}

#[test]
fn time_major_cores_equal_batch_major_ones_on_the_transposed_input() {
    let dev = device();
    dev.seed(4);
    let batch_major = GruConfig::new(INPUT, HIDDEN).with_num_layers(2).init(&dev);
    let time_major = GruConfig::new(INPUT, HIDDEN)
        .with_num_layers(2)
        .with_batch_first(false)
        .init(&dev)
        .load_record(batch_major.clone().into_record());
    let (outputs, state) = batch_major.forward(input(&dev), None);
    let (outputs_t, state_t) = time_major.forward(input(&dev).swap_dims(0, 1), None);
    assert_eq!(outputs_t.dims(), [STEPS, BATCH, HIDDEN]);
    assert_eq!(values(outputs), values(outputs_t.swap_dims(0, 1)));
    assert_eq!(values(state.hidden), values(state_t.hidden));
    // Token input follows the same layout.
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(
            (0..15).map(|i| i % INPUT as i64).collect::<Vec<i64>>(),
            [BATCH, STEPS],
        ),
        &dev,
    );
    let (one_hot, _) = batch_major.forward_one_hot(ids.clone(), None);
    let (one_hot_t, _) = time_major.forward_one_hot(ids.swap_dims(0, 1), None);
    assert_eq!(values(one_hot), values(one_hot_t.swap_dims(0, 1)));
}

#[test]
fn try_init_names_the_invalid_field() {
    let dev = device();
    let message = DeepLstmConfig::new(INPUT, 0)
        .try_init(&dev)
        .unwrap_err()
        .to_string();
    assert!(message.contains("hidden_size = 0"), "{message}");
    let message = GruConfig::new(INPUT, HIDDEN)
        .with_num_layers(0)
        .try_init(&dev)
        .unwrap_err()
        .to_string();
    assert!(message.contains("num_layers = 0"), "{message}");
    let message = RnnScratchConfig::new(INPUT, HIDDEN)
        .with_dropout(1.5)
        .try_init(&dev)
        .unwrap_err()
        .to_string();
    assert!(message.contains("dropout = 1.5"), "{message}");
}
