//! The host training engine (`rnnlm_host::backward`) against Burn's autodiff: the same loss,
//! logits, final state and gradient of every parameter for every cell; dropout with the same
//! masks; finite differences; independence of the thread count; and its errors.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::nn::loss::CrossEntropyLoss;
use burn::prelude::*;
use rnnlm::{CellKind, GruFormula, RecurrentState, RnnLm, RnnLmConfig};
use rnnlm_host::{HostBackward, Isa, ParamGrad};
use rnnlm_tests::{device, floats, ids, max_diff, rounding_bound, values};

use super::host::{VOCAB, instruction_sets, models, models_on, start_state};

const BATCH: usize = 5;
const STEPS: usize = 7;

fn tokens(salt: i64) -> Vec<i64> {
    (0..(BATCH * STEPS) as i64)
        .map(|i| (i * 7 + salt * 3 + i * i) % VOCAB as i64)
        .collect()
}

fn mean_loss(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let [batch, steps, vocab] = logits.dims();
    CrossEntropyLoss::new(None, &logits.device()).forward(
        logits.reshape([batch * steps, vocab]),
        targets.reshape([batch * steps]),
    )
}

/// Every parameter's gradient through autodiff, by id.
fn autodiff_grads(model: &RnnLm, grads: &burn::tensor::Gradients) -> HashMap<ParamId, Vec<f32>> {
    struct Collect<'a> {
        grads: &'a burn::tensor::Gradients,
        out: HashMap<ParamId, Vec<f32>>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let grad = param
                .val()
                .grad(self.grads)
                .expect("every parameter has a gradient");
            self.out.insert(param.id, values(grad));
        }
    }
    let mut collect = Collect {
        grads,
        out: HashMap::new(),
    };
    model.visit(&mut collect);
    collect.out
}

fn host_grads(backward: &HostBackward) -> HashMap<ParamId, Vec<f32>> {
    backward
        .grads
        .iter()
        .map(|(id, grad)| {
            let v = match grad {
                ParamGrad::Vector(t) => values(t.clone()),
                ParamGrad::Matrix(t) => values(t.clone()),
            };
            (*id, v)
        })
        .collect()
}

fn largest(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// The number of parameter tensors of a model.
trait CountParams {
    fn num_params_tensors(&self) -> usize;
}

impl CountParams for RnnLm {
    fn num_params_tensors(&self) -> usize {
        struct Count(usize);
        impl ModuleVisitor for Count {
            fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<D>>) {
                self.0 += 1;
            }
        }
        let mut count = Count(0);
        self.visit(&mut count);
        count.0
    }
}

/// Checks the host pass against autodiff on `model` (on an autodiff device).
pub(crate) fn compare(name: &str, model: &RnnLm, start: RecurrentState, scale: f32, isa: Isa) {
    let ad = model.output.b_q.val().device();
    let dev = device();
    let (x, y) = (tokens(1), tokens(2));
    let seed = 11;
    ad.seed(seed);
    let (logits, end) = model.forward(ids(&x, [BATCH, STEPS], &ad), start.clone());
    let loss = mean_loss(logits.clone(), ids(&y, [BATCH, STEPS], &ad));
    let expected_loss = loss.clone().into_scalar::<f32>();
    let expected = autodiff_grads(model, &loss.mul_scalar(scale).backward());

    ad.seed(seed);
    let host = rnnlm_host::backward_tuned(
        model,
        ids(&x, [BATCH, STEPS], &ad),
        ids(&y, [BATCH, STEPS], &ad),
        start,
        scale,
        &dev,
        Some(2),
        isa,
    );
    let got_loss = host.loss.clone().into_scalar::<f32>();
    assert!(
        (got_loss - expected_loss).abs() < 1e-5 * expected_loss.abs().max(1.0),
        "{name}: loss {got_loss} against autodiff's {expected_loss}"
    );
    let check = |what: &str, got: Vec<f32>, want: Vec<f32>| {
        let (diff, bound) = (max_diff(&got, &want), rounding_bound(&want));
        assert!(
            diff <= bound,
            "{name}: {what} differ by {diff} (bound {bound})"
        );
    };
    check(
        "logits",
        values(host.logits.clone()),
        values(logits.inner()),
    );
    check(
        "final hidden states",
        values(host.state.hidden.clone()),
        values(end.hidden.inner()),
    );
    assert_eq!(
        host.state.cell.is_some(),
        end.cell.is_some(),
        "{name}: cell"
    );
    if let (Some(a), Some(b)) = (host.state.cell.clone(), end.cell) {
        check("final cells", values(a), values(b.inner()));
    }
    let got = host_grads(&host);
    assert_eq!(
        expected.len(),
        model.num_params_tensors(),
        "{name}: autodiff misses a parameter"
    );
    assert_eq!(
        got.len(),
        expected.len(),
        "{name}: {} gradients, autodiff has {}",
        got.len(),
        expected.len()
    );
    for (id, want) in &expected {
        let have = got
            .get(id)
            .unwrap_or_else(|| panic!("{name}: no gradient for parameter {id}"));
        let diff = max_diff(have, want);
        let tolerance = 2e-5 * largest(want).max(1e-2);
        assert!(
            diff <= tolerance,
            "{name}: gradient of parameter {id} differs by {diff} (largest entry {})",
            largest(want)
        );
    }
}

#[test]
fn host_gradients_match_autodiff_for_every_cell() {
    let ad = device().autodiff();
    for (name, model) in models_on(&ad) {
        let start = start_state(&model.clone().valid(), BATCH);
        let start = RecurrentState {
            hidden: start.hidden.to_device(&ad),
            cell: start.cell.map(|c| c.to_device(&ad)),
        };
        for isa in instruction_sets() {
            compare(&format!("{name}, {isa:?}"), &model, start.clone(), 1.0, isa);
        }
        compare(
            &format!("{name}, scaled by 0.4"),
            &model,
            start,
            0.4,
            Isa::detect(),
        );
    }
}

#[test]
fn host_gradients_match_autodiff_for_the_d2l_sizes() {
    // Hidden widths that fill whole vector panels (32 columns) and a batch that splits evenly,
    // as the chapter's models do, next to the odd sizes above.
    let ad = device().autodiff();
    for (name, config) in [
        (
            "rnn-scratch 64",
            RnnLmConfig::new(CellKind::RnnScratch, VOCAB, 64),
        ),
        ("gru 32", RnnLmConfig::new(CellKind::Gru, VOCAB, 32)),
        (
            "gru (d2l) 64",
            RnnLmConfig::new(CellKind::Gru, VOCAB, 64).with_gru_formula(GruFormula::D2l),
        ),
        (
            "lstm 2 x 64",
            RnnLmConfig::new(CellKind::Lstm, VOCAB, 64).with_num_layers(2),
        ),
    ] {
        let model = config.init(&ad);
        compare(
            name,
            &model,
            model.begin_state(BATCH, &ad),
            1.0,
            Isa::detect(),
        );
    }
}

#[test]
fn the_thread_count_does_not_change_a_bit() {
    let dev = device();
    for (name, model) in models() {
        let start = start_state(&model, BATCH);
        let run = |threads| {
            let out = rnnlm_host::backward_tuned(
                &model,
                ids(&tokens(3), [BATCH, STEPS], &dev),
                ids(&tokens(4), [BATCH, STEPS], &dev),
                start.clone(),
                1.0,
                &dev,
                Some(threads),
                Isa::detect(),
            );
            let mut grads: Vec<(ParamId, Vec<f32>)> = host_grads(&out).into_iter().collect();
            assert_eq!(
                grads.len(),
                model.num_params_tensors(),
                "{name}: a gradient per parameter"
            );
            grads.sort_by_key(|(id, _)| *id);
            (values(out.loss), values(out.state.hidden), grads)
        };
        let one = run(1);
        for threads in [2, 3, 5] {
            assert!(
                run(threads) == one,
                "{name}: {threads} threads differ from one"
            );
        }
    }
}

/// Adds `delta` to entry `index` of parameter `id`.
struct Nudge {
    id: ParamId,
    index: usize,
    delta: f32,
}

impl ModuleMapper for Nudge {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if param.id != self.id {
            return param;
        }
        let (index, delta) = (self.index, self.delta);
        param.map(|t| {
            let (dims, device) = (t.dims(), t.device());
            let mut v = values(t);
            v[index] += delta;
            floats(&v, dims, &device)
        })
    }
}

#[test]
fn host_gradients_agree_with_finite_differences() {
    let dev = device();
    let (x, y) = (tokens(5), tokens(6));
    let loss_of = |model: &RnnLm, start: &RecurrentState| -> f64 {
        let out = rnnlm_host::backward(
            model,
            ids(&x, [BATCH, STEPS], &dev),
            ids(&y, [BATCH, STEPS], &dev),
            start.clone(),
            1.0,
            &dev,
        );
        out.loss.into_scalar::<f32>() as f64
    };
    for (name, model) in models() {
        let start = start_state(&model, BATCH);
        let analytic = host_grads(&rnnlm_host::backward(
            &model,
            ids(&x, [BATCH, STEPS], &dev),
            ids(&y, [BATCH, STEPS], &dev),
            start.clone(),
            1.0,
            &dev,
        ));
        assert_eq!(
            analytic.len(),
            model.num_params_tensors(),
            "{name}: a gradient per parameter"
        );
        for (id, grad) in &analytic {
            // Three entries of every parameter: the first, the largest and the last.
            let big = (0..grad.len())
                .max_by(|&a, &b| grad[a].abs().total_cmp(&grad[b].abs()))
                .expect("non-empty");
            for index in [0, big, grad.len() - 1] {
                // Small enough that a ReLU seldom crosses its kink, large enough for f32 losses.
                let eps = 1e-3f32;
                let nudged = |delta| {
                    let moved = model.clone().map(&mut Nudge {
                        id: *id,
                        index,
                        delta,
                    });
                    loss_of(&moved, &start)
                };
                let (up, down) = (nudged(eps), nudged(-eps));
                let numeric = (up - down) / (2.0 * eps as f64);
                let want = grad[index] as f64;
                let close = |numeric: f64| (numeric - want).abs() <= 2e-3 + 2e-2 * want.abs();
                // The weights are random: now and then a ReLU's kink falls inside
                // [x - eps, x + eps] and bends the central difference. Then the side without
                // the kink must still agree.
                let one_sided = || {
                    let here = loss_of(&model, &start);
                    close((up - here) / eps as f64) || close((here - down) / eps as f64)
                };
                assert!(
                    close(numeric) || name.contains("relu") && one_sided(),
                    "{name}: parameter {id} entry {index}: analytic {want}, numeric {numeric}"
                );
            }
        }
    }
}

#[test]
#[should_panic(expected = "rnnlm_host::backward: targets hold token id 11, expected ids in 0..11")]
fn a_target_outside_the_vocabulary_is_named() {
    let dev = device();
    let model = RnnLmConfig::new(CellKind::Gru, VOCAB, 8).init(&dev);
    let mut y = tokens(1);
    y[3] = VOCAB as i64;
    let _ = rnnlm_host::backward(
        &model,
        ids(&tokens(0), [BATCH, STEPS], &dev),
        ids(&y, [BATCH, STEPS], &dev),
        model.begin_state(BATCH, &dev),
        1.0,
        &dev,
    );
}

#[test]
#[should_panic(
    expected = "state.hidden has shape [1, 4, 8], expected [num_layers, batch, hidden] = [1, 5, 8]"
)]
fn a_state_for_another_batch_is_named() {
    let dev = device();
    let model = RnnLmConfig::new(CellKind::Lstm, VOCAB, 8).init(&dev);
    let _ = rnnlm_host::backward(
        &model,
        ids(&tokens(0), [BATCH, STEPS], &dev),
        ids(&tokens(1), [BATCH, STEPS], &dev),
        model.begin_state(4, &dev),
        1.0,
        &dev,
    );
}

#[test]
fn forward_on_host_matches_the_tensor_forward() {
    let dev = device();
    for (name, model) in models() {
        let start = start_state(&model, BATCH);
        let x = ids(&tokens(7), [BATCH, STEPS], &dev);
        let (logits, end) = model.forward(x.clone(), start.clone());
        let (host_logits, host_end) = rnnlm_host::forward(&model, x, start, &dev);
        for (what, got, want) in [
            ("logits", values(host_logits), values(logits)),
            (
                "final hidden state",
                values(host_end.hidden),
                values(end.hidden),
            ),
        ] {
            let (diff, bound) = (max_diff(&got, &want), rounding_bound(&want));
            assert!(
                diff <= bound,
                "{name}: {what} differ by {diff} (bound {bound})"
            );
        }
        assert_eq!(host_end.cell.is_some(), end.cell.is_some(), "{name}: cell");
        if let (Some(a), Some(b)) = (host_end.cell, end.cell) {
            let (got, want) = (values(a), values(b));
            let (diff, bound) = (max_diff(&got, &want), rounding_bound(&want));
            assert!(
                diff <= bound,
                "{name}: final cell differs by {diff} (bound {bound})"
            );
        }
    }
}
