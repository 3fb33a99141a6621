//! A cheap check that a device's runtime is there before any work is given to it.

use burn::prelude::{Device, Tensor};

/// Why a device cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    /// The backend panicked while starting or running a first kernel: typically a missing
    /// driver or runtime library (no Vulkan driver for wgpu, no NVIDIA driver for cuda).
    #[error("the backend could not start: {0}")]
    Unavailable(String),
    /// The backend ran but computed a wrong sum (e.g. wgpu on a GL fallback adapter).
    #[error("the backend computes wrong results (1 + 2 + 3 = {0})")]
    WrongResult(f32),
}

/// Sums `[1, 2, 3]` on `device` and checks the answer, catching the backend's panic.
///
/// Backends start their runtime lazily, on the first operation, and a missing runtime is a panic
/// deep inside the backend (wgpu without a Vulkan driver, cuda without an NVIDIA driver, CubeCL's
/// cpu runtime if LLVM cannot compile). Calling this first turns that into an error the caller can
/// report with what to install. It compiles and runs one small kernel: milliseconds on CPU
/// backends, up to a few seconds on a backend that JIT-compiles its kernels. Backends linked as
/// shared libraries (tch: libtorch) fail to load before `main` when the library is missing; no
/// check inside the program can report that.
pub fn probe_device(device: &Device) -> Result<(), DeviceError> {
    // The backend's panic message becomes the error; keep it off stderr meanwhile.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| {
        Tensor::<1>::from_floats([1.0, 2.0, 3.0], device)
            .sum()
            .into_scalar::<f32>()
    });
    std::panic::set_hook(previous);
    match result {
        Ok(6.0) => Ok(()),
        Ok(sum) => Err(DeviceError::WrongResult(sum)),
        Err(payload) => Err(DeviceError::Unavailable(
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown error".to_owned()),
        )),
    }
}
