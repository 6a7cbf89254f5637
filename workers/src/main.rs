//! `worker`: one member of the Inside worker fleet. Runs report jobs and
//! serves `/health` and `/metrics` on `WORKER_BIND_ADDR`; `worker embed` runs
//! the speaker model offline for researchers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use inside_settings::{ExposeSecret, Settings};
use inside_store::limiter::Limiter;
use inside_store::Store;
use inside_workers::pipeline::jobs::run_report_jobs;
use inside_workers::pipeline::{Pipeline, PipelineConfig};
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

/// With NATS: the analysis pipeline in the queue group `workers` and report
/// jobs from JetStream, until a signal; then drains and flushes.
async fn run_fleet_member(
    settings: &Settings,
    url: &str,
    store: Store,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let subjects = inside_bus::Subjects::new(settings.nats_subject_prefix.clone());
    let bus = inside_bus::Bus::connect_nats(url, "inside-worker", subjects.clone())
        .await
        .context("connecting to NATS (NATS_URL)")?;
    let limiter = match &settings.redis_url {
        Some(url) => Limiter::redis(url.expose_secret(), &settings.nats_subject_prefix)
            .await
            .context("connecting to Redis (REDIS_URL)")?,
        None => Limiter::memory(),
    };
    let consumers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pipeline = Pipeline::start(
        bus.clone(),
        limiter,
        store.clone(),
        PipelineConfig::from_settings(settings, consumers),
        shutdown.clone(),
    )
    .await?;
    tracing::info!(addr = %settings.worker_bind_addr, "worker started");
    let client = bus.nats().cloned().context("NATS client")?;
    let jobs = tokio::spawn(run_report_jobs(client, subjects, store, shutdown.clone()));
    pipeline.stopped().await;
    match jobs.await {
        Ok(Err(e)) => tracing::error!(error = %e, "report jobs stopped with an error"),
        Err(e) => tracing::error!(error = %e, "report jobs task failed"),
        Ok(Ok(())) => {}
    }
    bus.flush().await.ok();
    Ok(())
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
    let ops_server = ops::serve(settings.worker_bind_addr, store.clone(), shutdown.clone()).await?;
    match &settings.nats_url {
        Some(url) => run_fleet_member(&settings, url, store.clone(), shutdown.clone()).await?,
        None => {
            tracing::info!(addr = %settings.worker_bind_addr, "worker started (database job queue only; set NATS_URL for the pipeline)");
            ReportJobs::new(
                store.clone(),
                Duration::from_millis(settings.report_job_poll_ms),
            )
            .run(shutdown.clone())
            .await;
        }
    }
    shutdown.cancel();
    let _ = ops_server.await;
    store.close().await;
    tracing::info!("worker stopped");
    Ok(())
}
