//! PyTorch's GRU. With `[p_r p_z p_n]` the input projection (with `b_ih`) and
//! `[q_r q_z q_n] = h_{t-1} W_h + b_hh` the hidden product, by gate block:
//!
//! ```text
//! r = σ(p_r + q_r)
//! z = σ(p_z + q_z)
//! n = tanh(p_n + r ⊙ q_n)
//! h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
//! ```
//!
//! Tape: the activations `r z n` and `q_n` (the extra block). Because `r` scales `q_n`, the
//! hidden product's gradient differs from the projection's in its candidate block
//! ([`Cell::HIDDEN_GRADIENT`]): `dq_n = r ⊙ dp_n`.

use super::{
    BackwardStep, Cell, ForwardStep, HiddenWeights, Scratch, blocks, blocks_mut, clamp_hidden,
    clipped_dh,
};
use crate::gemm::gemm;
use crate::math::{Isa, madd, sigmoid, tanh};

/// PyTorch's GRU cell, with the bound of its state (`f32::INFINITY`: none; with one, `h_t` is
/// clamped to `[-clip, clip]` and no gradient passes where the clamp held it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gru {
    /// `h_t` is clamped to `[-clip, clip]`.
    pub clip: f32,
}

impl Cell for Gru {
    const GATES: usize = 3;
    const HAS_EXTRA: bool = true;
    const HIDDEN_GRADIENT: bool = true;

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
        let width = 3 * n;
        let (q, _) = scratch.zeroed(rows * width, 0);
        if !weights.bias.is_empty() {
            for row in q.chunks_exact_mut(width) {
                row.copy_from_slice(&weights.bias);
            }
        }
        gemm(
            isa,
            q,
            width,
            step.h_prev,
            weights.inputs,
            rows,
            &weights.main,
        );
        for ((((gates, q), h_prev), h), q_n) in step
            .gates
            .chunks_exact_mut(width)
            .zip(q.chunks_exact(width))
            .zip(step.h_prev_units.chunks_exact(n))
            .zip(step.h.chunks_exact_mut(n))
            .zip(step.extra.chunks_exact_mut(n))
            .take(rows)
        {
            let [r, z, n_gate] = blocks_mut::<3>(gates, n);
            let [q_r, q_z, q_n_in] = blocks::<3>(q, n);
            forward_row::<FMA>(r, z, n_gate, q_r, q_z, q_n_in, h_prev, h, q_n);
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
        // The row loop writes the direct part of dh_{t-1}; where nobody asked for it, into a
        // stand-in.
        let wanted = step.dh_prev.is_some();
        let mut masked = scratch.take_masked();
        let dh = clipped_dh(
            &step.dh[..rows * n],
            &step.h[..rows * n],
            self.clip,
            &mut masked,
        );
        let (stand_in, _) = scratch.zeroed(if wanted { 0 } else { rows * n }, 0);
        let dh_prev = step.dh_prev.unwrap_or(stand_in);
        for ((((((gates, dp), dq), q_n), h_prev), dh), direct) in step
            .gates
            .chunks_exact(width)
            .zip(step.dp.chunks_exact_mut(width))
            .zip(step.dq.chunks_exact_mut(width))
            .zip(step.extra.chunks_exact(n))
            .zip(step.h_prev.chunks_exact(n))
            .zip(dh.chunks_exact(n))
            .zip(dh_prev.chunks_exact_mut(n))
            .take(rows)
        {
            let [r, z, n_gate] = blocks::<3>(gates, n);
            let [dr, dz, dn] = blocks_mut::<3>(dp, n);
            let [dq_r, dq_z, dq_n] = blocks_mut::<3>(dq, n);
            backward_row(
                r, z, n_gate, q_n, h_prev, dh, dr, dz, dn, dq_r, dq_z, dq_n, direct,
            );
        }
        if wanted {
            gemm(isa, dh_prev, n, step.dq, width, rows, &transposed.main);
        }
        scratch.restore_masked(masked);
    }
}

/// Input-side pre-activations `r z n` in, activations out (in place), from the hidden product
/// `q` by block; `q_n` copied to the tape; `h = n + z ⊙ (h_prev - n)`.
#[inline(always)]
pub(crate) fn forward_row<const FMA: bool>(
    r: &mut [f32],
    z: &mut [f32],
    n: &mut [f32],
    q_r: &[f32],
    q_z: &[f32],
    q_n: &[f32],
    h_prev: &[f32],
    h: &mut [f32],
    q_n_out: &mut [f32],
) {
    let len = h.len();
    let (r, z, n) = (&mut r[..len], &mut z[..len], &mut n[..len]);
    let (q_r, q_z, q_n, h_prev, q_n_out) = (
        &q_r[..len],
        &q_z[..len],
        &q_n[..len],
        &h_prev[..len],
        &mut q_n_out[..len],
    );
    for j in 0..len {
        let rj = sigmoid::<FMA>(r[j] + q_r[j]);
        let zj = sigmoid::<FMA>(z[j] + q_z[j]);
        let nj = tanh::<FMA>(madd::<FMA>(rj, q_n[j], n[j]));
        (r[j], z[j], n[j]) = (rj, zj, nj);
        q_n_out[j] = q_n[j];
        // (1 - z) ⊙ n + z ⊙ h, with one multiplication fewer.
        h[j] = madd::<FMA>(zj, h_prev[j] - nj, nj);
    }
}

/// From `r z n`, `q_n`, `h_{t-1}` and `dh`: the gradients of the input-side pre-activations
/// (`dp`), of the hidden product (`dq`), and the direct part of `dh_{t-1}` (`z ⊙ dh`).
#[inline(always)]
pub(crate) fn backward_row(
    r: &[f32],
    z: &[f32],
    n: &[f32],
    q_n: &[f32],
    h_prev: &[f32],
    dh: &[f32],
    dr: &mut [f32],
    dz: &mut [f32],
    dn: &mut [f32],
    dq_r: &mut [f32],
    dq_z: &mut [f32],
    dq_n: &mut [f32],
    dh_prev: &mut [f32],
) {
    let len = dh.len();
    let (r, z, n, q_n, h_prev) = (&r[..len], &z[..len], &n[..len], &q_n[..len], &h_prev[..len]);
    let (dr, dz, dn) = (&mut dr[..len], &mut dz[..len], &mut dn[..len]);
    let (dq_r, dq_z, dq_n, dh_prev) = (
        &mut dq_r[..len],
        &mut dq_z[..len],
        &mut dq_n[..len],
        &mut dh_prev[..len],
    );
    for j in 0..len {
        let dnj = dh[j] * (1.0 - z[j]) * (1.0 - n[j] * n[j]);
        let drj = dnj * q_n[j] * r[j] * (1.0 - r[j]);
        let dzj = dh[j] * (h_prev[j] - n[j]) * z[j] * (1.0 - z[j]);
        (dr[j], dz[j], dn[j]) = (drj, dzj, dnj);
        (dq_r[j], dq_z[j], dq_n[j]) = (drj, dzj, dnj * r[j]);
        dh_prev[j] = dh[j] * z[j];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// `h_t` of one unit in f64 from the projections `p` and hidden products `q`.
    fn unit(p: [f64; 3], q: [f64; 3], h_prev: f64) -> f64 {
        let (r, z) = (sig(p[0] + q[0]), sig(p[1] + q[1]));
        let n = (p[2] + r * q[2]).tanh();
        (1.0 - z) * n + z * h_prev
    }

    const P: [f64; 3] = [0.3, -0.6, 0.5];
    const Q: [f64; 3] = [-0.2, 0.4, 0.9];
    const H_PREV: f64 = 0.7;

    #[test]
    fn forward_row_by_hand() {
        let [mut r, mut z, mut n] = P.map(|x| [x as f32]);
        let [q_r, q_z, q_n] = Q.map(|x| [x as f32]);
        let (mut h, mut tape) = ([0.0f32], [0.0f32]);
        forward_row::<false>(
            &mut r,
            &mut z,
            &mut n,
            &q_r,
            &q_z,
            &q_n,
            &[H_PREV as f32],
            &mut h,
            &mut tape,
        );
        assert!((f64::from(h[0]) - unit(P, Q, H_PREV)).abs() < 1e-6);
        assert!((f64::from(r[0]) - sig(P[0] + Q[0])).abs() < 1e-6);
        assert_eq!(tape[0], Q[2] as f32, "q_n goes to the tape");
    }

    #[test]
    fn backward_row_matches_finite_differences() {
        // Loss: a h_t, so dh = a.
        let a = 0.8f64;
        let (r, z) = (sig(P[0] + Q[0]), sig(P[1] + Q[1]));
        let n = (P[2] + r * Q[2]).tanh();
        let acts = [r, z, n].map(|x| [x as f32]);
        let (mut dp, mut dq, mut dh_prev) = ([[0.0f32]; 3], [[0.0f32]; 3], [0.0f32]);
        let [dr, dz, dn] = &mut dp;
        let [dq_r, dq_z, dq_n] = &mut dq;
        backward_row(
            &acts[0],
            &acts[1],
            &acts[2],
            &[Q[2] as f32],
            &[H_PREV as f32],
            &[a as f32],
            dr,
            dz,
            dn,
            dq_r,
            dq_z,
            dq_n,
            &mut dh_prev,
        );
        let eps = 1e-6;
        let numeric = |f: &dyn Fn(f64) -> f64| (f(eps) - f(-eps)) / (2.0 * eps);
        for k in 0..3 {
            let by_p = numeric(&|e| {
                let mut p = P;
                p[k] += e;
                a * unit(p, Q, H_PREV)
            });
            assert!(
                (f64::from(dp[k][0]) - by_p).abs() < 1e-5,
                "dp[{k}] {} vs {by_p}",
                dp[k][0]
            );
            let by_q = numeric(&|e| {
                let mut q = Q;
                q[k] += e;
                a * unit(P, q, H_PREV)
            });
            assert!(
                (f64::from(dq[k][0]) - by_q).abs() < 1e-5,
                "dq[{k}] {} vs {by_q}",
                dq[k][0]
            );
        }
        // Only the direct part: h_{t-1} also reaches q through W_h, which the caller adds.
        let direct = numeric(&|e| a * unit(P, Q, H_PREV + e));
        assert!(
            (f64::from(dh_prev[0]) - direct).abs() < 1e-5,
            "dh_prev {} vs {direct}",
            dh_prev[0]
        );
    }
}
