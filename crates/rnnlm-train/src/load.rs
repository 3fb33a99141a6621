//! Reading a trained model back: its experiment, vocabulary and weights, and text through them.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use rnnlm::RnnLm;
use rnnlm_data::{Vocab, encode};

use crate::artifacts::files;
use crate::checkpoint::{checkpoint_dir, checkpoint_file, latest_complete_checkpoint};
use crate::error::{ArtifactsError, TrainError};
use crate::experiment::ExperimentConfig;
use crate::step::TrainableLm;

/// A trained model with what it needs to read text: its experiment and vocabulary.
#[derive(Debug)]
pub struct LoadedModel {
    /// The experiment it was trained with (model config with its vocabulary size).
    pub config: ExperimentConfig,
    /// Its vocabulary.
    pub vocab: Vocab,
    /// The model, on the requested device, without autodiff.
    pub model: RnnLm,
    /// The weights file it came from.
    pub weights: PathBuf,
}

impl LoadedModel {
    /// Token ids of `text` under the checkpoint's preprocessing and vocabulary; tokens the
    /// vocabulary does not know become `<unk>` (id 0).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        encode(text, &self.config.data.tokenizer(), &self.vocab).0
    }

    /// The text of `ids`, joined as the checkpoint's tokenizer joins tokens.
    pub fn decode(&self, ids: &[u32]) -> String {
        let separator = self.config.data.tokenizer().separator();
        self.vocab.decode(ids.iter().copied(), separator)
    }

    /// `prefix` continued by `len` tokens (d2l's `predict` with [`Decoding::Greedy`]): warms
    /// the state up on the prefix, then generates one token per step.
    ///
    /// [`Decoding::Greedy`]: rnnlm::sample::Decoding::Greedy
    pub fn continue_text(
        &self,
        prefix: &str,
        len: usize,
        decoding: &rnnlm::sample::Decoding,
        device: &Device,
    ) -> Result<String, TrainError> {
        let ids = self.encode(prefix);
        if ids.is_empty() {
            return Err(TrainError::EmptyPrefix {
                prefix: prefix.to_owned(),
                preprocess: self.config.data.preprocess,
            });
        }
        decoding.validate()?;
        let new = rnnlm::sample::generate(
            &self.model,
            std::slice::from_ref(&ids),
            len,
            decoding,
            device,
            |_| std::ops::ControlFlow::Continue(()),
        );
        let separator = self.config.data.tokenizer().separator();
        Ok(format!(
            "{}{separator}{}",
            self.decode(&ids),
            self.decode(&new[0])
        ))
    }
}

/// Which model of a run [`load_model_as`] reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Which {
    /// `model-best.bpk`, the epoch with the best validation perplexity, where the run kept
    /// one; else as [`Which::Last`].
    #[default]
    Best,
    /// The final model, or, if the run did not finish, that of its last complete checkpoint.
    Last,
}

/// Loads the best model of an artifacts directory where it has one ([`Which::Best`]), else
/// its final model or, if the run did not finish, the model of its last complete checkpoint.
pub fn load_model(dir: &Path, device: &Device) -> Result<LoadedModel, TrainError> {
    load_model_as(dir, Which::Best, device)
}

/// Loads the model `which` names from an artifacts directory (see [`Which`]).
pub fn load_model_as(dir: &Path, which: Which, device: &Device) -> Result<LoadedModel, TrainError> {
    let missing = |name: &str| {
        TrainError::from(ArtifactsError::Incomplete {
            dir: dir.to_owned(),
            missing: name.to_owned(),
        })
    };
    if !dir.is_dir() {
        return Err(ArtifactsError::NoCheckpoint {
            dir: dir.to_owned(),
        }
        .into());
    }
    let config_path = dir.join(files::CONFIG);
    if !config_path.is_file() {
        return Err(missing(files::CONFIG));
    }
    let config = ExperimentConfig::load(&config_path, &[])?;
    let vocab_path = dir.join(files::VOCAB);
    let vocab_bytes = std::fs::read(&vocab_path).map_err(|_| missing(files::VOCAB))?;
    let vocab: Vocab =
        serde_json::from_slice(&vocab_bytes).map_err(|e| ArtifactsError::UnreadableVocabulary {
            path: vocab_path.clone(),
            reason: e.to_string(),
        })?;
    if vocab.len() != config.model.vocab_size {
        return Err(ArtifactsError::VocabularyOfAnotherRun {
            vocab: vocab_path,
            tokens: vocab.len(),
            config: config_path,
            vocab_size: config.model.vocab_size,
        }
        .into());
    }
    let best = dir.join(files::BEST_MODEL);
    let weights = match dir.join(files::MODEL) {
        _ if which == Which::Best && best.is_file() => best,
        path if path.is_file() => path,
        _ => match latest_complete_checkpoint(dir) {
            Some(state) => checkpoint_file(&checkpoint_dir(dir), "model", state.key()),
            None => return Err(missing("model.bpk (and no complete checkpoint)")),
        },
    };
    let bytes = std::fs::read(&weights).map_err(|e| TrainError::io(&weights, e))?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes)).map_err(|e| {
        TrainError::RecordUnreadable {
            path: weights.clone(),
            reason: e.to_string(),
        }
    })?;
    // burn-train saves the TrainableLm wrapper (parameters under `lm.`); the final model file
    // holds the bare RnnLm.
    let record_for_bare = record.clone();
    let model = config.model.init(device);
    let model = match model.clone().try_load_record(record_for_bare) {
        Ok(model) => model,
        Err(_) => TrainableLm::new(model)
            .try_load_record(record)
            .map(|wrapper| wrapper.lm)
            .map_err(|e| TrainError::RecordDoesNotFit {
                path: weights.clone(),
                kind: config.model.kind.to_string(),
                config: config_path.clone(),
                reason: e.to_string(),
            })?,
    };
    Ok(LoadedModel {
        config,
        vocab,
        model,
        weights,
    })
}
