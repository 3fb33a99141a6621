//! Backend selection by name among the backends compiled in.

use burn::prelude::Device;

/// Backend names `--device` accepts, with the cargo feature that compiles each in.
pub const BACKENDS: [(&str, &str); 6] = [
    ("flex", "flex"),
    ("ndarray", "ndarray"),
    ("wgpu", "wgpu"),
    ("tch", "tch"),
    ("cpu", "cpu"),
    ("cuda", "cuda"),
];

/// The backends this binary was built with.
pub fn compiled() -> Vec<&'static str> {
    let mut names = Vec::new();
    if cfg!(feature = "flex") {
        names.push("flex");
    }
    if cfg!(feature = "ndarray") {
        names.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    if cfg!(feature = "tch") {
        names.push("tch");
    }
    if cfg!(feature = "cpu") {
        names.push("cpu");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    names
}

/// The device for `name` (`backend` or `backend:index`, e.g. `cuda:1`), or an error saying which
/// feature to build with. CPU backends (flex, ndarray, cpu, tch) have one device: an index is
/// accepted and names the same device, so `["flex", "flex"]` runs two data-parallel workers on it.
#[allow(deprecated)] // Device::ndarray and Device::libtorch are deprecated in burn 0.22 but work.
pub fn by_name(name: &str) -> anyhow::Result<Device> {
    let (name, index) = match name.split_once(':') {
        Some((backend, index)) => (
            backend,
            index.parse::<usize>().map_err(|_| {
                anyhow::anyhow!(
                    "device {name:?}: the part after ':' must be a device index, e.g. cuda:1"
                )
            })?,
        ),
        None => (name, 0),
    };
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    let _ = index;
    let device = match name {
        #[cfg(feature = "flex")]
        "flex" => Device::flex(),
        #[cfg(feature = "ndarray")]
        "ndarray" => Device::ndarray(),
        #[cfg(feature = "wgpu")]
        "wgpu" => probe(
            if index == 0 {
                Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)
            } else {
                Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(index))
            },
            "wgpu",
            "it needs a GPU driver or, without a GPU, Mesa's Vulkan CPU driver \
             (Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1)",
        )?,
        #[cfg(feature = "tch")]
        "tch" => {
            let device = probe(
                Device::libtorch(),
                "tch",
                "it needs LibTorch 2.9.0 (see scripts/backend-env.sh and the README's backends table)",
            )?;
            set_libtorch_threads()?;
            device
        }
        #[cfg(feature = "cpu")]
        "cpu" => probe(
            Device::cpu(),
            "cpu",
            "CubeCL's CPU runtime compiles its kernels with LLVM at run time; use flex, the \
             default CPU backend, if it cannot",
        )?,
        #[cfg(feature = "cuda")]
        "cuda" => probe(
            Device::cuda(index),
            "cuda",
            "it needs an NVIDIA GPU and its driver (libcuda.so); on a machine without one, use \
             flex",
        )?,
        other => {
            let compiled = compiled().join(", ");
            return Err(match BACKENDS.iter().find(|(n, _)| *n == other) {
                Some((_, feature)) => anyhow::anyhow!(
                    "backend {other:?} is not compiled into this binary (it has: {compiled}); \
                     rebuild with `cargo build --release -p rnnlm-cli --features {feature}`"
                ),
                None => anyhow::anyhow!(
                    "unknown backend {other:?}; choose one of: {compiled} (compiled in), or build with \
                     another of {}",
                    BACKENDS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    };
    Ok(device)
}

/// LibTorch's own threads for `--device tch`: 1 unless `RNNLM_LIBTORCH_THREADS` gives a number.
/// The fused layers run on the kernels' threads, and LibTorch's spinning OpenMP workers would
/// keep them off the cores (see `rnnlm::fused::set_libtorch_threads`, which has the figures).
#[cfg(feature = "tch")]
#[allow(deprecated)] // Device::libtorch is deprecated in burn 0.22 but works.
fn set_libtorch_threads() -> anyhow::Result<()> {
    let threads = match std::env::var("RNNLM_LIBTORCH_THREADS") {
        Err(_) => 1,
        Ok(value) => value.trim().parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
            anyhow::anyhow!(
                "RNNLM_LIBTORCH_THREADS={value:?}: expected a number of threads >= 1 (LibTorch's \
                 intra-op threads; unset, the CLI uses 1 beside the fused kernels' own)"
            )
        })?,
    };
    if rnnlm::fused::is_active(&Device::libtorch()) {
        rnnlm::fused::set_libtorch_threads(threads);
    }
    Ok(())
}

/// Checks that `device` runs (see [`rnnlm_train::probe_device`]), so a backend whose runtime is
/// missing is reported with what to install instead of a panic deep inside the backend on first
/// use.
#[cfg(any(feature = "wgpu", feature = "tch", feature = "cpu", feature = "cuda"))]
fn probe(device: Device, name: &str, hint: &str) -> anyhow::Result<Device> {
    rnnlm_train::probe_device(&device)
        .map_err(|error| anyhow::anyhow!("backend {name:?}: {error}; {hint}"))?;
    Ok(device)
}

/// The default backend: the first one compiled in.
pub fn default_name() -> &'static str {
    compiled().first().copied().unwrap_or("flex")
}

/// `rnnlm backends`: every backend name, whether it is compiled in, and whether it runs here.
pub fn report() {
    for (name, feature) in BACKENDS {
        let status = if compiled().contains(&name) {
            match by_name(name) {
                Ok(device) => format!(
                    "compiled in, runs; recurrent layers: {}",
                    rnnlm::fused::status(&device)
                ),
                Err(error) => format!("compiled in, does not run: {error}"),
            }
        } else {
            format!("not compiled in (build with --features {feature})")
        };
        println!("{name:<8} {status}");
    }
}
