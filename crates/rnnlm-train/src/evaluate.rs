//! Perplexity over token streams: the loop validation and evaluation share (minibatches in
//! order, the state carried through each stream), and `evaluate` on texts and files.

use std::convert::Infallible;
use std::path::Path;

use burn::prelude::*;
use burn::train::SequenceOutput;
use rnnlm_data::{Epoch, SequenceBatch, Tokens, encode};

use crate::error::TrainError;
use crate::load::LoadedModel;
use crate::step::TrainableLm;

/// Perplexity of a model on a text.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Tokens scored (every token but the first of each stream).
    pub tokens: usize,
    /// exp(mean NLL).
    pub perplexity: f64,
    /// Mean NLL in bits.
    pub bits_per_token: f64,
    /// Tokens not in the vocabulary (scored as `<unk>`), with counts.
    pub unknown: Vec<(String, usize)>,
}

/// Scores `text` with the model's own preprocessing and vocabulary. The text is cut into up
/// to `streams` contiguous streams read in parallel, `num_steps` tokens at a time, with the
/// state carried through each stream.
pub fn evaluate(
    loaded: &LoadedModel,
    text: &str,
    streams: usize,
    device: &Device,
) -> Result<Evaluation, TrainError> {
    let tokenizer = loaded.config.data.tokenizer();
    let (ids, unknown) = encode(text, &tokenizer, &loaded.vocab);
    evaluate_tokens(loaded, &ids.into(), unknown, streams, device)
}

/// Scores a text file as [`evaluate`] does, streaming it (in `encoding`) into a prepared token
/// file encoded with the model's vocabulary and reading the ids from the map: memory does not
/// grow with the file. The prepared file goes to `cache_dir` (default: the cache directory's
/// `prepared/`) and is reused while the file is unchanged.
pub fn evaluate_file(
    loaded: &LoadedModel,
    path: &Path,
    encoding: &str,
    streams: usize,
    device: &Device,
    cache_dir: Option<&Path>,
) -> Result<Evaluation, TrainError> {
    let spec = rnnlm_data::CorpusSpec {
        train: vec![rnnlm_data::SourceFile::new(path)],
        valid: Vec::new(),
        tokenizer: loaded.config.data.tokenizer(),
        encoding: encoding.to_owned(),
        min_freq: 0,
        max_tokens: None,
        valid_fraction: 0.0,
        vocab: Some(loaded.vocab.clone()),
    };
    let prepared_path = crate::data::cached_path(&spec, cache_dir)?;
    let (corpus, _) = crate::data::load_showing(&spec, &prepared_path, true)?;
    evaluate_tokens(loaded, &corpus.train, corpus.unknown, streams, device)
}

/// Scores ids already encoded with the model's vocabulary (`unknown`: the tokens that became
/// `<unk>`, reported back), as [`evaluate`] does: up to `streams` contiguous streams read in
/// parallel ([`Epoch::streams`]), the state carried through each.
pub fn evaluate_tokens(
    loaded: &LoadedModel,
    ids: &Tokens,
    unknown: Vec<(String, usize)>,
    streams: usize,
    device: &Device,
) -> Result<Evaluation, TrainError> {
    let epoch = Epoch::streams(ids, streams, loaded.config.data.num_steps)?;
    let model = TrainableLm::new(loaded.model.clone());
    let batches = epoch
        .iter()
        .map(|minibatch| Ok::<_, Infallible>(SequenceBatch::from_minibatch(minibatch, device)));
    let Ok(tally) = score(&model, batches, true, |_, _| {});
    let mean = tally.nll / tally.tokens as f64;
    if !mean.is_finite() {
        return Err(TrainError::NonFiniteEvaluation { value: mean });
    }
    Ok(Evaluation {
        tokens: tally.tokens,
        perplexity: mean.exp(),
        bits_per_token: mean / std::f64::consts::LN_2,
        unknown,
    })
}

/// Token-weighted sums of the loss (and, in training, of the gradient norms) over minibatches.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tally {
    pub(crate) nll: f64,
    pub(crate) tokens: usize,
    pub(crate) grad_norm: f64,
    pub(crate) steps: usize,
}

impl Tally {
    pub(crate) fn perplexity(&self) -> f64 {
        (self.nll / self.tokens.max(1) as f64).exp()
    }

    pub(crate) fn bits(&self) -> f64 {
        self.nll / self.tokens.max(1) as f64 / std::f64::consts::LN_2
    }
}

/// Scores `batches` in order: the final state of each minibatch is the initial state of the
/// next when `carry` (sequential streams), every minibatch starts from zero otherwise; `each`
/// sees every minibatch's output and 1-based number (for metrics). The loop validation and
/// evaluation share. A batch that cannot be made ends the loop with its error, rather than
/// with a perplexity of what was read so far.
pub(crate) fn score<E>(
    model: &TrainableLm,
    batches: impl Iterator<Item = Result<SequenceBatch, E>>,
    carry: bool,
    mut each: impl FnMut(SequenceOutput, usize),
) -> Result<Tally, E> {
    let mut tally = Tally::default();
    let mut state = None;
    for (index, batch) in batches.enumerate() {
        let batch = batch?;
        let tokens = batch.x.dims().iter().product::<usize>();
        let (output, final_state) = model.run(batch, if carry { state.take() } else { None });
        state = Some(final_state);
        tally.nll += output.loss.clone().into_scalar::<f64>() * tokens as f64;
        tally.tokens += tokens;
        tally.steps += 1;
        each(output, index + 1);
    }
    Ok(tally)
}
