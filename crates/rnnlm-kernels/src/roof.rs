//! The machine's roof for `f32` products, measured rather than quoted: what the benchmarks
//! state their GFLOP/s against, on the same machine and in the same run.

use std::time::Instant;

use crate::gemm::{PackedB, View, gemm, gemm_large};
use crate::math::Isa;
use crate::shared::{SharedMut, parallel, split};

/// The best rate of a square `f32` product `C = A · B` on this machine, by each engine the
/// kernels use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Roof {
    /// Side of the square operands.
    pub size: usize,
    /// Threads the product ran on.
    pub threads: usize,
    /// GFLOP/s of the `gemm` crate, cut into pieces shared over the threads as the kernels run
    /// their weight gradients.
    pub gemm_crate: f64,
    /// GFLOP/s of the kernels' own micro-kernel (the product of every time step), the rows of
    /// `A` split over the threads, packing `B` included.
    pub ours: f64,
    /// The largest difference between the two engines' products: both computed what was
    /// timed (only the rounding of their sums differs).
    pub max_difference: f32,
}

impl Roof {
    /// The better of the two engines: the roof a figure is quoted as a share of.
    pub fn best(&self) -> f64 {
        self.gemm_crate.max(self.ours)
    }
}

/// Measures [`Roof`] for `size x size` operands on `threads` threads: each engine's best of
/// `repeats` timed products after one untimed one. Takes a few seconds at `size` 2048 (three
/// 16 MB operands).
///
/// # Panics
/// If `size`, `threads` or `repeats` is 0.
pub fn measure(size: usize, threads: usize, repeats: usize) -> Roof {
    assert!(
        size > 0 && threads > 0 && repeats > 0,
        "roof::measure: size {size}, threads {threads} and repeats {repeats} must be at least 1"
    );
    // Values in [-1, 1) from a fixed sequence: no denormals, nothing for the CPU to skip.
    let values = |salt: u64| -> Vec<f32> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ salt;
        (0..size * size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    };
    let (a, b) = (values(1), values(2));
    let mut c = vec![0.0f32; size * size];
    let flop = 2.0 * (size as f64).powi(3);
    let best_rate = |c: &mut Vec<f32>, product: &dyn Fn(&mut [f32])| {
        let mut best = f64::INFINITY;
        for repeat in 0..=repeats {
            c.fill(0.0);
            let started = Instant::now();
            product(c);
            let seconds = started.elapsed().as_secs_f64();
            if repeat > 0 {
                best = best.min(seconds);
            }
        }
        flop / best / 1e9
    };
    let gemm_crate = best_rate(&mut c, &|c| {
        gemm_large(
            c,
            size,
            size,
            size,
            size,
            View::rows(&a, size),
            View::rows(&b, size),
            threads,
        )
    });
    let by_gemm_crate = c.clone();
    let isa = Isa::detect();
    let ours = best_rate(&mut c, &|c| {
        let packed = PackedB::new_on(&b, size, size, size, threads);
        let out = SharedMut::new(c);
        parallel(threads, |part| {
            let rows = split(size, threads, part);
            // SAFETY: each part writes its own rows of C, which is borrowed for the call.
            let block = unsafe { out.slice(rows.start * size, rows.len() * size) };
            gemm(
                isa,
                block,
                size,
                &a[rows.start * size..],
                size,
                rows.len(),
                &packed,
            );
        });
    });
    let max_difference = c
        .iter()
        .zip(&by_gemm_crate)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    Roof {
        size,
        threads,
        gemm_crate,
        ours,
        max_difference,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_engines_compute_the_product_they_are_timed_on() {
        // 67: ragged against the micro-kernel's 6 rows and 64-column panels.
        for threads in [1, 3] {
            let roof = measure(67, threads, 2);
            assert_eq!((roof.size, roof.threads), (67, threads));
            assert!(roof.max_difference < 1e-4, "{roof:?}");
            assert!(
                roof.gemm_crate.is_finite() && roof.ours.is_finite(),
                "{roof:?}"
            );
            assert_eq!(roof.best(), roof.gemm_crate.max(roof.ours));
        }
    }

    #[test]
    #[should_panic(expected = "must be at least 1")]
    fn a_zero_size_is_refused() {
        measure(0, 1, 1);
    }
}
