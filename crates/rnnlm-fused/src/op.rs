//! The operation as a Burn backend extension: the trait every accelerated backend implements,
//! and the kernels' interface that the autodiff implementation builds its backward pass on.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, TensorMetadata, backend_extension};
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

/// One recurrent layer as one operation: the input projection of every step and the whole
/// time loop.
///
/// Inputs, time-major in their shapes (any strides: a batch-first tensor with its first two
/// dimensions swapped is read in place):
/// - `input`: the layer's dense input `[steps, batch, features]`; `[0]` for a one-hot input;
/// - `ids`: a one-hot input's token ids `[steps, batch]`, each below `input_weight`'s rows;
///   `[0]` for a dense input;
/// - `input_weight`: `W_x`, `[features or vocab, gates·hidden]`;
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
/// gradients of all seven float inputs: those of `W_x` and `W_h` each as one product over all
/// steps, the input's as one product, in the input's own layout.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Cube: cfg(feature = "cube"),
    Autodiff: cfg(feature = "autodiff"),
)]
pub trait ScanBackend: Backend {
    /// See the [trait](ScanBackend) documentation.
    #[allow(unused_variables, clippy::too_many_arguments)] // by the dispatch code of a build without any backend here
    fn recurrent_layer(
        cell: CellKind,
        order: ScanOrder,
        input: FloatTensor<Self>,
        ids: IntTensor<Self>,
        input_weight: FloatTensor<Self>,
        input_bias: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        hidden_bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// Row `ids[i]` of `table` for every `i`, `[rows]` ids into `[vocab, width]` giving
    /// `[rows, width]` (a batch's rows put in another order). Burn's `select`, with a backward
    /// pass that sums the gradient's rows by id in one vectorised pass
    /// ([`rnnlm_kernels::gather`]) instead of Burn's element-by-element `select_assign`.
    #[allow(unused_variables)] // as above
    fn gather_rows(table: FloatTensor<Self>, ids: IntTensor<Self>) -> FloatTensor<Self>;
}

/// The inputs of [`ScanBackend::recurrent_layer`] on one backend.
#[derive(Clone, Debug)]
pub struct ScanInputs<B: Backend> {
    /// `[steps, batch, features]` (any strides) or `[0]`.
    pub input: FloatTensor<B>,
    /// `[steps, batch]` or `[0]`.
    pub ids: IntTensor<B>,
    /// `[features or vocab, gates·hidden]`.
    pub input_weight: FloatTensor<B>,
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

impl<B: Backend> ScanInputs<B> {
    /// `[steps, batch]` of the layer's input, dense or token ids.
    pub fn steps_and_batch(&self) -> [usize; 2] {
        match self.input.shape()[..] {
            [steps, batch, _] => [steps, batch],
            _ => {
                let ids = self.ids.shape();
                [ids[0], ids[1]]
            }
        }
    }
}

/// What the backward pass needs from a forward pass, kept on the autodiff node.
#[derive(Clone, Debug)]
pub struct ScanSaved<B: Backend> {
    /// The cell.
    pub cell: CellKind,
    /// The dense input, as given (`[0]` for a one-hot input).
    pub input: FloatTensor<B>,
    /// The token ids, as given (`[0]` for a dense input).
    pub ids: IntTensor<B>,
    /// `[features or vocab, gates·hidden]`.
    pub input_weight: FloatTensor<B>,
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
    /// The forward pass's order.
    pub order: ScanOrder,
}

/// Which gradients a backward pass computes: those whose inputs take part in the caller's
/// graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerWanted {
    /// Of the dense input.
    pub input: bool,
    /// Of `W_x`.
    pub input_weight: bool,
    /// Of the time loop's inputs.
    pub scan: Wanted,
}

/// The gradients of a layer's inputs, each `None` where it was not [wanted](LayerWanted).
#[derive(Debug)]
pub struct ScanGrads<B: Backend> {
    /// Of `input`, with its shape `[steps, batch, features]`.
    pub input: Option<FloatTensor<B>>,
    /// Of `input_weight`.
    pub input_weight: Option<FloatTensor<B>>,
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
    /// The forward pass: the output, and the tape when `keep_tape` (else `None`).
    fn layer_forward(
        cell: CellKind,
        inputs: ScanInputs<Self>,
        keep_tape: bool,
    ) -> (FloatTensor<Self>, Option<ScanSaved<Self>>);

    /// The backward pass from the gradient of the output.
    fn layer_backward(
        saved: ScanSaved<Self>,
        d_output: FloatTensor<Self>,
        wanted: LayerWanted,
    ) -> ScanGrads<Self>;

    /// The gradient of [`ScanBackend::gather_rows`]'s table, `[vocab, width]`, from that of its
    /// output, `[ids, width]`.
    fn gather_rows_backward(
        d_output: FloatTensor<Self>,
        ids: IntTensor<Self>,
        vocab: usize,
    ) -> FloatTensor<Self>;
}
