//! The learning strategy burn-train runs: d2l's loop with the hidden state carried across
//! minibatches (truncated BPTT), gradients clipped by their global norm, checkpoints at the end
//! of every epoch and inside epochs, validation, stop rules and progress.

use std::convert::Infallible;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::prelude::*;
use burn::train::{
    EventProcessorTraining, Learner, LearnerEvent, SupervisedLearningStrategy,
    SupervisedTrainingEventProcessor, TrainLoader, TrainingComponents, TrainingItem, ValidLoader,
};
use rnnlm::RecurrentState;
use rnnlm_data::{Minibatch, SequenceBatch, Vocab};

use crate::artifacts::{files, save_model};
use crate::checkpoint::{
    EpochMetrics, EpochState, PartialEpoch, SavedState, best_epoch, save_epoch_state, write_atomic,
};
use crate::clip::clip_grad_global_norm;
use crate::error::TrainError;
use crate::evaluate::{Tally, score};
use crate::parallel::DataParallel;
use crate::plan::DataPlan;
use crate::ranks::{Ranks, gather_rows, rows_of, sum_step};
use crate::report::{Position, format_epoch, progress_line, significant};
use crate::schedule::TrainingClock;
use crate::step::{ShardOutput, TrainableLm};

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
    /// Training device (with autodiff); with data parallelism, the first of `parallel`.
    pub device: Device,
    /// Data-parallel devices (with autodiff): empty (or one) trains on `device` alone.
    pub parallel: Vec<Device>,
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
    /// Stop when validation has not improved for this many epochs (0: never).
    pub patience: usize,
    /// Stop at the minibatch that brings the run's training time (resumed runs included) to
    /// this many seconds; `None`: no budget.
    pub max_seconds: Option<f64>,
    /// Why training stopped before its last epoch, if it did (patience or time).
    pub stopped: Arc<Mutex<Option<String>>>,
    /// Checkpoint inside an epoch once this many seconds have passed since the last one.
    pub checkpoint_seconds: Option<f64>,
    /// Validate every this many minibatches as well as at the end of each epoch (0: never).
    pub valid_every: usize,
    /// Stop after this many minibatches in all (resumed runs counted from their position).
    pub max_steps: Option<usize>,
    /// When `train` was called: the first minibatch's line says how long after it finished.
    pub started: Instant,
    /// Without a terminal, a progress line this often within an epoch (`None`: never).
    pub progress_seconds: Option<f64>,
    /// Whether stdout is a terminal (the progress line is then updated in place).
    pub terminal: bool,
    /// The checkpoint the run resumes from, if it does.
    pub resume: Option<EpochState>,
    /// The number the run's next checkpoint gets.
    pub next_key: usize,
    /// Training seconds, for a schedule over time.
    pub clock: TrainingClock,
    /// Where the last checkpoint stands, for the message of an interrupted run.
    pub last_checkpoint: Arc<Mutex<Option<String>>>,
    /// The processes the run spans ([`OneProcess`](crate::OneProcess) for one): each runs its
    /// block of every minibatch's rows; rank 0 alone writes files and prints.
    pub ranks: Arc<dyn Ranks>,
    /// Seconds spent in the steps' all-reduce (and how many), for the run's report.
    pub reduce_seconds: Arc<Mutex<ReduceTime>>,
}

/// Time spent summing gradients across ranks.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReduceTime {
    /// Seconds in all.
    pub seconds: f64,
    /// Steps.
    pub steps: usize,
}

impl ReduceTime {
    fn add(&mut self, seconds: f64) {
        self.seconds += seconds;
        self.steps += 1;
    }
}

/// The seed of minibatch `step` of `epoch`: dropout masks depend on it alone, so a run resumed
/// inside an epoch draws the masks the uninterrupted run drew.
fn step_seed(seed: u64, epoch: usize, step: usize) -> u64 {
    let mut z = seed ^ ((epoch as u64) << 40) ^ (step as u64);
    // splitmix64's finaliser spreads neighbouring (epoch, step) pairs apart.
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The carried state of the whole minibatch, from this rank's shards (its rows, split across
/// its devices) and every other rank's: one state `[layers, batch, hidden]`, whatever the
/// number of ranks and devices, so a run resumes on any number of them.
fn save_states(
    states: &[RecurrentState],
    ranks: &dyn Ranks,
    rows: Range<usize>,
    batch: usize,
) -> SavedState {
    let main = states[0].hidden.device();
    let join = |parts: Vec<Tensor<3>>| -> (Vec<f32>, [usize; 3]) {
        let parts = parts.into_iter().map(|t| t.to_device(&main)).collect();
        let whole = Tensor::cat(parts, 1);
        let shape = whole.dims();
        let values = whole
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 state");
        (values, shape)
    };
    let (hidden, shape) = join(states.iter().map(|s| s.hidden.clone()).collect());
    let cell = states[0].cell.is_some().then(|| {
        join(
            states
                .iter()
                .map(|s| s.cell.clone().expect("every shard's cell"))
                .collect(),
        )
        .0
    });
    let gather = |values: Vec<f32>| gather_rows(ranks, &values, shape, rows.clone(), batch);
    SavedState {
        shape: [shape[0], batch, shape[2]],
        hidden: gather(hidden),
        cell: cell.map(gather),
    }
}

/// This rank's shards of a whole-minibatch state: its rows, cut across its devices as `shards`
/// says (row ranges within its rows).
fn restore_states(
    saved: &SavedState,
    rows: Range<usize>,
    shards: &[(Range<usize>, Device)],
) -> Vec<RecurrentState> {
    let slice = |values: &Vec<f32>, device: &Device, range: &Range<usize>| {
        Tensor::<3>::from_data(TensorData::new(values.clone(), saved.shape), device).narrow(
            1,
            rows.start + range.start,
            range.len(),
        )
    };
    shards
        .iter()
        .map(|(range, device)| RecurrentState {
            hidden: slice(&saved.hidden, device, range),
            cell: saved.cell.as_ref().map(|c| slice(c, device, range)),
        })
        .collect()
}

impl TbpttStrategy {
    fn fail(&self, error: TrainError, interrupter: &burn::train::Interrupter) {
        interrupter.stop(Some(&error.to_string()));
        *self.failure.lock().expect("failure lock") = Some(error);
    }

    fn print_sample(&self, model: &TrainableLm, epoch: usize, last: bool) {
        let Some(spec) = &self.sample else { return };
        if !self.ranks.is_writer() {
            return;
        }
        if spec.every == 0 || !(epoch.is_multiple_of(spec.every) || last) {
            return;
        }
        let device = self.device.clone().inner();
        let tokens = rnnlm::sample::generate(
            &model.lm,
            std::slice::from_ref(&spec.prefix),
            spec.len,
            &rnnlm::sample::Decoding::Greedy,
            &device,
            |_| std::ops::ControlFlow::Continue(()),
        )
        .remove(0);
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

    /// Writes checkpoint `key`: burn-train's records of the learner, then the state file
    /// naming the position (written last: a checkpoint without it is not taken).
    fn checkpoint(
        &self,
        checkpointer: &mut Option<burn::train::LearningCheckpointer<TrainableLm>>,
        learner: &Learner<TrainableLm>,
        store: &burn::train::metric::store::EventStoreClient,
        state: EpochState,
    ) -> Result<(), TrainError> {
        let Some(checkpointer) = checkpointer else {
            return Ok(());
        };
        if self.ranks.is_writer() {
            checkpointer.checkpoint(learner, state.key(), store);
            save_epoch_state(&self.artifacts, &state)?;
        }
        *self.last_checkpoint.lock().expect("checkpoint lock") = Some(state.position());
        Ok(())
    }
}

impl SupervisedLearningStrategy<TrainableLm> for TbpttStrategy {
    fn fit(
        &self,
        components: TrainingComponents<TrainableLm>,
        mut learner: Learner<TrainableLm>,
        _train: TrainLoader<TrainableLm>,
        _valid: ValidLoader<TrainableLm>,
        _starting_epoch: usize,
    ) -> (TrainableLm, SupervisedTrainingEventProcessor<TrainableLm>) {
        // burn-train hands over one loader for the whole run, but d2l draws a new random offset
        // every epoch: each epoch's minibatches are cut here from the data plan instead. The
        // position to start from is the resumed checkpoint's (burn-train's number for it is the
        // checkpoint's, not an epoch).
        learner.fork(&self.device);
        let valid_device = self.device.clone().inner();
        let mut processor = components.event_processor;
        let mut checkpointer = components.checkpointer;
        let store = components.event_store;
        let interrupter = components.interrupter;
        let epochs = components.num_epochs;
        let carry = self.plan.batches.sampling.carries_state();
        let parallel = (self.parallel.len() > 1).then(|| DataParallel::new(self.parallel.clone()));
        let ranks = &*self.ranks;
        let writer = ranks.is_writer();
        let print = self.print_epochs && writer;
        let batch_size = self.plan.batches.batch_size;
        // This rank's block of every minibatch's rows, and that block cut across its devices.
        let my_rows = rows_of(batch_size, ranks.rank(), ranks.size());
        let shards: Vec<(Range<usize>, Device)> = if self.parallel.len() > 1 {
            DataParallel::shard_rows(my_rows.len(), self.parallel.len())
                .into_iter()
                .zip(self.parallel.iter().cloned())
                .collect()
        } else {
            vec![(0..my_rows.len(), self.device.clone())]
        };
        let share = my_rows.len() as f32 / batch_size as f32;
        let mut key = self.next_key;
        let (first_epoch, mut partial) = match &self.resume {
            Some(state) => (state.epoch + 1, state.partial.clone()),
            None => (1, None),
        };
        let mut last_checkpoint = Instant::now();
        // Minibatches of the epochs before the first one run here, for `max_steps`.
        let mut steps_before: usize = match self.max_steps {
            Some(_) => (1..first_epoch)
                .map(|e| self.plan.train_epoch(e).len())
                .sum(),
            None => 0,
        };
        let mut first_reported = false;

        'epochs: for epoch in first_epoch..=epochs {
            let data = self.plan.train_epoch(epoch);
            let total = data.len();
            let resumed = partial.take();
            let first_step = resumed.as_ref().map_or(0, |p| p.steps);
            let earlier: f64 = self
                .history
                .lock()
                .expect("history")
                .iter()
                .map(|m| m.seconds)
                .sum();
            let seconds_before = resumed.as_ref().map_or(0.0, |p| p.seconds);
            let mut tally = resumed.as_ref().map_or_else(Tally::default, |p| Tally {
                nll: p.nll,
                tokens: p.tokens,
                grad_norm: p.grad_norm,
                steps: p.steps,
            });
            // One carried state per device (a single one without data parallelism).
            let mut state: Option<Vec<RecurrentState>> = resumed
                .as_ref()
                .filter(|p| carry && !p.states.is_empty())
                .map(|p| restore_states(&p.states[0], my_rows.clone(), &shards));
            interrupter.fail_on_error(processor.process_train(LearnerEvent::StartSplit {
                epoch_number: epoch,
                total_items: total,
            }));
            let started = Instant::now();
            let epoch_seconds = || seconds_before + started.elapsed().as_secs_f64();
            let mut last_progress = Instant::now();
            for index in first_step..total {
                let step = index + 1;
                // Dropout masks depend on (seed, epoch, step) only, so a resumed run repeats them.
                self.device.seed(step_seed(self.plan.seed, epoch, step));
                let minibatch = data.get(index).expect("index below the epoch's length");
                let tokens = minibatch.batch_size * minibatch.num_steps;
                let batch = self.rank_batch(minibatch, &self.device);
                let model = learner.model();
                // Random sampling: every minibatch starts from zero. Sequential: from the last
                // one's final state, detached so the backward pass stops at this minibatch.
                let carried = if carry { state.take() } else { None };
                let (mut loss, mut grads, outputs, final_state) = match &parallel {
                    None => {
                        let pass = model.train_pass(
                            batch,
                            carried.map(|mut states| states.remove(0)),
                            1.0,
                        );
                        (pass.loss, pass.grads, vec![pass.output], vec![pass.state])
                    }
                    Some(parallel) => match parallel.step(&model, batch, carried) {
                        Ok(step) => (step.loss, step.grads, step.outputs, step.states),
                        Err(error) => {
                            self.fail(error, &interrupter);
                            break 'epochs;
                        }
                    },
                };
                // What stops or checkpoints the run is decided here, before the step's one
                // all-reduce, so every rank acts on the same decision: a signal on any rank, the
                // time budget and the checkpoint interval by rank 0's clock.
                let spent = earlier + epoch_seconds();
                let mut interrupted = interrupter.should_stop();
                let mut over_budget = self.max_seconds.is_some_and(|budget| spent >= budget);
                let mut due = self
                    .checkpoint_seconds
                    .is_some_and(|every| last_checkpoint.elapsed().as_secs_f64() >= every);
                if ranks.size() > 1 {
                    let flag = |on: bool| if on { 1.0 } else { 0.0 };
                    let mut extra = [
                        loss as f32 * share,
                        flag(interrupted),
                        flag(writer && over_budget),
                        flag(writer && due),
                    ];
                    let reduce = Instant::now();
                    sum_step(ranks, &model, &mut grads, share, &mut extra);
                    self.reduce_seconds
                        .lock()
                        .expect("reduce lock")
                        .add(reduce.elapsed().as_secs_f64());
                    loss = f64::from(extra[0]);
                    (interrupted, over_budget, due) =
                        (extra[1] > 0.0, extra[2] > 0.0, extra[3] > 0.0);
                }
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
                    break 'epochs;
                }
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
                    break 'epochs;
                }
                self.clock.set(earlier + epoch_seconds());
                learner.lr_step();
                learner.optimizer_step(grads);
                if !first_reported && print {
                    println!(
                        "first minibatch done {:.2} s after start",
                        self.started.elapsed().as_secs_f64()
                    );
                    first_reported = true;
                }
                state = carry.then_some(final_state);
                tally.nll += loss * tokens as f64;
                tally.tokens += tokens;
                tally.grad_norm += norm as f64;
                tally.steps += 1;
                let progress = burn::data::dataloader::Progress::new(step, total, None);
                for (shard, output) in outputs.into_iter().enumerate() {
                    let item = ShardOutput {
                        output,
                        state: None,
                        shard,
                    };
                    let item = TrainingItem::new(
                        item,
                        progress.clone(),
                        Some(step),
                        Some(learner.lr_current()),
                    );
                    interrupter
                        .fail_on_error(processor.process_train(LearnerEvent::ProcessedItem(item)));
                }

                if print && step < total {
                    let since = last_progress.elapsed().as_secs_f64();
                    let counted = started.elapsed().as_secs_f64();
                    let line = || {
                        let at = Position {
                            epoch,
                            epochs,
                            step,
                            of: total,
                        };
                        let per_step = counted / (step - first_step).max(1) as f64;
                        let tokens_per_step = tally.tokens as f64 / tally.steps.max(1) as f64;
                        progress_line(
                            &at,
                            tally.perplexity(),
                            tokens_per_step / per_step.max(1e-9),
                            per_step,
                        )
                    };
                    if self.terminal && since >= 0.5 {
                        print!("\r{}\x1b[K", line());
                        let _ = std::io::Write::flush(&mut std::io::stdout());
                        last_progress = Instant::now();
                    } else if !self.terminal
                        && self.progress_seconds.is_some_and(|every| since >= every)
                    {
                        println!("{}", line());
                        last_progress = Instant::now();
                    }
                }
                if self.valid_every > 0 && step.is_multiple_of(self.valid_every) && step < total {
                    let model = learner.model().valid();
                    if let Some(valid) =
                        self.validate(&model, epoch, &valid_device, &mut processor, &interrupter)
                        && writer
                        && let Err(error) = self.log_validation(epoch, step, &valid)
                    {
                        self.fail(error, &interrupter);
                        break 'epochs;
                    }
                }

                if interrupted && !interrupter.should_stop() {
                    interrupter.stop(Some("another rank was interrupted"));
                }
                let over_steps = self
                    .max_steps
                    .is_some_and(|most| steps_before + step >= most);
                if step < total && (interrupted || over_budget || over_steps || due) {
                    if self.terminal && print {
                        println!();
                    }
                    let history = self.history.lock().expect("history").clone();
                    let position = EpochState {
                        epoch: epoch - 1,
                        history,
                        key: Some(key),
                        partial: Some(PartialEpoch {
                            steps: step,
                            of: total,
                            nll: tally.nll,
                            tokens: tally.tokens,
                            grad_norm: tally.grad_norm,
                            seconds: epoch_seconds(),
                            states: state
                                .as_deref()
                                .map(|s| vec![save_states(s, ranks, my_rows.clone(), batch_size)])
                                .unwrap_or_default(),
                        }),
                    };
                    interrupter.fail_on_error(processor.flush());
                    if let Err(error) =
                        self.checkpoint(&mut checkpointer, &learner, &store, position)
                    {
                        self.fail(error, &interrupter);
                        break 'epochs;
                    }
                    key += 1;
                    last_checkpoint = Instant::now();
                    if interrupted {
                        break 'epochs;
                    }
                    if over_steps && !over_budget {
                        let reason = format!(
                            "train.max_steps = {} minibatches are done, at minibatch {step} of {total} of epoch {epoch} (checkpointed there: a larger limit resumes from it)",
                            self.max_steps.unwrap_or_default()
                        );
                        if print {
                            println!(
                                "stopping in epoch {epoch}: {reason}; train ppl so far {:.3}",
                                tally.perplexity()
                            );
                        }
                        *self.stopped.lock().expect("stop lock") = Some(reason);
                        break 'epochs;
                    }
                    if over_budget {
                        let reason = format!(
                            "the time budget is spent: {} of train.max_minutes = {} minutes, at minibatch {step} of {total} of epoch {epoch} (checkpointed there: a larger budget resumes from it)",
                            significant(spent / 60.0, 3),
                            self.max_seconds.unwrap_or_default() / 60.0,
                        );
                        if print {
                            println!(
                                "stopping in epoch {epoch}: {reason}; train ppl so far {:.3}",
                                tally.perplexity()
                            );
                        }
                        *self.stopped.lock().expect("stop lock") = Some(reason);
                        break 'epochs;
                    }
                }
            }
            if self.terminal && print && total - first_step > 1 {
                print!("\r\x1b[K");
            }
            let seconds = epoch_seconds();
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
                seconds: epoch_seconds(),
            };
            if print {
                println!("{}", format_epoch(&metrics, epochs));
            }
            let history = {
                let mut history = self.history.lock().expect("history");
                history.push(metrics);
                history.clone()
            };
            self.print_sample(&model, epoch, epoch == epochs);

            // The best model by validation perplexity so far, kept beside the last ones.
            if writer && best_epoch(&history) == Some(history.len() - 1) {
                let path = self.artifacts.join(files::BEST_MODEL);
                if let Err(error) = save_model(&path, &model.lm) {
                    self.fail(error, &interrupter);
                    break;
                }
            }

            interrupter.fail_on_error(processor.flush());
            let position = EpochState {
                epoch,
                history: history.clone(),
                key: Some(key),
                partial: None,
            };
            if let Err(error) = self.checkpoint(&mut checkpointer, &learner, &store, position) {
                self.fail(error, &interrupter);
                break;
            }
            key += 1;
            last_checkpoint = Instant::now();
            steps_before += total;
            let steps_done = self
                .max_steps
                .filter(|most| steps_before >= *most)
                .map(|most| format!("train.max_steps = {most} minibatches are done"));
            if epoch < epochs
                && let Some(reason) =
                    stop_reason(&history, self.patience, self.max_seconds).or(steps_done)
            {
                if print {
                    println!("stopping after epoch {epoch}: {reason}");
                }
                *self.stopped.lock().expect("stop lock") = Some(reason);
                break;
            }
        }
        (learner.model(), processor)
    }
}

impl TbpttStrategy {
    /// Appends a row to `validation.csv` and prints it, for a validation inside an epoch.
    fn log_validation(&self, epoch: usize, step: usize, valid: &Tally) -> Result<(), TrainError> {
        let path = self.artifacts.join(files::VALIDATION);
        let mut csv = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| "epoch,step,valid_perplexity,valid_bits_per_token\n".to_owned());
        csv.push_str(&format!(
            "{epoch},{step},{:.6},{:.6}\n",
            valid.perplexity(),
            valid.bits()
        ));
        if self.print_epochs {
            if self.terminal {
                print!("\r\x1b[K");
            }
            println!(
                "epoch {epoch} step {step}: valid ppl {:.3}  valid bits/token {:.3}",
                valid.perplexity(),
                valid.bits()
            );
        }
        write_atomic(&path, csv.as_bytes()).map_err(|e| TrainError::io(&path, e))
    }
    fn validate(
        &self,
        model: &TrainableLm,
        epoch: usize,
        device: &Device,
        processor: &mut SupervisedTrainingEventProcessor<TrainableLm>,
        interrupter: &burn::train::Interrupter,
    ) -> Option<Tally> {
        let valid = self.plan.valid_epoch()?;
        let total = valid.len();
        interrupter.fail_on_error(processor.process_valid(LearnerEvent::StartSplit {
            epoch_number: epoch,
            total_items: total,
        }));
        let carry = self.plan.batches.sampling.carries_state();
        let ranks = &*self.ranks;
        // Each rank scores its block of every minibatch's rows; the sums are added up below.
        let batches = valid
            .iter()
            .map(|minibatch| Ok::<_, Infallible>(self.rank_batch(minibatch, device)));
        let Ok(mut tally) = score(model, batches, carry, |output, step| {
            let progress = burn::data::dataloader::Progress::new(step, total, None);
            let item = TrainingItem::new(output, progress, Some(step), None);
            interrupter.fail_on_error(processor.process_valid(LearnerEvent::ProcessedItem(item)));
        });
        interrupter.fail_on_error(processor.process_valid(LearnerEvent::EndSplit(epoch)));
        if ranks.size() > 1 {
            let mut sums = [tally.nll, tally.tokens as f64];
            ranks.sum_f64(&mut sums);
            (tally.nll, tally.tokens) = (sums[0], sums[1] as usize);
        }
        Some(tally)
    }

    /// This rank's block of `minibatch`'s rows (all of them in a run of one process), on
    /// `device`: what training and validation run here.
    fn rank_batch(&self, minibatch: Minibatch, device: &Device) -> SequenceBatch {
        let ranks = &*self.ranks;
        let minibatch = if ranks.size() > 1 {
            minibatch.rows(rows_of(minibatch.batch_size, ranks.rank(), ranks.size()))
        } else {
            minibatch
        };
        SequenceBatch::from_minibatch(minibatch, device)
    }
}

/// Why to stop after the last epoch of `history`, if the patience (epochs without a better
/// validation perplexity; 0: never) or the time budget (seconds over all of `history`) says so.
fn stop_reason(
    history: &[EpochMetrics],
    patience: usize,
    max_seconds: Option<f64>,
) -> Option<String> {
    if patience > 0
        && let Some(best) = best_epoch(history)
        && history.len() - 1 - best >= patience
    {
        let ppl = history[best].valid_perplexity.unwrap_or(f64::NAN);
        return Some(format!(
            "validation perplexity has not improved for {} epochs (train.patience = {patience}); \
             the best, {ppl:.3}, was epoch {}",
            history.len() - 1 - best,
            history[best].epoch
        ));
    }
    let spent: f64 = history.iter().map(|m| m.seconds).sum();
    if let Some(budget) = max_seconds
        && spent >= budget
    {
        return Some(format!(
            "the time budget is spent: {:.1} of train.max_minutes = {} minutes over {} epochs",
            spent / 60.0,
            budget / 60.0,
            history.len()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{format_epoch, significant};

    #[test]
    fn the_learning_rate_is_printed_to_four_significant_digits() {
        assert_eq!(
            significant(0.0019949107041857582, 4).to_string(),
            "0.001995"
        );
        assert_eq!(significant(1.0, 4).to_string(), "1");
        assert_eq!(significant(0.5, 4).to_string(), "0.5");
        assert_eq!(significant(123456.0, 4).to_string(), "123500");
        let scheduled = EpochMetrics {
            lr: 0.0019949107041857582,
            ..epoch(3, None, 1.0)
        };
        let line = format_epoch(&scheduled, 10);
        assert!(line.ends_with("|g| 1.000  lr 0.001995"), "{line}");
        assert!(format_epoch(&epoch(3, None, 1.0), 10).ends_with("lr 1"));
    }

    fn epoch(epoch: usize, valid: Option<f64>, seconds: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_perplexity: 10.0,
            valid_perplexity: valid,
            train_bits_per_token: 3.0,
            valid_bits_per_token: valid.map(f64::log2),
            tokens_per_second: 1.0,
            grad_norm: 1.0,
            lr: 1.0,
            seconds,
        }
    }

    #[test]
    fn patience_counts_the_epochs_since_the_best() {
        let history: Vec<_> = [9.0, 8.0, 8.5, 8.2]
            .iter()
            .enumerate()
            .map(|(i, &p)| epoch(i + 1, Some(p), 1.0))
            .collect();
        assert_eq!(best_epoch(&history), Some(1));
        assert_eq!(
            stop_reason(&history[..3], 2, None),
            None,
            "one epoch without a better one"
        );
        let reason = stop_reason(&history, 2, None).expect("two epochs without");
        assert!(
            reason.contains("not improved for 2 epochs") && reason.contains("8.000, was epoch 2"),
            "{reason}"
        );
        assert_eq!(stop_reason(&history, 0, None), None, "0: no patience");
        // An equal perplexity is no improvement; the first of equals is the best.
        let flat: Vec<_> = (1..=3).map(|e| epoch(e, Some(5.0), 1.0)).collect();
        assert_eq!(best_epoch(&flat), Some(0));
        assert!(stop_reason(&flat, 2, None).is_some());
    }

    #[test]
    fn the_time_budget_counts_every_epoch_of_the_run() {
        let history: Vec<_> = (1..=3).map(|e| epoch(e, None, 50.0)).collect();
        assert_eq!(stop_reason(&history[..2], 0, Some(120.0)), None);
        let reason = stop_reason(&history, 0, Some(120.0)).expect("150 s of 120");
        assert!(
            reason.contains("2.5 of train.max_minutes = 2 minutes over 3 epochs"),
            "{reason}"
        );
        // Without validation, patience never fires.
        assert_eq!(stop_reason(&history, 1, None), None);
    }
}
