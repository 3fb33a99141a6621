//! Scalar f64 re-implementations of the three cells, written from the formulas alone (PyTorch's
//! documentation and d2l), to check the tensor code against. Weights use the crate's packed
//! layout: row-major `[input, gates·hidden]` with the gates side by side.

/// `x [input] · w [input, cols]`.
pub fn vec_mat(x: &[f64], w: &[f64], cols: usize) -> Vec<f64> {
    assert_eq!(w.len(), x.len() * cols);
    (0..cols)
        .map(|j| {
            x.iter()
                .enumerate()
                .map(|(i, xi)| xi * w[i * cols + j])
                .sum()
        })
        .collect()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// One layer's weights in packed layout.
#[derive(Clone, Debug)]
pub struct Weights {
    pub input: Vec<f64>,
    pub input_bias: Vec<f64>,
    pub hidden: Vec<f64>,
    pub hidden_bias: Option<Vec<f64>>,
}

pub fn rnn_step(w: &Weights, x: &[f64], h: &[f64], relu: bool) -> Vec<f64> {
    let n = h.len();
    let a = add(
        &add(&vec_mat(x, &w.input, n), &vec_mat(h, &w.hidden, n)),
        &w.input_bias,
    );
    a.into_iter()
        .map(|v| if relu { v.max(0.0) } else { v.tanh() })
        .collect()
}

/// `d2l = true`: reset gate applied to `h` before the matmul.
pub fn gru_step(w: &Weights, x: &[f64], h: &[f64], d2l: bool) -> Vec<f64> {
    let n = h.len();
    let xw = add(&vec_mat(x, &w.input, 3 * n), &w.input_bias);
    let hw = vec_mat(h, &w.hidden, 3 * n);
    let hb = w.hidden_bias.clone().unwrap_or_else(|| vec![0.0; 3 * n]);
    let r: Vec<f64> = (0..n).map(|j| sigmoid(xw[j] + hw[j] + hb[j])).collect();
    let z: Vec<f64> = (0..n)
        .map(|j| sigmoid(xw[n + j] + hw[n + j] + hb[n + j]))
        .collect();
    let cand: Vec<f64> = if d2l {
        let rh: Vec<f64> = (0..n).map(|j| r[j] * h[j]).collect();
        // W_hn is the last n columns of the packed hidden weight.
        let w_hn: Vec<f64> = (0..n)
            .flat_map(|i| w.hidden[i * 3 * n + 2 * n..(i + 1) * 3 * n].to_vec())
            .collect();
        let rhw = vec_mat(&rh, &w_hn, n);
        (0..n).map(|j| (xw[2 * n + j] + rhw[j]).tanh()).collect()
    } else {
        (0..n)
            .map(|j| (xw[2 * n + j] + r[j] * (hw[2 * n + j] + hb[2 * n + j])).tanh())
            .collect()
    };
    (0..n)
        .map(|j| (1.0 - z[j]) * cand[j] + z[j] * h[j])
        .collect()
}

pub fn lstm_step(w: &Weights, x: &[f64], h: &[f64], c: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n = h.len();
    let g = add(
        &add(&vec_mat(x, &w.input, 4 * n), &vec_mat(h, &w.hidden, 4 * n)),
        &w.input_bias,
    );
    let mut h2 = vec![0.0; n];
    let mut c2 = vec![0.0; n];
    for j in 0..n {
        let (i, f, cand, o) = (
            sigmoid(g[j]),
            sigmoid(g[n + j]),
            g[2 * n + j].tanh(),
            sigmoid(g[3 * n + j]),
        );
        c2[j] = f * c[j] + i * cand;
        h2[j] = o * c2[j].tanh();
    }
    (h2, c2)
}
