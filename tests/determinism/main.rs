//! Same seed, same numbers: these tests seed the backend's global random generator, so they
//! live in their own test binary and take turns.

use std::sync::Mutex;

use burn::prelude::*;
use rnnlm::fused::Mode;
use rnnlm::{CellKind, RnnLmConfig};
use rnnlm_data::{Corpus, CorpusOptions, epoch_rng};
use rnnlm_tests::{device, ids, max_diff, parameters, scratch_dir, tiny_experiment, values};
use rnnlm_train::{ExperimentConfig, sequence_loss};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn same_seed_same_weights() {
    let _turn = serial();
    let dev = device();
    let config = RnnLmConfig::new(CellKind::Lstm, 8, 16)
        .with_num_layers(2)
        .with_embedding(4);
    let x = ids(&[1, 2, 3, 4, 5, 6], [2, 3], &dev);
    let run = |seed: u64| {
        dev.seed(seed);
        let m = config.init(&dev);
        values(m.forward(x.clone(), m.begin_state(2, &dev)).0)
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}

#[test]
fn resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    let _turn = serial();
    // Adam (optimizer state), dropout (random masks) and two layers: everything a resume must restore.
    let experiment = "[model]\nkind = \"lstm\"\nhidden_size = 16\nnum_layers = 2\ndropout = 0.3\n\
                      [optimizer]\nkind = \"adam\"\nlr = 0.01\n[train]\nepochs = 4\nseed = 7\n";
    let whole_dir = scratch_dir("resume-whole");
    let whole = tiny_experiment(&whole_dir, 4000, experiment);
    let whole_report = rnnlm_train::train(&whole).unwrap();

    let split_dir = scratch_dir("resume-split");
    let mut first = tiny_experiment(&split_dir, 4000, experiment);
    first.overrides.push("train.epochs=2".into());
    rnnlm_train::train(&first).unwrap();
    let mut rest = tiny_experiment(&split_dir, 4000, experiment);
    rest.resume = true;
    let rest_report = rnnlm_train::train(&rest).unwrap();

    assert_eq!(rest_report.resumed_from, Some(2));
    assert_eq!(
        rest_report.history,
        whole_report
            .history
            .iter()
            .map(|m| {
                // Throughput and wall time are the figures that may differ between runs.
                let mut m = m.clone();
                m.tokens_per_second = rest_report.history[m.epoch - 1].tokens_per_second;
                m.seconds = rest_report.history[m.epoch - 1].seconds;
                m
            })
            .collect::<Vec<_>>()
    );
    // Compare values, not files: a record also holds parameter ids, which differ per process.
    let a = rnnlm_train::load_model(&whole.artifacts, &device())
        .unwrap()
        .model;
    let b = rnnlm_train::load_model(&rest.artifacts, &device())
        .unwrap()
        .model;
    assert_eq!(
        parameters(&a),
        parameters(&b),
        "final weights are bit-identical"
    );
    std::fs::remove_dir_all(&whole_dir).ok();
    std::fs::remove_dir_all(&split_dir).ok();
}

#[test]
fn a_run_stopped_inside_an_epoch_resumes_to_the_weights_of_an_uninterrupted_one() {
    let _turn = serial();
    // Carried LSTM states across minibatches, dropout masks, Adam's moments, a cosine schedule,
    // and data parallelism off: all must continue where a checkpoint inside an epoch left them.
    let experiment = "[model]\nkind = \"lstm\"\nhidden_size = 16\nnum_layers = 2\ndropout = 0.3\n\
                      [optimizer]\nkind = \"adam\"\nlr = 0.01\n[schedule]\nkind = \"cosine\"\n\
                      [train]\nepochs = 2\nseed = 11\n";
    let whole_dir = scratch_dir("resume-mid-whole");
    let whole = tiny_experiment(&whole_dir, 6000, experiment);
    let whole_report = rnnlm_train::train(&whole).unwrap();

    let split_dir = scratch_dir("resume-mid-split");
    let mut first = tiny_experiment(&split_dir, 6000, experiment);
    // A checkpoint at every minibatch; a watcher stops the run once one inside epoch 2 exists.
    first.overrides.push("train.checkpoint_minutes=1e-9".into());
    let interrupter = burn::train::Interrupter::new();
    first.interrupter = Some(interrupter.clone());
    let watched = first.artifacts.clone();
    let watcher = std::thread::spawn(move || {
        for _ in 0..20_000 {
            if let Some(state) = rnnlm_train::latest_complete_checkpoint(&watched)
                && state.epoch == 1
                && state.partial.as_ref().is_some_and(|p| p.steps >= 5)
            {
                interrupter.stop(Some("stopped by the test"));
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        false
    });
    let stopped = rnnlm_train::train(&first).unwrap_err();
    assert!(
        watcher.join().unwrap(),
        "the watcher saw a checkpoint inside epoch 2"
    );
    let message = stopped.to_string();
    assert!(
        message.contains("epoch 2, minibatch") && message.contains("--resume"),
        "{message}"
    );
    let state = rnnlm_train::latest_complete_checkpoint(&first.artifacts).unwrap();
    let partial = state.partial.clone().expect("inside an epoch");
    assert!(partial.steps < partial.of, "{partial:?}");
    assert_eq!(partial.states.len(), 1);
    assert!(
        partial.states[0].cell.is_some(),
        "the LSTM's memory cells are kept"
    );

    let mut rest = tiny_experiment(&split_dir, 6000, experiment);
    rest.resume = true;
    let rest_report = rnnlm_train::train(&rest).unwrap();
    let figures = |h: &[rnnlm_train::EpochMetrics]| -> Vec<(f64, Option<f64>, f64)> {
        h.iter()
            .map(|m| (m.train_perplexity, m.valid_perplexity, m.grad_norm))
            .collect()
    };
    assert_eq!(
        figures(&rest_report.history),
        figures(&whole_report.history)
    );
    let a = rnnlm_train::load_model(&whole.artifacts, &device())
        .unwrap()
        .model;
    let b = rnnlm_train::load_model(&rest.artifacts, &device())
        .unwrap()
        .model;
    assert_eq!(
        parameters(&a),
        parameters(&b),
        "final weights are bit-identical"
    );
    std::fs::remove_dir_all(&whole_dir).ok();
    std::fs::remove_dir_all(&split_dir).ok();
}

/// Trains one epoch with a learning rate so small that no weight changes in f32, and returns
/// the reported training perplexity together with the same perplexity recomputed by hand with
/// the state carried across minibatches and with it reset for every minibatch.
fn epoch_perplexities(sampling: &str) -> (f64, f64, f64) {
    let dir = scratch_dir(&format!("carry-{sampling}"));
    // Large weights, so the state a minibatch starts from visibly changes its loss.
    let experiment = "[model]\nkind = \"gru\"\nhidden_size = 16\ninit = { rule = \"normal\", sigma = 0.7 }\n[train]\nepochs = 1\nseed = 3\n";
    let mut options = tiny_experiment(&dir, 3000, experiment);
    options.overrides.extend([
        "optimizer.lr=1e-20".to_owned(),
        format!("data.sampling=\"{sampling}\""),
    ]);
    let report = rnnlm_train::train(&options).unwrap();

    let config = ExperimentConfig::load(&options.config, &options.overrides).unwrap();
    let text = std::fs::read_to_string(dir.join("text.txt")).unwrap();
    let corpus = Corpus::build(
        &text,
        &config.data.tokenizer(),
        &CorpusOptions::default(),
        "t",
    )
    .unwrap();
    let (train, _) = corpus.split(config.data.valid_fraction).unwrap();
    let batches = config
        .data
        .batches()
        .epoch(train, &mut epoch_rng(config.train.seed, 1))
        .unwrap()
        .to_vec();
    let ad = device().autodiff();
    ad.seed(config.train.seed);
    let model_config = RnnLmConfig {
        vocab_size: corpus.vocab.len(),
        ..config.model.clone()
    };
    let model = model_config.init(&ad).valid();
    let dev = device();
    let perplexity = |carry: bool| {
        let (mut nll, mut count) = (0.0, 0usize);
        let mut state = model.begin_state(4, &dev);
        for b in &batches {
            let x = ids(&b.x, [b.batch_size, b.num_steps], &dev);
            let y = ids(&b.y, [b.batch_size, b.num_steps], &dev);
            let start = if carry {
                state.clone()
            } else {
                model.begin_state(4, &dev)
            };
            let (logits, next) = model.forward(x, start);
            state = next;
            nll += values(sequence_loss(logits, y))[0] as f64 * b.x.len() as f64;
            count += b.x.len();
        }
        (nll / count as f64).exp()
    };
    std::fs::remove_dir_all(&dir).ok();
    (
        report.history[0].train_perplexity,
        perplexity(true),
        perplexity(false),
    )
}

#[test]
fn sequential_partitioning_carries_the_state_across_minibatches() {
    let _turn = serial();
    let (reported, carried, reset) = epoch_perplexities("sequential");
    assert!(
        (reported - carried).abs() < 1e-4 * carried,
        "reported {reported}, carried {carried}"
    );
    assert!(
        (reported - reset).abs() > 1e-3 * reset,
        "resetting would differ: {reset}"
    );
}

#[test]
fn random_sampling_resets_the_state_every_minibatch() {
    let _turn = serial();
    let (reported, carried, reset) = epoch_perplexities("random");
    assert!(
        (reported - reset).abs() < 1e-4 * reset,
        "reported {reported}, reset {reset}"
    );
    assert!(
        (reported - carried).abs() > 1e-3 * carried,
        "carrying would differ: {carried}"
    );
}

/// Resident memory of this process in bytes, from /proc.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Peak resident memory while `work` runs, sampled every 20 ms.
fn peak_while(work: impl FnOnce()) -> u64 {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let sampler = std::thread::spawn(move || {
        let mut peak = resident_bytes();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(resident_bytes());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        peak
    });
    work();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap()
}

#[test]
fn memory_does_not_grow_with_the_number_of_minibatches() {
    let _turn = serial();
    if resident_bytes() == 0 {
        eprintln!("no /proc/self/status here; skipping the memory check");
        return;
    }
    // Each minibatch's graph holds ~8 MB of activations (GRU 256, batch 16 x 32 steps). If the
    // carried state kept the previous minibatches' graphs alive, 190 minibatches would hold more
    // than a gigabyte; with the graph cut, memory stays at one minibatch's worth.
    let experiment = "[model]\nkind = \"gru\"\nhidden_size = 256\n[train]\nepochs = 1\n";
    let run = |tokens: usize, name: &str| {
        let dir = scratch_dir(name);
        let mut options = tiny_experiment(&dir, tokens, experiment);
        options.overrides.extend([
            "data.batch_size=16".into(),
            "data.num_steps=32".into(),
            "data.valid_fraction=0".into(),
        ]);
        let peak = peak_while(|| {
            rnnlm_train::train(&options).unwrap();
        });
        std::fs::remove_dir_all(&dir).ok();
        peak
    };
    let few = run(16 * 32 * 10 + 100, "memory-few"); // 10 minibatches
    let many = run(16 * 32 * 190 + 100, "memory-many"); // 190 minibatches
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "peak resident memory: {:.0} MB with 10 minibatches, {:.0} MB with 190",
        mb(few),
        mb(many)
    );
    assert!(
        many < few + (256 << 20),
        "peak memory grew from {:.0} MB (10 minibatches) to {:.0} MB (190 minibatches)",
        mb(few),
        mb(many)
    );
}

#[test]
fn data_parallel_steps_equal_single_device_steps_with_carried_states() {
    use burn::optim::{GradientsParams, SgdConfig};
    use rnnlm_train::{DataParallel, TrainableLm, clip_grad_global_norm};

    let _turn = serial();
    let ad = device().autodiff();
    ad.seed(11);
    let lm = RnnLmConfig::new(CellKind::Lstm, 10, 8)
        .with_num_layers(2)
        .init(&ad);
    let (batch, steps, theta) = (5, 4, 0.01);
    // Three consecutive minibatches of a sequential partition, ids from a fixed LCG.
    let mut seed = 17u64;
    let mut next_ids = |n: usize| -> Vec<i64> {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 33) % 10) as i64
            })
            .collect()
    };
    let minibatches: Vec<(Vec<i64>, Vec<i64>)> = (0..3)
        .map(|_| (next_ids(batch * steps), next_ids(batch * steps)))
        .collect();
    let as_batch = |(x, y): &(Vec<i64>, Vec<i64>)| rnnlm_data::SequenceBatch {
        x: ids(x, [batch, steps], &ad),
        y: ids(y, [batch, steps], &ad),
    };

    // One device: d2l's loop.
    let mut single = TrainableLm::new(lm.clone());
    let mut optimizer = SgdConfig::new().init();
    let mut state = single.lm.begin_state(batch, &ad);
    let mut clipped = 0;
    for minibatch in &minibatches {
        let b = as_batch(minibatch);
        let (logits, next) = single.lm.forward(b.x, state);
        state = next.detach();
        let loss = sequence_loss(logits, b.y);
        let mut grads = GradientsParams::from_grads(loss.backward(), &single);
        if clip_grad_global_norm(&single, &mut grads, theta) > theta {
            clipped += 1;
        }
        single = optimizer.step(1.0, single, grads);
    }
    assert!(clipped > 0, "theta is small enough for clipping to act");

    // Two workers on the same CPU device: rows 0..3 and 3..5, each carrying its own state; the
    // layers fused and composite.
    let parallel = DataParallel::new(vec![ad.clone(), ad.clone()]);
    assert_eq!(DataParallel::shard_rows(batch, 2), vec![0..3, 3..5]);
    let check = |mode: Mode| {
        let mut sharded = TrainableLm::new(lm.clone());
        let mut optimizer = SgdConfig::new().init();
        let mut states = None;
        for minibatch in &minibatches {
            let step = parallel
                .step(&sharded, as_batch(minibatch), states.take())
                .unwrap();
            let mut grads = step.grads;
            clip_grad_global_norm(&sharded, &mut grads, theta);
            sharded = optimizer.step(1.0, sharded, grads);
            states = Some(step.states);
        }

        let diff = max_diff(&parameters(&single.lm), &parameters(&sharded.lm));
        assert!(
            diff < 1e-5,
            "{mode:?}: weights differ by {diff} after 3 data-parallel steps"
        );
        let states = states.unwrap();
        for (name, whole, parts) in [
            (
                "hidden",
                state.hidden.clone(),
                states.iter().map(|s| s.hidden.clone()).collect::<Vec<_>>(),
            ),
            (
                "cell",
                state.cell.clone().unwrap(),
                states.iter().map(|s| s.cell.clone().unwrap()).collect(),
            ),
        ] {
            assert_eq!(parts[0].dims(), [2, 3, 8]);
            let joined = Tensor::cat(parts, 1).to_device(&whole.device());
            let diff = rnnlm_tests::max_abs_diff(whole, joined);
            assert!(
                diff < 1e-5,
                "{mode:?}: carried {name} states differ by {diff}"
            );
        }
    };
    for mode in [Mode::Fused, Mode::Composite] {
        rnnlm_tests::in_mode(mode, || check(mode));
    }
}

#[test]
fn data_parallel_training_run_matches_the_single_device_run() {
    let _turn = serial();
    let experiment = "[model]\nkind = \"gru\"\nhidden_size = 16\nnum_layers = 2\n\
                      [train]\nepochs = 2\nseed = 5\ntheta = 0.5\n";
    let single_dir = scratch_dir("parallel-single");
    let single = tiny_experiment(&single_dir, 3000, experiment);
    let single_report = rnnlm_train::train(&single).unwrap();

    let parallel_dir = scratch_dir("parallel-two");
    let mut parallel = tiny_experiment(&parallel_dir, 3000, experiment);
    parallel.devices = vec![device(), device()];
    let parallel_report = rnnlm_train::train(&parallel).unwrap();

    for (a, b) in single_report.history.iter().zip(&parallel_report.history) {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * x.abs();
        assert!(
            close(a.train_perplexity, b.train_perplexity),
            "epoch {}: train perplexity {} alone, {} on two devices",
            a.epoch,
            a.train_perplexity,
            b.train_perplexity
        );
        assert!(close(
            a.valid_perplexity.unwrap(),
            b.valid_perplexity.unwrap()
        ));
    }
    let a = rnnlm_train::load_model(&single.artifacts, &device())
        .unwrap()
        .model;
    let b = rnnlm_train::load_model(&parallel.artifacts, &device())
        .unwrap()
        .model;
    let diff = max_diff(&parameters(&a), &parameters(&b));
    assert!(diff < 1e-5, "final weights differ by {diff}");
    std::fs::remove_dir_all(&single_dir).ok();
    std::fs::remove_dir_all(&parallel_dir).ok();
}

/// Dropout is Burn's own on both paths, so with the same seed the fused and the composite
/// layers drop the same units: the same loss and gradients, of every parameter and of the
/// initial state; another seed drops others.
#[test]
fn fused_and_composite_layers_draw_the_same_dropout_masks() {
    let _turn = serial();
    rnnlm_tests::fused_paths::dropout_masks_agree(&device(), 1e-5);
}

/// `configs/quick.toml` with two layers, dropout and Adam, trained with fused and with
/// composite layers: the same run, epoch by epoch.
#[test]
fn fused_and_composite_training_runs_agree() {
    let _turn = serial();
    let run = |mode: Mode| {
        let dir = scratch_dir(&format!("mode-{mode:?}"));
        let mut options = tiny_experiment(&dir, 6000, "");
        options.config = rnnlm_tests::workspace_file("configs/quick.toml");
        options.overrides.extend(
            [
                "model.num_layers=2",
                "model.hidden_size=32",
                "model.dropout=0.2",
                "optimizer.kind=\"adam\"",
                "optimizer.lr=0.01",
                "train.epochs=3",
                "data.batch_size=8",
            ]
            .map(str::to_owned),
        );
        let report = rnnlm_tests::in_mode(mode, || rnnlm_train::train(&options).unwrap());
        let model = rnnlm_train::load_model(&options.artifacts, &device())
            .unwrap()
            .model;
        std::fs::remove_dir_all(&dir).ok();
        (report.history, parameters(&model))
    };
    let (fused, fused_weights) = run(Mode::Fused);
    let (composite, composite_weights) = run(Mode::Composite);
    assert_eq!(fused.len(), 3);
    for (a, b) in fused.iter().zip(&composite) {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * x.abs();
        assert!(
            close(a.train_perplexity, b.train_perplexity)
                && close(a.valid_perplexity.unwrap(), b.valid_perplexity.unwrap())
                && close(a.grad_norm, b.grad_norm),
            "epoch {}: fused {a:?}, composite {b:?}",
            a.epoch
        );
    }
    let diff = max_diff(&fused_weights, &composite_weights);
    assert!(diff < 1e-4, "final weights differ by {diff}");
}

/// The fused kernels' threads share out the work in pieces fixed by the shapes: a training run
/// ends with the same bits on 1 to 4 of them.
#[test]
fn training_gives_the_same_bits_on_one_to_four_threads() {
    let _turn = serial();
    let experiment = "[model]\nkind = \"lstm\"\nhidden_size = 70\nnum_layers = 2\n\
                      [train]\nepochs = 1\nseed = 2\n";
    let run = |threads: usize| {
        let dir = scratch_dir(&format!("threads-{threads}"));
        let options = tiny_experiment(&dir, 3000, experiment);
        rnnlm_kernels::set_threads(Some(threads));
        let report = rnnlm_train::train(&options);
        rnnlm_kernels::set_threads(None);
        let report = report.unwrap();
        let model = rnnlm_train::load_model(&options.artifacts, &device())
            .unwrap()
            .model;
        std::fs::remove_dir_all(&dir).ok();
        (report.history[0].train_perplexity, parameters(&model))
    };
    let one = run(1);
    for threads in 2..=4 {
        let other = run(threads);
        assert_eq!(other.0, one.0, "{threads} threads: training perplexity");
        assert!(other.1 == one.1, "{threads} threads: the weights differ");
    }
}
