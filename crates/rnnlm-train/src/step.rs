//! One training step as burn-train runs it: the loss, the model wrapper burn-train trains, and
//! the shards a minibatch is cut into for data parallelism.

use burn::data::dataloader::batcher::Batcher;
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::train::metric::{Adaptor, ItemLazy, LossInput, PerplexityInput};
use burn::train::{InferenceStep, SequenceOutput, TrainOutput, TrainStep};
use rnnlm::{RecurrentState, RnnLm};
use rnnlm_data::{SequenceBatch, SequenceBatcher};

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
/// [`TbpttStrategy`](crate::TbpttStrategy) decides what is carried from one minibatch to the next.
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
    pub(crate) fn run(
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
/// [`TbpttStrategy`](crate::TbpttStrategy) cuts the shards itself).
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
