//! The fused scan (`rnnlm::fused`) against the composite tensor operations it stands in for:
//! every core, 1 to 3 layers, a non-zero initial state, batch 1 and steps 1, strided inputs;
//! the same outputs and final states, and through autodiff the same gradients of every
//! parameter, of the inputs and of the initial state. Then finite differences on the operation
//! itself, and its shape errors. (Dropout, which draws from the backend's global generator,
//! is compared in the determinism tests, which take turns.)

use burn::prelude::*;
use rnnlm::fused::{CellKind as ScanCell, Clip, Mode, with_mode};
use rnnlm::{DeepLstmConfig, GruConfig, Recurrent};
use rnnlm_tests::{device, param_grads, pattern_tensor as tensor, values};

use rnnlm_tests::fused_paths::{self, HIDDEN, INPUT, LayerCase};

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    fused_paths::assert_close(what, got, want, 1e-5);
}

#[test]
fn fused_equals_composite_for_every_core_shape_and_layout() {
    let dev = device();
    assert!(
        rnnlm::fused::is_active(&dev.clone().autodiff()),
        "the tests' default backend runs the fused scan: {}",
        rnnlm::fused::status(&dev.clone().autodiff())
    );
    // Within rounding (1e-5 relative): the fused kernels sum in another order.
    fused_paths::fused_equals_composite(&dev, 1e-5);
}

/// A user's model through plain Burn autodiff, the primer's classifier in small: the last
/// step's output feeds a linear layer; the fused and composite paths give the same loss and
/// gradients, inference (no autodiff) the same logits.
#[test]
fn a_classifier_on_the_last_step_trains_the_same_through_both_paths() {
    let ad = device().autodiff();
    let (batch, steps, classes) = (4, 9, 3);
    let lstm = DeepLstmConfig::new(INPUT, HIDDEN)
        .with_num_layers(2)
        .init(&ad);
    let head = burn::nn::LinearConfig::new(HIDDEN, classes).init(&ad);
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2, 1, 2], [batch]), &ad);
    let run = |mode: Mode| {
        let x = tensor([batch, steps, INPUT], 7, 1.0, &ad);
        let state = lstm.begin_state(batch, &ad);
        let (outputs, _) = with_mode(mode, || lstm.forward(x, state));
        let last = outputs.narrow(1, steps - 1, 1).reshape([batch, HIDDEN]);
        let logits = head.forward(last);
        let loss = burn::nn::loss::CrossEntropyLossConfig::new()
            .init(&ad)
            .forward(logits, labels.clone());
        let value = loss.clone().into_scalar::<f32>();
        let grads = loss.backward();
        (
            value,
            param_grads(&lstm, &grads),
            param_grads(&head, &grads),
        )
    };
    let (fused, fused_lstm, fused_head) = run(Mode::Fused);
    let (composite, composite_lstm, composite_head) = run(Mode::Composite);
    assert!(
        (fused - composite).abs() <= 1e-5 * composite.abs(),
        "loss {fused} vs {composite}"
    );
    assert_eq!(
        fused_lstm.len(),
        2 * 4,
        "every LSTM parameter has a gradient"
    );
    for (id, want) in composite_lstm.iter().chain(&composite_head) {
        let got = fused_lstm.get(id).or_else(|| fused_head.get(id)).unwrap();
        assert_close(&format!("parameter {id}"), got, want);
    }
    // Inference: the inner (non-autodiff) module.
    let inner = lstm.valid();
    let dev = device();
    let infer = |mode: Mode| {
        let x = tensor([batch, steps, INPUT], 7, 1.0, &dev);
        values(with_mode(mode, || inner.forward(x, inner.begin_state(batch, &dev))).0)
    };
    assert_close(
        "inference outputs",
        &infer(Mode::Fused),
        &infer(Mode::Composite),
    );
}

/// The one-hot projection (`rnnlm::fused::gather_rows`): the rows of the table, and a table
/// gradient that sums repeated ids and leaves unused rows zero, as Burn's `select` gives.
#[test]
fn the_one_hot_gather_equals_select() {
    let ad = device().autodiff();
    let (vocab, width) = (7, 37);
    // Id 3 three times, id 6 never.
    let ids = [3, 0, 5, 3, 1, 2, 3, 4, 0];
    let run = |mode: Mode| {
        with_mode(mode, || {
            assert_eq!(
                rnnlm::fused::is_active(&ad),
                mode == Mode::Fused,
                "the path under test runs"
            );
            let table = tensor([vocab, width], 21, 1.0, &ad).require_grad();
            let ids = Tensor::<1, Int>::from_data(TensorData::new(ids.to_vec(), [ids.len()]), &ad);
            let rows = rnnlm::fused::gather_rows(table.clone(), ids);
            assert_eq!(rows.dims(), [9, width]);
            let loss = (rows.clone() * tensor([9, width], 22, 1.0, &ad)).sum();
            let grads = loss.backward();
            (
                values(rows),
                values(table.grad(&grads).expect("the table's gradient")),
            )
        })
    };
    let (rows, d_table) = run(Mode::Fused);
    let (want_rows, want_d_table) = run(Mode::Composite);
    assert_eq!(rows, want_rows, "gathered rows");
    assert_close("table gradient", &d_table, &want_d_table);
    assert!(
        d_table[6 * width..].iter().all(|&g| g == 0.0),
        "an unused id has no gradient"
    );
}

/// Every float input's gradient against central differences of the loss, for every cell, on
/// a time-major and a batch-first dense input, on token ids, and reversed over a padded batch.
#[test]
fn the_operations_gradients_match_finite_differences() {
    fused_paths::operation_matches_finite_differences(&device());
}

#[test]
#[should_panic(
    expected = "rnnlm_fused::try_layer: weight has shape [5, 16], expected [hidden, gates·hidden] = [5, 20]"
)]
fn a_weight_of_the_wrong_shape_is_named() {
    let dev = device();
    let case = LayerCase::dense(ScanCell::Lstm(Clip::NONE), false);
    let mut inputs = case.tensors(&dev);
    inputs[5] = Some(Tensor::zeros([5, 16], &dev));
    case.loss(&inputs);
}

#[test]
#[should_panic(
    expected = "rnnlm_fused::try_layer: input_weight has shape [4, 20], expected [features, gates·hidden] = [3, 20]"
)]
fn an_input_weight_of_the_wrong_shape_is_named() {
    let dev = device();
    let case = LayerCase::dense(ScanCell::Lstm(Clip::NONE), false);
    let mut inputs = case.tensors(&dev);
    inputs[1] = Some(Tensor::zeros([4, 20], &dev));
    case.loss(&inputs);
}

#[test]
#[should_panic(expected = "rnnlm_fused::try_layer: the LSTM needs c0 [batch, hidden]")]
fn an_lstm_without_a_cell_is_named() {
    let dev = device();
    let case = LayerCase::dense(ScanCell::Lstm(Clip::NONE), false);
    let mut inputs = case.tensors(&dev);
    inputs[4] = None;
    case.loss(&inputs);
}

/// The composite switch reaches the device's status, and the status names the fix.
#[test]
fn the_status_says_why_the_composite_path_runs() {
    let dev = device();
    assert_eq!(rnnlm::fused::status(&dev), rnnlm::fused::Status::Active);
    let forced = with_mode(Mode::Composite, || rnnlm::fused::status(&dev));
    assert_eq!(forced, rnnlm::fused::Status::Disabled);
    assert!(forced.to_string().contains("RNNLM_FUSED=off"), "{forced}");
    let missing = rnnlm::fused::Status::NotCompiled { feature: "flex" };
    assert!(
        missing.to_string().contains("rnnlm's `flex` feature"),
        "{missing}"
    );
}

/// A program that never sets the allocator up gets what the CLI gets: the first fused scan
/// makes glibc keep freed memory (the tape would be page-faulted in again at every step).
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn the_first_fused_scan_keeps_freed_memory() {
    if std::env::var_os("RNNLM_MALLOC_DEFAULTS").is_some_and(|v| v == "1") {
        return;
    }
    let dev = device();
    let core = GruConfig::new(3, 4).init(&dev);
    let _ = core.forward(Tensor::zeros([2, 5, 3], &dev), core.begin_state(2, &dev));
    assert!(rnnlm::fused::freed_memory_kept());
}
