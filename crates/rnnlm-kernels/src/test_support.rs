//! What the kernels' unit tests share: reproducible values and the instruction sets this CPU
//! runs (every cell kind is [`crate::cell::KINDS`], beside the cells).

use crate::Isa;

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
