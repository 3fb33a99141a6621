//! The arithmetic under the host engines: a matrix product with a packed right-hand side,
//! vectorisable activations, and a fixed split of work over threads.
//!
//! Every result is independent of how many threads run and of which instruction set is used
//! for the product's inner loop up to the rounding of fused multiply-adds: each output element
//! is one thread's sum over `k` in increasing order.

use std::ops::Range;

/// Columns per packed panel of the right-hand side: four AVX-512 registers.
pub(crate) const NR: usize = 64;
/// Rows of the output per micro-kernel call: with [`NR`], 24 sums in registers, each step of
/// `k` loading 4 vectors of `B` and broadcasting 6 values of `A` for 24 multiply-adds.
const MR: usize = 6;
/// Steps of `k` per pass over the panels: a panel's block (`KC · NR` floats, 32 KB) stays in
/// the L1 cache while every row tile of `A` passes over it.
const KC: usize = 128;

/// A right-hand side `B` `[k, n]` packed in column panels of [`NR`]: panel `p` holds columns
/// `p·NR .. p·NR + NR` as `[k][NR]`, contiguous and zero-padded past `n`. Every row block of `A`
/// then streams one panel through the cache front to back.
#[derive(Clone, Debug, Default)]
pub(crate) struct PackedB {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl PackedB {
    /// `b` `[k, n]`, row-major with row stride `ldb`.
    pub fn new(b: &[f32], k: usize, n: usize, ldb: usize) -> Self {
        let mut packed = Self::zeroed(k, n);
        assert!(
            k == 0 || b.len() >= (k - 1) * ldb + n,
            "PackedB::new: b too short"
        );
        // Row by row of `b`, so the source is read front to back (each panel is written as a
        // stream of its own).
        let panels = packed.panels();
        for kk in 0..k {
            let row = &b[kk * ldb..kk * ldb + n];
            for p in 0..panels {
                let (j0, width) = (p * NR, NR.min(n - p * NR));
                let at = (p * k + kk) * NR;
                packed.data[at..at + width].copy_from_slice(&row[j0..j0 + width]);
            }
        }
        packed
    }

    /// `bᵀ` for `b` `[n, k]`, row-major with row stride `ldb`: `B[kk][j] = b[j][kk]`.
    pub fn transposed(b: &[f32], n: usize, k: usize, ldb: usize) -> Self {
        let mut packed = Self::zeroed(k, n);
        assert!(
            n == 0 || b.len() >= (n - 1) * ldb + k,
            "PackedB::transposed: b too short"
        );
        for p in 0..packed.panels() {
            let (j0, width) = (p * NR, NR.min(n - p * NR));
            let panel = packed.panel_mut(p);
            for j in 0..width {
                let row = &b[(j0 + j) * ldb..(j0 + j) * ldb + k];
                for (kk, &value) in row.iter().enumerate() {
                    panel[kk * NR + j] = value;
                }
            }
        }
        packed
    }

    fn zeroed(k: usize, n: usize) -> Self {
        Self {
            k,
            n,
            data: vec![0.0; n.div_ceil(NR) * k * NR],
        }
    }

    /// Number of column panels.
    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * NR..(p + 1) * self.k * NR]
    }

    fn panel_mut(&mut self, p: usize) -> &mut [f32] {
        let k = self.k;
        &mut self.data[p * k * NR..(p + 1) * k * NR]
    }
}

/// A left-hand side `A` `[m, k]` packed in row tiles of [`MR`]: tile `t` holds rows
/// `t·MR .. t·MR + MR` as `[k][MR]`, contiguous and zero-padded past `m`. The micro-kernel then
/// reads the `MR` values it broadcasts at step `k` from one place, and a transposed source costs
/// no separate transpose.
#[derive(Clone, Debug, Default)]
pub(crate) struct PackedA {
    m: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedA {
    /// `a` `[m, k]`, row-major with row stride `lda`.
    pub fn new(a: &[f32], m: usize, k: usize, lda: usize) -> Self {
        assert!(
            m == 0 || (lda >= k && a.len() >= (m - 1) * lda + k),
            "PackedA::new: a too short"
        );
        let mut packed = Self::zeroed(m, k);
        for (t, tile) in packed.data.chunks_exact_mut(k * MR).enumerate() {
            for i in 0..MR.min(m - t * MR) {
                let row = &a[(t * MR + i) * lda..(t * MR + i) * lda + k];
                for (kk, &value) in row.iter().enumerate() {
                    tile[kk * MR + i] = value;
                }
            }
        }
        packed
    }

    fn zeroed(m: usize, k: usize) -> Self {
        Self {
            m,
            k,
            data: vec![0.0; m.div_ceil(MR) * k * MR],
        }
    }

    fn tile(&self, t: usize) -> &[f32] {
        &self.data[t * self.k * MR..(t + 1) * self.k * MR]
    }
}

/// `C[m, n] += A[m, k] · B` for `A` row-major with row stride `lda` (packed here), `C` with row
/// stride `ldc`.
///
/// # Panics
/// If a slice is too short for the shapes.
pub(crate) fn gemm(
    isa: Isa,
    c: &mut [f32],
    ldc: usize,
    a: &[f32],
    lda: usize,
    m: usize,
    b: &PackedB,
) {
    gemm_packed(isa, c, ldc, &PackedA::new(a, m, b.k, lda), b);
}

/// `C[m, n] += A · B` for a packed `A`.
///
/// # Panics
/// If the inner dimensions differ or `c` is too short.
pub(crate) fn gemm_packed(isa: Isa, c: &mut [f32], ldc: usize, a: &PackedA, b: &PackedB) {
    assert_eq!(a.k, b.k, "gemm: inner dimensions differ");
    if a.m == 0 {
        return;
    }
    assert!(
        ldc >= b.n && c.len() >= (a.m - 1) * ldc + b.n,
        "gemm: C holds {} values, expected [{}, {}] with row stride {ldc}",
        c.len(),
        a.m,
        b.n
    );
    // SAFETY: the extent of C was checked just above.
    unsafe { gemm_raw(isa, c.as_mut_ptr(), ldc, a, b) }
}

/// [`gemm_packed`] on a raw `C`, for threads that each write their own rows of one buffer.
///
/// # Safety
/// `c` must be valid for reads and writes of `[a.m(), b.n()]` with row stride `ldc >= b.n()`,
/// and no other thread may touch those elements meanwhile; `a.k() == b.k()`.
pub(crate) unsafe fn gemm_raw(isa: Isa, c: *mut f32, ldc: usize, a: &PackedA, b: &PackedB) {
    debug_assert_eq!(a.k, b.k);
    // SAFETY (every arm): `isa` is what this CPU runs (see `run`); the caller vouches for C.
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::gemm(c, ldc, a, b) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { portable::gemm_avx2(c, ldc, a, b) },
        _ => unsafe { portable::gemm::<false>(c, ldc, a, b) },
    }
}

/// A matrix operand of [`gemm_large`] by its strides: element `(i, j)` is
/// `data[i · row_stride + j · column_stride]`, so a transpose is a view, not a copy.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub column_stride: usize,
}

impl<'a> View<'a> {
    /// `data` `[rows, cols]`, row-major.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row_stride: cols,
            column_stride: 1,
        }
    }

    /// The transpose of `data` `[rows, cols]` (row-major): a `[cols, rows]` view.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row_stride: 1,
            column_stride: cols,
        }
    }

    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * self.row_stride + (cols - 1) * self.column_stride;
            assert!(
                last < self.data.len(),
                "gemm_large: {what} too short for [{rows}, {cols}]"
            );
        }
    }
}

/// `C[m, n] += A[m, k] · B[k, n]` for large operands (a weight gradient over all steps, a
/// projection of all steps): the `gemm` crate, on `threads` threads (its AVX-512 kernels where
/// the CPU has them). `C` is row-major with row stride `ldc`.
///
/// Each element of C is summed by one thread, so the result does not depend on `threads`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_large(
    c: &mut [f32],
    ldc: usize,
    m: usize,
    n: usize,
    k: usize,
    a: View<'_>,
    b: View<'_>,
    threads: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(
        ldc >= n && c.len() >= (m - 1) * ldc + n,
        "gemm_large: C too short for [{m}, {n}]"
    );
    a.check(m, k, "A");
    b.check(k, n, "B");
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every element the strides reach lies inside its slice (checked above), and C is
    // borrowed mutably, so nothing else reads or writes it meanwhile.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            true,
            a.data.as_ptr(),
            a.column_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.column_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The product in plain Rust, which the compiler vectorises: with AVX2 + FMA where the CPU has
/// them (`FMA`), with the target's baseline otherwise.
mod portable {
    use super::{KC, MR, NR, PackedA, PackedB};

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemm_avx2(c: *mut f32, ldc: usize, a: &PackedA, b: &PackedB) {
        // SAFETY: forwarded from the caller.
        unsafe { gemm::<true>(c, ldc, a, b) }
    }

    #[inline(always)]
    pub(super) unsafe fn gemm<const FMA: bool>(c: *mut f32, ldc: usize, a: &PackedA, b: &PackedB) {
        // The same blocks of `k` as the AVX-512 kernel, so both add in the same order.
        for k0 in (0..b.k).step_by(KC) {
            let k = KC.min(b.k - k0);
            for p in 0..b.panels() {
                let panel = &b.panel(p)[k0 * NR..(k0 + k) * NR];
                let j0 = p * NR;
                let width = NR.min(b.n - j0);
                for t in 0..a.m.div_ceil(MR) {
                    let rows = MR.min(a.m - t * MR);
                    let tile = &a.tile(t)[k0 * MR..(k0 + k) * MR];
                    let mut acc = [[0.0f32; NR]; MR];
                    for (brow, arow) in panel.chunks_exact(NR).zip(tile.chunks_exact(MR)) {
                        for (acc_row, &av) in acc.iter_mut().zip(arow) {
                            for (acc, &bv) in acc_row.iter_mut().zip(brow) {
                                *acc = super::madd::<FMA>(av, bv, *acc);
                            }
                        }
                    }
                    for (i, acc_row) in acc.iter().enumerate().take(rows) {
                        for (j, &v) in acc_row.iter().enumerate().take(width) {
                            // SAFETY: row t·MR + i < m and column j0 + j < n, as the caller
                            // vouches.
                            unsafe { *c.add((t * MR + i) * ldc + j0 + j) += v };
                        }
                    }
                }
            }
        }
    }
}

/// The product with AVX-512: a micro-kernel of up to 8 rows by 32 columns whose 16 sums stay in
/// registers over the whole `k` loop, broadcasting one element of `A` per row and step.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{KC, MR, NR, PackedA, PackedB};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm(c: *mut f32, ldc: usize, a: &PackedA, b: &PackedB) {
        for k0 in (0..b.k).step_by(KC) {
            // SAFETY: forwarded from the caller; the block lies inside `0..b.k`.
            unsafe { gemm_block(c, ldc, a, b, k0, KC.min(b.k - k0)) };
        }
    }

    /// The steps `k0 .. k0 + k` of the product, added into C.
    #[target_feature(enable = "avx512f")]
    unsafe fn gemm_block(c: *mut f32, ldc: usize, a: &PackedA, b: &PackedB, k0: usize, k: usize) {
        for p in 0..b.panels() {
            // SAFETY: row k0 of the panel exists.
            let panel = unsafe { b.panel(p).as_ptr().add(k0 * NR) };
            let j0 = p * NR;
            let width = NR.min(b.n - j0);
            // Masks for the output columns that exist, 16 per register: the panel is
            // zero-padded, C is not.
            let masks: [__mmask16; 4] = std::array::from_fn(|v| {
                let live = width.saturating_sub(16 * v).min(16);
                if live == 16 {
                    u16::MAX
                } else {
                    (1u16 << live) - 1
                }
            });
            for t in 0..a.m.div_ceil(MR) {
                let rows = MR.min(a.m - t * MR);
                // SAFETY: step k0 of the tile exists.
                let tile = unsafe { a.tile(t).as_ptr().add(k0 * MR) };
                // SAFETY: row t·MR < m; the caller vouches for the extent of C.
                let cp = unsafe { c.add(t * MR * ldc + j0) };
                // SAFETY (each arm): the tile holds k steps of MR values, the panel k of NR, and
                // C `rows` rows from `cp`.
                unsafe {
                    match rows {
                        6 => kernel::<6>(k, tile, panel, cp, ldc, masks),
                        5 => kernel::<5>(k, tile, panel, cp, ldc, masks),
                        4 => kernel::<4>(k, tile, panel, cp, ldc, masks),
                        3 => kernel::<3>(k, tile, panel, cp, ldc, masks),
                        2 => kernel::<2>(k, tile, panel, cp, ldc, masks),
                        _ => kernel::<1>(k, tile, panel, cp, ldc, masks),
                    }
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel<const R: usize>(
        k: usize,
        tile: *const f32,
        panel: *const f32,
        c: *mut f32,
        ldc: usize,
        masks: [__mmask16; 4],
    ) {
        let mut sums = [[_mm512_setzero_ps(); 4]; R];
        for kk in 0..k {
            // SAFETY: the panel holds k rows of NR, the tile k rows of MR >= R.
            unsafe {
                let row = panel.add(kk * NR);
                let b = [
                    _mm512_loadu_ps(row),
                    _mm512_loadu_ps(row.add(16)),
                    _mm512_loadu_ps(row.add(32)),
                    _mm512_loadu_ps(row.add(48)),
                ];
                let a = tile.add(kk * MR);
                for (i, sum) in sums.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(i));
                    for (s, &bv) in sum.iter_mut().zip(&b) {
                        *s = _mm512_fmadd_ps(av, bv, *s);
                    }
                }
            }
        }
        for (i, sum) in sums.iter().enumerate() {
            for (v, (&s, &mask)) in sum.iter().zip(&masks).enumerate() {
                if mask == 0 {
                    break;
                }
                // SAFETY: the mask covers only the columns of C that exist.
                unsafe {
                    let at = c.add(i * ldc + 16 * v);
                    let old = _mm512_maskz_loadu_ps(mask, at);
                    _mm512_mask_storeu_ps(at, mask, _mm512_add_ps(old, s));
                }
            }
        }
    }
}

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

/// Runs `work(part)` for `parts` parts of the work on as many threads (the calling thread takes
/// part 0) and returns when all are done.
pub(crate) fn parallel(parts: usize, work: impl Fn(usize) + Sync) {
    if parts <= 1 {
        work(0);
        return;
    }
    std::thread::scope(|scope| {
        let work = &work;
        for part in 1..parts {
            scope.spawn(move || work(part));
        }
        work(0);
    });
}

/// Contiguous ranges splitting `0..len` into `parts` pieces whose lengths differ by at most
/// one, the longer first; piece `part` of them.
pub(crate) fn split(len: usize, parts: usize, part: usize) -> Range<usize> {
    let (base, extra) = (len / parts, len % parts);
    let start = part * base + part.min(extra);
    start..start + base + usize::from(part < extra)
}

/// A `*mut f32` that threads may share, each writing elements no other thread touches.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub *mut f32);

// SAFETY: users write disjoint elements only (see each use), and `parallel` joins before the
// buffer is read as a whole again.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// `len` elements from `offset`.
    ///
    /// # Safety
    /// The range must lie inside the buffer and no other thread may use it meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, offset: usize, len: usize) -> &mut [f32] {
        // SAFETY: forwarded from the caller.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(offset), len) }
    }
}
