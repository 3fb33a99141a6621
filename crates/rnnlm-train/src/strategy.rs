//! The training step and the learning strategy that burn-train runs: d2l's loop with the
//! hidden state carried across minibatches (truncated BPTT) and gradients clipped by their
//! global norm.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use std::ops::Range;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder, DataLoaderIterator, Progress};
use burn::data::dataset::DatasetError;
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::train::metric::{Adaptor, ItemLazy, LossInput, PerplexityInput};
use burn::train::train::MultiDevicesTrainStep;
use burn::train::{
    EventProcessorTraining, InferenceStep, Learner, LearnerEvent, SequenceOutput,
    SupervisedLearningStrategy, SupervisedTrainingEventProcessor, TrainLoader, TrainOutput,
    TrainStep, TrainingComponents, TrainingItem, ValidLoader,
};
use rnnlm::{RecurrentState, RnnLm};
use rnnlm_data::{
    BatchConfig, Epoch, MinibatchDataset, SequenceBatch, SequenceBatcher, Tokens, Vocab, epoch_rng,
};

use crate::TrainError;
use crate::checkpoint::{
    EpochMetrics, EpochState, PartialEpoch, SavedState, best_epoch, save_epoch_state, write_atomic,
};
use crate::schedule::TrainingClock;
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

/// The model as burn-train sees it. Its [`TrainStep`] runs one [`ShardBatch`] from the state
/// the shard carries in (zero when it carries none) and hands the final state back;
/// [`TbpttStrategy`] decides what is carried from one minibatch to the next.
///
/// The gradients are Burn's autodiff over [`RnnLm`]: where the fused scan runs
/// ([`rnnlm::fused::is_active`]), each layer's time loop is one node of the graph with its own
/// backward pass; elsewhere, per-step tensor operations.
#[derive(Module, Debug)]
pub struct TrainableLm {
    /// The language model.
    pub lm: RnnLm,
}

/// A training pass over one shard: what the metrics see, the gradients, the loss and the state
/// to carry on.
pub struct TrainPass {
    /// Loss, logits and targets.
    pub output: SequenceOutput,
    /// The gradients of `share · loss` (empty when the loss is not finite).
    pub grads: GradientsParams,
    /// The shard's mean loss.
    pub loss: f64,
    /// The final state, detached.
    pub state: RecurrentState,
}

impl TrainableLm {
    /// The language model, for burn-train.
    pub fn new(lm: RnnLm) -> Self {
        Self { lm }
    }

    /// Forward and backward pass on `batch` from `state` (zero when `None`); the gradients are
    /// those of `share ·` the mean loss.
    pub fn train_pass(
        &self,
        batch: SequenceBatch,
        state: Option<RecurrentState>,
        share: f32,
    ) -> TrainPass {
        let (output, state) = self.run(batch, state);
        let loss = output.loss.clone().into_scalar::<f64>();
        let grads = if loss.is_finite() {
            GradientsParams::from_grads(output.loss.clone().mul_scalar(share).backward(), self)
        } else {
            GradientsParams::new()
        };
        TrainPass {
            output,
            grads,
            loss,
            state: state.detach(),
        }
    }

    /// Forward pass and loss on `batch` from `state` (zero when `None`).
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

/// One device's share of a minibatch, as burn-train's training workers receive it: the
/// parallel streams (rows) this device runs, with the state those streams ended the previous
/// minibatch in, so truncated BPTT stays exact under data parallelism.
#[derive(Clone, Debug)]
pub struct ShardBatch {
    /// Its rows of the minibatch: `x`, `y` `[rows, steps]`, on the shard's device.
    pub batch: SequenceBatch,
    /// The final state of these streams after the previous minibatch (detached,
    /// `[num_layers, rows, hidden]`), or `None` to start from zero.
    pub state: Option<RecurrentState>,
    /// `rows / minibatch rows`: the shard's mean loss is scaled by it before the backward pass,
    /// so the shards' gradients add up to the gradient of the whole minibatch's mean loss.
    pub share: f32,
    /// Index of the shard (and of its device).
    pub shard: usize,
}

/// What a training worker returns for its shard besides the gradients.
pub struct ShardOutput {
    /// Loss (the shard's mean), logits and targets, for the metrics.
    pub output: SequenceOutput,
    /// The shard's final state, detached, on its device; taken out before the item goes to
    /// the metrics.
    pub state: Option<RecurrentState>,
    /// Index of the shard.
    pub shard: usize,
}

impl ItemLazy for ShardOutput {
    fn sync(self) -> Result<Self, burn::tensor::ExecutionError> {
        Ok(Self {
            output: self.output.sync()?,
            state: self.state,
            shard: self.shard,
        })
    }
}

impl Adaptor<LossInput> for ShardOutput {
    fn adapt(&self) -> LossInput {
        self.output.adapt()
    }
}

impl Adaptor<PerplexityInput> for ShardOutput {
    fn adapt(&self) -> PerplexityInput {
        self.output.adapt()
    }
}

impl TrainStep for TrainableLm {
    type Input = ShardBatch;
    type Output = ShardOutput;

    fn step(&self, item: ShardBatch) -> TrainOutput<ShardOutput> {
        let pass = self.train_pass(item.batch, item.state, item.share);
        TrainOutput {
            grads: pass.grads,
            item: ShardOutput {
                output: pass.output,
                state: Some(pass.state),
                shard: item.shard,
            },
        }
    }
}

/// Burn [`Batcher`] of whole minibatches as single shards (what burn-train's own loaders hold;
/// [`TbpttStrategy`] cuts the shards itself).
#[derive(Clone, Debug, Default)]
pub struct ShardBatcher;

impl Batcher<rnnlm_data::Minibatch, ShardBatch> for ShardBatcher {
    fn batch(&self, items: Vec<rnnlm_data::Minibatch>, device: &Device) -> ShardBatch {
        ShardBatch {
            batch: SequenceBatcher.batch(items, device),
            state: None,
            share: 1.0,
            shard: 0,
        }
    }
}

impl InferenceStep for TrainableLm {
    type Input = SequenceBatch;
    type Output = SequenceOutput;

    fn step(&self, batch: SequenceBatch) -> SequenceOutput {
        self.run(batch, None).0
    }
}

/// Data-parallel truncated BPTT on burn-train's multi-device workers
/// ([`MultiDevicesTrainStep`]: one thread per device, the model forked onto each).
///
/// Each minibatch `[batch, steps]` is cut by rows: device `k` runs a contiguous block of the
/// parallel streams and keeps those streams' state for the next minibatch, so every stream sees
/// exactly the history it would see on one device. Each shard's loss is scaled by its share of
/// the rows, and the gradients are summed on the first device in shard order; the caller then
/// clips the sum by its global norm, so the update equals the single-device one on the whole
/// minibatch (up to the rounding of a sum in a different order).
pub struct DataParallel {
    devices: Vec<Device>,
    workers: MultiDevicesTrainStep<TrainableLm>,
}

/// The result of one data-parallel forward and backward pass.
pub struct ParallelStep {
    /// The gradients of the whole minibatch's mean loss, on the first device.
    pub grads: GradientsParams,
    /// The minibatch's mean loss.
    pub loss: f64,
    /// Each shard's output, in shard order.
    pub outputs: Vec<SequenceOutput>,
    /// Each shard's final state, detached, on its device, in shard order.
    pub states: Vec<RecurrentState>,
}

/// A data loader iterator over one shard, which is what a burn-train worker pulls per step.
struct OneShard(Option<ShardBatch>);

impl Iterator for OneShard {
    type Item = Result<ShardBatch, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.take().map(Ok)
    }
}

impl DataLoaderIterator<ShardBatch> for OneShard {
    fn progress(&self) -> Progress {
        Progress::new(usize::from(self.0.is_none()), 1, None)
    }
}

impl DataParallel {
    /// Workers for `devices` (autodiff devices; the first is where gradients are combined).
    ///
    /// # Panics
    /// If `devices` is empty.
    pub fn new(devices: Vec<Device>) -> Self {
        assert!(!devices.is_empty(), "data parallelism needs a device");
        let workers = MultiDevicesTrainStep::new(&devices);
        Self { devices, workers }
    }

    /// The devices, the first being where gradients are combined.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The rows each of `shards` devices runs out of `batch_size`: contiguous blocks whose sizes
    /// differ by at most one, the larger first.
    pub fn shard_rows(batch_size: usize, shards: usize) -> Vec<Range<usize>> {
        let (base, extra) = (batch_size / shards, batch_size % shards);
        let mut start = 0;
        (0..shards)
            .map(|k| {
                let len = base + usize::from(k < extra);
                let range = start..start + len;
                start += len;
                range
            })
            .collect()
    }

    /// Forward and backward on every device for one minibatch `[batch, steps]`. `states` are the
    /// shards' states from the previous minibatch (as returned in [`ParallelStep::states`]), or
    /// `None` to start every stream from zero.
    pub fn step(
        &self,
        model: &TrainableLm,
        batch: SequenceBatch,
        states: Option<Vec<RecurrentState>>,
    ) -> Result<ParallelStep, TrainError> {
        let [rows, _] = batch.x.dims();
        let ranges = Self::shard_rows(rows, self.devices.len());
        let mut states = states.map(Vec::into_iter);
        let mut loaders: Vec<Box<dyn DataLoaderIterator<ShardBatch>>> = Vec::new();
        for (shard, (range, device)) in ranges.iter().zip(&self.devices).enumerate() {
            let take = |t: &Tensor<2, Int>| {
                t.clone()
                    .narrow(0, range.start, range.len())
                    .to_device(device)
            };
            loaders.push(Box::new(OneShard(Some(ShardBatch {
                batch: SequenceBatch {
                    x: take(&batch.x),
                    y: take(&batch.y),
                },
                state: states.as_mut().and_then(Iterator::next),
                share: range.len() as f32 / rows as f32,
                shard,
            }))));
        }
        let (mut outputs, _) = self
            .workers
            .step(&mut loaders, model)
            .map_err(|e| TrainError::Config(format!("data-parallel step failed: {e}")))?;
        // Workers answer in any order; combine in shard order so a run repeats bit for bit.
        outputs.sort_by_key(|out| out.output.item.shard);
        let main = &self.devices[0];
        let mut accumulator = GradientsAccumulator::<TrainableLm>::new();
        let mut loss = 0.0;
        let mut shard_outputs = Vec::with_capacity(outputs.len());
        let mut shard_states = Vec::with_capacity(outputs.len());
        for (out, range) in outputs.into_iter().zip(&ranges) {
            accumulator.accumulate(model, out.output.grads.to_device(main, model));
            let item = out.output.item;
            loss +=
                item.output.loss.clone().into_scalar::<f64>() * range.len() as f64 / rows as f64;
            shard_states.push(item.state.expect("a worker returns its shard's state"));
            shard_outputs.push(item.output);
        }
        Ok(ParallelStep {
            grads: accumulator.grads(),
            loss,
            outputs: shard_outputs,
            states: shard_states,
        })
    }
}

/// The token streams of a run and how they are cut.
#[derive(Clone, Debug)]
pub struct DataPlan {
    /// Training ids (memory-mapped from the prepared corpus in a run).
    pub train: Tokens,
    /// Validation ids (empty: no validation).
    pub valid: Tokens,
    /// Minibatch shape and scheme.
    pub batches: BatchConfig,
    /// Seed of the data order (and of dropout, reseeded every minibatch).
    pub seed: u64,
}

impl DataPlan {
    /// The training minibatches of `epoch`, in the plan's order, computed as they are read.
    pub fn train_epoch(&self, epoch: usize) -> Epoch {
        self.batches
            .epoch(&self.train, &mut epoch_rng(self.seed, epoch))
            .expect("checked before training")
    }

    /// The training minibatches of `epoch` as a Burn data loader (batch size 1, no shuffling:
    /// the order is the plan's).
    pub fn train_loader(
        &self,
        epoch: usize,
        device: &Device,
    ) -> Arc<dyn DataLoader<SequenceBatch>> {
        DataLoaderBuilder::new(SequenceBatcher)
            .batch_size(1)
            .set_device(device.clone())
            .build(self.train_epoch(epoch))
    }

    /// The training minibatches of `epoch` as whole-minibatch shards, the item type of
    /// burn-train's training loader for [`TrainableLm`].
    pub fn train_shard_loader(
        &self,
        epoch: usize,
        device: &Device,
    ) -> Arc<dyn DataLoader<ShardBatch>> {
        DataLoaderBuilder::new(ShardBatcher)
            .batch_size(1)
            .set_device(device.clone())
            .build(self.train_epoch(epoch))
    }

    /// The validation minibatches: the same every epoch, so epochs compare.
    pub fn valid_loader(&self, device: &Device) -> Arc<dyn DataLoader<SequenceBatch>> {
        let builder = DataLoaderBuilder::new(SequenceBatcher)
            .batch_size(1)
            .set_device(device.clone());
        if self.valid.is_empty() {
            builder.build(MinibatchDataset::new(Vec::new()))
        } else {
            builder.build(
                self.batches
                    .epoch(&self.valid, &mut epoch_rng(self.seed, 0))
                    .expect("checked before training"),
            )
        }
    }
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

/// The seed of minibatch `step` of `epoch`: dropout masks depend on it alone, so a run resumed
/// inside an epoch draws the masks the uninterrupted run drew.
fn step_seed(seed: u64, epoch: usize, step: usize) -> u64 {
    let mut z = seed ^ ((epoch as u64) << 40) ^ (step as u64);
    // splitmix64's finaliser spreads neighbouring (epoch, step) pairs apart.
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn save_states(states: &[RecurrentState]) -> Vec<SavedState> {
    let values = |t: &Tensor<3>| t.to_data().convert::<f32>().try_to_vec::<f32>().expect("f32 state");
    states
        .iter()
        .map(|s| SavedState {
            shape: s.hidden.dims(),
            hidden: values(&s.hidden),
            cell: s.cell.as_ref().map(values),
        })
        .collect()
}

fn restore_states(saved: &[SavedState], devices: &[Device]) -> Vec<RecurrentState> {
    saved
        .iter()
        .zip(devices.iter().cycle())
        .map(|(s, device)| {
            let tensor = |v: &Vec<f32>| {
                Tensor::<3>::from_data(TensorData::new(v.clone(), s.shape), device)
            };
            RecurrentState {
                hidden: tensor(&s.hidden),
                cell: s.cell.as_ref().map(tensor),
            }
        })
        .collect()
}

/// `3h05m`, `4m12s`, `9s`.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

impl TbpttStrategy {
    fn fail(&self, error: TrainError, interrupter: &burn::train::Interrupter) {
        interrupter.stop(Some(&error.to_string()));
        *self.failure.lock().expect("failure lock") = Some(error);
    }

    fn print_sample(&self, model: &TrainableLm, epoch: usize, last: bool) {
        let Some(spec) = &self.sample else { return };
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
        checkpointer.checkpoint(learner, state.key(), store);
        save_epoch_state(&self.artifacts, &state)?;
        *self.last_checkpoint.lock().expect("checkpoint lock") = Some(state.position());
        Ok(())
    }

    /// The within-epoch progress: `epoch 3/10  step 1200/5000 (24%)  train ppl 9.81  152.3k
    /// tok/s  ETA 4m12s`, the rate and the time left from the `steps` minibatches run in
    /// `seconds` by this process.
    fn progress_line(&self, epoch: usize, epochs: usize, step: usize, of: usize, tally: &Tally, steps: usize, seconds: f64) -> String {
        let per_step = seconds / steps.max(1) as f64;
        let rate = tally.tokens as f64 / tally.steps.max(1) as f64 / per_step.max(1e-9);
        let left = (of - step) as f64 * per_step;
        format!(
            "epoch {epoch}/{epochs}  step {step}/{of} ({:.0}%)  train ppl {:.3}  {:.1}k tok/s  ETA {}",
            100.0 * step as f64 / of.max(1) as f64,
            tally.perplexity(),
            rate / 1000.0,
            format_duration(left)
        )
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
        let shard_devices = if self.parallel.is_empty() { vec![self.device.clone()] } else { self.parallel.clone() };
        let mut key = self.next_key;
        let (first_epoch, mut partial) = match &self.resume {
            Some(state) => (state.epoch + 1, state.partial.clone()),
            None => (1, None),
        };
        let mut last_checkpoint = Instant::now();
        // Minibatches of the epochs before the first one run here, for `max_steps`.
        let mut steps_before: usize = match self.max_steps {
            Some(_) => (1..first_epoch).map(|e| self.plan.train_epoch(e).len()).sum(),
            None => 0,
        };
        let mut first_reported = false;

        'epochs: for epoch in first_epoch..=epochs {
            let data = self.plan.train_epoch(epoch);
            let total = data.len();
            let resumed = partial.take();
            let first_step = resumed.as_ref().map_or(0, |p| p.steps);
            let earlier: f64 = self.history.lock().expect("history").iter().map(|m| m.seconds).sum();
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
                .map(|p| restore_states(&p.states, &shard_devices));
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
                let batch = SequenceBatch::from_minibatch(minibatch, &self.device);
                let tokens = batch.x.dims().iter().product::<usize>();
                let model = learner.model();
                // Random sampling: every minibatch starts from zero. Sequential: from the last
                // one's final state, detached so the backward pass stops at this minibatch.
                let carried = if carry { state.take() } else { None };
                let (loss, mut grads, outputs, final_state) = match &parallel {
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
                if !first_reported && self.print_epochs {
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

                if self.print_epochs && step < total {
                    let since = last_progress.elapsed().as_secs_f64();
                    let counted = started.elapsed().as_secs_f64();
                    let line = || {
                        self.progress_line(epoch, epochs, step, total, &tally, step - first_step, counted)
                    };
                    if self.terminal && since >= 0.5 {
                        print!("\r{}\x1b[K", line());
                        let _ = std::io::Write::flush(&mut std::io::stdout());
                        last_progress = Instant::now();
                    } else if !self.terminal && self.progress_seconds.is_some_and(|every| since >= every) {
                        println!("{}", line());
                        last_progress = Instant::now();
                    }
                }
                if self.valid_every > 0 && step.is_multiple_of(self.valid_every) && step < total {
                    let model = learner.model().valid();
                    if let Some(valid) = self.validate(&model, epoch, &valid_device, &mut processor, &interrupter) {
                        if let Err(error) = self.log_validation(epoch, step, &valid) {
                            self.fail(error, &interrupter);
                            break 'epochs;
                        }
                    }
                }

                let interrupted = interrupter.should_stop();
                let spent = earlier + epoch_seconds();
                let over_budget = self.max_seconds.is_some_and(|budget| spent >= budget);
                let over_steps = self.max_steps.is_some_and(|most| steps_before + step >= most);
                let due = self
                    .checkpoint_seconds
                    .is_some_and(|every| last_checkpoint.elapsed().as_secs_f64() >= every);
                if step < total && (interrupted || over_budget || over_steps || due) {
                    if self.terminal && self.print_epochs {
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
                            states: state.as_deref().map(save_states).unwrap_or_default(),
                        }),
                    };
                    interrupter.fail_on_error(processor.flush());
                    if let Err(error) = self.checkpoint(&mut checkpointer, &learner, &store, position) {
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
                        if self.print_epochs {
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
                        if self.print_epochs {
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
            if self.terminal && self.print_epochs && total - first_step > 1 {
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
            if self.print_epochs {
                println!("{}", format_epoch(&metrics, epochs));
            }
            let history = {
                let mut history = self.history.lock().expect("history");
                history.push(metrics);
                history.clone()
            };
            self.print_sample(&model, epoch, epoch == epochs);

            // The best model by validation perplexity so far, kept beside the last ones.
            if best_epoch(&history) == Some(history.len() - 1) {
                let path = self.artifacts.join(crate::run::files::BEST_MODEL);
                if let Err(error) = crate::run::save_model(&path, &model.lm) {
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
                if self.print_epochs {
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
        let path = self.artifacts.join(crate::run::files::VALIDATION);
        let mut csv = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| "epoch,step,valid_perplexity,valid_bits_per_token\n".to_owned());
        csv.push_str(&format!("{epoch},{step},{:.6},{:.6}\n", valid.perplexity(), valid.bits()));
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
        while let Some(item) = items.next() {
            // A batch that cannot be made stops the run, as in training, rather than ending
            // validation early with a perplexity of what was read so far.
            let batch = match item {
                Ok(batch) => batch,
                Err(err) => {
                    interrupter.fail(err);
                    return None;
                }
            };
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

/// Why to stop after the last epoch of `history`, if the patience (epochs without a better
/// validation perplexity; 0: never) or the time budget (seconds over all of `history`) says so.
fn stop_reason(history: &[EpochMetrics], patience: usize, max_seconds: Option<f64>) -> Option<String> {
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
        significant(m.lr, 4)
    )
}

/// `value` rounded to `digits` significant digits, printed without trailing zeros: a schedule's
/// `0.0019949107041857582` reads `0.001995`, a constant `1.0` reads `1`.
fn significant(value: f64, digits: usize) -> f64 {
    // The exponent form rounds to significant digits; parsing it back drops the noise digits.
    format!("{value:.*e}", digits.saturating_sub(1))
        .parse()
        .unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_learning_rate_is_printed_to_four_significant_digits() {
        assert_eq!(significant(0.0019949107041857582, 4).to_string(), "0.001995");
        assert_eq!(significant(1.0, 4).to_string(), "1");
        assert_eq!(significant(0.5, 4).to_string(), "0.5");
        assert_eq!(significant(123456.0, 4).to_string(), "123500");
        let scheduled = EpochMetrics { lr: 0.0019949107041857582, ..epoch(3, None, 1.0) };
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
        assert_eq!(stop_reason(&history[..3], 2, None), None, "one epoch without a better one");
        let reason = stop_reason(&history, 2, None).expect("two epochs without");
        assert!(reason.contains("not improved for 2 epochs") && reason.contains("8.000, was epoch 2"), "{reason}");
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
        assert!(reason.contains("2.5 of train.max_minutes = 2 minutes over 3 epochs"), "{reason}");
        // Without validation, patience never fires.
        assert_eq!(stop_reason(&history, 1, None), None);
    }
}
