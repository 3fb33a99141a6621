//! The gate arithmetic of one time step as CubeCL kernels, one unit per `(row, hidden unit)`:
//! the products `h_{t-1}·W_h` around them are Burn's tiled matrix products
//! ([`super`](super) drives the loop).
//!
//! Every kernel reads the same row-major buffers:
//! - `proj` `[steps·batch, gates·hidden]`: the input projection with its bias, row `t·batch + b`;
//! - `q` `[batch, k·hidden]`: this step's hidden product, row `b`;
//! - `out` `[steps + 1 (+ 1), batch, hidden]`: every `h_t`, row `t·batch + b` (zero past a
//!   row's length);
//! - the tapes `gates` `[steps·batch, gates·hidden]` and `extra` `[steps·batch, hidden]`, by
//!   `t` as well, with the cell modules' contents ([`rnnlm_kernels::cell`]);
//! - `lengths` `[batch]`: every row's number of steps, as `f32` (exact below 2^24).
//!
//! A launch is step `s` of the scan: row `b` takes it when `s < lengths[b]`, at time
//! `t = s` (forwards) or `t = lengths[b] - 1 - s` (reverse), and is left alone otherwise, its
//! state carried unchanged. The equations are those of `rnnlm_kernels::cell::{rnn, lstm, gru,
//! gru_d2l}`, row for row, so that both paths give the same numbers to rounding.

use cubecl::prelude::*;

#[cube]
fn sigmoid(x: f32) -> f32 {
    1.0f32 / (1.0f32 + (0.0f32 - x).exp())
}

/// `t` of step `s` for a row of `length` steps.
#[cube]
fn time_of(s: usize, length: usize, #[comptime] reverse: bool) -> usize {
    if reverse { length - 1 - s } else { s }
}

/// The time of the step before `t` (the one whose `h` is `h_{t-1}`), for `s > 0`.
#[cube]
fn previous_time(t: usize, #[comptime] reverse: bool) -> usize {
    if reverse { t + 1 } else { t - 1 }
}

/// `h_{t-1}` of unit `j` of row `b` at step `s`: `h0` at the first step, the output before.
#[cube]
fn previous_h(
    out: &Tensor<f32>,
    h0: &Tensor<f32>,
    s: usize,
    t: usize,
    b: usize,
    j: usize,
    batch: usize,
    hidden: usize,
    #[comptime] reverse: bool,
) -> f32 {
    if s == 0 {
        h0[b * hidden + j]
    } else {
        out[(previous_time(t, reverse) * batch + b) * hidden + j]
    }
}

/// `dh` with no gradient where the clamp held `h` on its bound.
#[cube]
fn masked(dh: f32, h: f32, clip: f32, #[comptime] clipped: bool) -> f32 {
    if clipped {
        if h.abs() < clip { dh } else { 0.0f32 }
    } else {
        dh
    }
}

#[cube]
fn clamped(x: f32, clip: f32, #[comptime] clipped: bool) -> f32 {
    if clipped {
        x.max(0.0f32 - clip).min(clip)
    } else {
        x
    }
}

/// `dst[dst_offset + i] = src[src_offset + i]` for every `i` below `len`.
#[cube(launch)]
pub fn copy_range(
    src: &Tensor<f32>,
    dst: &mut Tensor<f32>,
    src_offset: u32,
    dst_offset: u32,
    len: u32,
) {
    if ABSOLUTE_POS < len as usize {
        dst[dst_offset as usize + ABSOLUTE_POS] = src[src_offset as usize + ABSOLUTE_POS];
    }
}

/// `h_{t-1}` of every row and step, by `t` (`[steps·batch, hidden]`, zero past a row's
/// length): the left operand of `W_h`'s gradient.
#[cube(launch)]
pub fn previous_states(
    out: &Tensor<f32>,
    h0: &Tensor<f32>,
    lengths: &Tensor<f32>,
    prev: &mut Tensor<f32>,
    #[comptime] reverse: bool,
) {
    let batch = h0.shape(0);
    let hidden = h0.shape(1);
    if ABSOLUTE_POS < prev.len() {
        let j = ABSOLUTE_POS % hidden;
        let row = ABSOLUTE_POS / hidden;
        let b = row % batch;
        let t = row / batch;
        let length = u32::cast_from(lengths[b]) as usize;
        let mut value = 0.0f32;
        if t < length {
            let first = if reverse { t == length - 1 } else { t == 0 };
            if first {
                value = h0[b * hidden + j];
            } else {
                let before = if reverse { t + 1 } else { t - 1 };
                value = out[(before * batch + b) * hidden + j];
            }
        }
        prev[ABSOLUTE_POS] = value;
    }
}

/// The vanilla RNN's step: `h = φ(p + q)`, clamped.
#[cube(launch)]
pub fn rnn_forward(
    proj: &Tensor<f32>,
    q: &Tensor<f32>,
    lengths: &Tensor<f32>,
    h: &mut Tensor<f32>,
    out: &mut Tensor<f32>,
    s: u32,
    clip: f32,
    #[comptime] reverse: bool,
    #[comptime] clipped: bool,
    #[comptime] relu: bool,
) {
    let batch = h.shape(0);
    let hidden = h.shape(1);
    let s = s as usize;
    if ABSOLUTE_POS < batch * hidden {
        let b = ABSOLUTE_POS / hidden;
        let j = ABSOLUTE_POS % hidden;
        let length = u32::cast_from(lengths[b]) as usize;
        if s < length {
            let row = time_of(s, length, reverse) * batch + b;
            let a = proj[row * hidden + j] + q[ABSOLUTE_POS];
            let value = if relu { a.max(0.0f32) } else { a.tanh() };
            let value = clamped(value, clip, clipped);
            h[ABSOLUTE_POS] = value;
            out[row * hidden + j] = value;
        }
    }
}

/// The vanilla RNN's backward step: the pre-activation's gradient, written by `t` into `dp`
/// and by row into `dq` (zero for a row that does not take the step).
#[cube(launch)]
pub fn rnn_backward(
    d_out: &Tensor<f32>,
    out: &Tensor<f32>,
    lengths: &Tensor<f32>,
    p: &Tensor<f32>,
    carry: &mut Tensor<f32>,
    dp: &mut Tensor<f32>,
    dq: &mut Tensor<f32>,
    s: u32,
    clip: f32,
    #[comptime] reverse: bool,
    #[comptime] clipped: bool,
    #[comptime] relu: bool,
) {
    let batch = carry.shape(0);
    let hidden = carry.shape(1);
    let s = s as usize;
    if ABSOLUTE_POS < batch * hidden {
        let b = ABSOLUTE_POS / hidden;
        let j = ABSOLUTE_POS % hidden;
        let length = u32::cast_from(lengths[b]) as usize;
        if s < length {
            let row = time_of(s, length, reverse) * batch + b;
            let h = out[row * hidden + j];
            let dh = carry[ABSOLUTE_POS] + p[ABSOLUTE_POS] + d_out[row * hidden + j];
            let dh = masked(dh, h, clip, clipped);
            let slope = if relu {
                if h > 0.0f32 { 1.0f32 } else { 0.0f32 }
            } else {
                1.0f32 - h * h
            };
            let da = dh * slope;
            dp[row * hidden + j] = da;
            dq[ABSOLUTE_POS] = da;
            carry[ABSOLUTE_POS] = 0.0f32;
        } else {
            dq[ABSOLUTE_POS] = 0.0f32;
        }
    }
}

/// PyTorch's LSTM step: gates `i f g o` from `p + q`, `c` clamped, `h = σ(o)·tanh(c)`.
#[cube(launch)]
pub fn lstm_forward(
    proj: &Tensor<f32>,
    q: &Tensor<f32>,
    lengths: &Tensor<f32>,
    h: &mut Tensor<f32>,
    c: &mut Tensor<f32>,
    out: &mut Tensor<f32>,
    gates: &mut Tensor<f32>,
    cells: &mut Tensor<f32>,
    s: u32,
    clip: f32,
    #[comptime] reverse: bool,
    #[comptime] clipped: bool,
    #[comptime] keep_tape: bool,
) {
    let batch = h.shape(0);
    let hidden = h.shape(1);
    let s = s as usize;
    if ABSOLUTE_POS < batch * hidden {
        let b = ABSOLUTE_POS / hidden;
        let j = ABSOLUTE_POS % hidden;
        let length = u32::cast_from(lengths[b]) as usize;
        if s < length {
            let row = time_of(s, length, reverse) * batch + b;
            let width = 4 * hidden;
            let pr = row * width + j;
            let qr = b * width + j;
            let i = sigmoid(proj[pr] + q[qr]);
            let f = sigmoid(proj[pr + hidden] + q[qr + hidden]);
            let g = (proj[pr + 2 * hidden] + q[qr + 2 * hidden]).tanh();
            let o = sigmoid(proj[pr + 3 * hidden] + q[qr + 3 * hidden]);
            let cell = clamped(f * c[ABSOLUTE_POS] + i * g, clip, clipped);
            let value = o * cell.tanh();
            c[ABSOLUTE_POS] = cell;
            h[ABSOLUTE_POS] = value;
            out[row * hidden + j] = value;
            if keep_tape {
                gates[pr] = i;
                gates[pr + hidden] = f;
                gates[pr + 2 * hidden] = g;
                gates[pr + 3 * hidden] = o;
                cells[row * hidden + j] = cell;
            }
        }
    }
}

/// The LSTM's backward step: `dc` carried in place, the gates' pre-activation gradients by `t`
/// into `dp` and by row into `dq`; `h_{t-1}` takes no direct gradient (`carry` is zeroed).
#[cube(launch)]
pub fn lstm_backward(
    d_out: &Tensor<f32>,
    gates: &Tensor<f32>,
    cells: &Tensor<f32>,
    c0: &Tensor<f32>,
    lengths: &Tensor<f32>,
    p: &Tensor<f32>,
    carry: &mut Tensor<f32>,
    dc: &mut Tensor<f32>,
    dp: &mut Tensor<f32>,
    dq: &mut Tensor<f32>,
    s: u32,
    clip: f32,
    #[comptime] reverse: bool,
    #[comptime] clipped: bool,
) {
    let batch = carry.shape(0);
    let hidden = carry.shape(1);
    let s = s as usize;
    if ABSOLUTE_POS < batch * hidden {
        let b = ABSOLUTE_POS / hidden;
        let j = ABSOLUTE_POS % hidden;
        let width = 4 * hidden;
        let qr = b * width + j;
        let length = u32::cast_from(lengths[b]) as usize;
        if s < length {
            let t = time_of(s, length, reverse);
            let row = t * batch + b;
            let pr = row * width + j;
            let dh = carry[ABSOLUTE_POS] + p[ABSOLUTE_POS] + d_out[row * hidden + j];
            let (i, f) = (gates[pr], gates[pr + hidden]);
            let (g, o) = (gates[pr + 2 * hidden], gates[pr + 3 * hidden]);
            let cell = cells[row * hidden + j];
            let c_prev = if s == 0 {
                c0[ABSOLUTE_POS]
            } else {
                cells[(previous_time(t, reverse) * batch + b) * hidden + j]
            };
            let tc = cell.tanh();
            let d_cell = dh * o * (1.0f32 - tc * tc) + dc[ABSOLUTE_POS];
            let d_cell = masked(d_cell, cell, clip, clipped);
            dc[ABSOLUTE_POS] = d_cell * f;
            let di = d_cell * g * i * (1.0f32 - i);
            let df = d_cell * c_prev * f * (1.0f32 - f);
            let dg = d_cell * i * (1.0f32 - g * g);
            let d_o = dh * tc * o * (1.0f32 - o);
            dp[pr] = di;
            dp[pr + hidden] = df;
            dp[pr + 2 * hidden] = dg;
            dp[pr + 3 * hidden] = d_o;
            dq[qr] = di;
            dq[qr + hidden] = df;
            dq[qr + 2 * hidden] = dg;
            dq[qr + 3 * hidden] = d_o;
            carry[ABSOLUTE_POS] = 0.0f32;
        } else {
            dq[qr] = 0.0f32;
            dq[qr + hidden] = 0.0f32;
            dq[qr + 2 * hidden] = 0.0f32;
            dq[qr + 3 * hidden] = 0.0f32;
        }
    }
}

/// PyTorch's GRU step, `q = h_{t-1}·W_h` and `b_hh` added here: `r z n`, `h = n + z(h_{t-1} - n)`,
/// clamped. Tape: `r z n` and `q_n + b_hn`.
#[cube(launch)]
pub fn gru_forward(
    proj: &Tensor<f32>,
    q: &Tensor<f32>,
    hidden_bias: &Tensor<f32>,
    lengths: &Tensor<f32>,
    h: &mut Tensor<f32>,
    out: &mut Tensor<f32>,
    gates: &mut Tensor<f32>,
    extra: &mut Tensor<f32>,
    s: u32,
    clip: f32,
    #[comptime] reverse: bool,
    #[comptime] clipped: bool,
    #[comptime] keep_tape: bool,
    #[comptime] has_bias: bool,
) {
    let batch = h.shape(0);
    let hidden = h.shape(1);
    let s = s as usize;
    if ABSOLUTE_POS < batch * hidden {
        let b = ABSOLUTE_POS / hidden;
        let j = ABSOLUTE_POS % hidden;
        let length = u32::cast_from(lengths[b]) as usize;
        if s < length {
            let row = time_of(s, length, reverse) * batch + b;
            let width = 3 * hidden;
            let pr = row * width + j;
            let qr = b * width + j;
            let mut q_r = q[qr];
            let mut q_z = q[qr + hidden];
            let mut q_n = q[qr + 2 * hidden];
            if has_bias {
                q_r += hidden_bias[j];
                q_z += hidden_bias[j + hidden];
                q_n += hidden_bias[j + 2 * hidden];
            }
            let r = sigmoid(proj[pr] + q_r);
            let z = sigmoid(proj[pr + hidden] + q_z);
            let n = (proj[pr + 2 * hidden] + r * q_n).tanh();
            let h_prev = h[ABSOLUTE_POS];
            let value = clamped(n + z * (h_prev - n), clip, clipped);
            h[ABSOLUTE_POS] = value;
            out[row * hidden + j] = value;
            if keep_tape {
                gates[pr] = r;
                gates[pr + hidden] = z;
                gates[pr + 2 * hidden] = n;
                extra[row * hidden + j] = q_n;
            }
        }
    }
}

/// PyTorch's GRU backward step: `dp` (`[dr dz dn]`, by `t`), the hidden product's gradient
/// `[dr dz r·dn]` by `t` into `dq_all` and by row into `dq`, and `z·dh` into `carry`.
#[cube(launch)]
pub fn gru_backward(
    d_out: &Tensor<f32>,
    out: &Tensor<f32>,
    h0: &Tensor<f32>,
    gates: &Tensor<f32>,
    extra: &Tensor<f32>,
    lengths: &Tensor<f32>,
    p: &Tensor<f32>,
    carry: &mut Tensor<f32>,
    dp: &mut Tensor<f32>,
    dq_all: &mut Tensor<f32>,
    dq: &mut Tensor<f32>,
    s: u32,
    clip: f32,
    #[comptime] reverse: bool,
    #[comptime] clipped: bool,
) {
    let batch = carry.shape(0);
    let hidden = carry.shape(1);
    let s = s as usize;
    if ABSOLUTE_POS < batch * hidden {
        let b = ABSOLUTE_POS / hidden;
        let j = ABSOLUTE_POS % hidden;
        let width = 3 * hidden;
        let qr = b * width + j;
        let length = u32::cast_from(lengths[b]) as usize;
        if s < length {
            let t = time_of(s, length, reverse);
            let row = t * batch + b;
            let pr = row * width + j;
            let h = out[row * hidden + j];
            let dh = carry[ABSOLUTE_POS] + p[ABSOLUTE_POS] + d_out[row * hidden + j];
            let dh = masked(dh, h, clip, clipped);
            let h_prev = previous_h(out, h0, s, t, b, j, batch, hidden, reverse);
            let (r, z, n) = (gates[pr], gates[pr + hidden], gates[pr + 2 * hidden]);
            let q_n = extra[row * hidden + j];
            let dn = dh * (1.0f32 - z) * (1.0f32 - n * n);
            let dr = dn * q_n * r * (1.0f32 - r);
            let dz = dh * (h_prev - n) * z * (1.0f32 - z);
            dp[pr] = dr;
            dp[pr + hidden] = dz;
            dp[pr + 2 * hidden] = dn;
            dq_all[pr] = dr;
            dq_all[pr + hidden] = dz;
            dq_all[pr + 2 * hidden] = dn * r;
            dq[qr] = dr;
            dq[qr + hidden] = dz;
            dq[qr + 2 * hidden] = dn * r;
            carry[ABSOLUTE_POS] = dh * z;
        } else {
            dq[qr] = 0.0f32;
            dq[qr + hidden] = 0.0f32;
            dq[qr + 2 * hidden] = 0.0f32;
        }
    }
}

/// d2l's GRU, first half of a step, `q = h_{t-1}·[W_hr W_hz]` (`[batch, 2·hidden]`): `r`, `z`,
/// and `r ⊙ h_{t-1}` into `reset_h` (by row, zero for a row that does not take the step; the
/// left operand of `W_hn`) and the tape's extra block.
#[cube(launch)]
pub fn gru_d2l_gates(
    proj: &Tensor<f32>,
    q: &Tensor<f32>,
    lengths: &Tensor<f32>,
    h: &Tensor<f32>,
    reset_h: &mut Tensor<f32>,
    gates: &mut Tensor<f32>,
    extra: &mut Tensor<f32>,
    s: u32,
    #[comptime] reverse: bool,
    #[comptime] keep_tape: bool,
) {
    let batch = h.shape(0);
    let hidden = h.shape(1);
    let s = s as usize;
    if ABSOLUTE_POS < batch * hidden {
        let b = ABSOLUTE_POS / hidden;
        let j = ABSOLUTE_POS % hidden;
        let length = u32::cast_from(lengths[b]) as usize;
        if s < length {
            let row = time_of(s, length, reverse) * batch + b;
            let pr = row * 3 * hidden + j;
            let qr = b * 2 * hidden + j;
            let r = sigmoid(proj[pr] + q[qr]);
            let rh = r * h[ABSOLUTE_POS];
            reset_h[ABSOLUTE_POS] = rh;
            if keep_tape {
                gates[pr] = r;
                gates[pr + hidden] = sigmoid(proj[pr + hidden] + q[qr + hidden]);
                extra[row * hidden + j] = rh;
            }
        } else {
            reset_h[ABSOLUTE_POS] = 0.0f32;
        }
    }
}

/// d2l's GRU, second half, `q_n = (r ⊙ h_{t-1})·W_hn` (`[batch, hidden]`): `n`, `h`, clamped
/// (`z` recomputed from `q`, the first half's product).
#[cube(launch)]
pub fn gru_d2l_candidate(
    proj: &Tensor<f32>,
    q: &Tensor<f32>,
    q_n: &Tensor<f32>,
    lengths: &Tensor<f32>,
    h: &mut Tensor<f32>,
    out: &mut Tensor<f32>,
    gates: &mut Tensor<f32>,
    s: u32,
    clip: f32,
    #[comptime] reverse: bool,
    #[comptime] clipped: bool,
    #[comptime] keep_tape: bool,
) {
    let batch = h.shape(0);
    let hidden = h.shape(1);
    let s = s as usize;
    if ABSOLUTE_POS < batch * hidden {
        let b = ABSOLUTE_POS / hidden;
        let j = ABSOLUTE_POS % hidden;
        let length = u32::cast_from(lengths[b]) as usize;
        if s < length {
            let row = time_of(s, length, reverse) * batch + b;
            let pr = row * 3 * hidden + j;
            let z = sigmoid(proj[pr + hidden] + q[b * 2 * hidden + hidden + j]);
            let n = (proj[pr + 2 * hidden] + q_n[ABSOLUTE_POS]).tanh();
            let h_prev = h[ABSOLUTE_POS];
            let value = clamped(n + z * (h_prev - n), clip, clipped);
            h[ABSOLUTE_POS] = value;
            out[row * hidden + j] = value;
            if keep_tape {
                gates[pr + 2 * hidden] = n;
            }
        }
    }
}

/// d2l's GRU backward, first half: the candidate's and `z`'s pre-activation gradients (`dp` by
/// `t`; `dn` by row, the left operand of `W_hnᵀ`, and `dz` into `dq`'s second block), and
/// `z·dh` into `carry`.
#[cube(launch)]
pub fn gru_d2l_candidate_backward(
    d_out: &Tensor<f32>,
    out: &Tensor<f32>,
    h0: &Tensor<f32>,
    gates: &Tensor<f32>,
    lengths: &Tensor<f32>,
    p: &Tensor<f32>,
    carry: &mut Tensor<f32>,
    dp: &mut Tensor<f32>,
    dn_rows: &mut Tensor<f32>,
    dq: &mut Tensor<f32>,
    s: u32,
    clip: f32,
    #[comptime] reverse: bool,
    #[comptime] clipped: bool,
) {
    let batch = carry.shape(0);
    let hidden = carry.shape(1);
    let s = s as usize;
    if ABSOLUTE_POS < batch * hidden {
        let b = ABSOLUTE_POS / hidden;
        let j = ABSOLUTE_POS % hidden;
        let qr = b * 2 * hidden + j;
        let length = u32::cast_from(lengths[b]) as usize;
        if s < length {
            let t = time_of(s, length, reverse);
            let row = t * batch + b;
            let pr = row * 3 * hidden + j;
            let h = out[row * hidden + j];
            let dh = carry[ABSOLUTE_POS] + p[ABSOLUTE_POS] + d_out[row * hidden + j];
            let dh = masked(dh, h, clip, clipped);
            let h_prev = previous_h(out, h0, s, t, b, j, batch, hidden, reverse);
            let (z, n) = (gates[pr + hidden], gates[pr + 2 * hidden]);
            let dn = dh * (1.0f32 - z) * (1.0f32 - n * n);
            let dz = dh * (h_prev - n) * z * (1.0f32 - z);
            dp[pr + hidden] = dz;
            dp[pr + 2 * hidden] = dn;
            dn_rows[ABSOLUTE_POS] = dn;
            dq[qr + hidden] = dz;
            carry[ABSOLUTE_POS] = dh * z;
        } else {
            dn_rows[ABSOLUTE_POS] = 0.0f32;
            dq[qr + hidden] = 0.0f32;
        }
    }
}

/// d2l's GRU backward, second half, `d_reset_h = dn·W_hnᵀ`: `r`'s pre-activation gradient (`dp`
/// by `t`, `dq`'s first block by row) and `r ⊙ d_reset_h` added to `carry`.
#[cube(launch)]
pub fn gru_d2l_gates_backward(
    out: &Tensor<f32>,
    h0: &Tensor<f32>,
    gates: &Tensor<f32>,
    lengths: &Tensor<f32>,
    d_reset_h: &Tensor<f32>,
    carry: &mut Tensor<f32>,
    dp: &mut Tensor<f32>,
    dq: &mut Tensor<f32>,
    s: u32,
    #[comptime] reverse: bool,
) {
    let batch = carry.shape(0);
    let hidden = carry.shape(1);
    let s = s as usize;
    if ABSOLUTE_POS < batch * hidden {
        let b = ABSOLUTE_POS / hidden;
        let j = ABSOLUTE_POS % hidden;
        let qr = b * 2 * hidden + j;
        let length = u32::cast_from(lengths[b]) as usize;
        if s < length {
            let t = time_of(s, length, reverse);
            let row = t * batch + b;
            let pr = row * 3 * hidden + j;
            let h_prev = previous_h(out, h0, s, t, b, j, batch, hidden, reverse);
            let r = gates[pr];
            let d = d_reset_h[ABSOLUTE_POS];
            let dr = d * h_prev * r * (1.0f32 - r);
            dp[pr] = dr;
            dq[qr] = dr;
            carry[ABSOLUTE_POS] = carry[ABSOLUTE_POS] + d * r;
        } else {
            dq[qr] = 0.0f32;
        }
    }
}
