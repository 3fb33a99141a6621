//! d2l's GRU: the reset gate scales `h_{t-1}` before the candidate's product. With
//! `[p_r p_z p_n]` the input projection (with its bias), `W_h = [W_hr W_hz | W_hn]`:
//!
//! ```text
//! r = σ(p_r + h_{t-1} W_hr)
//! z = σ(p_z + h_{t-1} W_hz)
//! n = tanh(p_n + (r ⊙ h_{t-1}) W_hn)
//! h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
//! ```
//!
//! A step is two products with the gates between them, so the hidden weight is packed in two
//! parts. Tape: the activations `r z n` and `r ⊙ h_{t-1}` (the extra block, the left operand of
//! the candidate's product and of its weight gradient).

use std::ops::Range;

use super::{
    BackwardStep, Cell, ForwardStep, GradientSources, HiddenWeights, Scratch,
    add_previous_states_times, blocks, blocks_mut, clamp_hidden, clipped_dh,
};
use crate::gemm::{PackedB, View, gemm, gemm_large};
use crate::math::{Isa, madd, sigmoid, tanh};

/// d2l's GRU cell, with the bound of its state (`f32::INFINITY`: none; with one, `h_t` is
/// clamped to `[-clip, clip]` and no gradient passes where the clamp held it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GruD2l {
    /// `h_t` is clamped to `[-clip, clip]`.
    pub clip: f32,
}

impl Cell for GruD2l {
    const GATES: usize = 3;
    const HAS_EXTRA: bool = true;
    const SPLITS_UNITS: bool = false;

    fn pack(self, weight: &[f32], _bias: &[f32], hidden: usize, threads: usize) -> HiddenWeights {
        let width = 3 * hidden;
        HiddenWeights {
            hidden,
            inputs: hidden,
            main: PackedB::new_on(weight, hidden, 2 * hidden, width, threads),
            candidate: Some(PackedB::new_on(
                &weight[2 * hidden..],
                hidden,
                hidden,
                width,
                threads,
            )),
            bias: Vec::new(),
        }
    }

    fn pack_transposed(self, weight: &[f32], hidden: usize, threads: usize) -> HiddenWeights {
        let width = 3 * hidden;
        HiddenWeights {
            hidden,
            inputs: width,
            main: PackedB::transposed_on(weight, hidden, 2 * hidden, width, threads),
            candidate: Some(PackedB::transposed_on(
                &weight[2 * hidden..],
                hidden,
                hidden,
                width,
                threads,
            )),
            bias: Vec::new(),
        }
    }

    fn pack_units(self, _: &[f32], _: &[f32], _: usize, _: Range<usize>) -> HiddenWeights {
        unreachable!("d2l's GRU steps all its units together (SPLITS_UNITS is false)")
    }

    #[inline(always)]
    fn forward<const FMA: bool>(
        self,
        isa: Isa,
        weights: &HiddenWeights,
        rows: usize,
        step: ForwardStep<'_>,
        scratch: &mut Scratch,
    ) {
        let n = weights.hidden;
        debug_assert_eq!(n, weights.inputs, "d2l's GRU steps all its units together");
        let width = 3 * n;
        let (rz, candidate) = scratch.zeroed(rows * 2 * n, rows * n);
        gemm(isa, rz, 2 * n, step.h_prev, n, rows, &weights.main);
        for (((gates, rz), h_prev), reset_h) in step
            .gates
            .chunks_exact_mut(width)
            .zip(rz.chunks_exact(2 * n))
            .zip(step.h_prev.chunks_exact(n))
            .zip(step.extra.chunks_exact_mut(n))
            .take(rows)
        {
            let [r, z, _] = blocks_mut::<3>(gates, n);
            let [hr, hz] = blocks::<2>(rz, n);
            gates_row::<FMA>(r, z, hr, hz, h_prev, reset_h);
        }
        let w_n = weights.candidate.as_ref().expect("d2l's GRU packs W_hn");
        gemm(isa, candidate, n, step.extra, n, rows, w_n);
        for (((gates, candidate), h_prev), h) in step
            .gates
            .chunks_exact_mut(width)
            .zip(candidate.chunks_exact(n))
            .zip(step.h_prev.chunks_exact(n))
            .zip(step.h.chunks_exact_mut(n))
            .take(rows)
        {
            let [_, z, n_gate] = blocks_mut::<3>(gates, n);
            candidate_row::<FMA>(z, n_gate, candidate, h_prev, h);
        }
        clamp_hidden(&mut step.h[..rows * n], self.clip);
    }

    #[inline(always)]
    fn backward<const FMA: bool>(
        self,
        isa: Isa,
        transposed: &HiddenWeights,
        rows: usize,
        step: BackwardStep<'_>,
        scratch: &mut Scratch,
    ) {
        let n = transposed.hidden;
        let width = 3 * n;
        let wanted = step.dh_prev.is_some();
        let mut masked = scratch.take_masked();
        let dh_all = clipped_dh(
            &step.dh[..rows * n],
            &step.h[..rows * n],
            self.clip,
            &mut masked,
        );
        let (d_reset_h, stand_in) = scratch.zeroed(rows * n, if wanted { 0 } else { rows * n });
        for ((gates, dp), dh) in step
            .gates
            .chunks_exact(width)
            .zip(step.dp.chunks_exact_mut(width))
            .zip(dh_all.chunks_exact(n))
            .take(rows)
        {
            let [_, z, n_gate] = blocks::<3>(gates, n);
            let [_, _, dn] = blocks_mut::<3>(dp, n);
            candidate_backward_row(z, n_gate, dh, dn);
        }
        let w_n = transposed
            .candidate
            .as_ref()
            .expect("d2l's GRU packs W_hnᵀ");
        gemm(isa, d_reset_h, n, &step.dp[2 * n..], width, rows, w_n);
        let dh_prev = step.dh_prev.unwrap_or(stand_in);
        for (((((gates, dp), d_reset_h), h_prev), dh), direct) in step
            .gates
            .chunks_exact(width)
            .zip(step.dp.chunks_exact_mut(width))
            .zip(d_reset_h.chunks_exact(n))
            .zip(step.h_prev.chunks_exact(n))
            .zip(dh_all.chunks_exact(n))
            .zip(dh_prev.chunks_exact_mut(n))
            .take(rows)
        {
            let [dr, dz, _] = blocks_mut::<3>(dp, n);
            let [r, z, n_gate] = blocks::<3>(gates, n);
            gates_backward_row::<FMA>(r, z, n_gate, d_reset_h, h_prev, dh, dr, dz, direct);
        }
        if wanted {
            gemm(isa, dh_prev, n, step.dp, width, rows, &transposed.main);
        }
        scratch.restore_masked(masked);
    }

    /// `[W_hr W_hz]`'s block from `h_{t-1}` as every cell's; `W_hn`'s from `r ⊙ h_{t-1}`.
    fn weight_gradient(
        self,
        sources: &GradientSources<'_>,
        hidden: usize,
        threads: usize,
    ) -> Vec<f32> {
        let width = 3 * hidden;
        let rows = sources.dp.len() / width;
        let mut out = crate::shared::zeros(hidden * width);
        add_previous_states_times(
            sources,
            sources.dp,
            width,
            0..2 * hidden,
            hidden,
            &mut out,
            threads,
        );
        gemm_large(
            &mut out[2 * hidden..],
            width,
            hidden,
            hidden,
            rows,
            View::transposed(sources.extra, hidden),
            View::rows(&sources.dp[2 * hidden..], width),
            threads,
        );
        out
    }
}

/// `r` and `z` from their input-side pre-activations (in place) and `h W_hrz` (`hr`, `hz`);
/// `reset_h = r ⊙ h_prev`.
#[inline(always)]
pub(crate) fn gates_row<const FMA: bool>(
    r: &mut [f32],
    z: &mut [f32],
    hr: &[f32],
    hz: &[f32],
    h_prev: &[f32],
    reset_h: &mut [f32],
) {
    let len = reset_h.len();
    let (r, z, hr, hz, h_prev) = (
        &mut r[..len],
        &mut z[..len],
        &hr[..len],
        &hz[..len],
        &h_prev[..len],
    );
    for j in 0..len {
        let rj = sigmoid::<FMA>(r[j] + hr[j]);
        (r[j], z[j]) = (rj, sigmoid::<FMA>(z[j] + hz[j]));
        reset_h[j] = rj * h_prev[j];
    }
}

/// `n = tanh(input side + (r ⊙ h) W_hn)` (in place), `h = n + z ⊙ (h_prev - n)`.
#[inline(always)]
pub(crate) fn candidate_row<const FMA: bool>(
    z: &[f32],
    n: &mut [f32],
    candidate: &[f32],
    h_prev: &[f32],
    h: &mut [f32],
) {
    let len = h.len();
    let (z, n, candidate, h_prev) = (&z[..len], &mut n[..len], &candidate[..len], &h_prev[..len]);
    for j in 0..len {
        let nj = tanh::<FMA>(n[j] + candidate[j]);
        n[j] = nj;
        h[j] = madd::<FMA>(z[j], h_prev[j] - nj, nj);
    }
}

/// The candidate's pre-activation gradient, first (the reset gate's needs its product).
#[inline(always)]
pub(crate) fn candidate_backward_row(z: &[f32], n: &[f32], dh: &[f32], dn: &mut [f32]) {
    let len = dh.len();
    let (z, n, dn) = (&z[..len], &n[..len], &mut dn[..len]);
    for j in 0..len {
        dn[j] = dh[j] * (1.0 - z[j]) * (1.0 - n[j] * n[j]);
    }
}

/// Then, with `d_reset_h = dn W_hnᵀ`: the `r` and `z` gradients and the direct part of
/// `dh_{t-1}`.
#[inline(always)]
pub(crate) fn gates_backward_row<const FMA: bool>(
    r: &[f32],
    z: &[f32],
    n: &[f32],
    d_reset_h: &[f32],
    h_prev: &[f32],
    dh: &[f32],
    dr: &mut [f32],
    dz: &mut [f32],
    dh_prev: &mut [f32],
) {
    let len = dh.len();
    let (r, z, n, d_reset_h, h_prev) = (
        &r[..len],
        &z[..len],
        &n[..len],
        &d_reset_h[..len],
        &h_prev[..len],
    );
    let (dr, dz, dh_prev) = (&mut dr[..len], &mut dz[..len], &mut dh_prev[..len]);
    for j in 0..len {
        dr[j] = d_reset_h[j] * h_prev[j] * r[j] * (1.0 - r[j]);
        dz[j] = dh[j] * (h_prev[j] - n[j]) * z[j] * (1.0 - z[j]);
        dh_prev[j] = madd::<FMA>(dh[j], z[j], d_reset_h[j] * r[j]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// One unit with scalar hidden weights `w = [w_r, w_z, w_n]`: `(r, z, n, h_t)` in f64.
    fn unit(p: [f64; 3], w: [f64; 3], h_prev: f64) -> (f64, f64, f64, f64) {
        let (r, z) = (sig(p[0] + h_prev * w[0]), sig(p[1] + h_prev * w[1]));
        let n = (p[2] + r * h_prev * w[2]).tanh();
        (r, z, n, (1.0 - z) * n + z * h_prev)
    }

    const P: [f64; 3] = [0.3, -0.6, 0.5];
    const W: [f64; 3] = [0.8, -0.5, 1.2];
    const H_PREV: f64 = 0.7;

    #[test]
    fn forward_rows_by_hand() {
        let [mut r, mut z, mut n] = P.map(|x| [x as f32]);
        let h_prev = [H_PREV as f32];
        let mut reset_h = [0.0f32];
        let (hr, hz) = ([(H_PREV * W[0]) as f32], [(H_PREV * W[1]) as f32]);
        gates_row::<false>(&mut r, &mut z, &hr, &hz, &h_prev, &mut reset_h);
        let candidate = [reset_h[0] * W[2] as f32];
        let mut h = [0.0f32];
        candidate_row::<false>(&z, &mut n, &candidate, &h_prev, &mut h);
        let (re, ze, ne, he) = unit(P, W, H_PREV);
        for (got, want) in [
            (r[0], re),
            (z[0], ze),
            (n[0], ne),
            (h[0], he),
            (reset_h[0], re * H_PREV),
        ] {
            assert!((f64::from(got) - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn backward_rows_match_finite_differences() {
        // Loss: a h_t, so dh = a.
        let a = 0.8f64;
        let (r, z, n, _) = unit(P, W, H_PREV);
        let [r, z, n] = [r, z, n].map(|x| [x as f32]);
        let dh = [a as f32];
        let mut dp = [[0.0f32]; 3];
        let [dr, dz, dn] = &mut dp;
        candidate_backward_row(&z, &n, &dh, dn);
        let d_reset_h = [dn[0] * W[2] as f32];
        let mut direct = [0.0f32];
        gates_backward_row::<false>(
            &r,
            &z,
            &n,
            &d_reset_h,
            &[H_PREV as f32],
            &dh,
            dr,
            dz,
            &mut direct,
        );
        let eps = 1e-6;
        let numeric = |f: &dyn Fn(f64) -> f64| (f(eps) - f(-eps)) / (2.0 * eps);
        for k in 0..3 {
            let by_p = numeric(&|e| {
                let mut p = P;
                p[k] += e;
                a * unit(p, W, H_PREV).3
            });
            assert!(
                (f64::from(dp[k][0]) - by_p).abs() < 1e-5,
                "dp[{k}] {} vs {by_p}",
                dp[k][0]
            );
        }
        // The direct part plus what reaches h_{t-1} through W_hr and W_hz (the caller's product).
        let total = f64::from(direct[0]) + f64::from(dp[0][0]) * W[0] + f64::from(dp[1][0]) * W[1];
        let by_h = numeric(&|e| a * unit(P, W, H_PREV + e).3);
        assert!((total - by_h).abs() < 1e-5, "dh_prev {total} vs {by_h}");
    }
}
