//! The element-wise arithmetic of the cells (a vectorisable `exp`, the sigmoid and tanh built on
//! it, fused multiply-adds where they exist) and the choice of instruction set the loops are
//! compiled for.

/// `a * x + y`, fused where the instruction exists (a separate rounding otherwise, since a
/// software fma would cost more than the rest of the loop).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, x: f32, y: f32) -> f32 {
    if FMA { a.mul_add(x, y) } else { a * x + y }
}

/// `e^x`, branch-free so loops over it vectorise (Cephes' `expf`: a degree-5 polynomial on
/// `x - n ln 2`, then `2^n` from the exponent bits); within 2 ulp of libm on `[-87, 88]`, the
/// ends of that range outside it, and NaN for NaN.
#[inline(always)]
pub(crate) fn exp<const FMA: bool>(x: f32) -> f32 {
    // `max` and `min` drop a NaN (`clamp` would keep it), so `n` below is always finite; the
    // NaN is put back at the end.
    #[allow(clippy::manual_clamp)]
    let clamped = x.max(-87.0).min(88.0);
    let n = (clamped * std::f32::consts::LOG2_E + 0.5).floor();
    // ln 2 in two parts, the first exact in f32 (355 / 512), so `x - n ln 2` loses nothing.
    #[allow(clippy::excessive_precision)]
    let r = madd::<FMA>(n, -0.693_359_375, clamped);
    let r = madd::<FMA>(n, 2.121_944_4e-4, r);
    let mut p = 1.987_569_1e-4;
    p = madd::<FMA>(p, r, 1.398_199_9e-3);
    p = madd::<FMA>(p, r, 8.333_452e-3);
    p = madd::<FMA>(p, r, 4.166_579_6e-2);
    p = madd::<FMA>(p, r, 0.166_666_65);
    p = madd::<FMA>(p, r, 0.5);
    let y = madd::<FMA>(p, r * r, r) + 1.0;
    // SAFETY: `n` is a whole number in [-126, 127] (from the clamp above), so it converts
    // exactly. The unchecked conversion, unlike `as`, has no saturating branches and vectorises.
    let n = unsafe { n.to_int_unchecked::<i32>() };
    let y = y * f32::from_bits(((n + 127) as u32) << 23);
    if x.is_nan() { x } else { y }
}

#[inline(always)]
pub(crate) fn sigmoid<const FMA: bool>(x: f32) -> f32 {
    1.0 / (1.0 + exp::<FMA>(-x))
}

#[inline(always)]
pub(crate) fn tanh<const FMA: bool>(x: f32) -> f32 {
    // 1 - 2 / (e^{2|x|} + 1), with the sign put back: no overflow for large |x|.
    let t = 1.0 - 2.0 / (exp::<FMA>(2.0 * x.abs()) + 1.0);
    t.copysign(x)
}

/// Which instructions the engines' loops are compiled for, chosen once per call from what the
/// CPU has ([`Isa::detect`]); tests pick a lesser set to cover the paths other CPUs take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 with AVX-512 (F, VL, BW, DQ), AVX2 and FMA.
    Avx512,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// The target's baseline.
    Baseline,
}

impl Isa {
    /// The best this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma");
            if avx2 && has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq") {
                return Isa::Avx512;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Baseline
    }

    /// Whether this CPU runs `self` (the baseline always).
    pub fn supported(self) -> bool {
        matches!(
            (self, Isa::detect()),
            (Isa::Baseline, _) | (_, Isa::Avx512) | (Isa::Avx2, Isa::Avx2)
        )
    }
}

/// A loop nest to compile for each [`Isa`]: `run::<true>` is entered only where fused
/// multiply-adds exist, inside a function compiled for the instruction set, so that the
/// element-wise loops (activations, gate arithmetic) vectorise for it.
pub(crate) trait Kernel {
    /// The work, with `FMA` telling whether to fuse multiply-adds. Implementations must be
    /// `#[inline(always)]`, so they are compiled inside [`run`]'s per-instruction-set functions.
    fn run<const FMA: bool>(self);
}

/// Runs `kernel` compiled for `isa`, which must be what [`Isa::detect`] returned (or a lesser
/// set: the baseline is always valid).
pub(crate) fn run<K: Kernel>(isa: Isa, kernel: K) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` found these features on this CPU.
        Isa::Avx512 => unsafe { run_avx512(kernel) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { run_avx2(kernel) },
        _ => kernel.run::<false>(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn run_avx512<K: Kernel>(kernel: K) {
    kernel.run::<true>();
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(kernel: K) {
    kernel.run::<true>();
}
