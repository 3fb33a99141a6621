//! The training step and the learning strategy that burn-train runs: d2l's loop with the
//! hidden state carried across minibatches (truncated BPTT) and gradients clipped by their
//! global norm.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::train::{
    EventProcessorTraining, InferenceStep, Learner, LearnerEvent, SequenceOutput,
    SupervisedLearningStrategy, SupervisedTrainingEventProcessor, TrainLoader, TrainOutput,
    TrainStep, TrainingComponents, TrainingItem, ValidLoader,
};
use rnnlm::{RecurrentState, RnnLm};
use rnnlm_data::{BatchConfig, MinibatchDataset, SequenceBatch, SequenceBatcher, Vocab, epoch_rng};

use crate::TrainError;
use crate::checkpoint::{EpochMetrics, EpochState, save_epoch_state};
use crate::clip::clip_grad_global_norm;

/// Mean cross-entropy over every position of `logits` `[batch, steps, vocab]` against `targets`
/// `[batch, steps]`.
pub fn sequence_loss(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let [batch, steps, vocab] = logits.dims();
    CrossEntropyLoss::new(None, &logits.device()).forward(
        logits.reshape([batch * steps, vocab]),
        targets.reshape([batch * steps]),
    )
}

/// The model as burn-train sees it. Its own [`TrainStep`] is stateless (each minibatch from a
/// zero state, as with random sampling); [`TbpttStrategy`] carries the state instead.
#[derive(Module, Debug)]
pub struct TrainableLm {
    /// The language model.
    pub lm: RnnLm,
}

impl TrainableLm {
    fn run(
        &self,
        batch: SequenceBatch,
        state: Option<RecurrentState>,
    ) -> (SequenceOutput, RecurrentState) {
        let device = batch.x.device();
        let state = state.unwrap_or_else(|| self.lm.begin_state(batch.x.dims()[0], &device));
        let (logits, state) = self.lm.forward(batch.x, state);
        let loss = sequence_loss(logits.clone(), batch.y.clone());
        (SequenceOutput::new(loss, logits, None, batch.y), state)
    }
}

impl TrainStep for TrainableLm {
    type Input = SequenceBatch;
    type Output = SequenceOutput;

    fn step(&self, batch: SequenceBatch) -> TrainOutput<SequenceOutput> {
        let (output, _) = self.run(batch, None);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl InferenceStep for TrainableLm {
    type Input = SequenceBatch;
    type Output = SequenceOutput;

    fn step(&self, batch: SequenceBatch) -> SequenceOutput {
        self.run(batch, None).0
    }
}

/// The token streams of a run and how they are cut.
#[derive(Clone, Debug)]
pub struct DataPlan {
    /// Training tokens.
    pub train: Vec<u32>,
    /// Validation tokens (empty: no validation).
    pub valid: Vec<u32>,
    /// Minibatch shape and scheme.
    pub batches: BatchConfig,
    /// Seed of the data order (and of dropout, reseeded every epoch).
    pub seed: u64,
}

impl DataPlan {
    /// The training minibatches of `epoch` as a Burn data loader (batch size 1, no shuffling:
    /// the order is the plan's).
    pub fn train_loader(
        &self,
        epoch: usize,
        device: &Device,
    ) -> Arc<dyn DataLoader<SequenceBatch>> {
        let batches = self
            .batches
            .epoch(&self.train, &mut epoch_rng(self.seed, epoch))
            .expect("checked before training");
        loader(batches, device)
    }

    /// The validation minibatches: the same every epoch, so epochs compare.
    pub fn valid_loader(&self, device: &Device) -> Arc<dyn DataLoader<SequenceBatch>> {
        let batches = if self.valid.is_empty() {
            Vec::new()
        } else {
            self.batches
                .epoch(&self.valid, &mut epoch_rng(self.seed, 0))
                .expect("checked before training")
        };
        loader(batches, device)
    }
}

fn loader(
    batches: Vec<rnnlm_data::Minibatch>,
    device: &Device,
) -> Arc<dyn DataLoader<SequenceBatch>> {
    DataLoaderBuilder::new(SequenceBatcher)
        .batch_size(1)
        .set_device(device.clone())
        .build(MinibatchDataset::new(batches))
}

/// What to print as a sample during training.
#[derive(Clone, Debug)]
pub struct SampleSpec {
    /// Every N epochs (and after the last); 0 never.
    pub every: usize,
    /// Prefix token ids.
    pub prefix: Vec<u32>,
    /// The prefix as text, for printing.
    pub prefix_text: String,
    /// Tokens to generate.
    pub len: usize,
    /// To decode.
    pub vocab: Vocab,
    /// Between decoded tokens.
    pub separator: &'static str,
}

/// Truncated BPTT with global-norm clipping, run by burn-train's `SupervisedTraining`.
pub struct TbpttStrategy {
    /// Training device (with autodiff).
    pub device: Device,
    /// Data.
    pub plan: DataPlan,
    /// Clipping threshold.
    pub theta: f32,
    /// Where epoch states go.
    pub artifacts: PathBuf,
    /// Metrics of finished epochs; a resumed run starts with the earlier ones.
    pub history: Arc<Mutex<Vec<EpochMetrics>>>,
    /// Sampling during training.
    pub sample: Option<SampleSpec>,
    /// Print one line per epoch (when burn's dashboard is not shown).
    pub print_epochs: bool,
    /// The error that stopped training, if any.
    pub failure: Arc<Mutex<Option<TrainError>>>,
    /// Samples taken while burn's dashboard owned the terminal, to print after it closes.
    pub held_samples: Arc<Mutex<Vec<String>>>,
}

/// Token-weighted sums over an epoch.
#[derive(Default)]
struct Tally {
    nll: f64,
    tokens: usize,
    grad_norm: f64,
    steps: usize,
}

impl Tally {
    fn perplexity(&self) -> f64 {
        (self.nll / self.tokens.max(1) as f64).exp()
    }

    fn bits(&self) -> f64 {
        self.nll / self.tokens.max(1) as f64 / std::f64::consts::LN_2
    }
}

impl TbpttStrategy {
    fn fail(&self, error: TrainError, interrupter: &burn::train::Interrupter) {
        interrupter.stop(Some(&error.to_string()));
        *self.failure.lock().expect("failure lock") = Some(error);
    }

    fn print_sample(&self, model: &RnnLm, epoch: usize, last: bool) {
        let Some(spec) = &self.sample else { return };
        if spec.every == 0 || !(epoch.is_multiple_of(spec.every) || last) {
            return;
        }
        let device = self.device.clone().inner();
        let tokens = rnnlm::sample::greedy(model, &spec.prefix, spec.len, &device);
        let line = format!(
            "sample after epoch {epoch}: {}{}{}",
            spec.prefix_text,
            spec.separator,
            spec.vocab.decode(tokens, spec.separator)
        );
        if self.print_epochs {
            println!("{line}");
        } else {
            self.held_samples.lock().expect("samples lock").push(line);
        }
    }
}

impl SupervisedLearningStrategy<TrainableLm> for TbpttStrategy {
    fn fit(
        &self,
        components: TrainingComponents<TrainableLm>,
        mut learner: Learner<TrainableLm>,
        _train: TrainLoader<TrainableLm>,
        _valid: ValidLoader<TrainableLm>,
        starting_epoch: usize,
    ) -> (TrainableLm, SupervisedTrainingEventProcessor<TrainableLm>) {
        // burn-train hands over one loader for the whole run, but d2l draws a new random offset
        // every epoch: each epoch's loader is built here from the data plan instead.
        learner.fork(&self.device);
        let valid_device = self.device.clone().inner();
        let mut processor = components.event_processor;
        let mut checkpointer = components.checkpointer;
        let interrupter = components.interrupter;
        let carry = self.plan.batches.sampling.carries_state();

        for epoch in starting_epoch..=components.num_epochs {
            // Dropout masks depend on (seed, epoch) only, so a resumed run repeats them.
            self.device.seed(self.plan.seed.wrapping_add(epoch as u64));
            let train = self.plan.train_loader(epoch, &self.device);
            interrupter.fail_on_error(processor.process_train(LearnerEvent::StartSplit {
                epoch_number: epoch,
                total_items: train.num_items(),
            }));
            let started = Instant::now();
            let mut tally = Tally::default();
            let mut state: Option<RecurrentState> = None;
            let mut items = train.iter();
            let mut step = 0;
            while let Some(item) = items.next() {
                let batch = match item {
                    Ok(batch) => batch,
                    Err(err) => {
                        interrupter.fail(err);
                        break;
                    }
                };
                step += 1;
                let tokens = batch.x.dims().iter().product::<usize>();
                let model = learner.model();
                // Random sampling: every minibatch starts from zero. Sequential: from the last
                // one's final state, detached so the backward pass stops at this minibatch.
                let carried = if carry { state.take() } else { None };
                let (output, final_state) = model.run(batch, carried);
                let loss = output.loss.clone().into_scalar::<f64>();
                if !loss.is_finite() {
                    self.fail(
                        TrainError::NonFinite {
                            what: "loss",
                            value: loss,
                            epoch,
                            step,
                        },
                        &interrupter,
                    );
                    break;
                }
                let mut grads = GradientsParams::from_grads(output.loss.backward(), &model);
                let norm = clip_grad_global_norm(&model, &mut grads, self.theta);
                if !norm.is_finite() {
                    self.fail(
                        TrainError::NonFinite {
                            what: "gradient norm",
                            value: norm as f64,
                            epoch,
                            step,
                        },
                        &interrupter,
                    );
                    break;
                }
                learner.lr_step();
                learner.optimizer_step(grads);
                state = carry.then(|| final_state.detach());
                tally.nll += loss * tokens as f64;
                tally.tokens += tokens;
                tally.grad_norm += norm as f64;
                tally.steps += 1;
                let progress = items.progress();
                let item =
                    TrainingItem::new(output, progress, Some(step), Some(learner.lr_current()));
                interrupter
                    .fail_on_error(processor.process_train(LearnerEvent::ProcessedItem(item)));
                if interrupter.should_stop() {
                    break;
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            interrupter.fail_on_error(processor.process_train(LearnerEvent::EndSplit(epoch)));
            if interrupter.should_stop() {
                break;
            }

            let model = learner.model().valid();
            let valid = self.validate(&model, epoch, &valid_device, &mut processor, &interrupter);
            interrupter.fail_on_error(processor.process_train(LearnerEvent::EndEpoch(epoch)));
            if interrupter.should_stop() {
                break;
            }

            let metrics = EpochMetrics {
                epoch,
                train_perplexity: tally.perplexity(),
                valid_perplexity: valid.as_ref().map(Tally::perplexity),
                train_bits_per_token: tally.bits(),
                valid_bits_per_token: valid.as_ref().map(Tally::bits),
                tokens_per_second: tally.tokens as f64 / seconds.max(1e-9),
                grad_norm: tally.grad_norm / tally.steps.max(1) as f64,
                lr: learner.lr_current().base(),
            };
            if self.print_epochs {
                println!("{}", format_epoch(&metrics, components.num_epochs));
            }
            let history = {
                let mut history = self.history.lock().expect("history");
                history.push(metrics);
                history.clone()
            };
            self.print_sample(&model.lm, epoch, epoch == components.num_epochs);

            if let Some(checkpointer) = &mut checkpointer {
                interrupter.fail_on_error(processor.flush());
                checkpointer.checkpoint(&learner, epoch, &components.event_store);
                if let Err(error) =
                    save_epoch_state(&self.artifacts, &EpochState { epoch, history })
                {
                    self.fail(error, &interrupter);
                    break;
                }
            }
        }
        (learner.model(), processor)
    }
}

impl TbpttStrategy {
    fn validate(
        &self,
        model: &TrainableLm,
        epoch: usize,
        device: &Device,
        processor: &mut SupervisedTrainingEventProcessor<TrainableLm>,
        interrupter: &burn::train::Interrupter,
    ) -> Option<Tally> {
        if self.plan.valid.is_empty() {
            return None;
        }
        let valid = self.plan.valid_loader(device);
        interrupter.fail_on_error(processor.process_valid(LearnerEvent::StartSplit {
            epoch_number: epoch,
            total_items: valid.num_items(),
        }));
        let carry = self.plan.batches.sampling.carries_state();
        let mut tally = Tally::default();
        let mut state = None;
        let mut items = valid.iter();
        let mut step = 0;
        while let Some(Ok(batch)) = items.next() {
            step += 1;
            let tokens = batch.x.dims().iter().product::<usize>();
            let (output, final_state) = model.run(batch, if carry { state.take() } else { None });
            state = Some(final_state);
            tally.nll += output.loss.clone().into_scalar::<f64>() * tokens as f64;
            tally.tokens += tokens;
            let item = TrainingItem::new(output, items.progress(), Some(step), None);
            interrupter.fail_on_error(processor.process_valid(LearnerEvent::ProcessedItem(item)));
        }
        interrupter.fail_on_error(processor.process_valid(LearnerEvent::EndSplit(epoch)));
        Some(tally)
    }
}

/// `epoch 3/10  train ppl 9.81  valid ppl 10.20  train bpc 3.29  152.3k tok/s  |g| 0.93  lr 1`
pub fn format_epoch(m: &EpochMetrics, epochs: usize) -> String {
    let valid = m
        .valid_perplexity
        .map(|p| format!("  valid ppl {p:.3}"))
        .unwrap_or_default();
    format!(
        "epoch {}/{epochs}  train ppl {:.3}{valid}  train bits/token {:.3}  {:.1}k tok/s  |g| {:.3}  lr {}",
        m.epoch,
        m.train_perplexity,
        m.train_bits_per_token,
        m.tokens_per_second / 1000.0,
        m.grad_norm,
        m.lr
    )
}
