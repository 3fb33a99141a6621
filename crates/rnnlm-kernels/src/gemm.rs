//! Matrix products: the per-step product of a time loop (a few dozen rows of the state times a
//! layer's packed `[hidden, gates·hidden]` weight, AVX-512 and AVX2 micro-kernels of our own)
//! and the large products over all steps (the `gemm` crate, in pieces shared over the threads).
//!
//! Every result is independent of how many threads run: each output element is one thread's
//! sum over `k` in increasing order. Between instruction sets it differs only by the rounding
//! of fused multiply-adds.

use crate::math::{Isa, madd};
use crate::shared::{SharedMut, parallel, split};

/// Columns per packed panel of the right-hand side: four AVX-512 registers.
pub(crate) const NR: usize = 64;
/// Rows of the output per micro-kernel call: with [`NR`], 24 sums in registers, each step of
/// `k` loading 4 vectors of `B` and broadcasting 6 values of `A` for 24 multiply-adds.
pub(crate) const MR: usize = 6;
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
        Self::new_on(b, k, n, ldb, 1)
    }

    /// [`PackedB::new`] with the panels shared out over `threads` threads.
    pub fn new_on(b: &[f32], k: usize, n: usize, ldb: usize, threads: usize) -> Self {
        assert!(
            k == 0 || b.len() >= (k - 1) * ldb + n,
            "PackedB::new: b too short"
        );
        Self::filled(k, n, threads, |j0, width, panel| {
            for (kk, out) in panel.chunks_exact_mut(NR).enumerate() {
                out[..width].copy_from_slice(&b[kk * ldb + j0..kk * ldb + j0 + width]);
            }
        })
    }

    /// `bᵀ` for `b` `[n, k]`, row-major with row stride `ldb`: `B[kk][j] = b[j][kk]`; the
    /// panels shared out over `threads` threads (a 512 x 512 weight took 0.4 ms on one).
    pub fn transposed_on(b: &[f32], n: usize, k: usize, ldb: usize, threads: usize) -> Self {
        assert!(
            n == 0 || b.len() >= (n - 1) * ldb + k,
            "PackedB::transposed: b too short"
        );
        // Step by step of `k`, so the panel is written front to back while the reads touch one
        // cache line in each of `NR` rows of `b`, which stay in L1 for 16 steps (column by
        // column instead, every write missed: a panel is larger than L1).
        Self::filled(k, n, threads, |j0, width, panel| {
            for (kk, out) in panel.chunks_exact_mut(NR).enumerate() {
                for (j, value) in out[..width].iter_mut().enumerate() {
                    *value = b[(j0 + j) * ldb + kk];
                }
            }
        })
    }

    /// Panels of `[k, n]` filled by `fill(first column, live columns, panel)`, on `threads`
    /// threads; the padding past `n` is zero.
    pub(crate) fn filled(
        k: usize,
        n: usize,
        threads: usize,
        fill: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) -> Self {
        let panels = n.div_ceil(NR);
        let mut data = vec![0.0; panels * k * NR];
        let out = SharedMut::new(&mut data);
        let parts = threads.clamp(1, panels.max(1));
        parallel(parts, |part| {
            for p in split(panels, parts, part) {
                // SAFETY: panel p is this thread's alone, inside `data`.
                let panel = unsafe { out.slice(p * k * NR, k * NR) };
                fill(p * NR, NR.min(n - p * NR), panel);
            }
        });
        Self { k, n, data }
    }

    /// A `[k, 0]` operand: a product with it computes nothing (a cell's step whose product
    /// runs elsewhere).
    pub fn empty(k: usize) -> Self {
        Self {
            k,
            n: 0,
            data: Vec::new(),
        }
    }

    /// Columns of `B`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of column panels.
    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * NR..(p + 1) * self.k * NR]
    }
}

/// A left-hand side `A` `[m, k]`, row-major with row stride `lda`, read in place: the
/// micro-kernel broadcasts one element from each of its rows per step of `k`, and the rows of a
/// step's product (at most a few dozen) stay in the L1 cache, so packing them would only cost a
/// copy.
#[derive(Clone, Copy)]
struct Lhs<'a> {
    data: &'a [f32],
    m: usize,
    k: usize,
    lda: usize,
}

impl Lhs<'_> {
    /// Row `i`, from column `k0`.
    fn row(&self, i: usize, k0: usize) -> &[f32] {
        &self.data[i * self.lda + k0..i * self.lda + self.k]
    }
}

/// `C[m, n] += A[m, k] · B` for `A` row-major with row stride `lda`, `C` with row stride `ldc`.
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
    if m == 0 {
        return;
    }
    assert!(
        ldc >= b.n && c.len() >= (m - 1) * ldc + b.n,
        "gemm: C holds {} values, expected [{m}, {}] with row stride {ldc}",
        c.len(),
        b.n
    );
    // SAFETY: C's extent was checked above (`gemm_into` checks A's), and C is borrowed mutably.
    unsafe { gemm_into(isa, c.as_mut_ptr(), ldc, a, lda, m, b) }
}

/// [`gemm`] into C by pointer: for callers whose threads write disjoint rows of one strided C,
/// where a slice per thread would span the other threads' rows.
///
/// # Safety
/// `C` must hold `[m, b.n]` with row stride `ldc` from `c`, and no other thread may use those
/// elements meanwhile.
///
/// # Panics
/// If A is too short for `[m, b.k]` with row stride `lda`.
pub(crate) unsafe fn gemm_into(
    isa: Isa,
    c: *mut f32,
    ldc: usize,
    a: &[f32],
    lda: usize,
    m: usize,
    b: &PackedB,
) {
    if m == 0 {
        return;
    }
    let k = b.k;
    assert!(
        lda >= k && a.len() >= (m - 1) * lda + k,
        "gemm: A holds {} values, expected [{m}, {k}] with row stride {lda}",
        a.len()
    );
    assert!(
        ldc >= b.n,
        "gemm: C's row stride {ldc} is shorter than its {} columns",
        b.n
    );
    let a = Lhs { data: a, m, k, lda };
    // SAFETY (every arm): `isa` is what this CPU runs (see `run`); A's extent was checked
    // above, C's is the caller's promise.
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::gemm(c, ldc, a, b) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::gemm(c, ldc, a, b) },
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

    /// The same view from element `offset` of its data on: the operand that starts there.
    pub fn from(self, offset: usize) -> Self {
        Self {
            data: &self.data[offset..],
            ..self
        }
    }

    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * self.row_stride + (cols - 1) * self.column_stride;
            assert!(
                last < self.data.len(),
                "gemm: {what} too short for [{rows}, {cols}]"
            );
        }
    }
}

/// `C[m, n] += A[m, k] · B[k, n]` for large operands (a weight gradient over all steps, a
/// projection of all steps): the `gemm` crate (its AVX-512 kernels where the CPU has them) on
/// [`LARGE_PIECES`] pieces of C's longer side, spread over `threads` threads. `C` is row-major
/// with row stride `ldc`.
///
/// The pieces follow from the shapes alone and each is one single-threaded call, so the result
/// does not depend on `threads`. (The crate's own threading, through rayon, was slower on two
/// threads than on one for these shapes: it wakes its pool for every call and splits finer.)
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
    // Pieces of at least 64 along the longer side, a multiple of 16 (one AVX-512 register).
    let by_columns = n >= m;
    let long = if by_columns { n } else { m };
    let piece = long.div_ceil(LARGE_PIECES).next_multiple_of(16).max(64);
    let pieces = long.div_ceil(piece);
    let parts = threads.clamp(1, pieces);
    let out = SharedMut::new(c);
    parallel(parts, |part| {
        for p in split(pieces, parts, part) {
            let (start, len) = (p * piece, piece.min(long - p * piece));
            let (rows, cols, c_at, a_at, b_at) = if by_columns {
                (m, len, start, 0, start * b.column_stride)
            } else {
                (len, n, start * ldc, start * a.row_stride, 0)
            };
            // `block_ptr` checks that the piece's last element lies in C.
            let piece_c = out.block_ptr(c_at, (rows - 1) * ldc + cols);
            // SAFETY: each piece of C is written by this thread alone, and C is borrowed
            // mutably for the whole call.
            unsafe {
                gemm_single(piece_c, ldc, [rows, cols, k], a.from(a_at), b.from(b_at));
            }
        }
    });
}

/// [`gemm_large`]'s piece: `C[m, n] += A[m, k] · B[k, n]` in one single-threaded call of the
/// `gemm` crate. `C` is row-major with row stride `ldc`.
///
/// # Safety
/// `C`'s extent must lie inside its buffer and nothing else may use those elements meanwhile.
///
/// # Panics
/// If a view is too short for its shape.
pub(crate) unsafe fn gemm_single(
    c: *mut f32,
    ldc: usize,
    [m, n, k]: [usize; 3],
    a: View<'_>,
    b: View<'_>,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    a.check(m, k, "A");
    b.check(k, n, "B");
    // SAFETY: the views hold their extents (checked); C's is the caller's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
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
            gemm::Parallelism::None,
        );
    }
}

/// Inner dimensions up to this take [`gemm_short_k`] instead of the `gemm` crate: a weight
/// gradient over the few rows of a small batch (35 for batch 1) is a pass over a C of
/// `hidden x gates·hidden` with little arithmetic per element, which the crate ran at 7 GFLOP/s
/// for an LSTM 2048 (measured), well under memory speed.
pub(crate) const SHORT_K: usize = 256;

/// `C[m, n] += A · B[k, n]` for a short `k` (at most [`SHORT_K`] makes sense), `A` given
/// transposed and row-major, `a_t` `[k, m]`, as a weight gradient's `Σ_r x_rᵀ g_r` has it: `A`
/// is laid out row-major once (a copy of `k · m` values), `B` packed once, and the rows of C
/// shared out over the threads in whole tiles, each one pass of the time loop's micro-kernel
/// over its rows of C.
///
/// # Panics
/// If a slice is too short for the shapes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_short_k(
    isa: Isa,
    c: &mut [f32],
    ldc: usize,
    [m, n, k]: [usize; 3],
    a_t: &[f32],
    b: View<'_>,
    threads: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(
        a_t.len() >= k * m,
        "gemm_short_k: Aᵀ holds {} values, expected [{k}, {m}]",
        a_t.len()
    );
    assert!(
        ldc >= n && c.len() >= (m - 1) * ldc + n,
        "gemm_short_k: C too short for [{m}, {n}]"
    );
    b.check(k, n, "B");
    // A row-major, written column by column of Aᵀ's rows (each read once, in order).
    let mut a = vec![0.0f32; m * k];
    for (kk, row) in a_t.chunks_exact(m).take(k).enumerate() {
        for (i, &value) in row.iter().enumerate() {
            a[i * k + kk] = value;
        }
    }
    let packed = PackedB::filled(k, n, threads, |j0, width, panel| {
        for (kk, out) in panel.chunks_exact_mut(NR).enumerate() {
            for (j, value) in out[..width].iter_mut().enumerate() {
                *value = b.data[kk * b.row_stride + (j0 + j) * b.column_stride];
            }
        }
    });
    let tiles = m.div_ceil(MR);
    let parts = threads.clamp(1, tiles);
    let out = SharedMut::new(c);
    parallel(parts, |part| {
        let share = split(tiles, parts, part);
        let (start, end) = (share.start * MR, (share.end * MR).min(m));
        if start >= end {
            return;
        }
        let piece = out.block_ptr(start * ldc, (end - start - 1) * ldc + n);
        // SAFETY: each part's rows of C are its own, inside C (checked by `block_ptr`), and
        // C is borrowed mutably for the whole call.
        unsafe { gemm_into(isa, piece, ldc, &a[start * k..], k, end - start, &packed) };
    });
}

/// How many pieces [`gemm_large`] cuts C into: as many as threads are likely (1, 2 or 4 share
/// them out evenly) and few enough that packing the uncut operand once per piece stays cheap.
const LARGE_PIECES: usize = 4;

/// The product in plain Rust, for CPUs without AVX2 (and, with `FMA`, the reference the tests
/// hold the micro-kernels to). Compiled for AVX2 it is no substitute for [`avx2`]: its sums
/// live on the stack, each multiply-add a load and a store (a Zen 3's time loops ran 2.6x
/// slower).
mod portable {
    use super::{KC, Lhs, MR, NR, PackedB, madd};

    #[inline(always)]
    pub(super) unsafe fn gemm<const FMA: bool>(c: *mut f32, ldc: usize, a: Lhs<'_>, b: &PackedB) {
        // The same blocks of `k` as the AVX-512 kernel, so both add in the same order.
        for k0 in (0..b.k).step_by(KC) {
            let k = KC.min(b.k - k0);
            for p in 0..b.panels() {
                let panel = &b.panel(p)[k0 * NR..(k0 + k) * NR];
                let j0 = p * NR;
                let width = NR.min(b.n - j0);
                for t in 0..a.m.div_ceil(MR) {
                    let rows = MR.min(a.m - t * MR);
                    let mut acc = [[0.0f32; NR]; MR];
                    for (i, acc_row) in acc.iter_mut().enumerate().take(rows) {
                        let a_row = &a.row(t * MR + i, k0)[..k];
                        for (brow, &av) in panel.chunks_exact(NR).zip(a_row) {
                            for (acc, &bv) in acc_row.iter_mut().zip(brow) {
                                *acc = madd::<FMA>(av, bv, *acc);
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

/// The product with AVX2 and FMA: as [`avx512`], but with 16 registers a micro-kernel of up to
/// [`MR`] rows by 16 columns (12 sums in registers, 2 vectors of `B` and one broadcast of `A`
/// live beside them), run over the four 16-column quarters of each panel in turn. A quarter's
/// block (`KC` rows of one 64-byte line) stays in L1 while every row tile passes over it.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{KC, Lhs, MR, NR, PackedB};
    use std::arch::x86_64::*;

    /// Columns per micro-kernel call: two AVX2 registers.
    const QR: usize = 16;

    /// As [`super::avx512`]'s: how far ahead the first row tile asks for the panel's rows.
    const PREFETCH_STEPS: usize = 16;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemm(c: *mut f32, ldc: usize, a: Lhs<'_>, b: &PackedB) {
        for k0 in (0..b.k).step_by(KC) {
            // SAFETY: forwarded from the caller; the block lies inside `0..b.k`.
            unsafe { gemm_block(c, ldc, a, b, k0, KC.min(b.k - k0)) };
        }
    }

    /// The steps `k0 .. k0 + k` of the product, added into C.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gemm_block(c: *mut f32, ldc: usize, a: Lhs<'_>, b: &PackedB, k0: usize, k: usize) {
        for p in 0..b.panels() {
            let j0 = p * NR;
            let width = NR.min(b.n - j0);
            for q in 0..width.div_ceil(QR) {
                // SAFETY: row k0 of the panel exists; the quarter lies inside its row.
                let panel = unsafe { b.panel(p).as_ptr().add(k0 * NR + q * QR) };
                let live = (width - q * QR).min(QR);
                for t in 0..a.m.div_ceil(MR) {
                    let rows = MR.min(a.m - t * MR);
                    // SAFETY: the caller checked that A holds [m, b.k] with row stride lda.
                    let (tile, lda) = (unsafe { a.data.as_ptr().add(t * MR * a.lda + k0) }, a.lda);
                    // SAFETY: row t·MR < m and column j0 + q·QR < n; the caller vouches for
                    // the extent of C.
                    let cp = unsafe { c.add(t * MR * ldc + j0 + q * QR) };
                    // SAFETY: A holds `rows` rows of k steps from `tile`, the panel k rows of
                    // NR from `panel`, and C `rows` rows of `live` columns from `cp`.
                    unsafe {
                        if t == 0 {
                            tile_kernel::<true>(rows, k, tile, lda, panel, cp, ldc, live)
                        } else {
                            tile_kernel::<false>(rows, k, tile, lda, panel, cp, ldc, live)
                        }
                    }
                }
            }
        }
    }

    /// [`kernel`] for a tile of `rows` (1 to [`MR`]) rows.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_kernel<const PREFETCH: bool>(
        rows: usize,
        k: usize,
        tile: *const f32,
        lda: usize,
        panel: *const f32,
        c: *mut f32,
        ldc: usize,
        live: usize,
    ) {
        // SAFETY (each arm): forwarded from the caller.
        unsafe {
            match rows {
                6 => kernel::<6, PREFETCH>(k, tile, lda, panel, c, ldc, live),
                5 => kernel::<5, PREFETCH>(k, tile, lda, panel, c, ldc, live),
                4 => kernel::<4, PREFETCH>(k, tile, lda, panel, c, ldc, live),
                3 => kernel::<3, PREFETCH>(k, tile, lda, panel, c, ldc, live),
                2 => kernel::<2, PREFETCH>(k, tile, lda, panel, c, ldc, live),
                _ => kernel::<1, PREFETCH>(k, tile, lda, panel, c, ldc, live),
            }
        }
    }

    /// The mask of the first `live` (0 to 8) lanes of a register.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn lanes(live: usize) -> __m256i {
        const ALL: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
        let from = 8 - live.min(8);
        // SAFETY: `from + 8 <= 16`.
        unsafe { _mm256_loadu_si256(ALL.as_ptr().add(from).cast()) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel<const R: usize, const PREFETCH: bool>(
        k: usize,
        tile: *const f32,
        lda: usize,
        panel: *const f32,
        c: *mut f32,
        ldc: usize,
        live: usize,
    ) {
        let mut sums = [[_mm256_setzero_ps(); 2]; R];
        for kk in 0..k {
            // SAFETY: the panel holds k rows of NR from `panel`'s row; A, R rows of k from
            // `tile` with stride lda.
            unsafe {
                let row = panel.add(kk * NR);
                if PREFETCH {
                    _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(PREFETCH_STEPS * NR).cast());
                }
                let b = [_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8))];
                for (i, sum) in sums.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*tile.add(i * lda + kk));
                    for (s, &bv) in sum.iter_mut().zip(&b) {
                        *s = _mm256_fmadd_ps(av, bv, *s);
                    }
                }
            }
        }
        let masks = [lanes(live), lanes(live.saturating_sub(8))];
        for (i, sum) in sums.iter().enumerate() {
            for (v, (&s, &mask)) in sum.iter().zip(&masks).enumerate() {
                if live <= 8 * v {
                    break;
                }
                // SAFETY: the mask covers only the columns of C that exist.
                unsafe {
                    let at = c.add(i * ldc + 8 * v);
                    let old = _mm256_maskload_ps(at, mask);
                    _mm256_maskstore_ps(at, mask, _mm256_add_ps(old, s));
                }
            }
        }
    }
}

/// The product with AVX-512: a micro-kernel of up to [`MR`] rows by [`NR`] columns whose 24
/// sums stay in registers over a block of `k`, broadcasting one element of `A` per row and step.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{KC, Lhs, MR, NR, PackedB};
    use std::arch::x86_64::*;

    /// How many steps of `k` ahead the first row tile over a panel block asks for the panel's
    /// rows: that tile brings the block from L2 into L1 for the others, and without the hint it
    /// waited on those loads (measured: the time loops ran 15-20% slower).
    const PREFETCH_STEPS: usize = 16;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm(c: *mut f32, ldc: usize, a: Lhs<'_>, b: &PackedB) {
        for k0 in (0..b.k).step_by(KC) {
            // SAFETY: forwarded from the caller; the block lies inside `0..b.k`.
            unsafe { gemm_block(c, ldc, a, b, k0, KC.min(b.k - k0)) };
        }
    }

    /// The steps `k0 .. k0 + k` of the product, added into C.
    #[target_feature(enable = "avx512f")]
    unsafe fn gemm_block(c: *mut f32, ldc: usize, a: Lhs<'_>, b: &PackedB, k0: usize, k: usize) {
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
                // Row t·MR from column k0: the kernel reads `rows` rows of `k` from there.
                // SAFETY: the caller checked that A holds [m, b.k] with row stride lda.
                let (tile, lda) = (unsafe { a.data.as_ptr().add(t * MR * a.lda + k0) }, a.lda);
                // SAFETY: row t·MR < m; the caller vouches for the extent of C.
                let cp = unsafe { c.add(t * MR * ldc + j0) };
                // SAFETY: A holds `rows` rows of k steps from `tile`, the panel k of NR, and C
                // `rows` rows from `cp`.
                unsafe {
                    if t == 0 {
                        tile_kernel::<true>(rows, k, tile, lda, panel, cp, ldc, masks)
                    } else {
                        tile_kernel::<false>(rows, k, tile, lda, panel, cp, ldc, masks)
                    }
                }
            }
        }
    }

    /// [`kernel`] for a tile of `rows` (1 to [`MR`]) rows.
    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_kernel<const PREFETCH: bool>(
        rows: usize,
        k: usize,
        tile: *const f32,
        lda: usize,
        panel: *const f32,
        c: *mut f32,
        ldc: usize,
        masks: [__mmask16; 4],
    ) {
        // SAFETY (each arm): forwarded from the caller.
        unsafe {
            match rows {
                6 => kernel::<6, PREFETCH>(k, tile, lda, panel, c, ldc, masks),
                5 => kernel::<5, PREFETCH>(k, tile, lda, panel, c, ldc, masks),
                4 => kernel::<4, PREFETCH>(k, tile, lda, panel, c, ldc, masks),
                3 => kernel::<3, PREFETCH>(k, tile, lda, panel, c, ldc, masks),
                2 => kernel::<2, PREFETCH>(k, tile, lda, panel, c, ldc, masks),
                _ => kernel::<1, PREFETCH>(k, tile, lda, panel, c, ldc, masks),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel<const R: usize, const PREFETCH: bool>(
        k: usize,
        tile: *const f32,
        lda: usize,
        panel: *const f32,
        c: *mut f32,
        ldc: usize,
        masks: [__mmask16; 4],
    ) {
        let mut sums = [[_mm512_setzero_ps(); 4]; R];
        for kk in 0..k {
            // SAFETY: the panel holds k rows of NR; A, R rows of k from `tile` with stride lda.
            unsafe {
                let row = panel.add(kk * NR);
                if PREFETCH {
                    let ahead = row.wrapping_add(PREFETCH_STEPS * NR) as *const i8;
                    _mm_prefetch::<_MM_HINT_T0>(ahead);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128));
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(192));
                }
                let b = [
                    _mm512_loadu_ps(row),
                    _mm512_loadu_ps(row.add(16)),
                    _mm512_loadu_ps(row.add(32)),
                    _mm512_loadu_ps(row.add(48)),
                ];
                for (i, sum) in sums.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*tile.add(i * lda + kk));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{isas, values};

    /// Every micro-kernel this CPU runs adds the same sums in the same order as the portable
    /// product with fused multiply-adds: equal bit for bit, on ragged tiles, panels and quarters,
    /// more than one block of `k`, strided rows, and without touching C past its `n` columns.
    #[test]
    fn micro_kernels_equal_the_portable_product() {
        let shapes = [
            (1, 1, 1),
            (6, 64, 128),
            (7, 70, 129),
            (32, 256, 300),
            (13, 17, 5),
            (5, 200, 64),
        ];
        for (m, n, k) in shapes {
            let (lda, ldb, ldc) = (k + 3, n + 1, n + 5);
            let a = values(m * lda, 1, 1.0);
            let b = PackedB::new(&values(k * ldb, 2, 1.0), k, n, ldb);
            let start = values(m * ldc, 3, 1.0);
            let mut expected = start.clone();
            let lhs = Lhs {
                data: &a,
                m,
                k,
                lda,
            };
            // SAFETY: `expected` holds [m, n] with row stride ldc; A and B as made above.
            unsafe { portable::gemm::<true>(expected.as_mut_ptr(), ldc, lhs, &b) };
            for isa in isas().into_iter().filter(|isa| *isa != Isa::Baseline) {
                let mut c = start.clone();
                gemm(isa, &mut c, ldc, &a, lda, m, &b);
                for (i, (got, want)) in c.iter().zip(&expected).enumerate() {
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{isa:?} m {m} n {n} k {k}: C[{}, {}] = {got}, expected {want}",
                        i / ldc,
                        i % ldc
                    );
                }
            }
        }
    }

    #[test]
    fn packed_panels_on_threads_hold_the_transpose() {
        for (n, k) in [(64usize, 5usize), (128, 130), (70, 33), (1, 1), (200, 64)] {
            let ldb = k + 3;
            let b: Vec<f32> = (0..n * ldb).map(|i| i as f32).collect();
            let packed = PackedB::transposed_on(&b, n, k, ldb, 2);
            for p in 0..packed.panels() {
                let panel = packed.panel(p);
                for kk in 0..k {
                    for j in 0..NR {
                        let expected = if p * NR + j < n {
                            b[(p * NR + j) * ldb + kk]
                        } else {
                            0.0
                        };
                        assert_eq!(
                            panel[kk * NR + j],
                            expected,
                            "n {n} k {k} panel {p} ({kk}, {j})"
                        );
                    }
                }
            }
        }
    }
}
