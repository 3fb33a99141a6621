//! Helpers shared by the workspace tests: the device under test and tensor conversions.

pub mod fused_paths;

use burn::prelude::*;

/// The device the tests run on: the first CPU backend compiled in (`flex` by default,
/// `ndarray` with `--no-default-features --features ndarray`).
#[allow(deprecated)]
pub fn device() -> Device {
    #[cfg(feature = "flex")]
    {
        Device::flex()
    }
    #[cfg(all(not(feature = "flex"), feature = "ndarray"))]
    {
        Device::ndarray()
    }
    #[cfg(not(any(feature = "flex", feature = "ndarray")))]
    compile_error!("rnnlm-tests needs a CPU backend feature: flex or ndarray");
}

/// Every backend compiled into the tests, by name (flex first). wgpu takes the default adapter
/// (lavapipe's Vulkan CPU device on a machine without a GPU). Panics if a backend does not run,
/// except cuda, which is left out with a note where no driver answers (a build with cuda on a
/// machine without a GPU).
#[allow(deprecated, clippy::vec_init_then_push)] // each push is behind its own feature
pub fn compiled_backends() -> Vec<(&'static str, Device)> {
    #[allow(unused_mut)]
    let mut backends = Vec::new();
    #[cfg(feature = "flex")]
    backends.push(("flex", Device::flex()));
    #[cfg(feature = "ndarray")]
    backends.push(("ndarray", Device::ndarray()));
    #[cfg(feature = "wgpu")]
    backends.push((
        "wgpu",
        Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
    ));
    #[cfg(feature = "tch")]
    backends.push(("tch", Device::libtorch()));
    #[cfg(feature = "cpu")]
    backends.push(("cpu", Device::cpu()));
    #[cfg(feature = "cuda")]
    {
        // Tested where its driver answers; where it does not (a build on a machine without a
        // GPU), said so.
        let cuda = Device::cuda(0);
        match rnnlm_train::probe_device(&cuda) {
            Ok(()) => backends.push(("cuda", cuda)),
            Err(error) => eprintln!("cuda is compiled in but not tested here: {error}"),
        }
    }
    for (name, device) in &backends {
        if let Err(error) = rnnlm_train::probe_device(device) {
            panic!("backend {name} is compiled in but does not run: {error}");
        }
    }
    backends
}

/// Token ids `[rows, cols]` from a row-major slice.
pub fn ids(values: &[i64], shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// A float tensor from a row-major slice.
pub fn floats<const D: usize>(values: &[f32], shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// The values of a float tensor, row-major.
pub fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("float tensor")
}

/// Largest absolute element-wise difference; panics if the shapes differ.
pub fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    values(a)
        .iter()
        .zip(values(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Every parameter value of `model`, in module order, flattened.
pub fn parameters(model: &rnnlm::RnnLm) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            self.0.extend(values(p.val()));
        }
    }
    let mut collect = Collect(Vec::new());
    burn::module::Module::visit(model, &mut collect);
    assert!(!collect.0.is_empty(), "the model has parameters");
    collect.0
}

/// The gradient of every parameter of `module` that has one, by parameter id, row-major.
pub fn param_grads<M: burn::module::Module>(
    module: &M,
    grads: &burn::tensor::Gradients,
) -> std::collections::HashMap<burn::module::ParamId, Vec<f32>> {
    struct Collect<'a> {
        grads: &'a burn::tensor::Gradients,
        out: std::collections::HashMap<burn::module::ParamId, Vec<f32>>,
    }
    impl burn::module::ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if let Some(grad) = param.val().grad(self.grads) {
                self.out.insert(param.id, values(grad));
            }
        }
    }
    let mut collect = Collect {
        grads,
        out: std::collections::HashMap::new(),
    };
    module.visit(&mut collect);
    collect.out
}

/// Runs `work` with the fused scan's mode set for the whole process (data-parallel workers and
/// burn-train run on threads of their own, which [`rnnlm::fused::with_mode`] would not reach),
/// then puts [`rnnlm::fused::Mode::Fused`] back. Tests that call it take turns.
pub fn in_mode<R>(mode: rnnlm::fused::Mode, work: impl FnOnce() -> R) -> R {
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            rnnlm::fused::set_mode(rnnlm::fused::Mode::Fused);
        }
    }
    let _restore = Restore;
    rnnlm::fused::set_mode(mode);
    work()
}

/// Reproducible values in `[-scale, scale]` without the backend's generator (other tests of
/// the same binary draw from it meanwhile); `salt` picks another sequence.
pub fn pattern(len: usize, salt: usize, scale: f32) -> Vec<f32> {
    (0..len)
        .map(|i| scale * ((i * 7 + salt * 13) as f32 * 0.618).sin())
        .collect()
}

/// A tensor of `shape` holding [`pattern`]'s values.
pub fn pattern_tensor<const D: usize>(
    shape: [usize; D],
    salt: usize,
    scale: f32,
    device: &Device,
) -> Tensor<D> {
    let len = shape.iter().product();
    Tensor::from_data(TensorData::new(pattern(len, salt, scale), shape), device)
}

/// A burn-nn gate's weights and (where it has them) biases set away from burn-nn's
/// initialisation (its biases start at zero), reproducibly, so that every bias and every
/// gate's place in a packing counts; `salt` picks other values.
pub fn fill_gate(gate: &mut burn::nn::GateController, salt: usize, dev: &Device) {
    use burn::module::Param;
    for (k, linear) in [&mut gate.input_transform, &mut gate.hidden_transform]
        .into_iter()
        .enumerate()
    {
        let salt = salt * 4 + k * 2;
        linear.weight = Param::from_tensor(pattern_tensor(linear.weight.dims(), salt, 0.5, dev));
        let width = linear.weight.dims()[1];
        if linear.bias.is_some() {
            linear.bias = Some(Param::from_tensor(pattern_tensor(
                [width],
                salt + 1,
                0.3,
                dev,
            )));
        }
    }
}

/// Largest absolute element-wise difference of two equally long slices.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// What float rounding may change in results as large as `want`'s: 1e-5 relative to its largest
/// magnitude (or absolute below 1). Two implementations that sum in another order (the fused
/// kernels against Burn's tensor operations) differ by a few ulp of their largest values, and
/// the tests' random weights make logits of 10 and more.
pub fn rounding_bound(want: &[f32]) -> f32 {
    1e-5 * want.iter().fold(1.0f32, |m, x| m.max(x.abs()))
}

/// A file of the workspace, by its path from the workspace root (`configs/quick.toml`).
pub fn workspace_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// A file from the shared data directory (`../shared/data` beside the workspace, or
/// `$RNNLM_SHARED_DATA`), which tests and CI read instead of downloading.
pub fn shared_data(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("RNNLM_SHARED_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
        });
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "test data {} is missing (set RNNLM_SHARED_DATA)",
        path.display()
    );
    path
}

/// A fresh, empty directory under the system temp dir, unique to this process and `name`.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rnnlm-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A small training experiment on the first `tokens` characters of The Time Machine: writes
/// the text and the config (the given TOML tables after the defaults below) into `dir`, and
/// returns the options for [`rnnlm_train::train`] with artifacts in `dir/run`.
pub fn tiny_experiment(
    dir: &std::path::Path,
    tokens: usize,
    extra_toml: &str,
) -> rnnlm_train::TrainOptions {
    let text = std::fs::read_to_string(shared_data("timemachine.txt")).expect("read timemachine");
    let text: String = text.chars().take(tokens).collect();
    let data = dir.join("text.txt");
    std::fs::write(&data, text).expect("write text");
    let config = dir.join("tiny.toml");
    let toml = format!(
        "{extra_toml}\n{}",
        "[data]\nbatch_size = 4\nnum_steps = 8\nvalid_fraction = 0.2\n"
    );
    std::fs::write(&config, toml).expect("write config");
    rnnlm_train::TrainOptions {
        config,
        overrides: vec!["train.sample_every=0".to_owned()],
        data: vec![data],
        encoding: None,
        artifacts: dir.join("run"),
        resume: false,
        device: device(),
        devices: Vec::new(),
        // The prepared token file goes beside the test's files, not into the user's cache.
        cache_dir: Some(dir.join("cache")),
        progress: rnnlm_train::Progress::Lines,
        interrupter: None,
    }
}

/// Adds `delta` to entry `index` of parameter `id` (finite-difference gradient checks).
pub struct Nudge {
    /// The parameter.
    pub id: burn::module::ParamId,
    /// The entry, row-major.
    pub index: usize,
    /// What is added to it.
    pub delta: f32,
}

impl burn::module::ModuleMapper for Nudge {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        if param.id != self.id {
            return param;
        }
        let (index, delta) = (self.index, self.delta);
        param.map(|t| {
            let (dims, device) = (t.dims(), t.device());
            let mut v = values(t);
            v[index] += delta;
            floats(&v, dims, &device)
        })
    }
}

/// Replaces every float parameter of a module with [`pattern`]'s values (`scale` times a sine,
/// each parameter with its own salt, in the order the mapper visits them): weights that do not
/// depend on a random generator other tests share, so that a test on them gives the same
/// numbers on every run.
pub struct Patterned {
    /// The largest magnitude.
    pub scale: f32,
    /// The salt of the next parameter.
    pub next: usize,
}

impl burn::module::ModuleMapper for Patterned {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        let salt = self.next;
        self.next += 1;
        let scale = self.scale;
        param.map(|t| {
            let (dims, device) = (t.dims(), t.device());
            floats(&pattern(dims.iter().product(), salt, scale), dims, &device)
        })
    }
}

/// What a finished process printed: its stdout, then its stderr (for the CLI's tests'
/// assertions and failure messages).
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `path` as a command-line argument.
///
/// # Panics
/// If the path is not UTF-8 (the tests' scratch paths are).
pub fn path_str(path: &std::path::Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}
