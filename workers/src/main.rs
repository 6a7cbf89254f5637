//! `worker`: one member of the Inside worker fleet. Runs report jobs and
//! serves `/livez`, `/readyz`, `/health` and `/metrics` on `WORKER_BIND_ADDR`;
//! `worker embed` runs the speaker model offline for researchers.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use inside_engine::speech::SpeakerModel;
use inside_settings::{ExposeSecret, Settings};
use inside_store::limiter::Limiter;
use inside_store::Store;
use inside_workers::pipeline::jobs::run_report_jobs;
use inside_workers::pipeline::{Pipeline, PipelineConfig};
use inside_workers::{ops, ReportConfig, ReportJobs};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "worker",
    version,
    about = "Inside worker: report jobs and the analysis pipeline (scale by starting more)",
    long_about = "Settings come from the environment, then .env, then inside.toml (same names as the gateway). \
        DATABASE_URL, NATS_URL, REDIS_URL, WORKER_BIND_ADDR (0.0.0.0:8001) for /livez, /readyz, /health and /metrics."
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
        /// Folder with embedding_model.ckpt (or .safetensors) and hyperparams.yaml
        /// [default: ECAPA_MODEL_DIR].
        #[arg(long)]
        model_dir: Option<PathBuf>,
        /// Print the cosine score of exactly two files instead.
        #[arg(long)]
        compare: bool,
        /// WAV, FLAC, Ogg Vorbis or MP3 files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print one session's research frames, speaker events and audio segment metadata as
    /// JSON lines until the session is finalized (needs NATS_URL; takes no work from the
    /// workers).
    Tap {
        /// The session id.
        #[arg(long)]
        session: uuid::Uuid,
    },
}

/// With NATS: the analysis pipeline in the queue group `workers` and report
/// jobs from JetStream, until a signal; then drains and flushes.
async fn run_fleet_member(
    settings: &Settings,
    url: &str,
    store: Store,
    probes: &ops::Probes,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let subjects = inside_bus::Subjects::new(settings.nats_subject_prefix.clone());
    let bus =
        inside_bus::Bus::connect_nats_with(url, "inside-worker", &settings.nats, subjects.clone())
            .await
            .context("connecting to NATS (NATS_URL)")?;
    let limiter = match &settings.redis_url {
        Some(url) => Limiter::redis(url.expose_secret(), &settings.nats_subject_prefix)
            .await
            .context("connecting to Redis (REDIS_URL)")?,
        None => Limiter::memory(),
    };
    let client = bus.nats().cloned().context("NATS client")?;
    probes.connected(ops::Fleet {
        nats: client.clone(),
        redis: settings.redis_url.is_some().then(|| limiter.clone()),
        jobs_stream: subjects.jobs_stream(),
    });
    // One frame subscription per process: the fleet scales by processes, and a second
    // subscription here only added wakeups, not speed.
    let consumers = 1;
    let model = match &settings.ecapa_model_dir {
        Some(dir) => {
            let dir = dir.clone();
            let model = tokio::task::spawn_blocking(move || SpeakerModel::load(&dir))
                .await?
                .context("loading the speaker model (ECAPA_MODEL_DIR)")?;
            tracing::info!("speaker model loaded: attributing live audio and answering enrolment");
            Some(Arc::new(model))
        }
        None => {
            tracing::info!("no ECAPA_MODEL_DIR: this worker does not attribute live audio");
            None
        }
    };
    let config = PipelineConfig::from_settings(settings, consumers)
        .with_speaker_model(model, settings)
        .context("starting the speaker thread pool")?;
    let pipeline = Pipeline::start(
        bus.clone(),
        limiter,
        store.clone(),
        config,
        shutdown.clone(),
    )
    .await?;
    tracing::info!(addr = %settings.worker_bind_addr, "worker started");
    let jobs = tokio::spawn(run_report_jobs(
        client,
        subjects,
        store,
        ReportConfig::from_settings(settings),
        shutdown.clone(),
    ));
    probes.started();
    pipeline.stopped().await;
    match jobs.await {
        Ok(Err(e)) => tracing::error!(error = %e, "report jobs stopped with an error"),
        Err(e) => tracing::error!(error = %e, "report jobs task failed"),
        Ok(Ok(())) => {}
    }
    bus.flush().await.ok();
    Ok(())
}

/// `worker tap`: JSON lines on stdout until the session is finalized or Ctrl-C.
async fn run_tap(settings: &Settings, sid: uuid::Uuid) -> anyhow::Result<()> {
    use std::io::Write;
    let url = settings
        .nats_url
        .as_ref()
        .context("worker tap reads the live session from NATS: set NATS_URL")?;
    let subjects = inside_bus::Subjects::new(settings.nats_subject_prefix.clone());
    let bus = inside_bus::Bus::connect_nats_with(url, "inside-tap", &settings.nats, subjects)
        .await
        .context("connecting to NATS (NATS_URL)")?;
    let tap = inside_workers::tap::subscribe(&bus, sid)
        .await
        .context("subscribing to the session's subjects")?;
    let shutdown = CancellationToken::new();
    inside_process::cancel_on_signals(shutdown.clone());
    tracing::info!(%sid, "tapping the session until it is finalized; Ctrl-C stops");
    let mut stdout = std::io::stdout().lock();
    let end = tap
        .run(shutdown, inside_workers::tap::FINALIZE_LINGER, |line| {
            // a closed pipe (`worker tap | head`) ends the process
            if writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                std::process::exit(0);
            }
        })
        .await;
    tracing::info!(%sid, ?end, "tap ended");
    Ok(())
}

/// `worker embed`: the model folder from the flag or ECAPA_MODEL_DIR; no model is exit code 2
/// with what to do.
fn run_embed(model_dir: Option<PathBuf>, files: &[PathBuf], compare: bool) -> anyhow::Result<()> {
    let dir = match model_dir {
        Some(dir) => Ok(dir),
        None => match Settings::load() {
            Ok(s) => inside_workers::embed::model_dir(None, s.ecapa_model_dir.as_deref()),
            Err(e) => {
                eprintln!("worker: invalid configuration: {e}");
                std::process::exit(2);
            }
        },
    };
    let result = dir.and_then(|dir| inside_workers::embed::run_embed(&dir, files, compare));
    match result {
        Err(e) if e.is_model_missing() => {
            eprintln!("worker embed: {e}");
            std::process::exit(2);
        }
        other => Ok(other?),
    }
}

// glibc's malloc contends on arena locks under many small short-lived messages
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Embed {
        model_dir,
        compare,
        files,
    }) = cli.command
    {
        return run_embed(model_dir, &files, compare);
    }
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("worker: invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    inside_process::init_logs(settings.debug, settings.log_format);
    if let Some(Command::Tap { session }) = cli.command {
        return run_tap(&settings, session).await;
    }
    if let Err(e) = settings.require_shared_limits() {
        eprintln!("worker: invalid configuration: {e}");
        std::process::exit(2);
    }
    let store = Store::connect(
        settings.database_url.expose_secret(),
        settings.database_max_connections,
        settings.database_echo,
    )
    .await
    .context("connecting to the database (DATABASE_URL)")?;
    store.migrate().await.context("applying migrations")?;
    let shutdown = CancellationToken::new();
    inside_process::cancel_on_signals(shutdown.clone());
    let probes = ops::Probes::new(store.clone(), settings.nats_url.is_some());
    let ops_server =
        ops::serve(settings.worker_bind_addr, probes.clone(), shutdown.clone()).await?;
    match &settings.nats_url {
        Some(url) => {
            run_fleet_member(&settings, url, store.clone(), &probes, shutdown.clone()).await?
        }
        None => {
            probes.started();
            tracing::info!(addr = %settings.worker_bind_addr, "worker started (database job queue only; set NATS_URL for the pipeline)");
            ReportJobs::new(store.clone(), ReportConfig::from_settings(&settings))
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
