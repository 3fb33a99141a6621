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
        "wgpu" => {
            let device = if index == 0 {
                Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)
            } else {
                Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(index))
            };
            probe(
                &device,
                "wgpu",
                "it needs a GPU driver or, without a GPU, Mesa's Vulkan CPU driver \
                 (Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1)",
            )?;
            device
        }
        #[cfg(feature = "tch")]
        "tch" => Device::libtorch(),
        #[cfg(feature = "cpu")]
        "cpu" => Device::cpu(),
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(index),
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

/// Runs a tiny sum on `device` so a backend whose runtime is missing is reported with what to
/// install, instead of a panic deep inside the backend on first use. Without a Vulkan driver,
/// wgpu may fall back to a GL adapter on which reductions panic; that is caught here too.
#[cfg(feature = "wgpu")]
fn probe(device: &Device, name: &str, hint: &str) -> anyhow::Result<()> {
    use burn::prelude::Tensor;
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| {
        Tensor::<1>::from_floats([1.0, 2.0, 3.0], device)
            .sum()
            .into_scalar::<f32>()
    });
    std::panic::set_hook(previous);
    match result {
        Ok(sum) if sum == 6.0 => Ok(()),
        Ok(sum) => Err(anyhow::anyhow!(
            "backend {name:?} computes wrong results (1 + 2 + 3 = {sum}); {hint}"
        )),
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown error".to_owned());
            Err(anyhow::anyhow!(
                "backend {name:?} could not start ({message}); {hint}"
            ))
        }
    }
}

/// The default backend: the first one compiled in.
pub fn default_name() -> &'static str {
    compiled().first().copied().unwrap_or("flex")
}
