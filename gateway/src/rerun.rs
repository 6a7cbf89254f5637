//! `gateway report rerun <sid>`: an operator's new try at a session's report, after its job
//! failed (session `failed`) or was lost. The session goes back to `finalizing` and a fresh
//! job goes on the queue the deployment uses: JetStream with `NATS_URL`, the database queue
//! otherwise (a running gateway or worker picks it up on its next poll).

use anyhow::Context;
use inside_schemas::Session;
use inside_settings::{ExposeSecret, Settings};
use inside_store::{Store, StoreError};
use uuid::Uuid;

/// What a re-run did.
#[derive(Debug)]
pub struct Rerun {
    pub session: Session,
    /// Why the report had failed, when it had.
    pub previous_failure: Option<String>,
    /// `jetstream` or `database`.
    pub queue: &'static str,
}

pub async fn rerun_report(settings: &Settings, sid: Uuid) -> anyhow::Result<Rerun> {
    let store = Store::connect(
        settings.database_url.expose_secret(),
        2,
        settings.database_echo,
    )
    .await
    .context("connecting to the database (DATABASE_URL)")?;
    store.migrate().await.context("applying migrations")?;
    let outcome = rerun_on(&store, settings, sid).await;
    store.close().await;
    outcome
}

async fn rerun_on(store: &Store, settings: &Settings, sid: Uuid) -> anyhow::Result<Rerun> {
    let previous_failure = store.session_failure(sid).await.map_err(|e| match e {
        StoreError::NotFound => anyhow::anyhow!("no session {sid}"),
        other => other.into(),
    })?;
    let session = store.reopen_finalize(sid).await.map_err(|e| match e {
        StoreError::Conflict(m) => anyhow::anyhow!("session {sid}: {m}"),
        other => other.into(),
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
            .context("connecting to NATS (NATS_URL)")?;
            let client = bus.nats().context("a NATS client")?;
            inside_bus::jobs::ensure_stream(client, bus.subjects())
                .await
                .context("the JetStream report job stream")?;
            inside_bus::jobs::publish_report_rerun(client, bus.subjects(), sid)
                .await
                .context("publishing the report job")?;
            bus.flush().await.ok();
            "jetstream"
        }
        None => {
            store
                .requeue_job(inside_store::jobs::REPORT, sid)
                .await
                .context("enqueueing the report job")?;
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
