//! `worker`: one member of the Inside worker fleet. Runs report jobs and
//! serves `/health` and `/metrics` on `WORKER_BIND_ADDR`; `worker embed` runs
//! the speaker model offline for researchers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use inside_settings::{ExposeSecret, Settings};
use inside_store::Store;
use inside_workers::{ops, ReportJobs};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "worker",
    version,
    about = "Inside worker: report jobs and the analysis pipeline (scale by starting more)",
    long_about = "Settings come from the environment, then .env, then inside.toml (same names as the gateway). \
        DATABASE_URL, NATS_URL, REDIS_URL, WORKER_BIND_ADDR (0.0.0.0:8001) for /health and /metrics."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker (the default).
    Run,
    /// Print speaker embeddings of audio files as JSON lines, or compare two.
    Embed {
        /// Folder with embedding_model.ckpt (or .safetensors) and hyperparams.yaml.
        #[arg(long)]
        model_dir: PathBuf,
        /// Print the cosine score of exactly two files instead.
        #[arg(long)]
        compare: bool,
        /// WAV, FLAC, Ogg Vorbis or MP3 files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Embed {
        model_dir,
        compare,
        files,
    }) = cli.command
    {
        return inside_workers::embed::run_embed(&model_dir, &files, compare);
    }
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("worker: invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    ops::init_tracing(settings.debug);
    let store = Store::connect(
        settings.database_url.expose_secret(),
        settings.database_max_connections,
        settings.database_echo,
    )
    .await
    .context("connecting to the database (DATABASE_URL)")?;
    store.migrate().await.context("applying migrations")?;
    let shutdown = CancellationToken::new();
    ops::cancel_on_signals(shutdown.clone());
    let jobs = ReportJobs::new(
        store.clone(),
        Duration::from_millis(settings.report_job_poll_ms),
    );
    let ops_server = ops::serve(settings.worker_bind_addr, store.clone(), shutdown.clone()).await?;
    tracing::info!(addr = %settings.worker_bind_addr, "worker started");
    jobs.run(shutdown.clone()).await;
    shutdown.cancel();
    let _ = ops_server.await;
    store.close().await;
    tracing::info!("worker stopped");
    Ok(())
}
