//! `rnnlm generate`.

use std::io::Write;
use std::ops::ControlFlow;

use anyhow::{bail, ensure};
use burn::prelude::Device;
use rnnlm::sample::{Decoding, beam_search, generate};
use rnnlm_data::encode;
use rnnlm_train::LoadedModel;

/// What the user asked for.
pub struct Request {
    pub texts: Vec<String>,
    pub len: usize,
    pub temperature: Option<f64>,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub beam: Option<usize>,
    pub seed: u64,
    pub num_samples: usize,
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
}

pub fn run(loaded: &LoadedModel, request: &Request, device: &Device) -> anyhow::Result<()> {
    ensure!(
        !request.texts.is_empty(),
        "no prefix: give --prefix TEXT (or --prompts FILE)"
    );
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
    for text in &request.texts {
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
