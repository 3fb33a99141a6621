//! The gradient of a row gather, the one-hot input's projection: `out[i] = table[ids[i]]`
//! (`[rows, width]` from a `[vocab, width]` table) gives the table the row sums of `d_out` by
//! id.
//!
//! The first layer of a one-hot language model gathers a row of its input weight per token,
//! `[steps·batch, gates·hidden]` values per minibatch; summing them back is a pass over that
//! many gradients. Burn's own `select_assign` adds element by element through a bounds-checked
//! closure (0.4-0.6 ms a step for d2l's LSTM, measured, a twentieth of the step); here each row
//! is one slice added to another, which the compiler vectorises, and the columns are split
//! between the threads, so every sum still runs over the rows in order (the result does not
//! depend on the thread count).

use crate::shared::{SharedMut, parallel, split};

/// Below this many gradient values the threads cost more than they save.
const PARALLEL_FROM: usize = 1 << 16;

/// `d_table [vocab, width]`: row `v` is the sum, in row order, of the rows `i` of `d_out`
/// `[ids.len(), width]` with `ids[i] == v`; rows no id names are zero.
///
/// # Panics
/// If `d_out` does not hold `ids.len()` rows of `width`, or an id is not below `vocab`, naming
/// the id and its row.
pub fn scatter_add_rows(d_out: &[f32], width: usize, ids: &[usize], vocab: usize) -> Vec<f32> {
    assert_eq!(
        d_out.len(),
        ids.len() * width,
        "scatter_add_rows: d_out holds {} values, expected [{}, {width}]",
        d_out.len(),
        ids.len()
    );
    if let Some((row, &id)) = ids.iter().enumerate().find(|&(_, &id)| id >= vocab) {
        panic!("scatter_add_rows: row {row} has id {id}, expected ids in 0..{vocab}");
    }
    let mut d_table = crate::shared::zeros(vocab * width);
    let threads = if d_out.len() < PARALLEL_FROM {
        1
    } else {
        crate::threads().min(width)
    };
    let shared = SharedMut::new(&mut d_table);
    parallel(threads, |part| {
        let columns = split(width, threads, part);
        for (row, &id) in ids.iter().enumerate() {
            let source = &d_out[row * width + columns.start..row * width + columns.end];
            // SAFETY: each part writes only its own columns of every row.
            let target = unsafe { shared.slice(id * width + columns.start, columns.len()) };
            for (t, s) in target.iter_mut().zip(source) {
                *t += s;
            }
        }
    });
    d_table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_rows_of_each_id_and_leaves_the_others_zero() {
        // Rows 0 and 2 go to id 1, row 1 to id 0; id 2 is never named.
        let d_out = [1.0, 2.0, 10.0, 20.0, 100.0, 200.0];
        let d_table = scatter_add_rows(&d_out, 2, &[1, 0, 1], 3);
        assert_eq!(d_table, [10.0, 20.0, 101.0, 202.0, 0.0, 0.0]);
    }

    #[test]
    fn threads_give_the_same_bits() {
        let (rows, width, vocab) = (300, 257, 7);
        let d_out: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let ids: Vec<usize> = (0..rows).map(|i| i * 5 % vocab).collect();
        crate::set_threads(Some(1));
        let one = scatter_add_rows(&d_out, width, &ids, vocab);
        crate::set_threads(Some(3));
        let three = scatter_add_rows(&d_out, width, &ids, vocab);
        crate::set_threads(None);
        assert_eq!(one, three);
        // Against the plain definition.
        let mut expected = vec![0.0f32; vocab * width];
        for (row, &id) in ids.iter().enumerate() {
            for j in 0..width {
                expected[id * width + j] += d_out[row * width + j];
            }
        }
        assert_eq!(one, expected);
    }

    #[test]
    #[should_panic(expected = "row 1 has id 4, expected ids in 0..3")]
    fn names_an_id_outside_the_table() {
        scatter_add_rows(&[0.0; 4], 2, &[0, 4], 3);
    }
}
