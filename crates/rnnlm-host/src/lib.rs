//! [rnnlm]'s models in plain Rust on a host copy of the weights: the fast path on CPU
//! backends, for generation and for training.
//!
//! Through Burn tensors, one time step of a recurrent layer is a dozen small operations
//! (a matmul, gate slices, non-linearities, a stack for the state), each with its allocation and
//! dispatch, and in training each is recorded on the autodiff tape and replayed backwards. For
//! the chapter's models (batch 32, hidden 256-512, or batch 1 when generating) that overhead, not
//! arithmetic, sets the speed on a CPU. The engines here copy the weights to host memory and run
//! each step as one product of the state with the layer's packed `[hidden, gates·hidden]` weight
//! followed by one pass over the gates:
//!
//! - [`HostLm`] and [`generate`] generate: a token's input projection is a row of a table
//!   computed once (an embedding followed by the first layer's input weights is folded into it),
//!   and a step costs one product per layer and the output layer;
//! - [`backward`] trains: the loss of a minibatch and the gradient of every parameter, with the
//!   time loop of each layer split by batch rows between threads (rows are independent in the
//!   recurrence, so the threads never wait for each other inside it), what the backward pass
//!   needs kept from the forward pass, and each weight gradient one large product over all
//!   steps at once; [`forward`] is its forward pass alone, for validation and evaluation.
//!
//! The per-step products use an AVX-512 micro-kernel over weights packed once per call (checked
//! at run time; loops the compiler vectorises otherwise, for AVX2 + FMA where present); the
//! large products use the `gemm` crate, in pieces fixed by their shape that the engine's threads
//! share (so no result depends on the thread count). The threads are started once and stay
//! awake for a couple of milliseconds after each parallel part of a step, as waking a core
//! costs more than most parts take; [`profile`] reports where a training step spends its time.
//! The non-linearities use a vectorisable `exp`. Both
//! engines compute what the tensor path computes, to float rounding (about 1e-6: another
//! summation order and an `exp` accurate to a few ulp): the tests check logits, states and
//! gradients against Burn's autodiff for every cell, and the gradients against finite
//! differences. Use them on CPU backends, and the tensor path for an accelerator
//! ([`Engine::for_backend`]).
//!
//! ```
//! use burn::optim::{GradientsParams, SgdConfig};
//! use burn::prelude::*;
//! use rnnlm::sample::Decoding;
//! use rnnlm::{CellKind, RnnLmConfig};
//! use rnnlm_host::{HostLm, ParamGrad};
//!
//! let device = Device::flex().autodiff();
//! let mut model = RnnLmConfig::new(CellKind::Gru, 28, 32).init(&device);
//! let mut optimizer = SgdConfig::new().init();
//! let mut state = model.begin_state(2, &device);
//! for _ in 0..3 {
//!     let x = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4, 5, 6], [2, 3]), &device);
//!     let y = Tensor::<2, Int>::from_data(TensorData::new(vec![2i64, 3, 4, 5, 6, 7], [2, 3]), &device);
//!     // What forward, the loss and backward() give through autodiff; the gradients live on
//!     // the device without autodiff, as backward() leaves them.
//!     let pass = rnnlm_host::backward(&model, x, y, state, 1.0, &device.clone().inner());
//!     state = pass.state; // already without a graph
//!     let mut grads = GradientsParams::new();
//!     for (id, grad) in pass.grads {
//!         match grad {
//!             ParamGrad::Vector(g) => grads.register(id, g),
//!             ParamGrad::Matrix(g) => grads.register(id, g),
//!         }
//!     }
//!     model = optimizer.step(1.0, model, grads);
//! }
//!
//! // Generation: the same tokens as rnnlm::sample::generate, without a tensor op per step.
//! let host = HostLm::new(&model);
//! let text = rnnlm_host::generate(&host, &[vec![3, 1, 4]], 10, &Decoding::Greedy, |_| {
//!     std::ops::ControlFlow::Continue(())
//! });
//! assert_eq!(text[0].len(), 10);
//! ```

mod cell;
mod generate;
mod math;
mod pool;
pub mod profile;
mod train;
mod weights;

pub use generate::{HostLm, HostState, generate, generate_with};
#[doc(hidden)]
pub use math::Isa;
pub use train::{HostBackward, ParamGrad, backward, backward_tuned, forward};

/// Which implementation runs a model: Burn tensors on its device, or the host engines of this
/// crate ([`generate`] and [`HostLm`] for generation, [`backward`] and [`forward`] for training
/// and validation). Both compute the same function to float rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Burn tensor operations on the model's device (with autodiff for training): every
    /// backend, and the choice for an accelerator.
    Tensor,
    /// A host copy of the weights stepped by hand-written loops: no tensor operation per time
    /// step. The fast path on CPU backends.
    Host,
}

impl Engine {
    /// The faster engine for a backend, by its name (`flex`, `ndarray`, `tch`, `cpu`, `wgpu`,
    /// `cuda`; an index such as `cuda:1` is ignored): host on the CPU backends, where a tensor
    /// operation costs more than the arithmetic of a step, tensor on accelerators.
    pub fn for_backend(name: &str) -> Self {
        match name.split(':').next().unwrap_or(name) {
            "flex" | "ndarray" | "tch" | "cpu" => Engine::Host,
            _ => Engine::Tensor,
        }
    }

    /// `host` or `tensor`.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Tensor => "tensor",
            Engine::Host => "host",
        }
    }
}
