//! Training: global-norm clipping, experiment files, artifacts, bad input.

mod budget;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use rnnlm::{CellKind, RnnLmConfig, WeightInit};
use rnnlm_tests::{device, ids, scratch_dir, tiny_experiment};
use rnnlm_train::{
    ExperimentConfig, TrainError, clip_grad_global_norm, global_grad_norm, sequence_loss,
};

/// Gradients of a small model whose raw global norm is well above 1.
fn grads() -> (rnnlm::RnnLm, GradientsParams, Vec<f32>) {
    let ad = device().autodiff();
    let model = RnnLmConfig::new(CellKind::Lstm, 7, 6)
        .with_num_layers(2)
        .with_init(WeightInit::Normal { sigma: 1.0 })
        .init(&ad);
    let x = ids(&[1, 2, 3, 4, 5, 6, 0, 1], [2, 4], &ad);
    let y = ids(&[2, 3, 4, 5, 6, 0, 1, 2], [2, 4], &ad);
    let (logits, _) = model.forward(x, model.begin_state(2, &ad));
    let grads = GradientsParams::from_grads(sequence_loss(logits, y).backward(), &model);
    let flat = flatten(&model, &grads);
    (model, grads, flat)
}

/// Every gradient entry, in parameter order: the vector whose norm is "global".
fn flatten(model: &rnnlm::RnnLm, grads: &GradientsParams) -> Vec<f32> {
    struct Flat<'a>(&'a GradientsParams, Vec<f32>);
    impl ModuleVisitor for Flat<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let g = self
                .0
                .get::<D>(p.id)
                .expect("every parameter has a gradient");
            self.1.extend(rnnlm_tests::values(g));
        }
    }
    let mut flat = Flat(grads, Vec::new());
    model.visit(&mut flat);
    flat.1
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn clipping_scales_all_gradients_to_the_global_norm_theta() {
    let (model, mut grads, before) = grads();
    let raw = norm(&before);
    assert!((global_grad_norm(&model, &grads) as f64 - raw).abs() < 1e-4 * raw);
    let theta = (raw / 3.0) as f32;
    let reported = clip_grad_global_norm(&model, &mut grads, theta);
    assert!(
        (reported as f64 - raw).abs() < 1e-4 * raw,
        "returns the norm before clipping"
    );
    let after = flatten(&model, &grads);
    assert!(
        (norm(&after) - theta as f64).abs() < 1e-5 * theta as f64,
        "clipped to theta"
    );
    // One common factor: the direction is kept.
    for (a, b) in before.iter().zip(&after) {
        assert!((a * theta / raw as f32 - b).abs() < 1e-6, "{a} -> {b}");
    }
}

#[test]
fn clipping_leaves_small_gradients_untouched() {
    let (model, mut grads, before) = grads();
    let theta = (norm(&before) * 2.0) as f32;
    clip_grad_global_norm(&model, &mut grads, theta);
    assert_eq!(flatten(&model, &grads), before);
}

fn parse_error(toml: &str, overrides: &[&str]) -> String {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    ExperimentConfig::parse(toml, "exp.toml", &overrides)
        .unwrap_err()
        .to_string()
}

#[test]
fn experiment_files_reject_bad_values_by_name() {
    let ok = "[model]\nkind = \"gru\"\n";
    assert!(ExperimentConfig::parse(ok, "exp.toml", &[]).is_ok());
    let malformed = parse_error("[model]\nkind = \"gru\"\nhidden_size = = 3\n", &[]);
    assert!(
        malformed.contains("exp.toml") && malformed.contains("line 3"),
        "{malformed}"
    );
    let unknown = parse_error("[model]\nkind = \"gru\"\n[train]\nepoch = 3\n", &[]);
    assert!(unknown.contains("unknown field `epoch`"), "{unknown}");
    let missing = parse_error("[train]\nepochs = 3\n", &[]);
    assert!(missing.contains("missing field `model`"), "{missing}");
    for (set, expected) in [
        ("optimizer.lr=0", "optimizer.lr = 0"),
        ("optimizer.lr=-1", "optimizer.lr = -1"),
        ("data.batch_size=0", "data.batch_size = 0"),
        ("data.num_steps=0", "data.num_steps = 0"),
        ("train.theta=0", "train.theta = 0"),
        ("train.epochs=0", "train.epochs = 0"),
        ("model.hidden_size=0", "model.hidden_size = 0"),
        ("model.dropout=1.5", "model.dropout = 1.5"),
        (
            "model.output_dropout=1",
            "model.output_dropout = 1.0: must lie in [0, 1)",
        ),
        (
            "model.bidirectional=true",
            "model.bidirectional = true: must be false: a language model",
        ),
        (
            "train.checkpoint_minutes=-1",
            "train.checkpoint_minutes = -1",
        ),
        ("train.progress_minutes=nan", "train.progress_minutes = NaN"),
        (
            "schedule.over=time",
            "schedule.over = \"time\": runs over the time budget: set train.max_minutes",
        ),
    ] {
        let message = parse_error(ok, &[set]);
        assert!(message.contains(expected), "{set}: {message}");
    }
    let step_over_time = parse_error(
        ok,
        &[
            "schedule.over=time",
            "schedule.kind=step",
            "train.max_minutes=5",
        ],
    );
    assert!(
        step_over_time.contains("the step schedule counts epochs"),
        "{step_over_time}"
    );
    let no_split = parse_error(ok, &["train.valid_every=10", "data.valid_fraction=0"]);
    assert!(
        no_split.contains("train.valid_every = 10: needs a validation split"),
        "{no_split}"
    );
    let typo = parse_error(ok, &["optimizer.learning_rate=0.1"]);
    assert!(typo.contains("unknown field `learning_rate`"), "{typo}");
    let config = ExperimentConfig::parse(
        ok,
        "exp.toml",
        &["optimizer.lr=0.25".into(), "model.kind=lstm".into()],
    )
    .unwrap();
    assert_eq!(config.optimizer.lr, 0.25);
    assert_eq!(config.model.kind, CellKind::Lstm);
}

#[test]
fn data_parallel_devices_are_checked_before_training() {
    let ok = "[model]\nkind = \"gru\"\n[data]\nbatch_size = 2\n";
    let config = ExperimentConfig::parse(
        ok,
        "exp.toml",
        &["train.devices=[\"flex\", \"flex\"]".into()],
    )
    .unwrap();
    assert_eq!(config.train.devices, ["flex", "flex"]);
    let too_many = parse_error(ok, &["train.devices=[\"cuda:0\", \"cuda:1\", \"cuda:2\"]"]);
    assert!(
        too_many.contains("train.devices") && too_many.contains("data.batch_size = 2"),
        "{too_many}"
    );
    let mixed = parse_error(ok, &["train.devices=[\"flex\", \"ndarray\"]"]);
    assert!(
        mixed.contains("train.devices") && mixed.contains("mixes the flex and ndarray backends"),
        "{mixed}"
    );
    // The library checks the devices it is handed as well.
    let dir = scratch_dir("too-many-devices");
    let mut options = tiny_experiment(&dir, 2000, "[model]\nkind = \"gru\"\nhidden_size = 8\n");
    options.devices = vec![device(); 5];
    let message = rnnlm_train::train(&options).unwrap_err().to_string();
    assert!(
        message.contains("invalid train.devices = 5 devices: at most data.batch_size = 4 devices"),
        "{message}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_shipped_config_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            ExperimentConfig::load(&path, &[])
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            count += 1;
        }
    }
    assert!(
        count >= 7,
        "expected the seven d2l experiments, found {count}"
    );
}

#[test]
fn a_small_run_lowers_perplexity_and_writes_every_artifact() {
    let dir = scratch_dir("train-small");
    let mut options = tiny_experiment(
        &dir,
        6000,
        "[model]\nkind = \"gru\"\nhidden_size = 32\n[train]\nepochs = 3\n",
    );
    options.overrides.push("train.sample_every=3".into());
    let report = rnnlm_train::train(&options).unwrap();
    let ppl: Vec<f64> = report.history.iter().map(|m| m.train_perplexity).collect();
    assert_eq!(ppl.len(), 3);
    assert!(ppl[2] < ppl[0], "perplexity falls: {ppl:?}");
    assert!(
        report
            .history
            .iter()
            .all(|m| m.valid_perplexity.is_some_and(f64::is_finite))
    );
    for file in [
        "config.toml",
        "vocab.json",
        "model.bpk",
        "metrics.csv",
        "perplexity.svg",
    ] {
        assert!(options.artifacts.join(file).is_file(), "{file} written");
    }
    for file in [
        "model-3.bpk",
        "optim-3.bpk",
        "scheduler-3.bpk",
        "state-3.json",
    ] {
        assert!(
            options.artifacts.join("checkpoint").join(file).is_file(),
            "{file} written"
        );
    }
    let csv = std::fs::read_to_string(options.artifacts.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "header and three epochs");

    // eval with the checkpoint's own vocabulary and preprocessing.
    let loaded = rnnlm_train::load_model(&options.artifacts, &device()).unwrap();
    let text = std::fs::read_to_string(dir.join("text.txt")).unwrap() + " ~~~";
    let evaluation = rnnlm_train::evaluate(&loaded, &text, 4, &device()).unwrap();
    assert!(evaluation.perplexity.is_finite() && evaluation.perplexity < 28.0);
    let composite = rnnlm::fused::with_mode(rnnlm::fused::Mode::Composite, || {
        rnnlm_train::evaluate(&loaded, &text, 4, &device()).unwrap()
    });
    assert_eq!(composite.tokens, evaluation.tokens);
    assert!(
        (composite.perplexity - evaluation.perplexity).abs() < 1e-4 * evaluation.perplexity,
        "perplexity {} through the fused scan, {} through the composite path",
        evaluation.perplexity,
        composite.perplexity
    );
    // d2l-lines preprocessing maps '~' to a space, so nothing is unknown here.
    assert!(evaluation.unknown.is_empty());
    // The same text from a file, streamed into a prepared file under the model's vocabulary and
    // read from the map: the same score.
    let scored = dir.join("scored.txt");
    std::fs::write(&scored, &text).unwrap();
    let cache = dir.join("eval-cache");
    let from_file =
        rnnlm_train::evaluate_file(&loaded, &scored, "utf-8", 4, &device(), Some(&cache)).unwrap();
    assert_eq!(
        (from_file.tokens, from_file.perplexity),
        (evaluation.tokens, evaluation.perplexity)
    );
    let prepared: Vec<_> = std::fs::read_dir(cache.join("prepared")).unwrap().collect();
    assert_eq!(
        prepared.len(),
        1,
        "one prepared file, reused by a second call"
    );
    rnnlm_train::evaluate_file(&loaded, &scored, "utf-8", 4, &device(), Some(&cache)).unwrap();
    assert_eq!(
        std::fs::read_dir(cache.join("prepared")).unwrap().count(),
        1
    );

    // A checkpoint whose config names another model kind is refused, not loaded into garbage.
    let tampered = dir.join("tampered");
    std::fs::create_dir_all(&tampered).unwrap();
    for file in ["vocab.json", "model.bpk"] {
        std::fs::copy(options.artifacts.join(file), tampered.join(file)).unwrap();
    }
    let config = std::fs::read_to_string(options.artifacts.join("config.toml")).unwrap();
    std::fs::write(
        tampered.join("config.toml"),
        config.replace("kind = \"gru\"", "kind = \"lstm\""),
    )
    .unwrap();
    let err = rnnlm_train::load_model(&tampered, &device()).unwrap_err();
    assert!(
        err.to_string().contains("does not fit the lstm model"),
        "{err}"
    );

    // The same directory refuses a second run without --resume, and a different experiment always.
    let again = rnnlm_train::train(&options).unwrap_err();
    assert!(again.to_string().contains("--resume"), "{again}");
    options.overrides.push("model.hidden_size=8".into());
    options.resume = true;
    let other = rnnlm_train::train(&options).unwrap_err();
    assert!(
        other.to_string().contains("holds a different run"),
        "{other}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_unrelated_non_empty_directory_is_refused() {
    let dir = scratch_dir("train-unrelated");
    let options = tiny_experiment(
        &dir,
        3000,
        "[model]\nkind = \"gru\"\nhidden_size = 8\n[train]\nepochs = 1\n",
    );
    std::fs::create_dir_all(&options.artifacts).unwrap();
    std::fs::write(options.artifacts.join("notes.txt"), "mine").unwrap();
    let err = rnnlm_train::train(&options).unwrap_err();
    assert!(
        matches!(err, TrainError::Artifacts(_)) && err.to_string().contains("not empty"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_corpus_shorter_than_a_minibatch_is_refused_with_the_count() {
    let dir = scratch_dir("train-short");
    let mut options = tiny_experiment(&dir, 3000, "[model]\nkind = \"gru\"\nhidden_size = 8\n");
    options.overrides.push("data.num_steps=5000".into());
    let err = rnnlm_train::train(&options).unwrap_err();
    assert!(err.to_string().contains("needs at least"), "{err}");
    assert!(
        !options.artifacts.exists(),
        "nothing written for a run that cannot start"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_diverging_run_stops_naming_epoch_and_step() {
    let dir = scratch_dir("train-nan");
    let mut options = tiny_experiment(
        &dir,
        3000,
        "[model]\nkind = \"rnn-scratch\"\nhidden_size = 16\n[train]\nepochs = 2\n",
    );
    options.overrides.push("optimizer.lr=1e38".into());
    options.overrides.push("train.theta=1e30".into());
    let err = rnnlm_train::train(&options).unwrap_err();
    assert!(
        matches!(err, TrainError::NonFinite { epoch: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("step"), "{err}");
    assert!(
        !options.artifacts.join("model.bpk").exists(),
        "no final model from a diverged run"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn eval_refuses_incomplete_checkpoint_directories() {
    let dir = scratch_dir("eval-missing");
    let err = rnnlm_train::load_model(&dir, &device()).unwrap_err();
    assert!(err.to_string().contains("config.toml is missing"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bench_counts_the_dense_flops_of_each_model_and_runs_every_measurement() {
    // The 2-layer LSTM of d2l's chapter: 3 x (layer 0: 2·4·256·(28 + 256), layer 1:
    // 2·4·256·(256 + 256), output: 2·256·28) = 4,933,632 FLOP per token.
    let models = rnnlm_bench::bench_models();
    let deep = models.iter().find(|m| m.name == "deep-lstm").unwrap();
    assert_eq!(rnnlm_bench::train_flop_per_token(&deep.config), 4_933_632.0);
    let scratch = models.iter().find(|m| m.name == "rnn-scratch").unwrap();
    // 3 x (2·512·(28 + 512) + 2·512·28)
    assert_eq!(
        rnnlm_bench::train_flop_per_token(&scratch.config),
        3.0 * (2.0 * 512.0 * 540.0 + 2.0 * 512.0 * 28.0)
    );
    // A tiny run produces every figure (never compared against a time: machines are noisy).
    let tiny = rnnlm_bench::BenchModel {
        name: "tiny",
        config: RnnLmConfig::new(CellKind::Gru, 28, 8),
        peer: "gru",
    };
    for mode in [rnnlm::fused::Mode::Composite, rnnlm::fused::Mode::Fused] {
        let options = rnnlm_bench::BenchOptions {
            batch_size: 4,
            num_steps: 5,
            steps: 2,
            warmup: 1,
            gen_chars: 3,
            seed: 1,
            mode,
            phases: rnnlm_bench::Phases::default(),
            profile: false,
        };
        let result = rnnlm_bench::run_bench(&tiny, "test", &device(), &options);
        assert!(result.train_profile.is_empty());
        for (name, value) in [
            ("train", result.train_tokens_per_s),
            ("valid", result.valid_tokens_per_s),
            ("gen b1", result.gen_chars_per_s_batch1),
            ("gen b32", result.gen_chars_per_s_batch32),
        ] {
            assert!(
                value.is_finite() && value > 0.0,
                "{mode:?}, {name}: {value}"
            );
        }
        let json = serde_json::to_value(&result).unwrap();
        for key in [
            "train_tokens_per_s",
            "gen_chars_per_s_batch1",
            "gen_chars_per_s_batch32",
        ] {
            assert!(json.get(key).is_some(), "JSON lacks {key}");
        }
        let fused = mode == rnnlm::fused::Mode::Fused && rnnlm::fused::is_active(&device());
        assert_eq!(json["fused"], fused);

        // A profile names the fused scan's phases (when it runs) and the update's.
        let profiled = rnnlm_bench::BenchOptions {
            profile: true,
            ..options.clone()
        };
        let result = rnnlm_bench::run_bench(&tiny, "test", &device(), &profiled);
        let phases: Vec<&str> = result
            .train_profile
            .iter()
            .map(|share| share.phase.as_str())
            .collect();
        let mut expected = vec!["clip by the global norm", "optimizer step"];
        if fused {
            expected.extend(["scan forward: time loop", "scan backward: time loop"]);
        }
        for phase in expected {
            assert!(
                phases.contains(&phase),
                "{mode:?}: {phase} missing from {phases:?}"
            );
        }
        assert!(
            result
                .train_profile
                .iter()
                .all(|share| share.ms_per_step.is_finite() && share.ms_per_step >= 0.0)
        );

        // Only the phases asked for run; the others report 0.
        let only_valid = rnnlm_bench::BenchOptions {
            phases: rnnlm_bench::Phases {
                train: false,
                valid: true,
                generate: false,
            },
            ..options
        };
        let result = rnnlm_bench::run_bench(&tiny, "test", &device(), &only_valid);
        assert!(result.valid_tokens_per_s > 0.0);
        assert_eq!(
            (
                result.train_tokens_per_s,
                result.gen_chars_per_s_batch1,
                result.gen_chars_per_s_batch32
            ),
            (0.0, 0.0, 0.0)
        );
    }
}

/// Runs begun before checkpoints were numbered apart from epochs kept `epoch-N.json` beside the
/// records of epoch N: such a run resumes, numbers its next checkpoints after them, and tidies
/// the old files as it goes.
#[test]
fn a_run_checkpointed_by_epoch_numbers_resumes() {
    let dir = scratch_dir("train-legacy-states");
    let mut options = tiny_experiment(
        &dir,
        3000,
        "[model]\nkind = \"gru\"\nhidden_size = 8\n[train]\nepochs = 2\n",
    );
    rnnlm_train::train(&options).unwrap();
    let checkpoints = options.artifacts.join("checkpoint");
    for epoch in 1..=2 {
        // What the older code wrote: the epoch and the history, no checkpoint number.
        let state: serde_json::Value = serde_json::from_slice(
            &std::fs::read(checkpoints.join(format!("state-{epoch}.json"))).unwrap(),
        )
        .unwrap();
        let legacy = serde_json::json!({ "epoch": state["epoch"], "history": state["history"] });
        std::fs::write(
            checkpoints.join(format!("epoch-{epoch}.json")),
            legacy.to_string(),
        )
        .unwrap();
        std::fs::remove_file(checkpoints.join(format!("state-{epoch}.json"))).unwrap();
    }
    options.resume = true;
    options.overrides.push("train.epochs=3".into());
    let report = rnnlm_train::train(&options).unwrap();
    assert_eq!(report.resumed_from, Some(2));
    assert_eq!(report.history.len(), 3);
    let names: Vec<String> = std::fs::read_dir(&checkpoints)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"state-3.json".to_owned()) && names.contains(&"model-3.bpk".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"epoch-1.json".to_owned()),
        "the oldest state is tidied: {names:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
