//! Text generation from a saved checkpoint in a dozen lines:
//! `cargo run --release -- path/to/artifacts "time traveller"`.

use burn::prelude::*;
use rnnlm::sample::Decoding;

fn main() -> std::process::ExitCode {
    // The error's own message (its Display), not Rust's debug form of it.
    run().map_or_else(
        |error| {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        },
        |()| std::process::ExitCode::SUCCESS,
    )
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: generate-from-checkpoint DIR [PREFIX]";
    let dir = args.next().ok_or(usage)?;
    let prefix = args.next().unwrap_or_else(|| "time traveller".into());
    let device = Device::flex();
    let model = rnnlm_train::load_model(dir.as_ref(), &device)?;
    let greedy = model.continue_text(&prefix, 60, &Decoding::Greedy, &device)?;
    let sampling = Decoding::power(1.25, 1); // d2l's p^alpha sampling: temperature 0.8, seed 1
    let sampled = model.continue_text(&prefix, 60, &sampling, &device)?;
    println!("{greedy}\n{sampled}");
    Ok(())
}
