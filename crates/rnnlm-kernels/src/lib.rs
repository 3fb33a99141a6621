//! The kernels behind rnnlm's fused recurrent layers: each layer's whole time loop, forwards and
//! backwards, and a generation engine, in plain Rust on host memory. No dependency on Burn or on
//! the model crate: inputs and outputs are slices, row-major and time-major (row `t · batch + b`).
//!
//! - [`cell`]: the recurrences (vanilla RNN, LSTM, PyTorch's and d2l's GRU), one module each,
//!   each with its forward row, its backward row and what its tape keeps, behind one trait,
//!   [`Cell`];
//! - [`scan`]: a layer's time loop over a minibatch, generic over the cell: [`scan::forward`]
//!   (every step's state, and the tape when a backward pass follows) and [`scan::backward`]
//!   (the gradients of the projected inputs, the initial state, the hidden weight and bias,
//!   the weight's as one product over all steps);
//! - [`projection`]: a layer's input projection for every step at once (dense input in any row
//!   layout, or token ids), written into the buffer the scan turns into its gates, and its
//!   gradients (of the input, and of the input weight as one product over all steps);
//! - [`gather`]: the row sums by token that a one-hot input's weight gradient is;
//! - [`decode`]: a stack of layers with an input table and an output layer, stepped one token
//!   at a time for generation.
//!
//! Through a tensor library, one time step of a recurrent layer is a dozen small operations
//! (a matmul, gate slices, non-linearities, a stack for the state), each with its allocation
//! and dispatch, and in training each is recorded and replayed backwards; for the chapter's
//! models on a CPU that overhead, not arithmetic, sets the speed. Here a step is one product
//! of the state with the layer's packed `[hidden, gates·hidden]` weight (an AVX-512 micro-kernel
//! over weights packed once per call, checked at run time; loops the compiler vectorises
//! otherwise) and one pass over the gates; the batch's rows are split between threads that stay
//! awake between the parallel parts ([`pool`](crate#threads)). Every result is independent of the
//! thread count: each sum runs in an order fixed by the shapes.
//!
//! # Threads
//!
//! The kernels use [`threads`] threads: the machine's parallelism, `RNNLM_THREADS` when set, or
//! what [`set_threads`] says. The helper threads spin (then yield) for 2 ms after each parallel
//! part before they sleep, since waking a core costs more than most parts take; a program that
//! calls the kernels sees a core busy that long after each call ([`set_helper_stay_awake`]
//! changes it; one thread starts no helper at all).
// The cells' row functions take every gate block as a slice of its own: passed as arrays of
// slices, the compiler stopped vectorizing their loops (measured), so they have many arguments.
#![allow(clippy::too_many_arguments)]

pub mod cell;
pub mod decode;
pub mod gather;
mod gemm;
mod math;
mod order;
mod pool;
pub mod profile;
pub mod projection;
pub mod roof;
pub mod scan;
mod shared;
#[cfg(test)]
mod test_support;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use cell::{Activation, Cell, CellKind, Clip};
pub use math::Isa;

/// Thread count set by [`set_threads`]; 0: not set.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// How many threads the kernels use: [`set_threads`]'s count, else `RNNLM_THREADS` when set
/// (at least 1; read once), else the machine's parallelism.
pub fn threads() -> usize {
    // Read once: the machine's parallelism comes from cgroup files, a few microseconds a call.
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    match THREADS.load(Ordering::Relaxed) {
        0 => *DEFAULT.get_or_init(|| {
            std::env::var("RNNLM_THREADS")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .max(1)
        }),
        n => n,
    }
}

/// Sets the thread count of every later call (`None`: back to [`threads`]' default). Results do
/// not depend on it, only speed.
pub fn set_threads(threads: Option<usize>) {
    THREADS.store(threads.map_or(0, |n| n.max(1)), Ordering::Relaxed);
}

/// How long the helper threads keep spinning (then yielding) after each parallel part before
/// they sleep: 2 ms by default (`None`), which covers the serial gaps inside and between
/// training steps, since waking a sleeping thread costs ~50 µs; a core looks busy that long
/// after each call. `Some(Duration::ZERO)` puts them to sleep after one short burst (about
/// 100 µs of spinning), for a program that calls the kernels rarely. Results do not depend on
/// it, only speed.
pub fn set_helper_stay_awake(time: Option<std::time::Duration>) {
    pool::set_stay_awake(time.unwrap_or(pool::STAY_AWAKE));
}

/// The crate's README, whose example runs as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
