//! The `rnnlm` binary's answers to bad input, and `eval` over several files, as a user runs
//! them: a short training run writes the checkpoint the rest reads.

use std::path::Path;
use std::process::{Command, Output};

use rnnlm_tests::output_text as text;
use rnnlm_tests::path_str as path;

fn rnnlm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rnnlm"))
        .args(args)
        .env("CI", "true")
        .output()
        .expect("the rnnlm binary runs")
}

/// `rnnlm train` arguments for a GRU of `hidden` units trained for `epochs` on the start of
/// The Time Machine (written into `dir`), and the run's artifacts directory.
fn short_run(dir: &Path, hidden: usize, epochs: usize) -> (std::path::PathBuf, Vec<String>) {
    let book = std::fs::read_to_string(rnnlm_tests::shared_data("timemachine.txt")).unwrap();
    let data = dir.join("head.txt");
    std::fs::write(&data, book.chars().take(4000).collect::<String>()).unwrap();
    let run = dir.join("run");
    let config = rnnlm_tests::workspace_file("configs/quick.toml");
    let args = [
        "train",
        "--config",
        path(&config),
        "--data",
        path(&data),
        "--artifacts",
        path(&run),
        "--set",
        &format!("train.epochs={epochs}"),
        "--set",
        &format!("model.hidden_size={hidden}"),
        "--set",
        "data.batch_size=4",
        "--set",
        "data.num_steps=8",
        "--set",
        "train.sample_every=0",
    ];
    (run.clone(), args.iter().map(|a| a.to_string()).collect())
}

/// A GRU of 16 units trained for one epoch on the start of The Time Machine.
fn checkpoint(dir: &Path) -> std::path::PathBuf {
    let (run, args) = short_run(dir, 16, 1);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = rnnlm(&args);
    assert!(output.status.success(), "{}", text(&output));
    run
}

#[test]
fn eval_scores_every_file_and_the_total_and_refuses_zero_streams() {
    let dir = rnnlm_tests::scratch_dir("cli-eval");
    let run = checkpoint(&dir);
    let book = std::fs::read_to_string(rnnlm_tests::shared_data("timemachine.txt")).unwrap();
    let texts = dir.join("texts");
    std::fs::create_dir_all(&texts).unwrap();
    std::fs::write(
        texts.join("a.txt"),
        book.chars().skip(5000).take(3000).collect::<String>(),
    )
    .unwrap();
    std::fs::write(
        texts.join("b.txt"),
        book.chars().skip(9000).take(2000).collect::<String>(),
    )
    .unwrap();
    let output = rnnlm(&[
        "eval",
        "--checkpoint",
        path(&run),
        "--data",
        path(&texts),
        "--streams",
        "4",
    ]);
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    let rows: Vec<&str> = log.lines().filter(|l| l.contains("perplexity")).collect();
    assert_eq!(rows.len(), 3, "two files and the total: {log}");
    assert!(
        rows[0].contains("a.txt: ")
            && rows[1].contains("b.txt: ")
            && rows[2].starts_with("total: "),
        "{log}"
    );
    // The total weighs each file by its tokens.
    let field = |row: &str, after: &str| -> f64 {
        row.split(after)
            .nth(1)
            .unwrap()
            .split([',', ' '])
            .find(|s| !s.is_empty())
            .unwrap()
            .parse()
            .unwrap()
    };
    let tokens: Vec<f64> = rows
        .iter()
        .map(|r| {
            r.split(": ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let bits: Vec<f64> = rows
        .iter()
        .map(|r| field(r, "perplexity ").log2())
        .collect();
    assert_eq!(tokens[2], tokens[0] + tokens[1], "{log}");
    let mean = (bits[0] * tokens[0] + bits[1] * tokens[1]) / tokens[2];
    assert!((mean - bits[2]).abs() < 1e-3, "{log}");
    assert!(
        log.contains("model-best.bpk"),
        "the best model by default: {log}"
    );
    let last = rnnlm(&[
        "eval",
        "--checkpoint",
        path(&run),
        "--data",
        path(&texts),
        "--which",
        "last",
    ]);
    assert!(text(&last).contains("model.bpk)"), "{}", text(&last));

    let zero = rnnlm(&[
        "eval",
        "--checkpoint",
        path(&run),
        "--data",
        path(&texts),
        "--streams",
        "0",
    ]);
    assert!(!zero.status.success());
    let log = text(&zero);
    assert!(log.contains("--streams") && log.contains('0'), "{log}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn artifacts_naming_a_file_is_said_once_with_the_path() {
    let dir = rnnlm_tests::scratch_dir("cli-artifacts-file");
    let file = dir.join("taken.txt");
    std::fs::write(&file, "mine").unwrap();
    let config = rnnlm_tests::workspace_file("configs/quick.toml");
    let book = rnnlm_tests::shared_data("timemachine.txt");
    let output = rnnlm(&[
        "train",
        "--config",
        path(&config),
        "--data",
        path(&book),
        "--artifacts",
        path(&file),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let log = text(&output);
    assert!(log.contains("is a file, not a directory"), "{log}");
    assert_eq!(log.matches("taken.txt").count(), 1, "{log}");
    assert!(!log.contains("os error"), "{log}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "mine",
        "the file is left alone"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// A write that fails partway through a checkpoint, as on a full disk: the file size limit
/// (`ulimit -f`, with SIGXFSZ ignored so that the write returns an error instead of killing the
/// process) stands in for the disk, since filling a real one needs a filesystem of our own.
#[cfg(target_os = "linux")]
#[test]
fn a_checkpoint_write_that_fails_names_the_file_and_leaves_nothing_half_written() {
    let dir = rnnlm_tests::scratch_dir("cli-full-disk");
    // GRU 64: about 75 kB of weights, over the 32 kB limit; the config, vocabulary and data
    // table written before it are a few hundred bytes.
    let (run, args) = short_run(&dir, 64, 2);
    let output = Command::new("bash")
        .args(["-c", "ulimit -f 32 && trap '' XFSZ && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_rnnlm"))
        .args(args)
        .env("CI", "true")
        .output()
        .expect("bash runs");
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let named = log
        .lines()
        .find(|l| l.contains("File too large"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        named.contains(path(&run)) && named.contains(".bpk"),
        "the file is named: {log}"
    );
    let files = files_under(&run);
    assert!(
        files.iter().all(|f| !f.to_string_lossy().contains(".tmp-")),
        "no temporary file is left behind: {files:?}"
    );
    assert!(
        files
            .iter()
            .all(|f| f.extension().is_none_or(|e| e != "bpk")),
        "no model file exists, since none could be written whole: {files:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bench_runs_the_size_it_is_given_and_refuses_a_zero() {
    let output = rnnlm(&[
        "bench",
        "--model",
        "lstm",
        "--hidden",
        "8",
        "--layers",
        "2",
        "--batch-size",
        "3",
        "--num-steps",
        "4",
        "--device",
        "flex",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--only",
        "train",
        "--json",
    ]);
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    let result: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    for (field, expected) in [
        ("hidden_size", 8),
        ("num_layers", 2),
        ("batch_size", 3),
        ("num_steps", 4),
    ] {
        assert_eq!(result[field], expected, "{field}: {log}");
    }
    assert_eq!(result["cell"], "lstm", "{log}");
    assert!(
        result["train_tokens_per_s"].as_f64().unwrap() > 0.0,
        "{log}"
    );
    for flag in ["--hidden", "--layers", "--batch-size", "--num-steps"] {
        let zero = rnnlm(&["bench", "--model", "gru", flag, "0", "--device", "flex"]);
        assert_eq!(zero.status.code(), Some(1), "{flag}");
        assert!(
            text(&zero).contains(&format!("{flag} 0: must be at least 1")),
            "{}",
            text(&zero)
        );
    }
}

/// Greedy continuation of `prefix` by the model in `checkpoint` (`--which last`, which both a
/// run and an import have).
fn greedy(checkpoint: &Path, prefix: &str) -> String {
    let output = rnnlm(&[
        "generate",
        "--checkpoint",
        path(checkpoint),
        "--prefix",
        prefix,
        "--len",
        "30",
        "--which",
        "last",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn export_writes_weights_vocab_and_description_that_import_reads_back() {
    let dir = rnnlm_tests::scratch_dir("cli-export");
    let run = checkpoint(&dir);
    let want = greedy(&run, "time traveller");
    let out = dir.join("torch");
    std::fs::create_dir(&out).unwrap();
    let exports = [
        ("model.pt", None),
        ("model.safetensors", None),
        ("model.weights", Some("safetensors")),
    ];
    for (file, format) in exports {
        let weights = out.join(file);
        let mut args = vec![
            "export",
            "--checkpoint",
            path(&run),
            "--out",
            path(&weights),
            "--which",
            "last",
        ];
        args.extend(format.map(|f| ["--format", f]).into_iter().flatten());
        let output = rnnlm(&args);
        assert!(output.status.success(), "{file}: {}", text(&output));
        assert!(
            text(&output).contains(", 16, batch_first=True)"),
            "{}",
            text(&output)
        );
        // The vocabulary beside it is the checkpoint's, byte for byte.
        assert_eq!(
            std::fs::read(out.join("vocab.json")).unwrap(),
            std::fs::read(run.join("vocab.json")).unwrap()
        );
        let description: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(description["rnn"]["type"], "GRU", "{description}");
        assert_eq!(description["linear"]["in_features"], 16, "{description}");

        let imported = dir.join(format!("imported-{file}"));
        let output = rnnlm(&[
            "import",
            "--weights",
            path(&weights),
            "--vocab",
            path(&out.join("vocab.json")),
            "--out",
            path(&imported),
        ]);
        assert!(output.status.success(), "{file}: {}", text(&output));
        assert_eq!(greedy(&imported, "time traveller"), want, "{file}");
    }
    // Nothing but the files asked for: no temporary file is left behind.
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "config.json",
            "model.pt",
            "model.safetensors",
            "model.weights",
            "vocab.json"
        ]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn export_errors_name_the_file_and_the_fix() {
    let dir = rnnlm_tests::scratch_dir("cli-export-errors");
    let run = checkpoint(&dir);
    let cases = [
        (dir.join("model.onnx"), "--format pt|safetensors"),
        (
            dir.join("no-such-dir").join("model.pt"),
            "does not exist; create it first",
        ),
        (dir.clone(), "is a directory"),
    ];
    for (out, fix) in cases {
        let output = rnnlm(&["export", "--checkpoint", path(&run), "--out", path(&out)]);
        assert!(!output.status.success());
        let message = text(&output);
        assert!(
            message.contains(path(&out)) && message.contains(fix),
            "{message}"
        );
    }
    let missing = dir.join("no-run");
    let output = rnnlm(&[
        "export",
        "--checkpoint",
        path(&missing),
        "--out",
        path(&dir.join("m.pt")),
    ]);
    assert!(!output.status.success());
    assert!(text(&output).contains(path(&missing)), "{}", text(&output));
    assert!(!dir.join("m.pt").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

/// `kill -9` inside an epoch, then `--resume`: the run ends with the weights of a run that was
/// never stopped (checkpoints every minibatch here, so the kill lands between two of them).
#[cfg(unix)]
#[test]
fn a_run_killed_inside_an_epoch_resumes_to_the_weights_of_an_uninterrupted_one() {
    let dir = rnnlm_tests::scratch_dir("cli-kill");
    let book = std::fs::read_to_string(rnnlm_tests::shared_data("timemachine.txt")).unwrap();
    let data = dir.join("head.txt");
    std::fs::write(&data, book.chars().take(60_000).collect::<String>()).unwrap();
    let config = rnnlm_tests::workspace_file("configs/quick.toml");
    let cache = dir.join("cache");
    let args = |run: &Path| -> Vec<String> {
        [
            "train",
            "--config",
            path(&config),
            "--data",
            path(&data),
            "--artifacts",
            path(run),
            "--cache-dir",
            path(&cache),
            "--set",
            "train.epochs=2",
            "--set",
            "model.kind=lstm",
            "--set",
            "model.hidden_size=32",
            "--set",
            "model.num_layers=2",
            "--set",
            "model.dropout=0.2",
            "--set",
            "data.batch_size=8",
            "--set",
            "data.num_steps=16",
            "--set",
            "train.sample_every=0",
            "--set",
            "train.checkpoint_minutes=1e-9",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let whole = dir.join("whole");
    let output = Command::new(env!("CARGO_BIN_EXE_rnnlm"))
        .args(args(&whole))
        .env("CI", "true")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));

    let killed = dir.join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rnnlm"))
        .args(args(&killed))
        .env("CI", "true")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = None;
    for _ in 0..60_000 {
        if let Some(state) = rnnlm_train::latest_complete_checkpoint(&killed)
            && state.epoch == 1
            && state.partial.as_ref().is_some_and(|p| p.steps >= 3)
        {
            seen = Some(state);
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let seen = seen.expect("a checkpoint inside epoch 2 before the run ended");
    assert!(!killed.join("model.bpk").exists(), "killed before the end");

    let mut resume = args(&killed);
    resume.push("--resume".into());
    let output = Command::new(env!("CARGO_BIN_EXE_rnnlm"))
        .args(&resume)
        .env("CI", "true")
        .output()
        .unwrap();
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("resuming after epoch 2, minibatch"), "{log}");
    assert!(seen.partial.unwrap().of > 3);

    let device = rnnlm_tests::device();
    let a = rnnlm_train::load_model(&whole, &device).unwrap().model;
    let b = rnnlm_train::load_model(&killed, &device).unwrap().model;
    assert_eq!(
        rnnlm_tests::parameters(&a),
        rnnlm_tests::parameters(&b),
        "final weights are bit-identical"
    );
    let metrics = |run: &Path| std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let perplexities = |csv: String| -> Vec<String> {
        csv.lines()
            .map(|l| l.split(',').take(4).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(
        perplexities(metrics(&killed)),
        perplexities(metrics(&whole))
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn prepare_makes_the_file_that_train_then_reuses() {
    let dir = rnnlm_tests::scratch_dir("cli-prepare");
    let book = std::fs::read_to_string(rnnlm_tests::shared_data("timemachine.txt")).unwrap();
    let data = dir.join("head.txt");
    std::fs::write(&data, book.chars().take(20_000).collect::<String>()).unwrap();
    let config = rnnlm_tests::workspace_file("configs/quick.toml");
    let cache = dir.join("cache");
    let output = rnnlm(&[
        "prepare",
        "--config",
        path(&config),
        "--data",
        path(&data),
        "--cache-dir",
        path(&cache),
    ]);
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    assert!(
        log.contains("data: prepared") && log.contains("vocabulary of 28 as U8 ids"),
        "{log}"
    );
    let again = rnnlm(&[
        "prepare",
        "--config",
        path(&config),
        "--data",
        path(&data),
        "--cache-dir",
        path(&cache),
    ]);
    assert!(text(&again).contains("data: reusing"), "{}", text(&again));
    let run = dir.join("run");
    let output = rnnlm(&[
        "train",
        "--config",
        path(&config),
        "--data",
        path(&data),
        "--cache-dir",
        path(&cache),
        "--artifacts",
        path(&run),
        "--set",
        "train.epochs=1",
        "--set",
        "model.hidden_size=16",
        "--set",
        "data.batch_size=4",
        "--set",
        "data.num_steps=8",
        "--set",
        "train.sample_every=0",
        "--set",
        "train.max_steps=20",
        "--set",
        "train.progress_minutes=1e-9",
    ]);
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    assert!(
        log.contains("data: reusing") && log.contains("first minibatch done"),
        "{log}"
    );
    // Without a terminal, a progress line per the (here tiny) interval.
    let progress = log
        .lines()
        .find(|l| l.starts_with("epoch 1/1  step 5/"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        progress.contains("tok/s") && progress.contains("ETA"),
        "{progress}"
    );
    assert!(
        log.contains("train.max_steps = 20 minibatches are done"),
        "{log}"
    );

    // A prepared file that is no such file is refused and left alone.
    let notes = dir.join("notes.tokens");
    std::fs::write(&notes, "mine").unwrap();
    let output = rnnlm(&[
        "prepare",
        "--config",
        path(&config),
        "--data",
        path(&data),
        "--set",
        &format!("data.prepared={:?}", path(&notes)),
    ]);
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("is not a prepared token file") && log.contains("data.prepared"),
        "{log}"
    );
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "mine");
    std::fs::remove_dir_all(&dir).ok();
}

/// A prepared file that cannot be written whole (a full disk, here the file size limit) is
/// named, and nothing is left that a later run would take.
#[cfg(target_os = "linux")]
#[test]
fn a_preparation_that_cannot_be_written_whole_leaves_nothing_behind() {
    let dir = rnnlm_tests::scratch_dir("cli-prepare-full");
    let data = dir.join("big.txt");
    std::fs::write(&data, "the time traveller ".repeat(5000)).unwrap();
    let config = rnnlm_tests::workspace_file("configs/quick.toml");
    let cache = dir.join("cache");
    let output = Command::new("bash")
        .args(["-c", "ulimit -f 32 && trap '' XFSZ && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_rnnlm"))
        .args([
            "prepare",
            "--config",
            path(&config),
            "--data",
            path(&data),
            "--cache-dir",
            path(&cache),
        ])
        .output()
        .expect("bash runs");
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("cannot write the prepared tokens") && log.contains("File too large"),
        "{log}"
    );
    let left = files_under(&cache);
    assert!(left.is_empty(), "nothing is left behind: {left:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Started by `mpirun` (here: its environment) without the `mpi` feature, every rank would
/// train alone into the same directory: refused, naming the build to use.
#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_under_mpirun_says_which_build_to_use() {
    let dir = rnnlm_tests::scratch_dir("cli-no-mpi");
    let config = rnnlm_tests::workspace_file("configs/quick.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_rnnlm"))
        .args([
            "train",
            "--config",
            path(&config),
            "--artifacts",
            path(&dir.join("run")),
        ])
        .env("CI", "true")
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("built without MPI") && log.contains("--features mpi"),
        "{log}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
