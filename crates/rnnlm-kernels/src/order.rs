//! The order in which a scan visits its steps and the rows' own lengths: below the cells, which
//! read it, and the loops ([`crate::scan`]), which follow it.

use crate::shared::split;

/// The order in which a scan visits its steps, and how many of them each row takes: what a
/// bidirectional layer's reverse direction and a batch of sequences of different lengths
/// (PyTorch's packed sequences) need from the same loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Order<'a> {
    /// Last step first: the reverse direction of a bidirectional layer. It reads the same
    /// projection and writes `h_t` at the same place `t`; nothing is flipped in memory.
    pub reverse: bool,
    /// Every row's own number of steps `[batch]`, each in `1..=steps`; empty when every row
    /// takes all of them. Row `b` takes steps `0..lengths[b]`, in the scan's order: its outputs
    /// past them are zero (and carry no gradient), and its state stays as it was there, so its
    /// final state is the one after its own last step and a reverse scan starts at that step.
    pub lengths: &'a [usize],
}

impl Order<'_> {
    /// Whether row `b` takes step `t`.
    #[inline(always)]
    pub(crate) fn takes(&self, b: usize, t: usize) -> bool {
        self.lengths.is_empty() || t < self.lengths[b]
    }

    /// The step visited before `t`, whose state step `t` starts from; `None` where row `b`
    /// starts from the initial state.
    #[inline(always)]
    pub(crate) fn previous(&self, b: usize, t: usize, steps: usize) -> Option<usize> {
        if self.reverse {
            let last = if self.lengths.is_empty() {
                steps
            } else {
                self.lengths[b]
            };
            (t + 1 < last).then_some(t + 1)
        } else {
            t.checked_sub(1)
        }
    }

    /// The steps in the order a forward scan visits them.
    pub(crate) fn steps(&self, steps: usize) -> Box<dyn Iterator<Item = usize>> {
        if self.reverse {
            Box::new((0..steps).rev())
        } else {
            Box::new(0..steps)
        }
    }

    /// The runs of consecutive rows of `rows` that take step `t`, as offsets into `rows`:
    /// the whole block without lengths, and one run per block when the rows are sorted by
    /// length, longest first.
    pub(crate) fn runs(
        &self,
        rows: std::ops::Range<usize>,
        t: usize,
    ) -> Vec<std::ops::Range<usize>> {
        let start = rows.start;
        let mut runs = Vec::new();
        let mut open: Option<usize> = None;
        for b in rows.clone() {
            match (self.takes(b, t), open) {
                (true, None) => open = Some(b - start),
                (false, Some(first)) => {
                    runs.push(first..b - start);
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(first) = open {
            runs.push(first..rows.end - start);
        }
        runs
    }

    /// Part `part` of `parts` of the rows `0..batch`, contiguous: as many rows each without
    /// lengths, else about as many steps each (the longest rows first take fewer rows).
    pub(crate) fn part(&self, batch: usize, parts: usize, part: usize) -> std::ops::Range<usize> {
        if self.lengths.is_empty() {
            split(batch, parts, part)
        } else {
            crate::shared::split_weighted(self.lengths, parts, part)
        }
    }

    pub(crate) fn check(&self, steps: usize, batch: usize) {
        if self.lengths.is_empty() {
            return;
        }
        assert_eq!(
            self.lengths.len(),
            batch,
            "scan: lengths holds {} values, expected one per row ({batch})",
            self.lengths.len()
        );
        let outside = |(_, length): &(usize, &usize)| !(1..=steps).contains(*length);
        if let Some((row, &length)) = self.lengths.iter().enumerate().find(outside) {
            panic!("scan: row {row} has length {length}, expected 1..={steps}");
        }
    }
}
