//! `rnnlm generate`.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{bail, ensure};
use burn::prelude::Device;
use rnnlm::sample::{Decoding, beam_search, generate};
use rnnlm_data::encode;
use rnnlm_train::LoadedModel;

/// What to generate, as given on the command line.
#[derive(clap::Args, Debug)]
pub struct Request {
    /// Text to continue (repeatable).
    #[arg(long)]
    prefix: Vec<String>,
    /// A file with one prompt per line, added to the --prefix ones.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Tokens to generate per sequence.
    #[arg(long, default_value_t = 100)]
    len: usize,
    /// Sample at this temperature (> 0) instead of greedy decoding.
    #[arg(long)]
    temperature: Option<f64>,
    /// Sample from the K most likely tokens only.
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample from the smallest set of tokens whose probability reaches P, in (0, 1].
    #[arg(long)]
    top_p: Option<f64>,
    /// Beam search of this width (returns the most likely continuation).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    beam: Option<usize>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Samples per prefix (with sampling; each gets its own random stream).
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
}

impl Request {
    fn decoding(&self) -> anyhow::Result<Decoding> {
        if self.temperature.is_none() && self.top_k.is_none() && self.top_p.is_none() {
            return Ok(Decoding::Greedy);
        }
        let decoding = Decoding::Sample {
            temperature: self.temperature.unwrap_or(1.0),
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
        };
        decoding
            .validate()
            .map_err(|message| anyhow::anyhow!("invalid --{message}"))?;
        Ok(decoding)
    }

    /// The --prefix texts, then the lines of --prompts.
    fn texts(&self) -> anyhow::Result<Vec<String>> {
        let mut texts = self.prefix.clone();
        if let Some(file) = &self.prompts {
            let content = rnnlm_data::read_text(file)?;
            texts.extend(content.lines().filter(|l| !l.is_empty()).map(str::to_owned));
        }
        ensure!(
            !texts.is_empty(),
            "no prefix: give --prefix TEXT (or --prompts FILE)"
        );
        Ok(texts)
    }
}

pub fn run(loaded: &LoadedModel, request: &Request, device: &Device) -> anyhow::Result<()> {
    let texts = request.texts()?;
    ensure!(
        request.len > 0,
        "--len 0: give the number of tokens to generate, at least 1"
    );
    ensure!(
        request.num_samples > 0,
        "--num-samples 0: must be at least 1"
    );
    if request.beam == Some(0) {
        bail!("--beam 0: the beam width must be at least 1");
    }
    let decoding = request.decoding()?;
    let tokenizer = loaded.config.data.tokenizer();
    let separator = tokenizer.separator();
    let vocab = &loaded.vocab;

    let mut prefixes = Vec::new();
    for text in &texts {
        let (ids, unknown) = encode(text, &tokenizer, vocab);
        if ids.is_empty() {
            bail!(
                "prefix {text:?} is empty after the checkpoint's {:?} preprocessing; give at least one character it keeps",
                tokenizer.preprocess
            );
        }
        if !unknown.is_empty() {
            let listed: Vec<String> = unknown.iter().map(|(t, n)| format!("{t:?} x{n}")).collect();
            eprintln!(
                "warning: prefix {text:?} has tokens outside the vocabulary, read as <unk>: {}",
                listed.join(", ")
            );
        }
        prefixes.push(ids);
    }
    let shown = |ids: &[u32]| vocab.decode(ids.iter().copied(), separator);
    let model = &loaded.model;

    if let Some(width) = request.beam {
        for prefix in &prefixes {
            let (tokens, log_prob) = beam_search(model, prefix, request.len, width, device);
            println!("{}{separator}{}", shown(prefix), shown(&tokens));
            eprintln!("(log-probability {log_prob:.3})");
        }
        return Ok(());
    }

    let copies = if decoding == Decoding::Greedy {
        1
    } else {
        request.num_samples
    };
    let batch: Vec<Vec<u32>> = prefixes
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), copies))
        .collect();
    if batch.len() == 1 {
        // One sequence: stream it.
        let mut out = std::io::stdout().lock();
        write!(out, "{}{separator}", shown(&batch[0]))?;
        out.flush()?;
        generate(model, &batch, request.len, &decoding, device, |step| {
            let _ = write!(out, "{}{separator}", shown(step));
            let _ = out.flush();
            ControlFlow::Continue(())
        });
        writeln!(out)?;
    } else {
        let continuations = generate(model, &batch, request.len, &decoding, device, |_| {
            ControlFlow::Continue(())
        });
        for (prefix, continuation) in batch.iter().zip(continuations) {
            println!("{}{separator}{}", shown(prefix), shown(&continuation));
        }
    }
    Ok(())
}
