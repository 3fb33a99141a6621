//! A recurrent layer as one Burn operation with its own backward pass: the input projection of
//! every step and the whole time loop.
//!
//! Through Burn's tensor operations, one time step of a layer is a dozen small operations, each
//! recorded on the autodiff tape and replayed backwards; on a CPU that overhead, not arithmetic,
//! sets the speed of the chapter's models. [`try_layer`] runs a whole layer as one operation
//! instead (a backend extension, [`ScanBackend`]), computed by [`rnnlm_kernels`]: the projection
//! of every step written straight into the loop's gates, the input read where it lies (a
//! batch-first tensor needs no transpose). On an autodiff device it records one graph node whose
//! backward pass gives the gradients of the input, both weights, the biases and the initial
//! state, each weight's as one product over all steps.
//!
//! It runs on the backends this crate is built for, by cargo feature: `flex`, `ndarray` and
//! `tch` (LibTorch's CPU device; its GPUs keep the composite path) through the host kernels,
//! and `wgpu`, `cuda` and `cpu` (Burn's CubeCL backends) through CubeCL kernels, each turning
//! on Burn's feature of the same name and `autodiff` (the CubeCL ones Burn's `fusion` as well,
//! as Burn's default features do), for `f32` tensors. Anywhere
//! else (another backend, another float type, a backend whose feature is off here, or the
//! composite [`Mode`]) [`try_layer`] hands its inputs back and the caller runs its own tensor
//! operations. [`status`] says which applies to a device and why.
//!
//! ```
//! # #[cfg(feature = "flex")] {
//! use burn::prelude::*;
//! use rnnlm_fused::{CellKind, Clip, LayerInput, LayerTensors};
//!
//! let device = Device::flex();
//! assert!(rnnlm_fused::is_active(&device));
//! let (batch, steps, features, hidden) = (2, 5, 3, 8);
//! // Batch-first, as burn-nn's layers take it: read in place, time-major by its strides.
//! let x = Tensor::<3>::ones([batch, steps, features], &device);
//! let input_weight = Tensor::<2>::zeros([features, 4 * hidden], &device);
//! let input_bias = Tensor::<1>::zeros([4 * hidden], &device);
//! let h0 = Tensor::<2>::zeros([batch, hidden], &device);
//! let weight = Tensor::<2>::zeros([hidden, 4 * hidden], &device);
//! let inputs = LayerTensors {
//!     input: LayerInput::Dense(x.swap_dims(0, 1)),
//!     input_weight: &input_weight,
//!     input_bias: &input_bias,
//!     h0: &h0,
//!     c0: Some(&h0),
//!     weight: &weight,
//!     hidden_bias: None,
//!     order: Default::default(), // forwards, every row whole
//! };
//! let out = rnnlm_fused::try_layer(CellKind::Lstm(Clip::NONE), inputs).expect("flex runs the fused layer");
//! assert_eq!(out.dims(), [steps + 2, batch, hidden]); // every h, the final h, the final cell
//! # }
//! ```
//!
//! A backend is added by implementing [`ScanKernels`] (forward with its tape, backward) for it
//! and listing it on [`ScanBackend`], as the CubeCL backends are.

// burn-ndarray and burn-tch are deprecated in Burn 0.22; their implementations stay while they ship.
#![cfg_attr(any(feature = "ndarray", feature = "tch"), allow(deprecated))]

mod alloc;
#[cfg(feature = "autodiff")]
mod autodiff;
#[cfg(feature = "cube")]
mod cube;
#[cfg(any(feature = "flex", feature = "ndarray"))]
mod host;
mod op;

use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

use burn::prelude::*;
use burn::tensor::DType;

pub use alloc::{
    freed_memory_kept, keep_freed_memory, keep_freed_memory_unless_told_not_to,
    set_automatic_allocator_settings,
};
pub use op::{LayerWanted, ScanBackend, ScanGrads, ScanInputs, ScanKernels, ScanOrder, ScanSaved};
pub use rnnlm_kernels::{Activation, CellKind, Clip};
/// The kernels' thread count ([`rnnlm_kernels::threads`], [`rnnlm_kernels::set_threads`]) and
/// how long their helper threads stay awake ([`rnnlm_kernels::set_helper_stay_awake`]).
pub use rnnlm_kernels::{set_helper_stay_awake, set_threads, threads};

/// Whether the fused operation runs where it can, or the composite tensor operations run
/// everywhere (for tests that compare the two, and for debugging).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The fused scan on every device where [`status`] is [`Status::Active`].
    Fused,
    /// The composite tensor operations everywhere.
    Composite,
}

/// The process-wide mode: 0 = not set (the environment decides), 1 = fused, 2 = composite.
static MODE: AtomicU8 = AtomicU8::new(0);

thread_local! {
    static THREAD_MODE: Cell<Option<Mode>> = const { Cell::new(None) };
}

/// `RNNLM_FUSED`, read once: `off`, `0`, `false` or `composite` force the composite path.
fn mode_from_env() -> Mode {
    static FROM_ENV: OnceLock<Mode> = OnceLock::new();
    *FROM_ENV.get_or_init(|| match std::env::var("RNNLM_FUSED") {
        Err(_) => Mode::Fused,
        Ok(value) => match value.trim().to_ascii_lowercase().as_str() {
            "" | "1" | "on" | "true" | "fused" => Mode::Fused,
            "0" | "off" | "false" | "composite" => Mode::Composite,
            _ => {
                eprintln!(
                    "warning: RNNLM_FUSED={value:?} is not one of on, off, 1, 0, true, false, \
                     fused, composite; the fused scan stays on"
                );
                Mode::Fused
            }
        },
    })
}

/// The mode in force on this thread: [`with_mode`]'s, else [`set_mode`]'s, else the environment
/// variable `RNNLM_FUSED` (`off` forces the composite path), else [`Mode::Fused`].
pub fn mode() -> Mode {
    if let Some(mode) = THREAD_MODE.with(Cell::get) {
        return mode;
    }
    match MODE.load(Ordering::Relaxed) {
        1 => Mode::Fused,
        2 => Mode::Composite,
        _ => mode_from_env(),
    }
}

/// Sets the mode for the whole process (every thread without a [`with_mode`] of its own),
/// overriding `RNNLM_FUSED`.
pub fn set_mode(mode: Mode) {
    MODE.store(
        match mode {
            Mode::Fused => 1,
            Mode::Composite => 2,
        },
        Ordering::Relaxed,
    );
}

/// Runs `work` with `mode` in force on this thread only (tests comparing the two paths side by
/// side): the forward passes inside record the operations of that mode; a backward pass
/// follows whatever was recorded.
pub fn with_mode<R>(mode: Mode, work: impl FnOnce() -> R) -> R {
    struct Restore(Option<Mode>);
    impl Drop for Restore {
        fn drop(&mut self) {
            THREAD_MODE.with(|m| m.set(self.0));
        }
    }
    let _restore = Restore(THREAD_MODE.with(|m| m.replace(Some(mode))));
    work()
}

/// Whether the fused scan runs on a device, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// It runs (for `f32` tensors).
    Active,
    /// The device's backend has an implementation, but this build lacks the cargo feature
    /// that compiles it (Burn's own feature of that name is on, this crate's is not).
    NotCompiled {
        /// `flex`, `ndarray`, `tch`, `wgpu`, `cuda` or `cpu`: the feature to turn on
        /// (`rnnlm = { features = [..] }`).
        feature: &'static str,
    },
    /// The backend has no implementation (Burn's remote backend, ...): the composite path runs.
    Unsupported,
    /// The backend's implementation reads host memory, and this device is a GPU (LibTorch on
    /// CUDA): the composite path runs.
    HostOnly,
    /// [`Mode::Composite`] is in force.
    Disabled,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Active => write!(f, "fused"),
            Status::NotCompiled { feature } => write!(
                f,
                "composite: built without rnnlm's `{feature}` feature (turn it on next to burn's)"
            ),
            Status::Unsupported => write!(f, "composite: no fused kernel for this backend"),
            Status::HostOnly => write!(
                f,
                "composite: the fused kernels read host memory, and this device is a GPU"
            ),
            Status::Disabled => write!(f, "composite: forced (RNNLM_FUSED=off or --fused off)"),
        }
    }
}

/// The backend of a device whose implementation this build compiled, if any.
fn compiled_for(device: &Device) -> bool {
    let inner = device.clone().inner();
    match inner.as_dispatch() {
        #[cfg(feature = "flex")]
        burn::backend::DispatchDevice::Flex(_) => true,
        #[cfg(feature = "ndarray")]
        burn::backend::DispatchDevice::NdArray(_) => true,
        // The host kernels read LibTorch's CPU tensors; its GPUs keep the tensor operations.
        #[cfg(feature = "tch")]
        burn::backend::DispatchDevice::LibTorch(device) => {
            matches!(device, burn::backend::LibTorchDevice::Cpu)
        }
        // One implementation for every CubeCL runtime (wgpu, cuda, rocm, cpu).
        #[cfg(feature = "cube")]
        burn::backend::DispatchDevice::Cube(_) => true,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Whether the fused scan runs on `device` (for `f32` tensors), and if not, why.
pub fn status(device: &Device) -> Status {
    if compiled_for(device) {
        if device.is_autodiff() && !cfg!(feature = "autodiff") {
            return Status::NotCompiled {
                feature: "autodiff",
            };
        }
        return if mode() == Mode::Fused {
            Status::Active
        } else {
            Status::Disabled
        };
    }
    // Another backend, or one whose implementation this build left out (Burn's feature on,
    // ours off): told apart by the device's name alone, since its variant is not visible here.
    let name = format!("{:?}", device.clone().inner().as_dispatch());
    if name.starts_with("Flex") {
        Status::NotCompiled { feature: "flex" }
    } else if name.starts_with("NdArray") {
        Status::NotCompiled { feature: "ndarray" }
    } else if name.starts_with("LibTorch(Cpu") {
        Status::NotCompiled { feature: "tch" }
    } else if name.starts_with("LibTorch") {
        Status::HostOnly
    } else if let Some(feature) = cube_feature(&name) {
        Status::NotCompiled { feature }
    } else {
        Status::Unsupported
    }
}

/// The feature that compiles the kernels for a CubeCL device, by its runtime's name.
fn cube_feature(name: &str) -> Option<&'static str> {
    let runtime = name.strip_prefix("Cube(")?;
    [("Wgpu", "wgpu"), ("Cuda", "cuda"), ("Cpu", "cpu")]
        .into_iter()
        .find(|(prefix, _)| runtime.starts_with(prefix))
        .map(|(_, feature)| feature)
}

/// Sets LibTorch's intra-op threads (its own process-wide setting, `at::set_num_threads`), for
/// an application that trains on LibTorch's CPU device with the fused layers.
///
/// The fused kernels run on threads of their own ([`set_threads`]); after each of its
/// operations LibTorch's OpenMP workers spin, waiting for the next one, and on a machine with
/// few cores the two pools take turns keeping each other off the cores. Measured on 2 cores
/// (`rnnlm bench --model lstm`, LSTM 256, batch 32 x 35): with LibTorch's default (one thread
/// per core) a training step took 17.3 ms, 0.56x flex's speed; with one LibTorch thread
/// 9.95 ms, 0.96x. The `rnnlm` CLI sets 1 for `--device tch` unless `RNNLM_LIBTORCH_THREADS`
/// says otherwise; this crate never calls it by itself.
#[cfg(feature = "tch")]
pub fn set_libtorch_threads(threads: usize) {
    tch::set_num_threads(i32::try_from(threads.max(1)).unwrap_or(i32::MAX));
}

/// Whether the fused scan runs on `device`: [`status`] is [`Status::Active`].
pub fn is_active(device: &Device) -> bool {
    status(device) == Status::Active
}

/// Whether the fused scan runs on `device` through the host kernels ([`rnnlm_kernels`]: flex,
/// ndarray, LibTorch's CPU), whose tensors live in host memory: where a host copy of the weights
/// (`rnnlm_kernels::decode`) steps generation with no copy to or from a device.
pub fn runs_on_host(device: &Device) -> bool {
    // Without the `cube` features no CubeCL device is active in the first place.
    #[cfg(feature = "cube")]
    let on_cube = matches!(
        device.clone().inner().as_dispatch(),
        burn::backend::DispatchDevice::Cube(_)
    );
    #[cfg(not(feature = "cube"))]
    let on_cube = false;
    is_active(device) && !on_cube
}

/// A layer's input, time-major in its shape.
#[derive(Clone, Debug)]
pub enum LayerInput {
    /// Feature vectors `[steps, batch, features]`, in any layout: a batch-first tensor with
    /// its first two dimensions swapped (`x.swap_dims(0, 1)`), or a narrowed one, is read where
    /// it lies, and its gradient comes back in its own order.
    Dense(Tensor<3>),
    /// Token ids `[steps, batch]`, each below the input weight's rows: one-hot vectors, whose
    /// projection is a row of `W_x` per token.
    OneHot(Tensor<2, Int>),
}

impl LayerInput {
    /// `[steps, batch]`.
    pub fn steps_and_batch(&self) -> [usize; 2] {
        match self {
            LayerInput::Dense(x) => {
                let [steps, batch, _] = x.dims();
                [steps, batch]
            }
            LayerInput::OneHot(ids) => ids.dims(),
        }
    }

    /// The device the input lives on.
    pub fn device(&self) -> Device {
        match self {
            LayerInput::Dense(x) => x.device(),
            LayerInput::OneHot(ids) => ids.device(),
        }
    }
}

/// The inputs of one recurrent layer (see [`ScanBackend`]).
#[derive(Clone, Debug)]
pub struct LayerTensors<'a> {
    /// The layer's input, time-major: dense `[steps, batch, features]` or token ids
    /// `[steps, batch]`.
    pub input: LayerInput,
    /// `W_x`: `[features or vocab, gates·hidden]`.
    pub input_weight: &'a Tensor<2>,
    /// The bias added to every step's projection: `[gates·hidden]`.
    pub input_bias: &'a Tensor<1>,
    /// The initial state: `[batch, hidden]`.
    pub h0: &'a Tensor<2>,
    /// The LSTM's initial cell: `[batch, hidden]`; `None` for the other cells.
    pub c0: Option<&'a Tensor<2>>,
    /// The hidden weight `W_h`: `[hidden, gates·hidden]`.
    pub weight: &'a Tensor<2>,
    /// PyTorch's GRU's `b_hh`: `[gates·hidden]`; `None` for the other cells (and a GRU without
    /// one).
    pub hidden_bias: Option<&'a Tensor<1>>,
    /// The order of the steps and every row's length (`Default`: forwards, every row whole).
    pub order: ScanOrder,
}

/// One recurrent layer as one operation, the input projection of every step included: every
/// step's `h` (zero past a row's length), then every row's final `h` and (LSTM) final cell,
/// `[steps + 1 (+ 1), batch, hidden]`, time-major.
///
/// `Err(inputs)`, the inputs handed back unchanged, where the fused layer does not run for
/// these tensors (see [`status`]; also for a float type other than `f32`), so the caller runs
/// its composite operations on them instead.
///
/// # Panics
/// If the shapes do not fit each other, naming the tensor, its shape and the expected one (the
/// cores check their inputs before this).
// The error hands the caller's tensors back (a handful of handles), so it is as large as they are.
#[allow(clippy::result_large_err)]
pub fn try_layer(cell: CellKind, inputs: LayerTensors<'_>) -> Result<Tensor<3>, LayerTensors<'_>> {
    let device = inputs.input.device();
    if !is_active(&device) {
        return Err(inputs);
    }
    let dense_f32 = match &inputs.input {
        LayerInput::Dense(x) => x.dtype() == DType::F32,
        LayerInput::OneHot(_) => true,
    };
    let all_f32 = dense_f32
        && [
            inputs.input_weight.dtype(),
            inputs.input_bias.dtype(),
            inputs.h0.dtype(),
            inputs.weight.dtype(),
        ]
        .into_iter()
        .chain(inputs.c0.map(Tensor::dtype))
        .chain(inputs.hidden_bias.map(Tensor::dtype))
        .all(|dtype| dtype == DType::F32);
    if !all_f32 {
        return Err(inputs);
    }
    check_shapes(cell, &inputs);
    alloc::keep_freed_memory_unless_told_not_to();
    // The inputs a layer lacks are empty stand-ins: constants, so autodiff asks no gradient.
    let absent = || Tensor::<1>::zeros([0], &device).into_dispatch();
    let (input, ids) = match inputs.input {
        LayerInput::Dense(x) => (
            x.into_dispatch(),
            Tensor::<1, Int>::zeros([0], &device).into_dispatch(),
        ),
        LayerInput::OneHot(ids) => (absent(), ids.into_dispatch()),
    };
    let out = <burn::backend::Dispatch as ScanBackend>::recurrent_layer(
        cell,
        inputs.order,
        input,
        ids,
        inputs.input_weight.clone().into_dispatch(),
        inputs.input_bias.clone().into_dispatch(),
        inputs.h0.clone().into_dispatch(),
        inputs
            .c0
            .map_or_else(absent, |c0| c0.clone().into_dispatch()),
        inputs.weight.clone().into_dispatch(),
        inputs
            .hidden_bias
            .map_or_else(absent, |bias| bias.clone().into_dispatch()),
    );
    Ok(Tensor::from_dispatch(out))
}

/// Rows `ids` of `table`: `[rows]` ids into `[vocab, width]` give `[rows, width]` (a batch's
/// rows put in another order, a one-hot projection outside a layer). Where the fused layer runs
/// ([`is_active`], `f32`), one operation whose backward pass sums the gradient's rows by id in
/// one vectorised pass; elsewhere Burn's `select`, with the same numbers.
///
/// # Panics
/// As `select`: on an id outside `0..vocab` (the cores check their ids before this).
pub fn gather_rows(table: Tensor<2>, ids: Tensor<1, Int>) -> Tensor<2> {
    if !is_active(&table.device()) || table.dtype() != DType::F32 {
        return table.select(0, ids);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as ScanBackend>::gather_rows(
        table.into_dispatch(),
        ids.into_dispatch(),
    ))
}

fn check_shapes(cell: CellKind, inputs: &LayerTensors<'_>) {
    let [steps, batch] = inputs.input.steps_and_batch();
    let [h0_batch, hidden] = inputs.h0.dims();
    let width = cell.gates() * hidden;
    let expect = |what: &str, dims: &[usize], expected: &[usize], names: &str| {
        assert!(
            dims == expected,
            "rnnlm_fused::try_layer: {what} has shape {dims:?}, expected {names} = {expected:?}"
        );
    };
    assert!(
        steps > 0 && batch > 0 && hidden > 0,
        "rnnlm_fused::try_layer: input has {steps} steps, {batch} rows and h0 {hidden} units, expected every size at least 1"
    );
    expect(
        "h0",
        &[h0_batch, hidden],
        &[batch, hidden],
        "[batch, hidden]",
    );
    let [inputs_rows, input_width] = inputs.input_weight.dims();
    expect(
        "input_weight",
        &[inputs_rows, input_width],
        &[inputs_rows, width],
        "[features or vocab, gates·hidden]",
    );
    if let LayerInput::Dense(x) = &inputs.input {
        let features = x.dims()[2];
        expect(
            "input_weight",
            &[inputs_rows, input_width],
            &[features, width],
            "[features, gates·hidden]",
        );
    }
    expect(
        "input_bias",
        &inputs.input_bias.dims(),
        &[width],
        "[gates·hidden]",
    );
    expect(
        "weight",
        &inputs.weight.dims(),
        &[hidden, width],
        "[hidden, gates·hidden]",
    );
    match (inputs.c0, cell.has_cell()) {
        (Some(c0), true) => expect("c0", &c0.dims(), &[batch, hidden], "[batch, hidden]"),
        (None, true) => panic!("rnnlm_fused::try_layer: the LSTM needs c0 [batch, hidden]"),
        (Some(_), false) => {
            panic!("rnnlm_fused::try_layer: c0 is given, but a {cell:?} has no cell")
        }
        (None, false) => {}
    }
    match inputs.hidden_bias {
        Some(_) if !cell.has_hidden_bias() => {
            panic!("rnnlm_fused::try_layer: hidden_bias is given, but a {cell:?} has none")
        }
        Some(bias) => expect("hidden_bias", &bias.dims(), &[width], "[gates·hidden]"),
        None => {}
    }
    let lengths = &inputs.order.lengths;
    assert!(
        lengths.is_empty() || lengths.len() == batch,
        "rnnlm_fused::try_layer: order.lengths holds {} values, expected one per row ({batch})",
        lengths.len()
    );
    if let Some((row, length)) = lengths
        .iter()
        .enumerate()
        .find(|(_, l)| !(1..=steps).contains(*l))
    {
        panic!("rnnlm_fused::try_layer: row {row} has length {length}, expected 1..={steps}");
    }
}

/// The crate's README, whose example runs as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
