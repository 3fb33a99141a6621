//! PyTorch itself reads what `rnnlm::export` writes: for every cell, both file formats load into
//! the modules the description names with `load_state_dict(strict=True)` and give rnnlm's
//! logits to 1e-5 (`scripts/check_export.py`).
//!
//! The Python is `$RNNLM_TORCH_PYTHON`, which `source scripts/backend-env.sh tch` sets (a venv
//! with torch 2.9.0 on the CPU). Without it the test prints why and passes, except under
//! `CI=true`, where a missing or broken Python is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::prelude::*;
use rnnlm::export::export_lm;
use rnnlm::{Activation, CellKind, RecurrentCore, RnnLm, RnnLmConfig, WeightInit};
use rnnlm_import::{WeightFormat, write_atomic, write_weights};
use rnnlm_tests::{ids, scratch_dir, values, workspace_file};

/// The models checked: every cell, one-hot and embedding input, one and two layers, and a
/// time-major core.
fn models(device: &Device) -> Vec<(&'static str, RnnLm)> {
    let base = |kind| RnnLmConfig::new(kind, 13, 10).with_init(WeightInit::PyTorch);
    let mut time_major = base(CellKind::Lstm).with_num_layers(2).init(device);
    if let RecurrentCore::Lstm(core) = &mut time_major.core {
        core.batch_first = false;
    }
    vec![
        ("rnn-tanh", base(CellKind::RnnScratch).init(device)),
        (
            "rnn-relu-2",
            base(CellKind::RnnScratch)
                .with_activation(Activation::Relu)
                .with_num_layers(2)
                .init(device),
        ),
        (
            "gru-2-embedding",
            base(CellKind::Gru)
                .with_num_layers(2)
                .with_embedding(6)
                .init(device),
        ),
        (
            "lstm-embedding",
            base(CellKind::Lstm).with_embedding(5).init(device),
        ),
        ("lstm-2-time-major", time_major),
    ]
}

/// The Python to run, or `None` (with a note) where there is none outside CI.
fn torch_python() -> Option<PathBuf> {
    let ci = std::env::var("CI").is_ok_and(|value| value == "true");
    let unavailable = |why: String| {
        let fix = "source scripts/backend-env.sh tch, which installs it and sets the variable";
        assert!(!ci, "CI=true and {why}: {fix}");
        eprintln!("skipping the PyTorch export check: {why} ({fix})");
        None
    };
    let Some(python) = std::env::var_os("RNNLM_TORCH_PYTHON").map(PathBuf::from) else {
        return unavailable("RNNLM_TORCH_PYTHON is not set".to_owned());
    };
    match Command::new(&python)
        .args(["-c", "import torch, safetensors"])
        .output()
    {
        Ok(output) if output.status.success() => Some(python),
        Ok(output) => unavailable(format!(
            "{} cannot import torch and safetensors: {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => unavailable(format!("{} does not run: {error}", python.display())),
    }
}

/// Token ids `[batch, steps]` and rnnlm's logits for them, as `check_export.py` reads them.
fn probe(model: &RnnLm, device: &Device) -> serde_json::Value {
    let (batch, steps, vocab) = (3, 7, model.vocab_size);
    let tokens: Vec<i64> = (0..batch * steps)
        .map(|i| ((i * 5 + 2) % vocab) as i64)
        .collect();
    let (logits, _) = model.forward(ids(&tokens, [batch, steps], device), None);
    let logits = values(logits);
    let rows: Vec<Vec<i64>> = tokens.chunks(steps).map(<[i64]>::to_vec).collect();
    let nested: Vec<Vec<&[f32]>> = logits
        .chunks(steps * vocab)
        .map(|row| row.chunks(vocab).collect())
        .collect();
    serde_json::json!({ "tokens": rows, "logits": nested })
}

fn check(python: &Path, weights: &Path, config: &Path, probe: &Path) -> Result<String, String> {
    let output = Command::new(python)
        .arg(workspace_file("scripts/check_export.py"))
        .args([weights, config, probe])
        .output()
        .map_err(|e| format!("{} does not run: {e}", python.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[test]
fn pytorch_loads_every_export_and_gives_the_same_logits() {
    let Some(python) = torch_python() else {
        return;
    };
    let device = Device::flex();
    let dir = scratch_dir("export-pytorch");
    for (name, model) in models(&device) {
        let export = export_lm(&model).unwrap_or_else(|e| panic!("{name}: {e}"));
        let config = dir.join(format!("{name}.config.json"));
        write_atomic(&config, &serde_json::to_vec(&export.description).unwrap()).unwrap();
        let probe_path = dir.join(format!("{name}.probe.json"));
        write_atomic(
            &probe_path,
            &serde_json::to_vec(&probe(&model, &device)).unwrap(),
        )
        .unwrap();
        for format in [WeightFormat::PyTorch, WeightFormat::Safetensors] {
            let weights = dir.join(format!("{name}.{}", format.extension()));
            write_weights(&weights, &export.tensors, format).unwrap();
            match check(&python, &weights, &config, &probe_path) {
                Ok(report) => print!("{report}"),
                Err(report) => panic!("{name} ({format:?}): PyTorch disagrees:\n{report}"),
            }
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}
