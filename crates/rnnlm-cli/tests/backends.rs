//! The `rnnlm` binary on every backend compiled into it: `rnnlm train --config
//! configs/quick.toml --device NAME` for one epoch as a user runs it (the recurrent layers on
//! the fused scan where the backend has it: flex, ndarray, tch on its CPU), then with `--fused off` on those,
//! so that the backend's own operations do all of the training's arithmetic; `rnnlm backends`,
//! which says which path each backend's layers take; and the messages for a backend that is not
//! compiled in.
//!
//! With the default features this runs flex only. CI builds it together with the cross-backend
//! suite, in one cargo invocation so burn is compiled once for both:
//! `cargo test --release -p rnnlm-tests -p rnnlm-cli --features rnnlm-tests/ndarray,rnnlm-cli/ndarray,...
//! --test backends` (see `.ci/run` and `scripts/backend-env.sh` for what wgpu, tch and cpu need).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rnnlm_tests::output_text as text;

fn rnnlm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rnnlm"))
        .args(args)
        // Plain progress lines, no terminal dashboard.
        .env("CI", "true")
        .output()
        .expect("the rnnlm binary runs")
}

/// The backends the binary under test was built with (the package's features are the binary's).
fn compiled() -> Vec<&'static str> {
    [
        ("flex", cfg!(feature = "flex")),
        ("ndarray", cfg!(feature = "ndarray")),
        ("wgpu", cfg!(feature = "wgpu")),
        ("tch", cfg!(feature = "tch")),
        ("cpu", cfg!(feature = "cpu")),
        ("cuda", cfg!(feature = "cuda")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `epoch,train_perplexity,valid_perplexity,...,tokens_per_second,...` of the first epoch.
fn first_epoch(metrics: &Path) -> (f64, f64, f64) {
    let csv = std::fs::read_to_string(metrics).expect("metrics.csv is written");
    let header: Vec<&str> = csv.lines().next().expect("a header").split(',').collect();
    let row: Vec<f64> = csv
        .lines()
        .nth(1)
        .expect("one epoch")
        .split(',')
        .map(|v| v.parse().expect("numbers"))
        .collect();
    let column = |name: &str| row[header.iter().position(|h| *h == name).expect(name)];
    (
        column("train_perplexity"),
        column("valid_perplexity"),
        column("tokens_per_second"),
    )
}

/// One epoch of `configs/quick.toml` on `name` with `extra` arguments; `None` for cuda built
/// where no driver answers (checked to say so, and to write nothing).
fn train_one_epoch(name: &str, label: &str, extra: &[&str]) -> Option<(f64, f64, f64)> {
    let config = workspace().join("configs/quick.toml");
    let data = rnnlm_tests::shared_data("timemachine.txt");
    let dir = rnnlm_tests::scratch_dir(&format!("cli-quick-{name}-{label}"));
    let run = dir.join("run");
    let mut args = vec![
        "train",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--device",
        name,
        "--artifacts",
        run.to_str().unwrap(),
        "--set",
        "train.epochs=1",
        "--set",
        "train.sample_every=0",
    ];
    args.extend_from_slice(extra);
    let output = rnnlm(&args);
    if name == "cuda" && !output.status.success() {
        // Built on a machine without a GPU: the message must say what is missing, and nothing
        // may have been written.
        let message = text(&output);
        assert!(
            message.contains("NVIDIA GPU and its driver"),
            "cuda without a driver: {message}"
        );
        assert!(!run.exists(), "cuda failed but left {}", run.display());
        eprintln!("cuda: compiled in, no driver here; the error is clear: not trained");
        return None;
    }
    assert!(
        output.status.success(),
        "{name}, {label}: {}",
        text(&output)
    );
    assert!(
        run.join("model.bpk").is_file(),
        "{name}, {label}: no model written"
    );
    let epoch = first_epoch(&run.join("metrics.csv"));
    std::fs::remove_dir_all(&dir).ok();
    Some(epoch)
}

/// The backends whose recurrent layers run the fused scan (rnnlm's features of those names;
/// LibTorch's on its CPU device, which these tests use; the CubeCL ones through their kernels).
const FUSED: [&str; 6] = ["flex", "ndarray", "tch", "wgpu", "cpu", "cuda"];

#[test]
fn the_quick_config_trains_one_epoch_on_every_backend() {
    // CubeCL's CPU runtime runs d2l's GRU at minutes per minibatch on two cores (its kernels
    // are JIT-compiled and slow), so there the epoch is a small model on the book's first 3000
    // characters.
    let small: &[&str] = &[
        "--set",
        "model.hidden_size=16",
        "--set",
        "data.max_tokens=3000",
        "--set",
        "data.batch_size=8",
        "--set",
        "data.num_steps=10",
    ];
    for name in compiled() {
        let fused = FUSED.contains(&name);
        let mut runs = vec![("default", Vec::new())];
        if fused {
            runs.push(("composite", vec!["--fused", "off"]));
        }
        for (label, mut args) in runs {
            if name == "cpu" {
                args.extend_from_slice(small);
            }
            let Some((train, valid, tokens_per_second)) = train_one_epoch(name, label, &args)
            else {
                break;
            };
            // One epoch takes a 28-token model well below the uniform guess (perplexity 28).
            let bound = if name == "cpu" { 28.0 } else { 20.0 };
            assert!(
                train < bound && valid < bound,
                "{name}, {label}: perplexities after one epoch: train {train}, validation {valid}"
            );
            let layers = if fused && label == "default" {
                "fused"
            } else {
                "composite"
            };
            eprintln!(
                "{name}, {label} ({layers} layers): one epoch of configs/quick.toml{}: train \
                 perplexity {train:.3}, validation {valid:.3}, {tokens_per_second:.0} tokens/s",
                if name == "cpu" {
                    " (small: hidden 16, 3000 characters)"
                } else {
                    ""
                }
            );
        }
    }
}

#[test]
fn backends_lists_every_backend_and_checks_those_compiled_in() {
    let output = rnnlm(&["backends"]);
    assert!(output.status.success(), "{}", text(&output));
    let listing = String::from_utf8_lossy(&output.stdout).into_owned();
    for name in ["flex", "ndarray", "wgpu", "tch", "cpu", "cuda"] {
        let line = listing
            .lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} is not listed:\n{listing}"));
        if !compiled().contains(&name) {
            assert!(line.contains(&format!("--features {name}")), "{line}");
        } else if name != "cuda" {
            assert!(line.contains("compiled in, runs"), "{line}");
            let layers = if FUSED.contains(&name) {
                "recurrent layers: fused"
            } else {
                "recurrent layers: composite: no fused kernel for this backend"
            };
            assert!(line.contains(layers), "{name}: {line}");
        }
    }
}

#[test]
fn a_backend_that_is_not_compiled_in_names_the_feature() {
    let missing = ["ndarray", "wgpu", "tch", "cpu", "cuda"]
        .into_iter()
        .find(|name| !compiled().contains(name));
    if let Some(name) = missing {
        let dir = rnnlm_tests::scratch_dir(&format!("cli-missing-{name}"));
        let output = rnnlm(&[
            "train",
            "--config",
            workspace().join("configs/quick.toml").to_str().unwrap(),
            "--device",
            name,
            "--artifacts",
            dir.join("run").to_str().unwrap(),
        ]);
        let message = text(&output);
        assert!(!output.status.success());
        assert!(
            message.contains("not compiled into this binary")
                && message.contains(&format!("--features {name}")),
            "{message}"
        );
        assert!(!dir.join("run").exists(), "nothing may be written");
    }
    let output = rnnlm(&[
        "generate",
        "--checkpoint",
        "nowhere",
        "--prefix",
        "a",
        "--device",
        "tpu",
    ]);
    let message = text(&output);
    assert!(!output.status.success());
    assert!(
        message.contains("unknown backend \"tpu\"") && message.contains("flex"),
        "{message}"
    );
}

/// `--device tch` sets LibTorch's own threads (1, or `RNNLM_LIBTORCH_THREADS`); a value that is
/// not a thread count is refused by name before anything runs.
#[test]
fn a_libtorch_thread_count_that_is_not_a_number_is_named() {
    if !compiled().contains(&"tch") {
        return;
    }
    let output = Command::new(env!("CARGO_BIN_EXE_rnnlm"))
        .args([
            "bench",
            "--model",
            "rnn-scratch",
            "--device",
            "tch",
            "--steps",
            "1",
        ])
        .env("RNNLM_LIBTORCH_THREADS", "zero")
        .output()
        .expect("the binary runs");
    let log = text(&output);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("RNNLM_LIBTORCH_THREADS=\"zero\": expected a number of threads >= 1"),
        "{log}"
    );
}
