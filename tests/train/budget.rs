//! Several corpora, their encodings, the best model, patience, a time budget, and the run's
//! lock on its directory.

use rnnlm_tests::{device, scratch_dir, shared_data, tiny_experiment};
use rnnlm_train::{TrainError, Which};

const GRU: &str = "[model]\nkind = \"gru\"\nhidden_size = 16\n[train]\nepochs = 2\n";

/// The first `chars` characters of a shared corpus.
fn head(name: &str, chars: usize) -> String {
    std::fs::read_to_string(shared_data(name))
        .expect("shared corpus")
        .chars()
        .take(chars)
        .collect()
}

#[test]
fn several_corpora_share_one_vocabulary_and_each_keeps_its_end_for_validation() {
    let dir = scratch_dir("train-several");
    let mut options = tiny_experiment(&dir, 3000, GRU);
    let books = dir.join("books");
    std::fs::create_dir_all(&books).unwrap();
    std::fs::write(
        books.join("a-time-machine.txt"),
        head("timemachine.txt", 3000),
    )
    .unwrap();
    std::fs::write(
        books.join("b-shakespeare.txt"),
        head("tinyshakespeare.txt", 2000),
    )
    .unwrap();
    std::fs::write(books.join("notes.md"), "not a corpus").unwrap();
    // A directory stands for its *.txt files, in name order.
    options.data = vec![books.clone()];
    let report = rnnlm_train::train(&options).unwrap();
    assert_eq!(report.history.len(), 2);
    let csv = std::fs::read_to_string(options.artifacts.join("data.csv")).unwrap();
    let rows: Vec<Vec<String>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(
        rows[0][0].ends_with("a-time-machine.txt") && rows[1][0].ends_with("b-shakespeare.txt"),
        "{csv}"
    );
    for row in &rows {
        let [tokens, train, valid]: [usize; 3] = [1, 2, 3].map(|i| row[i].parse().unwrap());
        assert_eq!(train + valid, tokens, "{csv}");
        // data.valid_fraction = 0.2 of every file.
        assert_eq!(valid, (tokens as f64 * 0.2).round() as usize, "{csv}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_windows_1252_corpus_reads_with_its_encoding_and_is_refused_as_utf8_naming_the_option() {
    let dir = scratch_dir("train-encoding");
    let mut options = tiny_experiment(&dir, 3000, GRU);
    options.overrides.push("data.preprocess=\"raw\"".into());
    // "café " in windows-1252: é is the single byte 0xE9, invalid as UTF-8.
    let mut bytes = Vec::new();
    for _ in 0..400 {
        bytes.extend_from_slice(b"caf\xE9 au lait, ");
    }
    let file = dir.join("cp1252.txt");
    std::fs::write(&file, &bytes).unwrap();
    options.data = vec![file.clone()];
    let err = rnnlm_train::train(&options).unwrap_err().to_string();
    assert!(
        err.contains("is not UTF-8") && err.contains("data.encoding (--encoding)"),
        "{err}"
    );
    options.encoding = Some("windows-1252".into());
    rnnlm_train::train(&options).unwrap();
    let vocab = std::fs::read_to_string(options.artifacts.join("vocab.json")).unwrap();
    assert!(
        vocab.contains('é'),
        "the decoded character is in the vocabulary: {vocab}"
    );
    // An encoding nobody knows is named.
    let unknown = rnnlm_data::read_text_in(&file, "klingon")
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("data.encoding = \"klingon\""), "{unknown}");
    // latin-1 is a name users write.
    assert!(
        rnnlm_data::read_text_in(&file, "latin-1")
            .unwrap()
            .contains("café")
    );
    // A UTF-8 file among windows-1252 corpora would decode into mojibake: refused, named.
    let utf8 = dir.join("utf8.txt");
    std::fs::write(&utf8, "café au lait, ".repeat(400)).unwrap();
    options.data = vec![file.clone(), utf8.clone()];
    let mixed = rnnlm_train::train(&options).unwrap_err().to_string();
    assert!(
        mixed.contains(&utf8.display().to_string()) && mixed.contains("share one encoding"),
        "{mixed}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn empty_files_and_directories_without_text_are_named() {
    let dir = scratch_dir("train-empty-corpus");
    let mut options = tiny_experiment(&dir, 3000, GRU);
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    options.data = vec![dir.join("text.txt"), empty.clone()];
    let err = rnnlm_train::train(&options).unwrap_err().to_string();
    assert!(
        err.contains(&empty.display().to_string()) && err.contains("holds no tokens"),
        "{err}"
    );
    let bare = dir.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    options.data = vec![bare.clone()];
    let err = rnnlm_train::train(&options).unwrap_err().to_string();
    assert!(err.contains("holds no *.txt file"), "{err}");
    assert!(
        !options.artifacts.exists(),
        "nothing written for a run that cannot start"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_best_model_is_kept_and_loaded_by_default() {
    let dir = scratch_dir("train-best");
    let options = tiny_experiment(&dir, 3000, GRU);
    let report = rnnlm_train::train(&options).unwrap();
    let best = options.artifacts.join("model-best.bpk");
    assert!(best.is_file());
    let best_epoch = rnnlm_train::best_epoch(&report.history).expect("a validation split");
    let loaded = rnnlm_train::load_model(&options.artifacts, &device()).unwrap();
    assert_eq!(loaded.weights, best);
    let last = rnnlm_train::load_model_as(&options.artifacts, Which::Last, &device()).unwrap();
    assert_eq!(last.weights, options.artifacts.join("model.bpk"));
    // The best model scores the validation text as its epoch did.
    let text = std::fs::read_to_string(dir.join("text.txt")).unwrap();
    let held_out: String = text.chars().skip(2400).collect();
    let scored = rnnlm_train::evaluate(&loaded, &held_out, 4, &device()).unwrap();
    assert!(scored.perplexity.is_finite());
    assert!(best_epoch < report.history.len());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_spent_time_budget_stops_at_the_minibatch_with_a_checkpoint_and_says_why() {
    let dir = scratch_dir("train-budget");
    let mut options = tiny_experiment(&dir, 3000, GRU);
    options.overrides.push("train.epochs=5".into());
    // A millisecond: spent by the first minibatch, inside the first epoch.
    options.overrides.push("train.max_minutes=0.00002".into());
    let report = rnnlm_train::train(&options).unwrap();
    assert!(report.history.is_empty(), "stopped inside the first epoch");
    let reason = report.stopped.expect("a reason");
    assert!(
        reason.contains("time budget")
            && reason.contains("train.max_minutes")
            && reason.contains("at minibatch"),
        "{reason}"
    );
    let written = std::fs::read_to_string(options.artifacts.join("stop.txt")).unwrap();
    assert_eq!(written.trim(), reason);
    assert!(
        options.artifacts.join("model.bpk").is_file(),
        "the model as it stands is kept"
    );
    let state = rnnlm_train::latest_complete_checkpoint(&options.artifacts).expect("a checkpoint");
    let partial = state.partial.expect("taken inside the epoch");
    assert_eq!(state.epoch, 0);
    assert!(
        reason.contains(&format!(
            "at minibatch {} of {} of epoch 1",
            partial.steps, partial.of
        )),
        "{reason}"
    );
    assert!(
        partial.seconds > 0.0 && !partial.states.is_empty(),
        "{partial:?}"
    );
    // Resuming with the budget spent is refused; a larger one goes on from that minibatch.
    options.resume = true;
    let err = rnnlm_train::train(&options).unwrap_err().to_string();
    assert!(err.contains("already spent its time budget"), "{err}");
    options.overrides.push("train.max_minutes=0".into());
    let report = rnnlm_train::train(&options).unwrap();
    assert_eq!(report.history.len(), 5);
    assert!(report.stopped.is_none() && !options.artifacts.join("stop.txt").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn validation_runs_every_n_minibatches_into_its_own_table() {
    let dir = scratch_dir("train-valid-every");
    let mut options = tiny_experiment(&dir, 3000, GRU);
    options
        .overrides
        .extend(["train.epochs=2".into(), "train.valid_every=20".into()]);
    let report = rnnlm_train::train(&options).unwrap();
    let csv = std::fs::read_to_string(options.artifacts.join("validation.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "epoch,step,valid_perplexity,valid_bits_per_token");
    // 3000 characters, 80 % for training: 2399 / (4 x 8) = 74 minibatches an epoch at most,
    // so steps 20, 40 and 60 of each epoch.
    let steps: Vec<(usize, usize)> = rows[1..]
        .iter()
        .map(|r| {
            let f: Vec<&str> = r.split(',').collect();
            assert!(f[2].parse::<f64>().unwrap().is_finite());
            (f[0].parse().unwrap(), f[1].parse().unwrap())
        })
        .collect();
    assert_eq!(
        steps,
        [(1, 20), (1, 40), (1, 60), (2, 20), (2, 40), (2, 60)]
    );
    assert_eq!(
        report.history.len(),
        2,
        "the epochs' own validation as before"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn patience_needs_a_validation_split() {
    let dir = scratch_dir("train-patience");
    let mut options = tiny_experiment(&dir, 3000, GRU);
    options.overrides.push("train.patience=2".into());
    options.overrides.push("data.valid_fraction=0".into());
    let err = rnnlm_train::train(&options).unwrap_err().to_string();
    assert!(
        err.contains("train.patience = 2") && err.contains("validation split"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_second_run_on_a_locked_directory_is_refused_with_the_holders_pid() {
    let dir = scratch_dir("train-lock");
    let options = tiny_experiment(&dir, 3000, GRU);
    std::fs::create_dir_all(&options.artifacts).unwrap();
    let lock = options.artifacts.join(".rnnlm-train.lock");
    std::fs::write(&lock, "4242").unwrap();
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock)
        .unwrap();
    held.lock().unwrap();
    let err = rnnlm_train::train(&options).unwrap_err();
    assert!(
        matches!(err, TrainError::Artifacts(_))
            && err
                .to_string()
                .contains("in use by another rnnlm train (pid 4242)"),
        "{err}"
    );
    drop(held);
    // Once released, the directory (holding only the lock file) takes the run.
    rnnlm_train::train(&options).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn artifacts_naming_a_file_are_refused_once_with_the_path() {
    let dir = scratch_dir("train-artifacts-file");
    let mut options = tiny_experiment(&dir, 3000, GRU);
    options.artifacts = dir.join("text.txt");
    let err = rnnlm_train::train(&options).unwrap_err();
    // As the CLI prints it: the message, then every source in the chain.
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(message.contains("is a file, not a directory"), "{message}");
    assert_eq!(message.matches("text.txt").count(), 1, "{message}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn validation_files_validate_and_the_training_files_train_whole() {
    let dir = scratch_dir("train-valid-files");
    let mut options = tiny_experiment(&dir, 3000, GRU);
    let held = dir.join("held.txt");
    let later: String = head("timemachine.txt", 6000).chars().skip(3000).collect();
    std::fs::write(&held, later).unwrap();
    options.overrides.push(format!(
        "data.valid_files=[{:?}]",
        held.display().to_string()
    ));
    let report = rnnlm_train::train(&options).unwrap();
    assert!(
        report
            .history
            .iter()
            .all(|m| m.valid_perplexity.is_some_and(f64::is_finite))
    );
    let csv = std::fs::read_to_string(options.artifacts.join("data.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(
        rows[0][0].ends_with("text.txt") && rows[0][1] == rows[0][2] && rows[0][3] == "0",
        "{csv}"
    );
    assert!(
        rows[1][0].ends_with("held.txt") && rows[1][2] == "0" && rows[1][1] == rows[1][3],
        "{csv}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
