//! d2l's vanilla RNN: `h_t = φ(p_t + h_{t-1} W_h)` with φ = tanh or ReLU, `p_t` the input
//! projection with the bias.
//!
//! Tape: nothing besides `h_t`, from which φ' follows (`1 - h²` for tanh, `h > 0` for ReLU).
//! With a clip, `h_t` is clamped to `[-clip, clip]`, and no gradient passes where the clamp held
//! it (where the tape's `h_t` sits on the bound, φ' read off it does not matter).

use super::{
    Activation, BackwardStep, Cell, ForwardStep, HiddenWeights, Scratch, clamp_hidden, clipped_dh,
};
use crate::gemm::gemm;
use crate::math::{Isa, tanh};

/// The vanilla RNN with its non-linearity and the bound of its state (`f32::INFINITY`: none).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rnn {
    /// φ.
    pub activation: Activation,
    /// `h_t` is clamped to `[-clip, clip]`.
    pub clip: f32,
}

impl Cell for Rnn {
    const GATES: usize = 1;
    const HAS_EXTRA: bool = false;
    const KEEPS_GATES: bool = false;

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
        gemm(
            isa,
            step.gates,
            n,
            step.h_prev,
            weights.inputs,
            rows,
            &weights.main,
        );
        forward_row::<FMA>(
            self.activation,
            &step.gates[..rows * n],
            &mut step.h[..rows * n],
        );
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
        let dp = &mut step.dp[..rows * n];
        let mut masked = scratch.take_masked();
        let h = &step.h[..rows * n];
        let dh = clipped_dh(&step.dh[..rows * n], h, self.clip, &mut masked);
        backward_row(self.activation, h, dh, dp);
        scratch.restore_masked(masked);
        if let Some(dh_prev) = step.dh_prev {
            dh_prev.fill(0.0);
            gemm(isa, dh_prev, n, dp, n, rows, &transposed.main);
        }
    }
}

/// `h = φ(z)` over a block of rows (φ chosen outside the loop, so each loop vectorises).
#[inline(always)]
pub(crate) fn forward_row<const FMA: bool>(activation: Activation, z: &[f32], h: &mut [f32]) {
    match activation {
        Activation::Tanh => {
            for (h, &z) in h.iter_mut().zip(z) {
                *h = tanh::<FMA>(z);
            }
        }
        Activation::Relu => {
            for (h, &z) in h.iter_mut().zip(z) {
                *h = z.max(0.0);
            }
        }
    }
}

/// `dz = dh ⊙ φ'(z)`, with φ' read off `h = φ(z)`.
#[inline(always)]
pub(crate) fn backward_row(activation: Activation, h: &[f32], dh: &[f32], dz: &mut [f32]) {
    match activation {
        Activation::Tanh => {
            for ((dz, &g), &h) in dz.iter_mut().zip(dh).zip(h) {
                *dz = g * (1.0 - h * h);
            }
        }
        Activation::Relu => {
            for ((dz, &g), &h) in dz.iter_mut().zip(dh).zip(h) {
                *dz = if h > 0.0 { g } else { 0.0 };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_by_hand() {
        let z = [0.5f32, -2.0, 0.0];
        let mut h = [0.0f32; 3];
        forward_row::<false>(Activation::Tanh, &z, &mut h);
        for (h, z) in h.iter().zip(z) {
            assert!((h - z.tanh()).abs() < 1e-6);
        }
        let mut dz = [0.0f32; 3];
        backward_row(Activation::Tanh, &h, &[1.0, 2.0, 3.0], &mut dz);
        let expected = [
            1.0 - 0.5f32.tanh().powi(2),
            2.0 * (1.0 - 2.0f32.tanh().powi(2)),
            3.0,
        ];
        for (d, e) in dz.iter().zip(expected) {
            assert!((d - e).abs() < 1e-6, "{d} {e}");
        }
        forward_row::<false>(Activation::Relu, &z, &mut h);
        assert_eq!(h, [0.5, 0.0, 0.0]);
        backward_row(Activation::Relu, &h, &[1.0, 2.0, 3.0], &mut dz);
        assert_eq!(dz, [1.0, 0.0, 0.0]);
    }
}
