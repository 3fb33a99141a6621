//! Work split between threads, and the two ways threads write one buffer between them.
//!
//! A time loop splits a minibatch's rows between threads; each writes its rows of the same
//! output buffers. The buffers are lent to the threads as [`SharedMut`] (initialised) or
//! [`SharedUninit`] (fresh, filled by the threads): a pointer with the length of the buffer and
//! the lifetime of the borrow it came from, so a slice taken from it is bounds-checked and cannot
//! outlive the buffer. What the types cannot check is that two threads never take overlapping
//! pieces at the same time: that is the one promise each `unsafe` call site makes.

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An initialised buffer of floats that several threads write, each in places no other thread
/// uses meanwhile.
#[derive(Clone, Copy, Debug)]
pub struct SharedMut<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `SharedMut` only hands out pieces through `unsafe` calls whose callers promise that
// no two threads use the same elements at once; the borrow it came from outlives every thread
// that holds it (scoped threads, or `parallel`, which joins before returning).
unsafe impl Send for SharedMut<'_> {}
unsafe impl Sync for SharedMut<'_> {}

impl<'a> SharedMut<'a> {
    /// Lends `buffer` to threads for the lifetime of the borrow.
    pub fn new(buffer: &'a mut [f32]) -> Self {
        Self {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _borrow: PhantomData,
        }
    }

    /// Elements `offset .. offset + len`.
    ///
    /// # Safety
    /// No other thread may read or write any of these elements while the slice lives.
    ///
    /// # Panics
    /// If the range leaves the buffer.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, offset: usize, len: usize) -> &'a mut [f32] {
        check(offset, len, self.len);
        if len == 0 {
            return &mut [];
        }
        // SAFETY: the range lies in the buffer (checked), which lives for 'a; exclusivity is
        // the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), len) }
    }

    /// Elements `offset .. offset + len`, read: what other threads wrote before a barrier
    /// they all passed.
    ///
    /// # Safety
    /// No thread may write any of these elements while the slice lives.
    ///
    /// # Panics
    /// If the range leaves the buffer.
    pub unsafe fn read(&self, offset: usize, len: usize) -> &'a [f32] {
        check(offset, len, self.len);
        if len == 0 {
            return &[];
        }
        // SAFETY: the range lies in the buffer (checked), which lives for 'a; that nobody
        // writes it meanwhile is the caller's promise.
        unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len) }
    }

    /// A raw pointer to element `offset` for a writer that addresses a strided block itself
    /// (rows of a matrix with a stride longer than the block), after checking that the block's
    /// last element, `offset + extent - 1`, lies in the buffer.
    ///
    /// # Panics
    /// If the block leaves the buffer.
    pub fn block_ptr(&self, offset: usize, extent: usize) -> *mut f32 {
        check(offset, extent, self.len);
        // SAFETY: inside the buffer (checked; an empty block at the end is one past it).
        unsafe { self.ptr.add(offset) }
    }
}

/// A spin barrier for the parts of a step: generation's parts meet after every layer, the
/// training loops' unit shares after every step (a few microseconds of work for batch 1), too
/// often for a blocking barrier's sleep and wake-up. Every party must run on a thread of its
/// own ([`parallel`] runs each part on one).
pub(crate) struct SpinBarrier {
    parties: usize,
    waiting: AtomicUsize,
    generation: AtomicUsize,
}

impl SpinBarrier {
    pub(crate) fn new(parties: usize) -> Self {
        Self {
            parties,
            waiting: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
        }
    }

    pub(crate) fn wait(&self) {
        if self.parties == 1 {
            return;
        }
        let generation = self.generation.load(Ordering::Acquire);
        if self.waiting.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.waiting.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::AcqRel);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if spins < 20_000 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                // Between tokens the main thread chooses the next one (and the caller may do
                // anything): give the core away rather than spin for long.
                std::thread::yield_now();
            }
        }
    }
}

/// A fresh buffer of `len` floats, not yet initialised, that several threads fill between
/// them: a piece is handed out only zeroed ([`SharedUninit::zeroed_slice`]), by the thread that
/// is about to write it, while it is in that core's cache anyway (one thread clearing a tape of
/// megabytes first was a tenth of a layer's backward pass).
#[derive(Clone, Copy, Debug)]
pub struct SharedUninit<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: as for `SharedMut`.
unsafe impl Send for SharedUninit<'_> {}
unsafe impl Sync for SharedUninit<'_> {}

impl<'a> SharedUninit<'a> {
    /// Elements `offset .. offset + len`, set to zero.
    ///
    /// # Safety
    /// No other thread may read or write any of these elements while the slice lives.
    ///
    /// # Panics
    /// If the range leaves the buffer.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn zeroed_slice(&self, offset: usize, len: usize) -> &'a mut [f32] {
        check(offset, len, self.len);
        if len == 0 {
            return &mut [];
        }
        // SAFETY: the range lies in the buffer (checked); zeroing initialises it; exclusivity
        // is the caller's promise.
        unsafe {
            std::ptr::write_bytes(self.ptr.add(offset), 0, len);
            std::slice::from_raw_parts_mut(self.ptr.add(offset), len)
        }
    }
}

fn check(offset: usize, len: usize, buffer: usize) {
    assert!(
        offset.checked_add(len).is_some_and(|end| end <= buffer),
        "shared buffer: elements {offset}..{} of a buffer of {buffer}",
        offset.saturating_add(len)
    );
}

/// A buffer of `len` floats that the threads of `fill` initialise between them (see
/// [`SharedUninit`]).
///
/// # Safety
/// `fill` must initialise every element `0..len` through [`SharedUninit::zeroed_slice`] (or
/// panic, which leaves nothing behind).
pub unsafe fn filled_in_parallel(len: usize, fill: impl FnOnce(SharedUninit<'_>)) -> Vec<f32> {
    let mut buffer = Vec::<f32>::with_capacity(len);
    fill(SharedUninit {
        ptr: buffer.as_mut_ptr(),
        len,
        _borrow: PhantomData,
    });
    // SAFETY: the caller vouches that `fill` initialised every element.
    unsafe { buffer.set_len(len) };
    buffer
}

/// `len` zeros, written rather than allocated zeroed, for a buffer that a product reads before
/// it writes (`C += A · B`). `vec![0.0; len]` of a large buffer takes fresh pages from the
/// kernel that read as the shared zero page; the first write to each then replaces the page
/// and flushes it from the TLB of every core the process runs on, an interrupt to the other
/// core per 4 KB page: measured, 80 % of an LSTM 2048's weight gradient (64 MB). Written
/// first, each page is mapped once. Large buffers are written by the threads in parallel.
pub fn zeros(len: usize) -> Vec<f32> {
    const PARALLEL_FROM: usize = 1 << 20;
    let parts = if len < PARALLEL_FROM {
        1
    } else {
        crate::threads()
    };
    // SAFETY: the parts cover `0..len` between them, each zeroing its own piece.
    unsafe {
        filled_in_parallel(len, |out| {
            parallel(parts, |part| {
                let piece = split(len, parts, part);
                out.zeroed_slice(piece.start, piece.len());
            })
        })
    }
}

/// Contiguous ranges splitting `0..len` into `parts` pieces whose lengths differ by at most
/// one, the longer first; piece `part` of them.
pub fn split(len: usize, parts: usize, part: usize) -> Range<usize> {
    let (base, extra) = (len / parts, len % parts);
    let start = part * base + part.min(extra);
    start..start + base + usize::from(part < extra)
}

/// Contiguous ranges splitting the indices of `weights` into `parts` pieces of about equal
/// total weight (each boundary where the running total first reaches its share); piece `part`
/// of them.
pub fn split_weighted(weights: &[usize], parts: usize, part: usize) -> Range<usize> {
    let total: usize = weights.iter().sum();
    // The first index whose running total (before it) reaches `share` of `parts` of the whole.
    let boundary = |share: usize| {
        if share >= parts {
            return weights.len();
        }
        let target = total * share;
        let mut running = 0usize;
        weights
            .iter()
            .position(|&w| {
                let reached = running * parts >= target;
                running += w;
                reached
            })
            .unwrap_or(weights.len())
    };
    boundary(part)..boundary(part + 1)
}

/// Runs `work(part)` for `parts` parts of the work on as many threads (the calling thread takes
/// part 0, [`crate::pool`]'s helpers the others) and returns when all are done.
pub fn parallel(parts: usize, work: impl Fn(usize) + Sync) {
    crate::pool::run(parts, &work);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_every_index_once() {
        for len in 0..20 {
            for parts in 1..6 {
                let pieces: Vec<_> = (0..parts).map(|p| split(len, parts, p)).collect();
                let joined: Vec<usize> = pieces.iter().flat_map(|r| r.clone()).collect();
                assert_eq!(joined, (0..len).collect::<Vec<_>>());
                let longest = pieces.iter().map(|r| r.len()).max().unwrap_or(0);
                assert!(pieces.iter().all(|r| longest - r.len() <= 1));
            }
        }
    }

    #[test]
    fn weighted_pieces_cover_every_index_once_with_about_equal_weight() {
        let weights = [28, 27, 27, 25, 22, 20, 19, 17, 15, 14, 14, 14];
        for parts in 1..6 {
            let pieces: Vec<_> = (0..parts)
                .map(|p| split_weighted(&weights, parts, p))
                .collect();
            let joined: Vec<usize> = pieces.iter().flat_map(|r| r.clone()).collect();
            assert_eq!(
                joined,
                (0..weights.len()).collect::<Vec<_>>(),
                "{parts} parts"
            );
            let sums: Vec<usize> = pieces
                .iter()
                .map(|r| weights[r.clone()].iter().sum())
                .collect();
            let share = weights.iter().sum::<usize>() / parts;
            // Each piece within one item of its share.
            assert!(
                sums.iter().all(|&s| s.abs_diff(share) <= 28),
                "{parts} parts: {sums:?}"
            );
        }
        // Equal weights split as `split` does, to one item.
        let even = [1usize; 7];
        assert_eq!(split_weighted(&even, 2, 0), 0..4);
        assert_eq!(split_weighted(&even, 2, 1), 4..7);
    }

    #[test]
    fn threads_fill_their_own_pieces() {
        // SAFETY: the two parts cover 0..10 between them and each zeroes its own piece.
        let filled = unsafe {
            filled_in_parallel(10, |out| {
                parallel(2, |part| {
                    let range = split(10, 2, part);
                    let piece = out.zeroed_slice(range.start, range.len());
                    for (value, index) in piece.iter_mut().zip(range) {
                        *value = index as f32;
                    }
                })
            })
        };
        assert_eq!(filled, (0..10).map(|i| i as f32).collect::<Vec<_>>());
    }

    #[test]
    #[should_panic(expected = "elements 8..12 of a buffer of 10")]
    fn a_piece_outside_the_buffer_is_refused() {
        let mut buffer = vec![0.0f32; 10];
        let shared = SharedMut::new(&mut buffer);
        // SAFETY: one thread; the call panics before handing anything out.
        let _ = unsafe { shared.slice(8, 4) };
    }

    #[test]
    fn an_empty_piece_of_an_empty_buffer_is_fine() {
        let mut buffer: Vec<f32> = Vec::new();
        let shared = SharedMut::new(&mut buffer);
        // SAFETY: nothing is handed out.
        assert!(unsafe { shared.slice(0, 0) }.is_empty());
    }
}
