//! The example as a user runs it (`cargo run --release -- DIR PREFIX`), on a checkpoint
//! directory written here with `rnnlm_train::save_model_dir` (the writer `rnnlm import` uses;
//! `rnnlm train` writes the same files). CI also runs the binary on the checkpoint of its main
//! training job.

use std::path::PathBuf;
use std::process::{Command, Output};

use burn::prelude::*;

fn generate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_generate-from-checkpoint"))
        .args(args)
        .output()
        .expect("the example's binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A new, empty directory under the target directory's temporary space.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("an old scratch directory is removable");
    }
    dir
}

/// An untrained character-level GRU over `<unk>`, space and a-z, saved as a checkpoint.
fn checkpoint(name: &str) -> PathBuf {
    let mut tokens = vec!["<unk>".to_owned(), " ".to_owned()];
    tokens.extend(('a'..='z').map(String::from));
    let vocab = rnnlm_data::Vocab::from_tokens(tokens).expect("distinct tokens");
    let experiment: rnnlm_train::ExperimentConfig = toml::from_str(&format!(
        "[model]\nkind = \"gru\"\nvocab_size = {}\nhidden_size = 8\n",
        vocab.len()
    ))
    .expect("a valid experiment");
    let device = Device::flex();
    device.seed(5);
    let model = experiment.model.init(&device);
    let dir = scratch(name).join("checkpoint");
    rnnlm_train::save_model_dir(&dir, &experiment, &vocab, &model)
        .expect("the checkpoint is written");
    dir
}

#[test]
fn it_continues_the_prefix_greedily_and_sampled() {
    let dir = checkpoint("generates");
    let output = generate(&[dir.to_str().unwrap(), "time traveller"]);
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "a greedy and a sampled line: {stdout}");
    for line in lines {
        // The prefix, then 60 generated tokens: characters of the vocabulary, or `<unk>` (which
        // an untrained model may choose) written as its name.
        let continuation = line
            .strip_prefix("time traveller")
            .unwrap_or_else(|| panic!("{line:?} does not start with the prefix"))
            .replace("<unk>", "?");
        assert_eq!(continuation.chars().count(), 60, "{line:?}");
        assert!(
            continuation
                .chars()
                .all(|c| c == ' ' || c == '?' || c.is_ascii_lowercase()),
            "{line:?}"
        );
    }
}

#[test]
fn a_missing_checkpoint_is_an_error_that_names_it() {
    let dir = scratch("missing").join("nowhere");
    let output = generate(&[dir.to_str().unwrap()]);
    assert!(!output.status.success());
    let message = text(&output);
    assert!(
        message.starts_with("error: ") && message.contains("nowhere"),
        "{message}"
    );
}

#[test]
fn no_arguments_print_the_usage() {
    let output = generate(&[]);
    assert!(!output.status.success());
    assert!(text(&output).contains("usage: generate-from-checkpoint DIR [PREFIX]"));
}
