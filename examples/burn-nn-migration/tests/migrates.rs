//! The example as a user runs it: the burn-nn model trains, moves to rnnlm's cores both ways
//! with the same loss, and the loss goes on falling from where it was.

use std::process::Command;

/// `(step, loss)` of every line `"{who} step N loss X"`.
fn losses(log: &str, who: &str) -> Vec<(u32, f32)> {
    log.lines()
        .filter_map(|line| line.strip_prefix(&format!("{who} step ")))
        .map(|rest| {
            let (step, loss) = rest.split_once(" loss ").expect("step N loss X");
            (step.parse().unwrap(), loss.parse().unwrap())
        })
        .collect()
}

#[test]
fn the_moved_model_keeps_the_loss_and_trains_on() {
    let output = Command::new(env!("CARGO_BIN_EXE_burn-nn-migration"))
        .output()
        .expect("the example's binary runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{log}");
    assert!(log.contains("recurrent layers: fused"), "{log}");
    let before = losses(&log, "burn-nn");
    let after = losses(&log, "rnnlm");
    assert_eq!((before.len(), after.len()), (30, 60), "{log}");
    // burn-nn's training lowered the loss before the switch...
    assert!(before[29].1 < before[0].1, "{log}");
    // ...and rnnlm's carries on from there: its first steps start near burn-nn's last ones
    // (other batches, so not equal), and its last ten average below its first ten.
    let mean = |s: &[(u32, f32)]| s.iter().map(|(_, l)| l).sum::<f32>() / s.len() as f32;
    let (burn_end, rnnlm_start, rnnlm_end) =
        (mean(&before[20..]), mean(&after[..10]), mean(&after[50..]));
    assert!(
        rnnlm_start < before[0].1 && (rnnlm_start - burn_end).abs() < 0.5,
        "{log}"
    );
    assert!(rnnlm_end < rnnlm_start, "{log}");
    assert!(log.contains("after training on: fixed-batch loss"), "{log}");
}
