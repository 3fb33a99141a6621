use std::collections::HashSet;

use burn::data::dataloader::DataLoaderBuilder;
use rnnlm_data::{
    BatchConfig, DataError, Minibatch, MinibatchDataset, Sampling, SequenceBatcher, epoch_rng,
};
use rnnlm_tests::device;

/// d2l's own toy example: the sequence 0..35, batch 2, 5 steps.
fn toy() -> Vec<u32> {
    (0..35).collect()
}

fn config(sampling: Sampling) -> BatchConfig {
    BatchConfig {
        batch_size: 2,
        num_steps: 5,
        sampling,
    }
}

fn check_shapes_and_shift(batches: &[Minibatch]) {
    assert!(!batches.is_empty());
    for b in batches {
        assert_eq!((b.batch_size, b.num_steps), (2, 5));
        assert_eq!(b.x.len(), 10);
        for (x, y) in b.x.iter().zip(&b.y) {
            assert_eq!(*y, x + 1, "Y is X shifted by one token");
        }
        for row in 0..2 {
            assert!(
                b.x_row(row).windows(2).all(|w| w[1] == w[0] + 1),
                "rows are contiguous text"
            );
        }
    }
}

#[test]
fn sequential_streams_continue_from_one_minibatch_to_the_next() {
    for seed in 0..20 {
        let batches = config(Sampling::Sequential)
            .epoch(toy(), &mut epoch_rng(seed, 1))
            .unwrap()
            .to_vec();
        check_shapes_and_shift(&batches);
        for pair in batches.windows(2) {
            for row in 0..2 {
                let end = pair[0].x_row(row).last().unwrap();
                assert_eq!(
                    pair[1].x_row(row)[0],
                    end + 1,
                    "seed {seed}: stream {row} continues"
                );
            }
        }
        // Token i of the toy corpus is i, so stream 0 starts at the offset, 0..=5;
        // each stream then holds (35 - offset - 1) / 2 columns, cut into minibatches of 5.
        let offset = batches[0].x_row(0)[0] as usize;
        assert!(offset <= 5);
        assert_eq!(batches.len(), (35 - offset - 1) / 2 / 5, "seed {seed}");
    }
}

#[test]
fn random_sampling_gives_disjoint_subsequences_in_random_order() {
    let mut orders = HashSet::new();
    for seed in 0..20 {
        let batches = config(Sampling::Random)
            .epoch(toy(), &mut epoch_rng(seed, 1))
            .unwrap()
            .to_vec();
        check_shapes_and_shift(&batches);
        let starts: Vec<i64> = batches
            .iter()
            .flat_map(|b| [b.x_row(0)[0], b.x_row(1)[0]])
            .collect();
        let offset = starts.iter().min().unwrap() % 5;
        assert!(offset < 5);
        assert!(
            starts.iter().all(|s| s % 5 == offset),
            "seed {seed}: aligned to one offset"
        );
        assert_eq!(
            starts.iter().collect::<HashSet<_>>().len(),
            starts.len(),
            "no overlap"
        );
        orders.insert(starts);
    }
    assert!(orders.len() > 10, "the order is random across seeds");
}

#[test]
fn same_seed_and_epoch_same_minibatches() {
    for sampling in [Sampling::Random, Sampling::Sequential] {
        let tokens: Vec<u32> = (0..1000).map(|i| i % 17).collect();
        let cfg = BatchConfig {
            batch_size: 4,
            num_steps: 7,
            sampling,
        };
        let a = cfg.epoch(&tokens, &mut epoch_rng(9, 3)).unwrap().to_vec();
        assert_eq!(
            a,
            cfg.epoch(&tokens, &mut epoch_rng(9, 3)).unwrap().to_vec()
        );
        let others: Vec<_> = (4..8)
            .map(|e| cfg.epoch(&tokens, &mut epoch_rng(9, e)).unwrap().to_vec())
            .collect();
        assert!(
            others.iter().any(|b| *b != a),
            "{sampling:?}: epochs differ"
        );
    }
}

#[test]
fn too_short_corpus_says_how_many_tokens_are_needed() {
    let tokens: Vec<u32> = (0..40).collect();
    let cfg = BatchConfig {
        batch_size: 8,
        num_steps: 5,
        sampling: Sampling::Sequential,
    };
    let err = cfg.epoch(&tokens, &mut epoch_rng(0, 1)).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::TooShort {
                tokens: 40,
                needed: 46,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("needs at least 46"), "{err}");
    // Exactly the minimum always yields a minibatch, whatever the offset.
    for sampling in [Sampling::Random, Sampling::Sequential] {
        let cfg = BatchConfig {
            batch_size: 8,
            num_steps: 5,
            sampling,
        };
        let tokens: Vec<u32> = (0..sampling.min_tokens(8, 5) as u32).collect();
        for seed in 0..30 {
            assert!(
                !cfg.epoch(&tokens, &mut epoch_rng(seed, 0))
                    .unwrap()
                    .to_vec()
                    .is_empty()
            );
        }
    }
    let zero = BatchConfig {
        batch_size: 0,
        num_steps: 5,
        sampling: Sampling::Random,
    };
    assert!(
        zero.check(100, "x")
            .unwrap_err()
            .to_string()
            .contains("data.batch_size = 0")
    );
}

#[test]
fn burn_data_loader_keeps_the_sequential_order() {
    let tokens: Vec<u32> = (0..500).collect();
    let cfg = BatchConfig {
        batch_size: 3,
        num_steps: 6,
        sampling: Sampling::Sequential,
    };
    let batches = cfg.epoch(&tokens, &mut epoch_rng(1, 1)).unwrap().to_vec();
    let loader = DataLoaderBuilder::new(SequenceBatcher)
        .batch_size(1)
        .set_device(device())
        .build(MinibatchDataset::new(batches.clone()));
    let loaded: Vec<_> = loader.iter().map(|item| item.expect("minibatch")).collect();
    assert_eq!(loaded.len(), batches.len());
    for (tensors, expected) in loaded.into_iter().zip(&batches) {
        assert_eq!(tensors.x.dims(), [3, 6]);
        let x = tensors
            .x
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        assert_eq!(x, expected.x);
    }
}

#[test]
fn nominal_batch_count_is_the_count_at_offset_zero() {
    let tokens: Vec<u32> = (0..1000).collect();
    for sampling in [
        Sampling::Random,
        Sampling::Sequential,
        Sampling::Overlapping,
    ] {
        let cfg = BatchConfig {
            batch_size: 4,
            num_steps: 7,
            sampling,
        };
        let nominal = cfg.nominal_batches(tokens.len());
        for seed in 0..20 {
            let actual = cfg
                .epoch(&tokens, &mut epoch_rng(seed, 1))
                .unwrap()
                .to_vec()
                .len();
            assert!(
                actual == nominal || actual + 1 == nominal,
                "{sampling:?}: {actual} vs {nominal}"
            );
        }
    }
}
