//! `gateway`: the Inside server. With no settings it serves everything from
//! one process on embedded defaults (SQLite, in-process bus, memory limiter).

use anyhow::Context;
use clap::{Parser, Subcommand};
use inside_process::cancel_on_signals;
use inside_server::Server;
use inside_settings::{ExposeSecret, Settings};
use tokio_util::sync::CancellationToken;

// No custom allocator: mimalloc held more memory per idle socket and was no faster
// (docs/benchmarks/2026-12-03-realtime.md).

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Inside gateway: REST + WebSocket API (embedded default: everything in one process)",
    long_about = "Settings come from the environment, then .env, then inside.toml, then defaults. \
        Main ones: BIND_ADDR (0.0.0.0:8000), DATABASE_URL (sqlite://./data/inside.db or postgres://…), \
        REDIS_URL, NATS_URL, SECRET_KEY, ECAPA_MODEL_DIR. See README.md for the full table."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Session reports (operators).
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Run a session's report job again (after it failed, or was lost): the session goes
    /// back to `finalizing` and a new job goes on the queue (JetStream with NATS_URL, the
    /// database otherwise), for the running gateways or workers to pick up.
    Rerun {
        /// The session id.
        sid: uuid::Uuid,
    },
}

// glibc's malloc contends on arena locks under many small short-lived messages
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gateway: invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = settings.require_shared_limits() {
        eprintln!("gateway: invalid configuration: {e}");
        std::process::exit(2);
    }
    inside_process::init_logs(settings.debug, settings.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Report {
            command: ReportCommand::Rerun { sid },
        } => match inside_gateway::rerun::rerun_report(&settings, sid).await {
            Ok(done) => {
                let was = done
                    .previous_failure
                    .map(|r| format!(" (it had failed: {r})"))
                    .unwrap_or_default();
                println!(
                    "session {sid}: {:?}, report job enqueued on the {} queue{was}",
                    done.session.status, done.queue
                );
                Ok(())
            }
            Err(e) => {
                eprintln!("gateway report rerun: {e:#}");
                std::process::exit(1);
            }
        },
        Command::Migrate => {
            // the database only: migrating needs no bus, limiter or model
            let store = inside_store::Store::connect(
                settings.database_url.expose_secret(),
                2,
                settings.database_echo,
            )
            .await
            .context("connecting to the database (DATABASE_URL)")?;
            store.migrate().await.context("applying migrations")?;
            store.close().await;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve => {
            raise_open_files_limit();
            let listener = tokio::net::TcpListener::bind(settings.bind_addr).await?;
            let server = Server::build(settings).await?;
            let shutdown = CancellationToken::new();
            cancel_on_signals(shutdown.clone());
            server.serve(listener, shutdown).await
        }
    }
}

/// Thousands of sockets need more than the default 1,024 descriptors.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(open_files = n, "open-files limit raised"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-files limit"),
    }
}
