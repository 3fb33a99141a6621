//! Bidirectional cores and batches of rows of different lengths (PyTorch's
//! `bidirectional=True` and `pack_padded_sequence`): shapes; the reverse direction is the
//! forward recurrence over the steps reversed; a padded batch gives every row what it gives
//! alone, gradients included; finite differences through the padded bidirectional path; the
//! fused and composite paths agree; and the errors for lengths and states that do not fit.

use std::collections::HashMap;

use burn::module::{Module, ParamId};
use burn::prelude::*;
use rnnlm::fused::{Mode, with_mode};
use rnnlm::{
    DeepLstmConfig, GruConfig, LengthsError, Recurrent, RecurrentCore, RecurrentState,
    RnnScratchConfig, WeightInit,
};
use rnnlm_tests::{
    Nudge, device, max_diff, param_grads, pattern_tensor as tensor, rounding_bound, values,
};

const INPUT: usize = 5;
const HIDDEN: usize = 7;

/// A core of every kind, `layers` layers, bidirectional or not.
fn cores(layers: usize, bidirectional: bool, dev: &Device) -> Vec<(&'static str, RecurrentCore)> {
    let init = WeightInit::Normal { sigma: 0.5 };
    vec![
        (
            "rnn-scratch",
            RecurrentCore::RnnScratch(
                RnnScratchConfig::new(INPUT, HIDDEN)
                    .with_num_layers(layers)
                    .with_init(init)
                    .with_bidirectional(bidirectional)
                    .init(dev),
            ),
        ),
        (
            "gru",
            RecurrentCore::Gru(
                GruConfig::new(INPUT, HIDDEN)
                    .with_num_layers(layers)
                    .with_init(init)
                    .with_bidirectional(bidirectional)
                    .init(dev),
            ),
        ),
        (
            "gru (d2l)",
            RecurrentCore::Gru(
                GruConfig::new(INPUT, HIDDEN)
                    .with_num_layers(layers)
                    .with_formula(rnnlm::GruFormula::D2l)
                    .with_init(init)
                    .with_bidirectional(bidirectional)
                    .init(dev),
            ),
        ),
        (
            "lstm",
            RecurrentCore::Lstm(
                DeepLstmConfig::new(INPUT, HIDDEN)
                    .with_num_layers(layers)
                    .with_init(init)
                    .with_bidirectional(bidirectional)
                    .init(dev),
            ),
        ),
    ]
}

/// The same core with the layers `pick` chooses (a unidirectional core of one direction).
fn with_layers(core: &RecurrentCore, pick: &[usize]) -> RecurrentCore {
    fn keep<L: Clone>(layers: &[L], pick: &[usize]) -> Vec<L> {
        pick.iter().map(|&i| layers[i].clone()).collect()
    }
    let mut core = core.clone();
    match &mut core {
        RecurrentCore::RnnScratch(c) => {
            (c.layers, c.bidirectional) = (keep(&c.layers, pick), false)
        }
        RecurrentCore::Gru(c) => (c.layers, c.bidirectional) = (keep(&c.layers, pick), false),
        RecurrentCore::Lstm(c) => (c.layers, c.bidirectional) = (keep(&c.layers, pick), false),
    }
    core
}

/// `[batch, steps, ..]` with the steps in reverse order.
fn flip_steps(x: Tensor<3>) -> Tensor<3> {
    x.flip([1])
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let (diff, bound) = (max_diff(got, want), rounding_bound(want));
    assert!(diff <= bound, "{what}: differ by {diff} (bound {bound})");
}

#[test]
fn a_bidirectional_core_has_both_directions_in_its_outputs_and_state() {
    let dev = device();
    let (batch, steps, layers) = (3, 4, 2);
    for (name, core) in cores(layers, true, &dev) {
        assert!(core.bidirectional(), "{name}");
        assert_eq!(
            (core.num_layers(), core.num_directions(), core.output_size()),
            (2, 2, 2 * HIDDEN),
            "{name}"
        );
        let (outputs, state) = core.forward(tensor([batch, steps, INPUT], 1, 1.0, &dev), None);
        assert_eq!(
            outputs.dims(),
            [batch, steps, 2 * HIDDEN],
            "{name}: outputs"
        );
        assert_eq!(
            state.hidden.dims(),
            [2 * layers, batch, HIDDEN],
            "{name}: state"
        );
        assert_eq!(
            core.begin_state(batch, &dev).hidden.dims(),
            [2 * layers, batch, HIDDEN],
            "{name}: begin_state"
        );
        assert_eq!(
            state.cell.as_ref().map(|c| c.dims()),
            core.has_cell().then_some([2 * layers, batch, HIDDEN])
        );
        assert_eq!(
            state.top_layer_hidden(2).dims(),
            [batch, 2 * HIDDEN],
            "{name}: top layer"
        );
    }
}

/// One layer: its forward half is a unidirectional core of the forward weights, its reverse
/// half that of the reverse weights run on the steps reversed (and reversed back), and the
/// state holds forward then reverse.
#[test]
fn the_reverse_direction_is_the_recurrence_over_the_steps_reversed() {
    let dev = device();
    let (batch, steps) = (2, 6);
    for mode in [Mode::Fused, Mode::Composite] {
        for (name, core) in cores(1, true, &dev) {
            let x = tensor([batch, steps, INPUT], 2, 1.0, &dev);
            let start = RecurrentState {
                hidden: tensor([2, batch, HIDDEN], 3, 0.7, &dev),
                cell: core
                    .has_cell()
                    .then(|| tensor([2, batch, HIDDEN], 4, 0.7, &dev)),
            };
            let entry = |state: &RecurrentState, i: usize| RecurrentState {
                hidden: state.hidden.clone().narrow(0, i, 1),
                cell: state.cell.clone().map(|c| c.narrow(0, i, 1)),
            };
            let (both, end) = with_mode(mode, || core.forward(x.clone(), start.clone()));
            let forward = with_layers(&core, &[0]);
            let reverse = with_layers(&core, &[1]);
            let (ahead, ahead_end) =
                with_mode(mode, || forward.forward(x.clone(), entry(&start, 0)));
            let (back, back_end) = with_mode(mode, || {
                reverse.forward(flip_steps(x.clone()), entry(&start, 1))
            });
            let what = format!("{name} ({mode:?})");
            assert_close(
                &format!("{what}: forward half"),
                &values(both.clone().narrow(2, 0, HIDDEN)),
                &values(ahead),
            );
            assert_close(
                &format!("{what}: reverse half"),
                &values(both.narrow(2, HIDDEN, HIDDEN)),
                &values(flip_steps(back)),
            );
            let joined = Tensor::cat(vec![ahead_end.hidden, back_end.hidden], 0);
            assert_close(
                &format!("{what}: final h"),
                &values(end.hidden),
                &values(joined),
            );
            if let (Some(cell), Some(a), Some(b)) = (end.cell, ahead_end.cell, back_end.cell) {
                assert_close(
                    &format!("{what}: final c"),
                    &values(cell),
                    &values(Tensor::cat(vec![a, b], 0)),
                );
            }
        }
    }
}

/// What a pass gives: outputs, final state, and the gradients of the parameters, the input and
/// the initial state.
struct Pass {
    outputs: Vec<f32>,
    hidden: Vec<f32>,
    cell: Option<Vec<f32>>,
    grads: HashMap<ParamId, Vec<f32>>,
    d_input: Vec<f32>,
    d_h0: Vec<f32>,
}

/// The padded batch in one pass, and the same rows one at a time at their own lengths, summed
/// into one loss whose gradients are the sums of each row's: every row's outputs and final
/// state weighed by the same weights in both.
fn padded_and_alone(
    core: &RecurrentCore,
    lengths: &[usize],
    steps: usize,
    mode: Mode,
) -> (Pass, Pass) {
    let ad = device().autodiff();
    let batch = lengths.len();
    let entries = core.num_layers() * core.num_directions();
    let width = core.output_size();
    let x = tensor([batch, steps, INPUT], 5, 1.0, &ad).require_grad();
    let h0 = tensor([entries, batch, HIDDEN], 6, 0.8, &ad).require_grad();
    let c0 = core
        .has_cell()
        .then(|| tensor([entries, batch, HIDDEN], 7, 0.8, &ad));
    let out_weights = tensor([batch, steps, width], 8, 1.0, &ad);
    let h_weights = tensor([entries, batch, HIDDEN], 9, 1.0, &ad);
    let c_weights = tensor([entries, batch, HIDDEN], 10, 1.0, &ad);
    let loss_of = |outputs: Tensor<3>,
                   state: &RecurrentState,
                   out_w: Tensor<3>,
                   h_w: Tensor<3>,
                   c_w: Tensor<3>| {
        let mut loss = (outputs * out_w).sum() + (state.hidden.clone() * h_w).sum();
        if let Some(cell) = &state.cell {
            loss = loss + (cell.clone() * c_w).sum();
        }
        loss
    };
    let start = RecurrentState {
        hidden: h0.clone(),
        cell: c0.clone(),
    };

    let (outputs, end) = with_mode(mode, || {
        core.forward_padded(x.clone(), lengths, start.clone())
    })
    .expect("lengths in 1..=steps");
    // Every output weighed, those past a row's length too: they are zero and carry nothing.
    let grads = loss_of(
        outputs.clone(),
        &end,
        out_weights.clone(),
        h_weights.clone(),
        c_weights.clone(),
    )
    .backward();
    let padded = Pass {
        outputs: values(outputs),
        hidden: values(end.hidden),
        cell: end.cell.map(values),
        grads: param_grads(core, &grads),
        d_input: values(x.grad(&grads).expect("the input's gradient")),
        d_h0: values(h0.grad(&grads).expect("h0's gradient")),
    };

    let mut total: Option<Tensor<1>> = None;
    let (mut outputs, mut hidden, mut cell) = (Vec::new(), Vec::new(), Vec::new());
    for (b, &length) in lengths.iter().enumerate() {
        let row = |t: &Tensor<3>| t.clone().narrow(1, b, 1);
        let state = RecurrentState {
            hidden: row(&h0),
            cell: c0.as_ref().map(row),
        };
        let input = x.clone().narrow(0, b, 1).narrow(1, 0, length);
        let (out, end) = with_mode(mode, || core.forward(input, state));
        let out_w = out_weights.clone().narrow(0, b, 1).narrow(1, 0, length);
        let loss = loss_of(out.clone(), &end, out_w, row(&h_weights), row(&c_weights));
        total = Some(match total {
            Some(sum) => sum + loss,
            None => loss,
        });
        // Padded back to `steps` with zeros, to compare with the batch.
        let pad = Tensor::zeros([1, steps - length, width], &ad);
        outputs.push(if length < steps {
            Tensor::cat(vec![out, pad], 1)
        } else {
            out
        });
        hidden.push(end.hidden);
        cell.extend(end.cell);
    }
    let grads = total.expect("a row at least").backward();
    let alone = Pass {
        outputs: values(Tensor::cat(outputs, 0)),
        hidden: values(Tensor::cat(hidden, 1)),
        cell: (!cell.is_empty()).then(|| values(Tensor::cat(cell, 1))),
        grads: param_grads(core, &grads),
        d_input: values(x.grad(&grads).expect("the input's gradient")),
        d_h0: values(h0.grad(&grads).expect("h0's gradient")),
    };
    (padded, alone)
}

fn assert_same_pass(what: &str, got: &Pass, want: &Pass) {
    assert_close(&format!("{what}: outputs"), &got.outputs, &want.outputs);
    assert_close(&format!("{what}: final h"), &got.hidden, &want.hidden);
    if let (Some(got), Some(want)) = (&got.cell, &want.cell) {
        assert_close(&format!("{what}: final c"), got, want);
    }
    assert_eq!(
        got.grads.len(),
        want.grads.len(),
        "{what}: parameters with a gradient"
    );
    for (id, want) in &want.grads {
        let got = got
            .grads
            .get(id)
            .unwrap_or_else(|| panic!("{what}: parameter {id} has no gradient"));
        assert_close(&format!("{what}: gradient of parameter {id}"), got, want);
    }
    assert_close(
        &format!("{what}: input gradient"),
        &got.d_input,
        &want.d_input,
    );
    assert_close(&format!("{what}: h0 gradient"), &got.d_h0, &want.d_h0);
}

#[test]
fn a_padded_batch_gives_every_row_what_it_gives_alone() {
    let dev = device().autodiff();
    // Unsorted, with a row of one step and a row of every step.
    let (lengths, steps) = ([3, 6, 1, 4, 6], 6);
    for (layers, bidirectional) in [(1, false), (2, false), (2, true)] {
        for (name, core) in cores(layers, bidirectional, &dev) {
            for mode in [Mode::Fused, Mode::Composite] {
                let what =
                    format!("{name}, {layers} layers, bidirectional {bidirectional} ({mode:?})");
                let (padded, alone) = padded_and_alone(&core, &lengths, steps, mode);
                assert_same_pass(&what, &padded, &alone);
            }
        }
    }
}

#[test]
fn fused_and_composite_agree_on_padded_bidirectional_batches() {
    let dev = device().autodiff();
    let (lengths, steps) = ([2, 5, 5, 3], 5);
    for (name, core) in cores(2, true, &dev) {
        let (fused, _) = padded_and_alone(&core, &lengths, steps, Mode::Fused);
        let (composite, _) = padded_and_alone(&core, &lengths, steps, Mode::Composite);
        assert_same_pass(
            &format!("{name}: fused against composite"),
            &fused,
            &composite,
        );
    }
}

/// Central differences on every parameter entry of a small padded bidirectional two-layer
/// core, through the fused scan.
#[test]
fn padded_bidirectional_gradients_match_finite_differences() {
    let ad = device().autodiff();
    let (lengths, steps, hidden) = ([2usize, 4, 1], 4, 3);
    let lstm = DeepLstmConfig::new(INPUT, hidden)
        .with_num_layers(2)
        .with_bidirectional(true)
        .with_init(WeightInit::Normal { sigma: 0.5 })
        .init(&ad);
    let gru = GruConfig::new(INPUT, hidden)
        .with_num_layers(2)
        .with_bidirectional(true)
        .with_init(WeightInit::Normal { sigma: 0.5 })
        .init(&ad);
    for (name, core) in [
        ("lstm", RecurrentCore::Lstm(lstm)),
        ("gru", RecurrentCore::Gru(gru)),
    ] {
        let loss = |core: &RecurrentCore, dev: &Device| -> Tensor<1> {
            let x = tensor([lengths.len(), steps, INPUT], 11, 1.0, dev);
            let (outputs, end) = core
                .forward_padded(x, &lengths, None)
                .expect("valid lengths");
            let dims = outputs.dims();
            (outputs * tensor(dims, 12, 1.0, dev)).sum()
                + (end.hidden.clone() * tensor(end.hidden.dims(), 13, 1.0, dev)).sum()
        };
        let analytic = param_grads(&core, &loss(&core, &ad).backward());
        let (plain, dev) = (core.valid(), device());
        let eval = |core: RecurrentCore| values(loss(&core, &dev))[0] as f64;
        let eps = 5e-3f32;
        let (mut checked, mut largest) = (0, 0.0f32);
        for (id, grads) in &analytic {
            for (index, &grad) in grads.iter().enumerate() {
                let plus = eval(plain.clone().map(&mut Nudge {
                    id: *id,
                    index,
                    delta: eps,
                }));
                let minus = eval(plain.clone().map(&mut Nudge {
                    id: *id,
                    index,
                    delta: -eps,
                }));
                let numeric = (plus - minus) / (2.0 * eps as f64);
                let analytic = grad as f64;
                assert!(
                    (analytic - numeric).abs() <= 1e-3 + 2e-2 * numeric.abs(),
                    "{name}: parameter {id} entry {index}: analytic {analytic}, finite difference {numeric}"
                );
                checked += 1;
                largest = largest.max(grad.abs());
            }
        }
        assert_eq!(
            checked,
            plain.num_params(),
            "{name}: every parameter entry checked"
        );
        assert!(
            largest > 1e-2,
            "{name}: gradients too small to prove anything: {largest}"
        );
    }
}

#[test]
fn lengths_that_do_not_fit_are_refused_naming_the_row() {
    let dev = device();
    let core = DeepLstmConfig::new(INPUT, HIDDEN)
        .with_bidirectional(true)
        .init(&dev);
    let x = tensor([3, 4, INPUT], 1, 1.0, &dev);
    let refused = |lengths: &[usize]| {
        core.forward_padded(x.clone(), lengths, None)
            .map(|_| ())
            .unwrap_err()
    };
    assert_eq!(refused(&[4, 2]), LengthsError::Count { given: 2, batch: 3 });
    let zero = refused(&[4, 0, 2]);
    assert_eq!(
        zero,
        LengthsError::OutOfRange {
            row: 1,
            length: 0,
            steps: 4
        }
    );
    assert_eq!(
        zero.to_string(),
        "lengths[1] = 0: every row's length must lie in 1..=4 (the input's steps)"
    );
    assert_eq!(
        refused(&[4, 2, 5]),
        LengthsError::OutOfRange {
            row: 2,
            length: 5,
            steps: 4
        }
    );
    // Time-major too.
    let time_major = DeepLstmConfig::new(INPUT, HIDDEN)
        .with_batch_first(false)
        .init(&dev);
    let err = time_major
        .forward_padded(tensor([4, 3, INPUT], 1, 1.0, &dev), &[1, 9, 2], None)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        err,
        LengthsError::OutOfRange {
            row: 1,
            length: 9,
            steps: 4
        }
    );
}

#[test]
#[should_panic(
    expected = "state.hidden has shape [num_layers*2, batch, hidden] = [2, 3, 7], expected [4, 3, 7]"
)]
fn a_state_without_the_reverse_directions_names_num_layers_times_two() {
    let dev = device();
    let core = GruConfig::new(INPUT, HIDDEN)
        .with_num_layers(2)
        .with_bidirectional(true)
        .init(&dev);
    let state = RecurrentState {
        hidden: Tensor::zeros([2, 3, HIDDEN], &dev),
        cell: None,
    };
    core.forward(tensor([3, 4, INPUT], 1, 1.0, &dev), state);
}

#[test]
fn every_row_at_full_length_equals_the_plain_forward() {
    let dev = device();
    for (name, core) in cores(2, true, &dev) {
        let x = tensor([3, 4, INPUT], 14, 1.0, &dev);
        let (plain, plain_end) = core.forward(x.clone(), None);
        let (padded, padded_end) = core
            .forward_padded(x, &[4, 4, 4], None)
            .expect("valid lengths");
        assert_eq!(values(plain), values(padded), "{name}: outputs");
        assert_eq!(
            values(plain_end.hidden),
            values(padded_end.hidden),
            "{name}: state"
        );
    }
}
