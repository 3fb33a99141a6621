//! PyTorch's LSTM. With `[i f g o] = p_t + h_{t-1} W_h` split in four blocks (`p_t` the input
//! projection with both biases) and σ the sigmoid:
//!
//! ```text
//! c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)    clamped to [-clip, clip] (burn-nn's cell clip)
//! h_t = σ(o) ⊙ tanh(c_t)
//! ```
//!
//! Without a clip the bound is infinite: the clamp changes nothing, and the backward row's
//! test `|c_t| < clip` always passes (a clamped entry of the tape sits on the bound, so the
//! test tells it from one that was not: the clamp's gradient is zero there).
//!
//! Tape: the gate activations `σ(i) σ(f) tanh(g) σ(o)` and `c_t` (the extra block); the backward
//! step also reads `c_{t-1}`, the previous step's extra block.

use super::{BackwardStep, Cell, ForwardStep, HiddenWeights, Scratch, blocks, blocks_mut};
use crate::gemm::gemm;
use crate::math::{Isa, madd, sigmoid, tanh};

/// The LSTM cell, with the bound of its memory cell (`f32::INFINITY`: none).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lstm {
    /// `c_t` is clamped to `[-clip, clip]`.
    pub clip: f32,
}

impl Cell for Lstm {
    const GATES: usize = 4;
    const HAS_CELL: bool = true;
    const HAS_EXTRA: bool = true;

    #[inline(always)]
    fn forward<const FMA: bool>(
        self,
        isa: Isa,
        weights: &HiddenWeights,
        rows: usize,
        step: ForwardStep<'_>,
        _: &mut Scratch,
    ) {
        let n = weights.hidden;
        let width = 4 * n;
        gemm(
            isa,
            step.gates,
            width,
            step.h_prev,
            weights.inputs,
            rows,
            &weights.main,
        );
        for (((gates, c), cells), h) in step
            .gates
            .chunks_exact_mut(width)
            .zip(step.cell.chunks_exact_mut(n))
            .zip(step.extra.chunks_exact_mut(n))
            .zip(step.h.chunks_exact_mut(n))
            .take(rows)
        {
            let [i, f, g, o] = blocks_mut::<4>(gates, n);
            forward_row::<FMA>(i, f, g, o, c, cells, h, self.clip);
        }
    }

    #[inline(always)]
    fn backward<const FMA: bool>(
        self,
        isa: Isa,
        transposed: &HiddenWeights,
        rows: usize,
        step: BackwardStep<'_>,
        _: &mut Scratch,
    ) {
        let n = transposed.hidden;
        let width = 4 * n;
        // Per row, slices of exactly `n` elements, so the loop vectorises.
        for (((((gates, dp), c), c_prev), dh), dc) in step
            .gates
            .chunks_exact(width)
            .zip(step.dp.chunks_exact_mut(width))
            .zip(step.extra.chunks_exact(n))
            .zip(step.cell_prev.chunks_exact(n))
            .zip(step.dh.chunks_exact(n))
            .zip(step.dc.chunks_exact_mut(n))
            .take(rows)
        {
            let [i, f, g, o] = blocks::<4>(gates, n);
            let [di, df, dg, d_o] = blocks_mut::<4>(dp, n);
            backward_row::<FMA>(i, f, g, o, c, c_prev, dh, dc, di, df, dg, d_o, self.clip);
        }
        if let Some(dh_prev) = step.dh_prev {
            dh_prev.fill(0.0);
            gemm(isa, dh_prev, n, step.dp, width, rows, &transposed.main);
        }
    }
}

// Each row function takes every slice as an argument of its own, so the compiler knows they do
// not overlap and vectorises the loop (inlined into one loop over parts of one buffer, it would
// have to check at run time, and gives up beyond a few pointers).

/// Gate pre-activations in, activations out (in place); `c` from `c_{t-1}` to `c_t` (clamped to
/// `[-clip, clip]`), copied into `cells` (the tape); `h = o ⊙ tanh(c)`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_row<const FMA: bool>(
    i: &mut [f32],
    f: &mut [f32],
    g: &mut [f32],
    o: &mut [f32],
    c: &mut [f32],
    cells: &mut [f32],
    h: &mut [f32],
    clip: f32,
) {
    let n = h.len();
    let (i, f, g, o, c, cells) = (
        &mut i[..n],
        &mut f[..n],
        &mut g[..n],
        &mut o[..n],
        &mut c[..n],
        &mut cells[..n],
    );
    for j in 0..n {
        let (ig, fg) = (sigmoid::<FMA>(i[j]), sigmoid::<FMA>(f[j]));
        let (gg, og) = (tanh::<FMA>(g[j]), sigmoid::<FMA>(o[j]));
        // max/min, not clamp: no panic path, and the loop stays vectorised.
        let cj = madd::<FMA>(fg, c[j], ig * gg).max(-clip).min(clip);
        (i[j], f[j], g[j], o[j]) = (ig, fg, gg, og);
        c[j] = cj;
        cells[j] = cj;
        h[j] = og * tanh::<FMA>(cj);
    }
}

/// From the activations `i f g o`, `c_t`, `c_{t-1}` and `dh`: the pre-activation gradients,
/// and `dc` from the gradient of `c_t` to that of `c_{t-1}` (in place). Where the clamp held
/// `c_t` on its bound, nothing before it gets a gradient through `c_t`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_row<const FMA: bool>(
    i: &[f32],
    f: &[f32],
    g: &[f32],
    o: &[f32],
    c: &[f32],
    c_prev: &[f32],
    dh: &[f32],
    dc: &mut [f32],
    di: &mut [f32],
    df: &mut [f32],
    dg: &mut [f32],
    d_o: &mut [f32],
    clip: f32,
) {
    let n = dh.len();
    let (i, f, g, o, c, c_prev, dc) = (
        &i[..n],
        &f[..n],
        &g[..n],
        &o[..n],
        &c[..n],
        &c_prev[..n],
        &mut dc[..n],
    );
    let (di, df, dg, d_o) = (&mut di[..n], &mut df[..n], &mut dg[..n], &mut d_o[..n]);
    for j in 0..n {
        let tc = tanh::<FMA>(c[j]);
        let dcj = madd::<FMA>(dh[j] * o[j], 1.0 - tc * tc, dc[j]);
        let dcj = if c[j].abs() < clip { dcj } else { 0.0 };
        dc[j] = dcj * f[j];
        di[j] = dcj * g[j] * i[j] * (1.0 - i[j]);
        df[j] = dcj * c_prev[j] * f[j] * (1.0 - f[j]);
        dg[j] = dcj * i[j] * (1.0 - g[j] * g[j]);
        d_o[j] = dh[j] * tc * o[j] * (1.0 - o[j]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// `c_t`, `h_t` of one unit in f64.
    fn unit(p: [f64; 4], c_prev: f64) -> (f64, f64) {
        let c = sig(p[1]) * c_prev + sig(p[0]) * p[2].tanh();
        (c, sig(p[3]) * c.tanh())
    }

    #[test]
    fn forward_row_by_hand() {
        let p = [0.3f32, -0.2, 0.5, 1.0];
        let c_prev = 0.7f32;
        let mut gates = p;
        let (mut c, mut cells, mut h) = ([c_prev], [0.0f32], [0.0f32]);
        let [i, f, g, o] = &mut gates;
        forward_row::<false>(
            std::slice::from_mut(i),
            std::slice::from_mut(f),
            std::slice::from_mut(g),
            std::slice::from_mut(o),
            &mut c,
            &mut cells,
            &mut h,
            f32::INFINITY,
        );
        let (ce, he) = unit(p.map(f64::from), c_prev as f64);
        assert!((c[0] as f64 - ce).abs() < 1e-6 && (cells[0] as f64 - ce).abs() < 1e-6);
        assert!((h[0] as f64 - he).abs() < 1e-6);
        assert!((gates[2] as f64 - 0.5f64.tanh()).abs() < 1e-6);
    }

    #[test]
    fn backward_row_matches_finite_differences() {
        let p = [0.3f64, -0.2, 0.5, 1.0];
        let c_prev = 0.7f64;
        // Loss: a h_t + b c_t, so dh = a and the incoming dc = b.
        let (a, b) = (0.9f64, -0.4f64);
        let loss = |p: [f64; 4], c_prev: f64| {
            let (c, h) = unit(p, c_prev);
            a * h + b * c
        };
        let acts = [sig(p[0]), sig(p[1]), p[2].tanh(), sig(p[3])].map(|x| x as f32);
        let (c, _) = unit(p, c_prev);
        let mut dc = [b as f32];
        let mut dp = [0.0f32; 4];
        let [di, df, dg, d_o] = &mut dp;
        let [i, f, g, o] = acts.each_ref().map(std::slice::from_ref);
        backward_row::<false>(
            i,
            f,
            g,
            o,
            &[c as f32],
            &[c_prev as f32],
            &[a as f32],
            &mut dc,
            std::slice::from_mut(di),
            std::slice::from_mut(df),
            std::slice::from_mut(dg),
            std::slice::from_mut(d_o),
            f32::INFINITY,
        );
        let eps = 1e-6;
        for k in 0..4 {
            let (mut up, mut down) = (p, p);
            up[k] += eps;
            down[k] -= eps;
            let numeric = (loss(up, c_prev) - loss(down, c_prev)) / (2.0 * eps);
            assert!(
                (dp[k] as f64 - numeric).abs() < 1e-5,
                "gate {k}: {} vs {numeric}",
                dp[k]
            );
        }
        let numeric = (loss(p, c_prev + eps) - loss(p, c_prev - eps)) / (2.0 * eps);
        assert!(
            (dc[0] as f64 - numeric).abs() < 1e-5,
            "dc_prev {} vs {numeric}",
            dc[0]
        );
    }

    /// `c_t`, `h_t` of one unit in f64 with the cell clamped to `[-clip, clip]`.
    fn clipped_unit(p: [f64; 4], c_prev: f64, clip: f64) -> (f64, f64) {
        let c = (sig(p[1]) * c_prev + sig(p[0]) * p[2].tanh()).clamp(-clip, clip);
        (c, sig(p[3]) * c.tanh())
    }

    /// One unit forwards and backwards with a clip, as the rows compute it.
    fn clipped_rows(
        p: [f64; 4],
        c_prev: f64,
        clip: f32,
        dh: f32,
        dc_in: f32,
    ) -> (f32, f32, [f32; 4], f32) {
        let mut gates = p.map(|x| x as f32);
        let (mut c, mut cells, mut h) = ([c_prev as f32], [0.0f32], [0.0f32]);
        {
            let [i, f, g, o] = &mut gates;
            forward_row::<false>(
                std::slice::from_mut(i),
                std::slice::from_mut(f),
                std::slice::from_mut(g),
                std::slice::from_mut(o),
                &mut c,
                &mut cells,
                &mut h,
                clip,
            );
        }
        let mut dc = [dc_in];
        let mut dp = [0.0f32; 4];
        let [di, df, dg, d_o] = &mut dp;
        let [i, f, g, o] = gates.each_ref().map(std::slice::from_ref);
        backward_row::<false>(
            i,
            f,
            g,
            o,
            &cells,
            &[c_prev as f32],
            &[dh],
            &mut dc,
            std::slice::from_mut(di),
            std::slice::from_mut(df),
            std::slice::from_mut(dg),
            std::slice::from_mut(d_o),
            clip,
        );
        (c[0], h[0], dp, dc[0])
    }

    #[test]
    fn a_clipped_cell_is_clamped_and_its_gradient_stops_at_the_clamp() {
        // c_t = σ(-0.2)·0.7 + σ(0.3)·tanh(0.5) ≈ 0.566: clamped by 0.25, not by 2.
        let p = [0.3f64, -0.2, 0.5, 1.0];
        let (a, b) = (0.9f64, -0.4f64);
        for clip in [0.25f64, 2.0] {
            let (c, h, dp, dc_prev) = clipped_rows(p, 0.7, clip as f32, a as f32, b as f32);
            let (ce, he) = clipped_unit(p, 0.7, clip);
            assert!(
                (c as f64 - ce).abs() < 1e-6 && (h as f64 - he).abs() < 1e-6,
                "clip {clip}"
            );
            let loss = |p: [f64; 4], c_prev: f64| {
                let (c, h) = clipped_unit(p, c_prev, clip);
                a * h + b * c
            };
            let eps = 1e-6;
            for k in 0..4 {
                let (mut up, mut down) = (p, p);
                up[k] += eps;
                down[k] -= eps;
                let numeric = (loss(up, 0.7) - loss(down, 0.7)) / (2.0 * eps);
                assert!(
                    (dp[k] as f64 - numeric).abs() < 1e-5,
                    "clip {clip}, gate {k}: {} vs {numeric}",
                    dp[k]
                );
            }
            let numeric = (loss(p, 0.7 + eps) - loss(p, 0.7 - eps)) / (2.0 * eps);
            assert!(
                (dc_prev as f64 - numeric).abs() < 1e-5,
                "clip {clip}: dc_prev {dc_prev} vs {numeric}"
            );
            if clip < 0.5 {
                // Clamped: only the output gate still gets a gradient.
                assert_eq!((dp[0], dp[1], dp[2], dc_prev), (0.0, 0.0, 0.0, 0.0));
                assert!(dp[3] != 0.0);
            }
        }
    }
}
