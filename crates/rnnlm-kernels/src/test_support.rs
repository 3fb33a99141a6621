//! What the kernels' unit tests share: every cell kind, reproducible values, the instruction
//! sets this CPU runs.

use crate::cell::Clip;
use crate::{Activation, CellKind, Isa};

/// Every recurrence the kernels implement (the LSTM with and without a clip of its cell).
pub(crate) const KINDS: [CellKind; 6] = [
    CellKind::Rnn(Activation::Tanh),
    CellKind::Rnn(Activation::Relu),
    CellKind::Lstm(Clip::NONE),
    // 0.25: the tests' cells reach it, so some entries are clamped and some not.
    CellKind::Lstm(Clip(0x3e80_0000)),
    CellKind::Gru,
    CellKind::GruD2l,
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
