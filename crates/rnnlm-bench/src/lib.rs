//! The measurements behind `rnnlm bench`: training, validation and generation throughput,
//! GFLOP/s, the phases of a training step and peak memory, for the d2l models ([`run_bench`])
//! and for a sequence classifier around a core ([`run_classifier_bench`]). The figures are for
//! side-by-side runs in one session (`scripts/bench-vs-pytorch.sh`), never for tests.
#![deny(missing_docs)]

mod classifier;
mod lm;

pub use classifier::{
    CLASSIFIER_CLASSES, CLASSIFIER_FEATURES, CLASSIFIER_STEPS, ClassifierCase, ClassifierCell,
    ClassifierResult, classifier_cases, run_classifier_bench,
};
pub use lm::{
    BENCH_VOCAB, BenchModel, BenchOptions, BenchResult, PhaseShare, Phases, bench_models,
    run_bench, train_flop_per_token,
};
/// The machine's roof for `f32` products, measured in the same run as the figures quoted
/// against it ([`rnnlm_kernels::roof`]).
pub use rnnlm_kernels::roof::{Roof, measure as measure_roof};

/// The crate's README, whose example runs as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
