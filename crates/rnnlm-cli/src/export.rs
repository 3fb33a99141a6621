//! `rnnlm export`: a checkpoint directory becomes PyTorch weights (`.pt` or safetensors), with
//! its vocabulary and the description of the PyTorch modules beside them.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use burn::prelude::*;
use rnnlm::export::export_lm;
use rnnlm_import::{WeightFormat, write_atomic, write_weights};

use crate::WhichArg;

/// The file beside the weights that describes the PyTorch modules (`rnnlm::export::TorchLm`).
pub const DESCRIPTION: &str = "config.json";
/// The file beside the weights that holds the vocabulary (as in a checkpoint directory).
pub const VOCAB: &str = "vocab.json";

/// What `rnnlm export` takes.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A training run's artifacts directory (or one `rnnlm import` wrote).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The weights file to write: .pt (read by torch.load) or .safetensors. vocab.json and
    /// config.json (the PyTorch modules to build) are written beside it.
    #[arg(long)]
    out: PathBuf,
    /// Which model of the run: the best by validation perplexity (model-best.bpk, where the
    /// run kept one) or the last.
    #[arg(long, value_enum, default_value_t = WhichArg::Best)]
    which: WhichArg,
    /// The file format; by default --out's extension decides (.pt, .pth, .bin: pt;
    /// .safetensors: safetensors).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
}

/// `--format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum FormatArg {
    Safetensors,
    Pt,
}

impl From<FormatArg> for WeightFormat {
    fn from(format: FormatArg) -> Self {
        match format {
            FormatArg::Safetensors => WeightFormat::Safetensors,
            FormatArg::Pt => WeightFormat::PyTorch,
        }
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let dir = output_dir(&args.out)?;
    let format = resolve_format(&args.out, args.format)?;
    // The model is only written to disk: the CPU reference backend is always compiled in.
    let device = Device::flex();
    let loaded = rnnlm_train::load_model_as(&args.checkpoint, args.which.into(), &device)?;
    let export = export_lm(&loaded.model)
        .with_context(|| format!("cannot export {} to PyTorch", loaded.weights.display()))?;
    // Each file is written atomically; the weights first, as the likeliest to fail.
    write_weights(&args.out, &export.tensors, format)?;
    let vocab_path = dir.join(VOCAB);
    write_atomic(&vocab_path, &serde_json::to_vec(&loaded.vocab)?)?;
    let description_path = dir.join(DESCRIPTION);
    let mut description = serde_json::to_vec_pretty(&export.description)?;
    description.push(b'\n');
    write_atomic(&description_path, &description)?;
    println!(
        "exported {} from {} to {} ({} tensors), with {} and {}",
        export.description.describe(),
        loaded.weights.display(),
        args.out.display(),
        export.tensors.len(),
        vocab_path.display(),
        description_path.display()
    );
    Ok(())
}

/// `--format`, or the one `--out`'s extension names.
fn resolve_format(out: &Path, format: Option<FormatArg>) -> anyhow::Result<WeightFormat> {
    match format {
        Some(format) => Ok(format.into()),
        None => WeightFormat::from_path(out).ok_or_else(|| {
            anyhow!(
                "cannot tell the format of --out {} from its extension: name it .pt (torch.load) \
                 or .safetensors, or pass --format pt|safetensors",
                out.display()
            )
        }),
    }
}

/// The existing directory `--out` goes into.
fn output_dir(out: &Path) -> anyhow::Result<PathBuf> {
    if out.is_dir() {
        bail!(
            "--out {} is a directory; give the weights file to write, e.g. {}",
            out.display(),
            out.join("model.pt").display()
        );
    }
    let dir = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!(
            "the directory of --out {}, {}, does not exist; create it first (mkdir -p {})",
            out.display(),
            dir.display(),
            dir.display()
        );
    }
    Ok(dir)
}
