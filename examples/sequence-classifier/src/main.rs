//! A sequence classifier built on rnnlm's recurrent cores, trained on a task it makes up:
//! every string of random letters hides exactly one of two patterns, `abc` or `cba`, and the
//! model must say which. The answer is spread over three positions anywhere in the string, so
//! a bag of letters cannot solve it: the recurrent state has to remember order.
//!
//! `cargo run --release -- [lstm|gru]` prints the held-out accuracy after each epoch and exits
//! with an error if the final accuracy stays below 95 %.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use rnnlm::{DeepLstmConfig, GruConfig, RecurrentCore};

const ALPHABET: &[u8] = b"abcde";
const PATTERNS: [&[u8]; 2] = [b"abc", b"cba"];
const LENGTH: usize = 16;

/// embedding -> recurrent core -> the top layer's last hidden state -> Linear -> class logits.
#[derive(Module, Debug)]
struct PatternClassifier {
    embedding: Embedding,
    core: RecurrentCore,
    head: Linear,
}

impl PatternClassifier {
    fn new(kind: &str, device: &Device) -> Self {
        let (embedding_dim, hidden) = (16, 32);
        let core = match kind {
            "gru" => RecurrentCore::Gru(GruConfig::new(embedding_dim, hidden).init(device)),
            _ => RecurrentCore::Lstm(
                DeepLstmConfig::new(embedding_dim, hidden)
                    .with_num_layers(2)
                    .init(device),
            ),
        };
        Self {
            embedding: EmbeddingConfig::new(ALPHABET.len(), embedding_dim).init(device),
            core,
            head: LinearConfig::new(hidden, PATTERNS.len()).init(device),
        }
    }

    /// `letters [batch, steps]` -> `logits [batch, classes]`.
    fn forward(&self, letters: Tensor<2, Int>) -> Tensor<2> {
        let inputs = self.embedding.forward(letters); // [batch, steps, embedding]
        // From a zero state (None), as burn-nn's layers; the final state holds every layer,
        // [layers, batch, hidden], and last_hidden() the top one, [batch, hidden].
        let (_, state) = self.core.forward(inputs, None);
        self.head.forward(state.last_hidden())
    }
}

/// A reproducible stream of examples (xorshift, so the example needs no `rand` crate).
struct Task(u64);

impl Task {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// One string of `LENGTH` letters holding exactly one pattern, and the pattern's index.
    fn example(&mut self) -> (Vec<i64>, i64) {
        loop {
            let label = (self.next() % 2) as usize;
            let mut text: Vec<u8> = (0..LENGTH)
                .map(|_| ALPHABET[(self.next() % ALPHABET.len() as u64) as usize])
                .collect();
            let at = (self.next() % (LENGTH - 2) as u64) as usize;
            text[at..at + 3].copy_from_slice(PATTERNS[label]);
            let holds = |p: &[u8]| text.windows(3).any(|w| w == p);
            if holds(PATTERNS[1 - label])
                || text.windows(3).filter(|w| *w == PATTERNS[label]).count() > 1
            {
                continue; // ambiguous: draw again
            }
            let ids = text
                .iter()
                .map(|c| ALPHABET.iter().position(|a| a == c).unwrap() as i64)
                .collect();
            return (ids, label as i64);
        }
    }

    /// `(letters [batch, LENGTH], labels [batch])`.
    fn batch(&mut self, batch: usize, device: &Device) -> (Tensor<2, Int>, Tensor<1, Int>) {
        let (mut letters, mut labels) = (Vec::new(), Vec::new());
        for _ in 0..batch {
            let (ids, label) = self.example();
            letters.extend(ids);
            labels.push(label);
        }
        (
            Tensor::from_data(TensorData::new(letters, [batch, LENGTH]), device),
            Tensor::from_data(TensorData::new(labels, [batch]), device),
        )
    }
}

fn accuracy(model: &PatternClassifier, letters: Tensor<2, Int>, labels: Tensor<1, Int>) -> f32 {
    let predicted = model.forward(letters).argmax(1).squeeze_dim::<1>(1);
    let correct = predicted
        .equal(labels.clone())
        .int()
        .sum()
        .into_scalar::<i64>();
    correct as f32 / labels.dims()[0] as f32
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let kind = std::env::args().nth(1).unwrap_or_else(|| "lstm".to_owned());
    if kind != "lstm" && kind != "gru" {
        return Err(format!("unknown core {kind:?}: give lstm or gru"));
    }
    let device = Device::flex();
    device.seed(7);
    let train_device = device.clone().autodiff();
    // With rnnlm's `flex` feature on, every layer's time loop is one fused operation, in
    // training (autodiff) and in evaluation alike; refuse to run half-enabled (only
    // RNNLM_FUSED=off may turn it off).
    for (what, on) in [("training", &train_device), ("evaluation", &device)] {
        let status = rnnlm::fused::status(on);
        if !matches!(
            status,
            rnnlm::fused::Status::Active | rnnlm::fused::Status::Disabled
        ) {
            return Err(format!(
                "the recurrent layers do not run fused in {what}: {status}"
            ));
        }
    }
    println!("recurrent layers: {}", rnnlm::fused::status(&train_device));
    let mut model = PatternClassifier::new(&kind, &train_device);
    let mut optimizer = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&train_device);

    let (test_letters, test_labels) = Task(99).batch(1000, &device);
    let mut task = Task(1);
    let mut final_accuracy = 0.0;
    for epoch in 1..=8 {
        let mut loss_sum = 0.0;
        let batches = 50;
        for _ in 0..batches {
            let (letters, labels) = task.batch(32, &train_device);
            let loss = loss_fn.forward(model.forward(letters), labels);
            loss_sum += loss.clone().into_scalar::<f32>();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(1e-2, model, grads);
        }
        // Evaluation runs without autodiff: no graph is recorded.
        final_accuracy = accuracy(&model.valid(), test_letters.clone(), test_labels.clone());
        println!(
            "{kind} epoch {epoch}: training loss {:.4}, held-out accuracy {:.1} %",
            loss_sum / batches as f32,
            100.0 * final_accuracy
        );
    }
    if final_accuracy < 0.95 {
        return Err(format!(
            "held-out accuracy {:.1} % is below 95 %",
            100.0 * final_accuracy
        ));
    }
    Ok(())
}
