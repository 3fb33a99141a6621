//! The example as a user runs it (`cargo run --release -- lstm`): it trains on its made-up task
//! and succeeds only when the held-out accuracy reaches 95 %. Being a test, it runs in the
//! README's test command, with the binary built in the same cargo invocation as the workspace.

use std::process::{Command, Output};

fn classifier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sequence-classifier"))
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

/// The run succeeds, its layers ran fused, and its last epoch reports at least 95 %.
fn reaches_95_percent(args: &[&str]) {
    let output = classifier(args);
    let core = if args.contains(&"--bidirectional") {
        format!("bidirectional {}", args[0])
    } else {
        args[0].to_owned()
    };
    let log = text(&output);
    assert!(output.status.success(), "{core}: {log}");
    assert!(log.contains("recurrent layers: fused"), "{core}: {log}");
    let last = log
        .lines()
        .rfind(|line| line.starts_with(&format!("{core} epoch ")))
        .unwrap_or_else(|| panic!("{core}: no epoch was reported: {log}"));
    let accuracy: f32 = last
        .split("held-out accuracy ")
        .nth(1)
        .and_then(|rest| rest.trim_end_matches(" %").parse().ok())
        .unwrap_or_else(|| panic!("{core}: no accuracy in {last:?}"));
    assert!(accuracy >= 95.0, "{core}: {last}");
    eprintln!("{last}");
}

/// Strings of 6 to 16 letters, padded: each row's final state after its own last letter.
#[test]
fn the_lstm_classifier_reaches_95_percent_held_out() {
    reaches_95_percent(&["lstm"]);
}

/// Both directions read each string from its own last letter back.
#[test]
fn the_bidirectional_gru_classifier_reaches_95_percent_held_out() {
    reaches_95_percent(&["gru", "--bidirectional"]);
}

#[test]
fn an_unknown_core_is_refused_by_name() {
    let output = classifier(&["transformer"]);
    assert!(!output.status.success());
    let log = text(&output);
    assert!(
        log.contains("error: unknown core \"transformer\": give lstm or gru"),
        "{log}"
    );
}
