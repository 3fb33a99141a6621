//! How should a recurrent layer collect its per-step outputs? The layer engine stacks them once
//! at the end; the alternative writes each step into a preallocated tensor with `slice_assign`.
//! This measures both on an LSTM-shaped time loop (hidden 256, batch 32, 35 steps), forward and
//! backward on the autodiff device and forward alone without autodiff, alternating the two
//! variants, and prints medians and their ratio.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::sigmoid;

const HIDDEN: usize = 256;
const BATCH: usize = 32;
const STEPS: usize = 35;

fn step(p: Tensor<2>, h: Tensor<2>, c: Tensor<2>, w: &Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let g = p + h.matmul(w.clone());
    let i = sigmoid(g.clone().narrow(1, 0, HIDDEN));
    let f = sigmoid(g.clone().narrow(1, HIDDEN, HIDDEN));
    let cand = g.clone().narrow(1, 2 * HIDDEN, HIDDEN).tanh();
    let o = sigmoid(g.narrow(1, 3 * HIDDEN, HIDDEN));
    let c = f * c + i * cand;
    (o * c.clone().tanh(), c)
}

fn run(stack: bool, projected: &Tensor<3>, w: &Tensor<2>, device: &Device) -> Tensor<3> {
    let mut h = Tensor::zeros([BATCH, HIDDEN], device);
    let mut c = Tensor::zeros([BATCH, HIDDEN], device);
    if stack {
        let mut outs = Vec::with_capacity(STEPS);
        for t in 0..STEPS {
            let p = projected.clone().narrow(0, t, 1).squeeze_dim(0);
            (h, c) = step(p, h, c, w);
            outs.push(h.clone());
        }
        Tensor::stack(outs, 0)
    } else {
        let mut out = Tensor::zeros([STEPS, BATCH, HIDDEN], device);
        for t in 0..STEPS {
            let p = projected.clone().narrow(0, t, 1).squeeze_dim(0);
            (h, c) = step(p, h, c, w);
            out = out.slice_assign([t..t + 1, 0..BATCH, 0..HIDDEN], h.clone().unsqueeze_dim(0));
        }
        out
    }
}

fn time(stack: bool, backward: bool, device: &Device) -> f64 {
    let projected = Tensor::<3>::random(
        [STEPS, BATCH, 4 * HIDDEN],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let w = Tensor::<2>::random(
        [HIDDEN, 4 * HIDDEN],
        Distribution::Normal(0.0, 0.05),
        device,
    );
    let w = if backward { w.require_grad() } else { w };
    let start = Instant::now();
    let out = run(stack, &projected, &w, device);
    if backward {
        let grads = out.sum().backward();
        let _ = w.grad(&grads).expect("grad").into_data();
    } else {
        let _ = out.sum().into_data();
    }
    start.elapsed().as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let device = rnnlm_tests::device();
    for (label, backward, dev) in [
        (
            "forward + backward (autodiff)",
            true,
            device.clone().autodiff(),
        ),
        ("forward only", false, device),
    ] {
        for _ in 0..3 {
            time(true, backward, &dev);
            time(false, backward, &dev);
        }
        let (mut stacked, mut assigned) = (Vec::new(), Vec::new());
        for _ in 0..30 {
            stacked.push(time(true, backward, &dev));
            assigned.push(time(false, backward, &dev));
        }
        let (s, a) = (median(stacked), median(assigned));
        println!(
            "{label}: stack once {s:.2} ms, slice_assign per step {a:.2} ms, ratio {:.2}",
            a / s
        );
    }
}
