//! How progress reads: the epoch line, durations, learning rates.

use crate::checkpoint::EpochMetrics;

/// `3h05m`, `4m12s`, `9s`.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

/// `epoch 3/10  train ppl 9.81  valid ppl 10.20  train bpc 3.29  152.3k tok/s  |g| 0.93  lr 1`
pub fn format_epoch(m: &EpochMetrics, epochs: usize) -> String {
    let valid = m
        .valid_perplexity
        .map(|p| format!("  valid ppl {p:.3}"))
        .unwrap_or_default();
    format!(
        "epoch {}/{epochs}  train ppl {:.3}{valid}  train bits/token {:.3}  {:.1}k tok/s  |g| {:.3}  lr {}",
        m.epoch,
        m.train_perplexity,
        m.train_bits_per_token,
        m.tokens_per_second / 1000.0,
        m.grad_norm,
        significant(m.lr, 4)
    )
}

/// `value` rounded to `digits` significant digits, printed without trailing zeros: a schedule's
/// `0.0019949107041857582` reads `0.001995`, a constant `1.0` reads `1`.
pub(crate) fn significant(value: f64, digits: usize) -> f64 {
    // The exponent form rounds to significant digits; parsing it back drops the noise digits.
    format!("{value:.*e}", digits.saturating_sub(1))
        .parse()
        .unwrap_or(value)
}

/// Where a run stands inside an epoch, for its progress line.
pub(crate) struct Position {
    /// The epoch, 1-based.
    pub(crate) epoch: usize,
    /// Epochs in the run.
    pub(crate) epochs: usize,
    /// Minibatches done in the epoch.
    pub(crate) step: usize,
    /// Minibatches in the epoch.
    pub(crate) of: usize,
}

/// `epoch 3/10  step 1200/5000 (24%)  train ppl 9.810  152.3k tok/s  ETA 4m12s`: the time left
/// at `seconds_per_step`.
pub(crate) fn progress_line(
    at: &Position,
    perplexity: f64,
    tokens_per_second: f64,
    seconds_per_step: f64,
) -> String {
    format!(
        "epoch {}/{}  step {}/{} ({:.0}%)  train ppl {perplexity:.3}  {:.1}k tok/s  ETA {}",
        at.epoch,
        at.epochs,
        at.step,
        at.of,
        100.0 * at.step as f64 / at.of.max(1) as f64,
        tokens_per_second / 1000.0,
        format_duration((at.of - at.step) as f64 * seconds_per_step)
    )
}
