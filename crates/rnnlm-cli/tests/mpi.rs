//! Training across processes on MPI: `mpirun -n 2 rnnlm train` against one process, a rank
//! killed mid-run, a rank's error. Built and run with the `mpi` feature only (`.ci/run`:
//! `cargo test --release --workspace --features rnnlm-cli/mpi --test mpi`), with OpenMPI's
//! `mpirun` on the PATH.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rnnlm_tests::output_text as text;
use rnnlm_tests::path_str as path;

/// `mpirun` as root and on a machine with fewer cores than ranks, as CI is.
fn mpirun(ranks: usize) -> Command {
    let mut command = Command::new("mpirun");
    command
        .args([
            "--oversubscribe",
            "--allow-run-as-root",
            "-n",
            &ranks.to_string(),
        ])
        .arg(env!("CARGO_BIN_EXE_rnnlm"))
        .env("CI", "true");
    command
}

fn alone() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rnnlm"));
    command.env("CI", "true");
    command
}

/// `train` on configs/quick.toml (The Time Machine, GRU 128, batch 32), into `run`.
fn quick(dir: &Path, run: &Path, extra: &[&str]) -> Vec<String> {
    let config = rnnlm_tests::workspace_file("configs/quick.toml");
    let data = rnnlm_tests::shared_data("timemachine.txt");
    let mut args: Vec<String> = [
        "train",
        "--config",
        path(&config),
        "--data",
        path(&data),
        "--artifacts",
        path(run),
        "--cache-dir",
        path(&dir.join("cache")),
        "--set",
        "train.sample_every=0",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// The epoch lines as printed, without the throughput (which differs between runs).
fn epochs(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.starts_with("epoch ") && l.contains("train ppl"))
        .map(|l| {
            let (ppl, rest) = l.split_once("  train bits/token ").expect("an epoch line");
            let bits = rest.split("  ").next().unwrap_or_default();
            format!("{ppl} bits {bits}")
        })
        .collect()
}

#[test]
fn two_ranks_train_as_one_process_does() {
    let dir = rnnlm_tests::scratch_dir("mpi-two");
    let (one, two) = (dir.join("one"), dir.join("two"));
    let single = alone().args(quick(&dir, &one, &[])).output().unwrap();
    assert!(single.status.success(), "{}", text(&single));
    let ranks = mpirun(2).args(quick(&dir, &two, &[])).output().unwrap();
    let log = text(&ranks);
    assert!(ranks.status.success(), "{log}");
    assert!(
        log.contains("ranks: 2 processes, each running 16 to 16 of the 32 streams"),
        "{log}"
    );
    assert!(log.contains("all-reduce: "), "{log}");
    // Rank 0 alone prints: every epoch once.
    let (a, b) = (epochs(&text(&single)), epochs(&log));
    assert_eq!(a.len(), 15, "{}", text(&single));
    assert_eq!(a, b, "the perplexities to the last digit shown");
    let device = rnnlm_tests::device();
    let a = rnnlm_train::load_model(&one, &device).unwrap().model;
    let b = rnnlm_train::load_model(&two, &device).unwrap().model;
    let diff = rnnlm_tests::max_diff(&rnnlm_tests::parameters(&a), &rnnlm_tests::parameters(&b));
    assert!(diff < 1e-5, "final weights differ by {diff}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Dropout draws each rank's masks for its own rows, so the run is another draw of the same
/// training, not the same numbers: it trains, and validation falls.
#[test]
fn two_ranks_train_with_dropout() {
    let dir = rnnlm_tests::scratch_dir("mpi-dropout");
    let run = dir.join("run");
    let extra = [
        "--set",
        "model.output_dropout=0.2",
        "--set",
        "train.epochs=3",
    ];
    let ranks = mpirun(2).args(quick(&dir, &run, &extra)).output().unwrap();
    let log = text(&ranks);
    assert!(ranks.status.success(), "{log}");
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let valid: Vec<f64> = metrics
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert!(valid.len() == 3 && valid[2] < valid[0], "{valid:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The process of rank `rank` under `mpirun`'s pid: the child whose environment says so.
fn rank_pid(mpirun: u32, rank: usize) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let parent: Option<u32> = stat
            .rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok();
        if parent != Some(mpirun) {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
        if environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

#[cfg(target_os = "linux")]
#[test]
fn a_killed_rank_stops_the_run_and_one_process_resumes_it() {
    let dir = rnnlm_tests::scratch_dir("mpi-kill");
    let run = dir.join("run");
    let extra = [
        "--set",
        "train.epochs=3",
        "--set",
        "train.checkpoint_minutes=1e-9",
    ];
    let mut child = mpirun(2)
        .args(quick(&dir, &run, &extra))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut killed_at = None;
    for _ in 0..60_000 {
        if let Some(state) = rnnlm_train::latest_complete_checkpoint(&run)
            && state.epoch == 1
            && state.partial.as_ref().is_some_and(|p| p.steps >= 5)
            && let Some(pid) = rank_pid(child.id(), 1)
        {
            Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .unwrap();
            killed_at = Some(Instant::now());
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let killed_at = killed_at.expect("rank 1 was killed inside epoch 2");
    let status = child.wait().unwrap();
    let waited = killed_at.elapsed();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(!status.success(), "{log}");
    assert!(
        waited < Duration::from_secs(20),
        "the other rank ended {waited:?} after the kill"
    );
    let state = rnnlm_train::latest_complete_checkpoint(&run).expect("a complete checkpoint");
    assert!(state.epoch >= 1, "{}", state.position());

    let mut resume = quick(&dir, &run, &extra);
    resume.push("--resume".into());
    let output = alone().args(&resume).output().unwrap();
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("resuming after epoch"), "{log}");
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 4, "{metrics}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_rank_that_cannot_read_its_data_stops_every_rank_naming_itself() {
    let dir = rnnlm_tests::scratch_dir("mpi-error");
    let run = dir.join("run");
    let mut args = quick(&dir, &run, &[]);
    let missing: PathBuf = dir.join("missing.txt");
    let at = args.iter().position(|a| a == "--data").unwrap() + 1;
    args[at] = path(&missing).to_owned();
    let started = Instant::now();
    let output = mpirun(2).args(&args).output().unwrap();
    let log = text(&output);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("error on rank 0 of 2") && log.contains("missing.txt does not exist"),
        "{log}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    std::fs::remove_dir_all(&dir).ok();
}
