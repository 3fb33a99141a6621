//! The operation as a Burn backend extension: the trait every accelerated backend implements,
//! and the kernels' interface that the autodiff implementation builds its backward pass on.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, backend_extension};
use rnnlm_kernels::CellKind;
use rnnlm_kernels::scan::{Order, Wanted};

/// The order in which a scan visits its steps, and how many each row takes (see
/// [`rnnlm_kernels::scan::Order`]), owned so that an autodiff node keeps it for the backward
/// pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanOrder {
    /// Last step first: the reverse direction of a bidirectional layer. It reads the same
    /// projection and writes `h_t` at the same place `t`.
    pub reverse: bool,
    /// Every row's own number of steps `[batch]`, each in `1..=steps`; empty when every row
    /// takes all of them. Outputs past a row's length are zero, and its final state is the one
    /// after its own last step.
    pub lengths: Vec<usize>,
}

impl ScanOrder {
    /// The kernels' view of it.
    pub fn as_kernel_order(&self) -> Order<'_> {
        Order {
            reverse: self.reverse,
            lengths: &self.lengths,
        }
    }
}

/// One recurrent layer's whole time loop as one operation.
///
/// Inputs, time-major:
/// - `projected`: the input projection of every step without its bias,
///   `[steps, batch, gates·hidden]`;
/// - `input_bias`: added to every step's projection, `[gates·hidden]`;
/// - `h0`: the initial state, `[batch, hidden]`;
/// - `c0`: the LSTM's initial cell, `[batch, hidden]`; `[0]` for the other cells;
/// - `weight`: the hidden weight `W_h`, `[hidden, gates·hidden]`;
/// - `hidden_bias`: PyTorch's GRU's `b_hh`, `[gates·hidden]`; `[0]` for the other cells.
///
/// - `order`: the order of the steps and every row's length ([`ScanOrder`]).
///
/// Output: every step's `h` (zero past a row's length), then every row's final `h` and (LSTM)
/// final cell, `[steps + 1 (+ 1), batch, hidden]`.
///
/// On an autodiff device the operation records one node whose backward pass gives the
/// gradients of all six inputs, the hidden weight's as one product over all steps.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    Autodiff: cfg(feature = "autodiff"),
)]
pub trait ScanBackend: Backend {
    /// See the [trait](ScanBackend) documentation.
    #[allow(unused_variables)] // by the dispatch code of a build without any backend here
    fn recurrent_scan(
        cell: CellKind,
        order: ScanOrder,
        projected: FloatTensor<Self>,
        input_bias: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        hidden_bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The one-hot input's projection that feeds the first layer's scan: row `ids[i]` of
    /// `table` for every `i`, `[rows]` ids into `[vocab, width]` giving `[rows, width]`. Burn's
    /// `select`, with a backward pass that sums the gradient's rows by id in one vectorised
    /// pass ([`rnnlm_kernels::gather`]) instead of Burn's element-by-element `select_assign`.
    #[allow(unused_variables)] // as above
    fn gather_rows(table: FloatTensor<Self>, ids: IntTensor<Self>) -> FloatTensor<Self>;
}

/// The inputs of [`ScanBackend::recurrent_scan`] on one backend.
#[derive(Clone, Debug)]
pub struct ScanInputs<B: Backend> {
    /// `[steps, batch, gates·hidden]`.
    pub projected: FloatTensor<B>,
    /// `[gates·hidden]`.
    pub input_bias: FloatTensor<B>,
    /// `[batch, hidden]`.
    pub h0: FloatTensor<B>,
    /// `[batch, hidden]` or `[0]`.
    pub c0: FloatTensor<B>,
    /// `[hidden, gates·hidden]`.
    pub weight: FloatTensor<B>,
    /// `[gates·hidden]` or `[0]`.
    pub hidden_bias: FloatTensor<B>,
    /// The order of the steps and the rows' lengths.
    pub order: ScanOrder,
}

/// What the backward pass needs from a forward scan, kept on the autodiff node.
#[derive(Clone, Debug)]
pub struct ScanSaved<B: Backend> {
    /// The cell.
    pub cell: CellKind,
    /// `[batch, hidden]`.
    pub h0: FloatTensor<B>,
    /// `[batch, hidden]` or `[0]`.
    pub c0: FloatTensor<B>,
    /// `[hidden, gates·hidden]`.
    pub weight: FloatTensor<B>,
    /// The forward output, `[steps + 1 (+ 1), batch, hidden]`.
    pub output: FloatTensor<B>,
    /// The gate activations, `[steps · batch, gates·hidden]` (`[0]` for the RNN).
    pub gates: FloatTensor<B>,
    /// The cell's extra tape, `[steps · batch, hidden]` (`[0]` for the RNN).
    pub extra: FloatTensor<B>,
    /// The forward scan's order.
    pub order: ScanOrder,
}

/// The gradients of a scan's inputs, each `None` where it was not [`Wanted`].
#[derive(Debug)]
pub struct ScanGrads<B: Backend> {
    /// Of `projected`, `[steps, batch, gates·hidden]` (always computed).
    pub projected: FloatTensor<B>,
    /// Of `input_bias`.
    pub input_bias: Option<FloatTensor<B>>,
    /// Of `h0`.
    pub h0: Option<FloatTensor<B>>,
    /// Of `c0`.
    pub c0: Option<FloatTensor<B>>,
    /// Of `weight`.
    pub weight: Option<FloatTensor<B>>,
    /// Of `hidden_bias`.
    pub hidden_bias: Option<FloatTensor<B>>,
}

/// The forward and backward kernels of a backend, under the extension: what the autodiff
/// implementation calls on the backend it wraps. Implemented by the host backends through
/// [`rnnlm_kernels`]; a GPU kernel would implement it for its backend and add that backend
/// to [`ScanBackend`]'s list.
pub trait ScanKernels: Backend {
    /// The forward scan: the output, and the tape when `keep_tape` (else `None`).
    fn scan_forward(
        cell: CellKind,
        inputs: ScanInputs<Self>,
        keep_tape: bool,
    ) -> (FloatTensor<Self>, Option<ScanSaved<Self>>);

    /// The backward scan from the gradient of the output.
    fn scan_backward(
        saved: ScanSaved<Self>,
        d_output: FloatTensor<Self>,
        wanted: Wanted,
    ) -> ScanGrads<Self>;

    /// The gradient of [`ScanBackend::gather_rows`]'s table, `[vocab, width]`, from that of its
    /// output, `[ids, width]`.
    fn gather_rows_backward(
        d_output: FloatTensor<Self>,
        ids: IntTensor<Self>,
        vocab: usize,
    ) -> FloatTensor<Self>;
}
