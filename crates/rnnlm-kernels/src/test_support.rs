//! What the kernels' unit tests share: every cell kind, reproducible values, the instruction
//! sets this CPU runs.

use crate::cell::Clip;
use crate::{Activation, CellKind, Isa};

/// 0.25: the tests' states reach it, so some entries are clamped and some not.
const QUARTER: Clip = Clip(0x3e80_0000);

/// Every recurrence the kernels implement, each with and without a clip of its state (the
/// ReLU RNN's clip is left out: its kink and the clamp's together leave finite differences
/// nothing smooth to check; its forward clamp is the tanh RNN's).
pub(crate) const KINDS: [CellKind; 9] = [
    CellKind::Rnn(Activation::Tanh, Clip::NONE),
    CellKind::Rnn(Activation::Tanh, QUARTER),
    CellKind::Rnn(Activation::Relu, Clip::NONE),
    CellKind::Lstm(Clip::NONE),
    CellKind::Lstm(QUARTER),
    CellKind::Gru(Clip::NONE),
    CellKind::Gru(QUARTER),
    CellKind::GruD2l(Clip::NONE),
    CellKind::GruD2l(QUARTER),
];

/// Reproducible values in `[-scale, scale)` (xorshift).
pub(crate) fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Every instruction set this CPU runs, best first: the paths this CPU and lesser ones take.
pub(crate) fn isas() -> Vec<Isa> {
    [Isa::Avx512, Isa::Avx2, Isa::Baseline]
        .into_iter()
        .filter(|isa| isa.supported())
        .collect()
}
