//! A sequence classifier built on rnnlm's recurrent cores, trained on a task it makes up:
//! every string of random letters (of 6 to 16 letters, so a batch is padded to the longest)
//! hides exactly one of two patterns, `abc` or `cba`, and the model must say which. The answer
//! is spread over three positions anywhere in the string, so a bag of letters cannot solve it:
//! the recurrent state has to remember order.
//!
//! The batch's lengths go to the core (`forward_padded`, PyTorch's `pack_padded_sequence`), so
//! every string's final state is the one after its own last letter, not after the padding; with
//! `--bidirectional` every layer also reads the string backwards, and the head reads both
//! directions' final states.
//!
//! `cargo run --release -- [lstm|gru] [--bidirectional]` prints the held-out accuracy after
//! each epoch and exits with an error if the final accuracy stays below 95 %.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use rnnlm::{DeepLstmConfig, GruConfig, LengthsError, Recurrent, RecurrentCore};

const ALPHABET: &[u8] = b"abcde";
const PATTERNS: [&[u8]; 2] = [b"abc", b"cba"];
/// The longest string; the shortest has `SHORTEST` letters.
const LENGTH: usize = 16;
const SHORTEST: usize = 6;

/// embedding -> recurrent core -> the top layer's final hidden state (of both directions when
/// bidirectional) -> Linear -> class logits.
#[derive(Module, Debug)]
struct PatternClassifier {
    embedding: Embedding,
    core: RecurrentCore,
    head: Linear,
}

impl PatternClassifier {
    fn new(kind: &str, bidirectional: bool, device: &Device) -> Self {
        let (embedding_dim, hidden) = (16, 32);
        let core = match kind {
            "gru" => RecurrentCore::Gru(
                GruConfig::new(embedding_dim, hidden)
                    .with_bidirectional(bidirectional)
                    .init(device),
            ),
            _ => RecurrentCore::Lstm(
                DeepLstmConfig::new(embedding_dim, hidden)
                    .with_num_layers(2)
                    .with_bidirectional(bidirectional)
                    .init(device),
            ),
        };
        Self {
            embedding: EmbeddingConfig::new(ALPHABET.len(), embedding_dim).init(device),
            // `output_size` is hidden·directions: both directions side by side.
            head: LinearConfig::new(core.output_size(), PATTERNS.len()).init(device),
            core,
        }
    }

    /// `letters [batch, steps]` (each row padded past its length) -> `logits [batch, classes]`.
    fn forward(
        &self,
        letters: Tensor<2, Int>,
        lengths: &[usize],
    ) -> Result<Tensor<2>, LengthsError> {
        let inputs = self.embedding.forward(letters); // [batch, steps, embedding]
        // From a zero state (None), as burn-nn's layers. Each row stops at its own length: its
        // final state, [layers·directions, batch, hidden], is the one after its last letter.
        let (_, state) = self.core.forward_padded(inputs, lengths, None)?;
        // The top layer's final h of every direction, [batch, directions·hidden].
        Ok(self
            .head
            .forward(state.top_layer_hidden(self.core.num_directions())))
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

    /// One string of `SHORTEST..=LENGTH` letters holding exactly one pattern, and the
    /// pattern's index.
    fn example(&mut self) -> (Vec<i64>, i64) {
        loop {
            let label = (self.next() % 2) as usize;
            let length = SHORTEST + (self.next() % (LENGTH - SHORTEST + 1) as u64) as usize;
            let mut text: Vec<u8> = (0..length)
                .map(|_| ALPHABET[(self.next() % ALPHABET.len() as u64) as usize])
                .collect();
            let at = (self.next() % (length - 2) as u64) as usize;
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

    /// A padded batch: `letters [batch, LENGTH]` (each row's letters, then zeros, which the
    /// core never reads), every row's length, and `labels [batch]`.
    fn batch(&mut self, batch: usize, device: &Device) -> Batch {
        let (mut letters, mut lengths, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..batch {
            let (mut ids, label) = self.example();
            lengths.push(ids.len());
            ids.resize(LENGTH, 0);
            letters.extend(ids);
            labels.push(label);
        }
        Batch {
            letters: Tensor::from_data(TensorData::new(letters, [batch, LENGTH]), device),
            lengths,
            labels: Tensor::from_data(TensorData::new(labels, [batch]), device),
        }
    }
}

/// Strings padded to `LENGTH`, their lengths and their classes.
#[derive(Clone)]
struct Batch {
    letters: Tensor<2, Int>,
    lengths: Vec<usize>,
    labels: Tensor<1, Int>,
}

fn accuracy(model: &PatternClassifier, batch: &Batch) -> Result<f32, LengthsError> {
    let logits = model.forward(batch.letters.clone(), &batch.lengths)?;
    let predicted = logits.argmax(1).squeeze_dim::<1>(1);
    let correct = predicted
        .equal(batch.labels.clone())
        .int()
        .sum()
        .into_scalar::<i64>();
    Ok(correct as f32 / batch.lengths.len() as f32)
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
    let (mut kind, mut bidirectional) = ("lstm".to_owned(), false);
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--bidirectional" => bidirectional = true,
            "lstm" | "gru" => kind = arg,
            other => {
                return Err(format!(
                    "unknown core {other:?}: give lstm or gru, and --bidirectional or not"
                ));
            }
        }
    }
    let name = if bidirectional {
        format!("bidirectional {kind}")
    } else {
        kind.clone()
    };
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
    let mut model = PatternClassifier::new(&kind, bidirectional, &train_device);
    let mut optimizer = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&train_device);

    let held_out = Task(99).batch(1000, &device);
    let mut task = Task(1);
    let mut final_accuracy = 0.0;
    let length_error = |err: LengthsError| format!("the task's lengths do not fit: {err}");
    for epoch in 1..=8 {
        let mut loss_sum = 0.0;
        let batches = 50;
        for _ in 0..batches {
            let batch = task.batch(32, &train_device);
            let logits = model
                .forward(batch.letters, &batch.lengths)
                .map_err(length_error)?;
            let loss = loss_fn.forward(logits, batch.labels);
            loss_sum += loss.clone().into_scalar::<f32>();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(1e-2, model, grads);
        }
        // Evaluation runs without autodiff: no graph is recorded.
        final_accuracy = accuracy(&model.valid(), &held_out).map_err(length_error)?;
        println!(
            "{name} epoch {epoch}: training loss {:.4}, held-out accuracy {:.1} %",
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
