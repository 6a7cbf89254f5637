//! Writes a full-size (1024-channel, spkrec-ecapa-voxceleb layout) ECAPA-TDNN
//! with seeded random weights as `embedding_model.safetensors` into a folder,
//! so the live-path load test and the speech bench run the real model's cost
//! on a machine without SpeechBrain. Not a speaker model: scores mean nothing.
//!
//! Run: `cargo run --release -p inside-benches --bin random_model -- /var/tmp/ecapa_full`

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use inside_engine::speech::ecapa::random_weights;
use inside_engine::speech::EcapaConfig;

#[derive(Parser, Debug)]
#[command(about = "Write a random-weight full ECAPA-TDNN checkpoint (safetensors) for load tests")]
struct Args {
    /// Folder to write `embedding_model.safetensors` into (created if missing).
    dir: PathBuf,
    /// Seed of the weights.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let weights = random_weights(&EcapaConfig::default(), args.seed)?;
    let path = args.dir.join("embedding_model.safetensors");
    candle_core::safetensors::save(&weights, &path)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("{} tensors written to {}", weights.len(), path.display());
    Ok(())
}
