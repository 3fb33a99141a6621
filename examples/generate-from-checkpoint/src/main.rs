//! Text generation from a saved checkpoint in ten lines:
//! `cargo run --release -- path/to/artifacts "time traveller"`.

use burn::prelude::*;
use rnnlm::sample::Decoding;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let checkpoint = args.next().ok_or("usage: generate-from-checkpoint DIR [PREFIX]")?;
    let prefix = args.next().unwrap_or_else(|| "time traveller".to_owned());
    let device = Device::flex();
    let model = rnnlm_train::load_model(checkpoint.as_ref(), &device)?;
    println!("{}", model.continue_text(&prefix, 60, &Decoding::Greedy, &device)?);
    let sampling = Decoding::Sample { temperature: 0.8, top_k: None, top_p: Some(0.95), seed: 1 };
    println!("{}", model.continue_text(&prefix, 60, &sampling, &device)?);
    Ok(())
}
