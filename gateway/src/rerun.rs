//! `gateway report rerun <sid>`: an operator's new try at a session's report, after its job
//! failed (session `failed`) or was lost. The session goes back to `finalizing` and a fresh
//! job goes on the queue the deployment uses: JetStream with `NATS_URL`, the database queue
//! otherwise (a running gateway or worker picks it up on its next poll).

use inside_schemas::Session;
use inside_settings::{ExposeSecret, Settings};
use inside_store::{Store, StoreError};
use uuid::Uuid;

use crate::error::StartupError;

/// What a re-run did.
#[derive(Debug)]
pub struct Rerun {
    pub session: Session,
    /// Why the report had failed, when it had.
    pub previous_failure: Option<String>,
    /// `jetstream` or `database`.
    pub queue: &'static str,
}

pub async fn rerun_report(settings: &Settings, sid: Uuid) -> Result<Rerun, StartupError> {
    let store = Store::connect(
        settings.database_url.expose_secret(),
        2,
        settings.database_echo,
    )
    .await
    .map_err(StartupError::store(
        "connecting to the database (DATABASE_URL)",
    ))?;
    store
        .migrate()
        .await
        .map_err(StartupError::store("applying migrations"))?;
    let outcome = rerun_on(&store, settings, sid).await;
    store.close().await;
    outcome
}

async fn rerun_on(store: &Store, settings: &Settings, sid: Uuid) -> Result<Rerun, StartupError> {
    let previous_failure = store.session_failure(sid).await.map_err(|e| match e {
        StoreError::NotFound => StartupError::NoSession(sid),
        other => StartupError::store("reading the session")(other),
    })?;
    let session = store.reopen_finalize(sid).await.map_err(|e| match e {
        StoreError::Conflict(m) => StartupError::NotRerunnable(sid, m),
        other => StartupError::store("reopening the session")(other),
    })?;
    let queue = match &settings.nats_url {
        Some(url) => {
            let subjects = inside_bus::Subjects::new(settings.nats_subject_prefix.clone());
            let bus = inside_bus::Bus::connect_nats_with(
                url,
                "inside-gateway-cli",
                &settings.nats,
                subjects,
            )
            .await
            .map_err(StartupError::bus("connecting to NATS (NATS_URL)"))?;
            // a bus made by connect_nats_with always has its client
            if let Some(client) = bus.nats() {
                inside_bus::jobs::ensure_stream(client, bus.subjects())
                    .await
                    .map_err(StartupError::bus("the JetStream report job stream"))?;
                inside_bus::jobs::publish_report_rerun(client, bus.subjects(), sid)
                    .await
                    .map_err(StartupError::bus("publishing the report job"))?;
            }
            bus.flush().await.ok();
            "jetstream"
        }
        None => {
            store
                .requeue_job(inside_store::jobs::REPORT, sid)
                .await
                .map_err(StartupError::store("enqueueing the report job"))?;
            "database"
        }
    };
    tracing::info!(%sid, queue, "report job enqueued again");
    Ok(Rerun {
        session,
        previous_failure,
        queue,
    })
}
