//! Moving a trained model from burn-nn's recurrent layers to rnnlm's cores, and training on.
//!
//! The "before" model is what a Burn user writes with burn-nn: an embedding, two stacked
//! `nn::Lstm`s, an `nn::Gru` and a `Linear`, here predicting the next character of a short
//! text. It trains for a few Adam steps on an autodiff device and saves its record. The "after"
//! model is the same model with the recurrent layers swapped for rnnlm's `DeepLstm` and `Gru`
//! (whose layers run as one fused operation each): its configs come from burn-nn's
//! (`from_burn_nn`), its weights from the trained burn-nn layers (`load_burn_nn`) and, the
//! second way, from the burn-nn model's saved record (`rnnlm::burn_nn::load_record`). Both give
//! the burn-nn model's loss; then the rnnlm model trains on from there.
//!
//! `cargo run --release -p burn-nn-migration` prints every step's loss and exits with an error
//! if the moved model's loss differs from burn-nn's, or if training on does not lower it.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{self, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::store::{BurnpackStore, ModuleSnapshot};
use rnnlm::burn_nn::{StackKeys, load_record};
use rnnlm::{DeepLstm, DeepLstmConfig, Gru, GruConfig};

const TEXT: &str = "the time traveller (for so it will be convenient to speak of him) was \
expounding a recondite matter to us. his grey eyes shone and twinkled, and his usually pale \
face was flushed and animated. the fire burned brightly, and the soft radiance of the \
incandescent lights in the lilies of silver caught the bubbles that flashed and passed in our \
glasses.";
const EMBEDDING: usize = 16;
const HIDDEN: usize = 64;
const BATCH: usize = 16;
const STEPS: usize = 24;
const LEARNING_RATE: f64 = 3e-3;

/// Before: burn-nn's layers, one module per layer, stacked by hand.
#[derive(Module, Debug)]
struct NnModel {
    embedding: Embedding,
    lstm: Vec<nn::Lstm>,
    gru: nn::Gru,
    head: Linear,
}

impl NnModel {
    /// `[batch, steps]` ids -> `[batch, steps, vocab]` logits.
    fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let mut x = self.embedding.forward(ids);
        for lstm in &self.lstm {
            x = lstm.forward(x, None).0;
        }
        self.head.forward(self.gru.forward(x, None))
    }
}

/// After: the same model on rnnlm's cores.
#[derive(Module, Debug)]
struct Model {
    embedding: Embedding,
    lstm: DeepLstm,
    gru: Gru,
    head: Linear,
}

impl Model {
    /// `[batch, steps]` ids -> `[batch, steps, vocab]` logits.
    fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let (x, _) = self.lstm.forward(self.embedding.forward(ids), None);
        let (x, _) = self.gru.forward(x, None);
        self.head.forward(x)
    }
}

/// The burn-nn layers' configs: the one description both models are built from.
fn lstm_configs() -> [nn::LstmConfig; 2] {
    [
        nn::LstmConfig::new(EMBEDDING, HIDDEN, true),
        nn::LstmConfig::new(HIDDEN, HIDDEN, true),
    ]
}

fn gru_config() -> nn::GruConfig {
    nn::GruConfig::new(HIDDEN, HIDDEN, true)
}

/// Character ids of the text, and the vocabulary size.
fn encode() -> (Vec<i64>, usize) {
    let mut vocab: Vec<char> = TEXT.chars().collect();
    vocab.sort_unstable();
    vocab.dedup();
    let ids = TEXT
        .chars()
        .map(|c| vocab.binary_search(&c).expect("in the vocabulary") as i64)
        .collect();
    (ids, vocab.len())
}

/// Minibatch `step`: `BATCH` windows of the text at reproducible places (inputs, and the same
/// windows one character on as targets).
fn batch(ids: &[i64], step: u64, device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let mut state = step.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    for _ in 0..BATCH {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let start = (state % (ids.len() - STEPS - 1) as u64) as usize;
        inputs.extend_from_slice(&ids[start..start + STEPS]);
        targets.extend_from_slice(&ids[start + 1..start + STEPS + 1]);
    }
    let tensor = |v: Vec<i64>| Tensor::from_data(TensorData::new(v, [BATCH, STEPS]), device);
    (tensor(inputs), tensor(targets))
}

fn loss(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let [batch, steps, vocab] = logits.dims();
    CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(
            logits.reshape([batch * steps, vocab]),
            targets.reshape([batch * steps]),
        )
}

fn scalar(t: Tensor<1>) -> f32 {
    t.into_scalar::<f32>()
}

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let device = Device::flex().autodiff();
    device.seed(7);
    let (ids, vocab) = encode();

    // Before: a burn-nn model, trained a little.
    let mut before = NnModel {
        embedding: EmbeddingConfig::new(vocab, EMBEDDING).init(&device),
        lstm: lstm_configs().iter().map(|c| c.init(&device)).collect(),
        gru: gru_config().init(&device),
        head: LinearConfig::new(HIDDEN, vocab).init(&device),
    };
    let mut adam = AdamConfig::new().init();
    for step in 0..30 {
        let (x, y) = batch(&ids, step, &device);
        let loss = loss(before.forward(x), y);
        println!("burn-nn step {step} loss {:.4}", scalar(loss.clone()));
        let grads = GradientsParams::from_grads(loss.backward(), &before);
        before = adam.step(LEARNING_RATE, before, grads);
    }
    let dir = std::env::temp_dir().join(format!("burn-nn-migration-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let record = dir.join("burn-nn-model.bpk");
    before
        .save_into(&mut BurnpackStore::from_file(&record))
        .map_err(|e| format!("saving {}: {e}", record.display()))?;

    // After, first way: the trained layers' weights, moved in memory.
    let lstm = DeepLstmConfig::from_burn_nn(&lstm_configs()).map_err(|e| e.to_string())?;
    let gru = GruConfig::from_burn_nn(&[gru_config()]).map_err(|e| e.to_string())?;
    let moved = Model {
        embedding: before.embedding.clone(),
        lstm: lstm
            .init(&device)
            .load_burn_nn(&before.lstm)
            .map_err(|e| e.to_string())?,
        gru: gru
            .init(&device)
            .load_burn_nn(&[before.gru.clone()])
            .map_err(|e| e.to_string())?,
        head: before.head.clone(),
    };
    // Second way: the burn-nn model's saved record, read into a freshly built rnnlm model.
    let fresh = Model {
        embedding: EmbeddingConfig::new(vocab, EMBEDDING).init(&device),
        lstm: lstm.init(&device),
        gru: gru.init(&device),
        head: LinearConfig::new(HIDDEN, vocab).init(&device),
    };
    let stacks = [
        StackKeys::vec_field("lstm", 2),
        StackKeys::new(["gru"], "gru"),
    ];
    let read = load_record(fresh, &record, &stacks).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    println!("recurrent layers: {}", rnnlm::fused::status(&device));

    // The three give the same loss on one fixed batch (step 1000 of the sampler, drawn for no
    // training step).
    let (x, y) = batch(&ids, 1_000, &device);
    let at_switch = scalar(loss(before.valid().forward(x.clone()), y.clone()));
    let moved_loss = scalar(loss(moved.valid().forward(x.clone()), y.clone()));
    let read_loss = scalar(loss(read.valid().forward(x), y));
    println!(
        "moved: fixed-batch loss burn-nn {at_switch:.6}, load_burn_nn {moved_loss:.6}, load_record {read_loss:.6}"
    );
    for (how, loss) in [("load_burn_nn", moved_loss), ("load_record", read_loss)] {
        if (loss - at_switch).abs() > 1e-4 {
            return Err(format!(
                "the model moved by {how} has loss {loss}, burn-nn's {at_switch}"
            ));
        }
    }

    // And trains on from there (a new optimizer: Adam's moments stay with the burn-nn model).
    let mut after = moved;
    let mut adam = AdamConfig::new().init();
    for step in 30..90 {
        let (x, y) = batch(&ids, step, &device);
        let loss = loss(after.forward(x), y);
        println!("rnnlm step {step} loss {:.4}", scalar(loss.clone()));
        let grads = GradientsParams::from_grads(loss.backward(), &after);
        after = adam.step(LEARNING_RATE, after, grads);
    }
    let (x, y) = batch(&ids, 1_000, &device);
    let trained_on = scalar(loss(after.valid().forward(x), y));
    println!("after training on: fixed-batch loss {trained_on:.6} (from {at_switch:.6})");
    if trained_on >= at_switch {
        return Err(format!(
            "training on did not lower the loss: {trained_on} after, {at_switch} at the switch"
        ));
    }
    Ok(())
}
