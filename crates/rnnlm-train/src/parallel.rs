//! Data parallelism inside one process: a minibatch's parallel streams cut by rows across
//! burn-train's multi-device workers, the gradients summed on the first device.

use std::ops::Range;

use burn::data::dataloader::{DataLoaderIterator, Progress};
use burn::data::dataset::DatasetError;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::train::SequenceOutput;
use burn::train::train::MultiDevicesTrainStep;
use rnnlm::RecurrentState;
use rnnlm_data::SequenceBatch;

use crate::error::TrainError;
use crate::step::{ShardBatch, TrainableLm};

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
        let (mut outputs, _) =
            self.workers
                .step(&mut loaders, model)
                .map_err(|e| TrainError::DataParallel {
                    reason: e.to_string(),
                })?;
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
