//! The data plan of a run: the token streams and how each epoch cuts them into minibatches.

use std::sync::Arc;

use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::prelude::*;
use rnnlm_data::{
    BatchConfig, Epoch, MinibatchDataset, SequenceBatch, SequenceBatcher, Tokens, epoch_rng,
};

use crate::step::{ShardBatch, ShardBatcher};

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
    /// burn-train's training loader for [`TrainableLm`](crate::TrainableLm).
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
        match self.valid_epoch() {
            Some(epoch) => builder.build(epoch),
            None => builder.build(MinibatchDataset::new(Vec::new())),
        }
    }

    /// The validation minibatches (the same every epoch, so epochs compare), or `None`
    /// without validation.
    pub fn valid_epoch(&self) -> Option<Epoch> {
        (!self.valid.is_empty()).then(|| {
            self.batches
                .epoch(&self.valid, &mut epoch_rng(self.seed, 0))
                .expect("checked before training")
        })
    }
}
