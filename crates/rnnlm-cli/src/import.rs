//! `rnnlm import`: PyTorch or d2l weights plus a vocabulary become a checkpoint directory.

use std::path::PathBuf;

use anyhow::{Context, bail};
use burn::prelude::*;
use rnnlm::{Activation, CellKind};
use rnnlm_data::{Corpus, CorpusOptions, CorpusSource, Preprocess, TokenLevel, Tokenizer, Vocab};
use rnnlm_import::{ImportOptions, StateDict, import_lm};
use rnnlm_train::{
    DataConfig, ExperimentConfig, OptimizerConfig, ScheduleConfig, TrainConfig, files,
};
use serde::de::{Deserialize, IntoDeserializer, value::Error as ValueError};

/// What `rnnlm import` takes.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The weights: a `torch.save` file (.pt, .pth, .bin) of an nn.RNN/nn.GRU/nn.LSTM model with
    /// an nn.Linear head (d2l's RNNModel), or of d2l's scratch RNN; or a .safetensors file.
    #[arg(long)]
    weights: PathBuf,
    /// The vocabulary as JSON: rnnlm's vocab.json, or the list of tokens in index order (d2l's
    /// `vocab.idx_to_token`, "<unk>" first).
    #[arg(
        long,
        required_unless_present = "vocab_from",
        conflicts_with = "vocab_from"
    )]
    vocab: Option<PathBuf>,
    /// Rebuild the vocabulary from the text the model was trained on, as d2l does: a UTF-8
    /// file, or `timemachine` for The Time Machine (downloaded once, checked by sha1).
    #[arg(long, value_name = "FILE|timemachine")]
    vocab_from: Option<String>,
    /// How text is cleaned before tokenising (d2l-lines, d2l-whole, raw); stored in the
    /// checkpoint so `generate` and `eval` encode text the same way.
    #[arg(long, default_value = "d2l-lines", value_parser = parse_kebab::<Preprocess>)]
    preprocess: Preprocess,
    /// char or word.
    #[arg(long, default_value = "char", value_parser = parse_kebab::<TokenLevel>)]
    level: TokenLevel,
    /// With --vocab-from: tokens seen fewer times are left out (d2l's min_freq).
    #[arg(long, default_value_t = 0)]
    min_freq: usize,
    /// Read only the keys under this prefix, e.g. `model.` in a checkpoint that also holds an
    /// optimizer.
    #[arg(long)]
    prefix: Option<String>,
    /// The non-linearity of an nn.RNN or d2l scratch RNN (the file does not record it).
    #[arg(long, default_value = "tanh", value_parser = parse_kebab::<Activation>)]
    nonlinearity: Activation,
    /// Refuse the file unless it holds this kind of core (rnn-scratch for nn.RNN, gru, lstm).
    #[arg(long, value_parser = parse_kebab::<CellKind>)]
    kind: Option<CellKind>,
    /// The checkpoint directory to create (new or empty).
    #[arg(long)]
    out: PathBuf,
    /// Where The Time Machine is cached (default: $RNNLM_CACHE_DIR or ~/.cache/rnnlm).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

/// Parses a kebab-case name into one of the serde enums the config files use.
fn parse_kebab<T: for<'de> Deserialize<'de>>(name: &str) -> Result<T, String> {
    T::deserialize(IntoDeserializer::<ValueError>::into_deserializer(name))
        .map_err(|e| e.to_string())
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    // The model is only written to disk: the CPU reference backend is always compiled in.
    let device = Device::flex();
    let dict = StateDict::read(&args.weights)?;
    let options = ImportOptions {
        prefix: args.prefix.clone(),
        nonlinearity: args.nonlinearity,
        kind: args.kind,
    };
    let imported = import_lm(&dict, &options, &device)?;
    let tokenizer = Tokenizer {
        preprocess: args.preprocess,
        level: args.level,
    };
    let (vocab, vocab_origin) = read_vocab(args, &tokenizer)?;
    if vocab.len() != imported.config.vocab_size {
        bail!(
            "{} has {} tokens but the weights in {} predict {} (their output layer has that many rows): \
             give the vocabulary the model was trained with",
            vocab_origin,
            vocab.len(),
            args.weights.display(),
            imported.config.vocab_size
        );
    }
    let experiment = ExperimentConfig {
        model: imported.config.clone(),
        data: DataConfig {
            preprocess: args.preprocess,
            level: args.level,
            min_freq: args.min_freq,
            ..DataConfig::default()
        },
        optimizer: OptimizerConfig::default(),
        schedule: ScheduleConfig::default(),
        train: TrainConfig::default(),
    };
    experiment
        .validate()
        .context("the imported model does not make a valid experiment")?;
    rnnlm_train::save_model_dir(&args.out, &experiment, &vocab, &imported.model)?;
    println!(
        "imported {} from {} with the {}-token vocabulary of {} into {} ({}, {}, {})",
        imported.description,
        args.weights.display(),
        vocab.len(),
        vocab_origin,
        args.out.display(),
        files::CONFIG,
        files::VOCAB,
        files::MODEL
    );
    println!(
        "try: rnnlm generate --checkpoint {} --prefix 'time traveller'",
        args.out.display()
    );
    Ok(())
}

fn read_vocab(args: &Args, tokenizer: &Tokenizer) -> anyhow::Result<(Vocab, String)> {
    if let Some(path) = &args.vocab {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let vocab = match serde_json::from_slice::<Vocab>(&bytes) {
            Ok(vocab) => vocab,
            Err(as_vocab) => match serde_json::from_slice::<Vec<String>>(&bytes) {
                Ok(tokens) => Vocab::from_tokens(tokens)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                Err(_) => bail!(
                    "{} is neither an rnnlm vocab.json ({as_vocab}) nor a JSON list of tokens \
                     such as [\"<unk>\", \" \", \"e\", ...]",
                    path.display()
                ),
            },
        };
        return Ok((vocab, path.display().to_string()));
    }
    let name = args
        .vocab_from
        .as_deref()
        .expect("clap requires --vocab or --vocab-from");
    let source = if name == "timemachine" {
        CorpusSource::TimeMachine
    } else {
        CorpusSource::File(PathBuf::from(name))
    };
    let text = source.read(args.cache_dir.as_deref())?;
    let corpus = Corpus::build(
        &text,
        tokenizer,
        &CorpusOptions {
            min_freq: args.min_freq,
            ..CorpusOptions::default()
        },
        name,
    )?;
    Ok((corpus.vocab, name.to_owned()))
}
