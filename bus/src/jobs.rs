//! Report jobs on JetStream: the work-queue stream `INSIDE_JOBS` on
//! `inside.v1.jobs.report`, published with `Nats-Msg-Id` = the session id so
//! a double finalize is stored once.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use uuid::Uuid;

use crate::{BusError, Subjects};

/// How long JetStream remembers a message id for deduplication.
const DEDUP_WINDOW: Duration = Duration::from_secs(600);

/// Creates the stream if it does not exist; returns it.
pub async fn ensure_stream(
    client: &async_nats::Client,
    subjects: &Subjects,
) -> Result<stream::Stream, BusError> {
    jetstream::new(client.clone())
        .get_or_create_stream(stream::Config {
            name: subjects.jobs_stream(),
            subjects: vec![subjects.report_jobs()],
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: DEDUP_WINDOW,
            ..Default::default()
        })
        .await
        .map_err(|e| BusError::JetStream(e.to_string()))
}

/// Publishes the report job of `sid` and waits for JetStream's ack.
pub async fn publish_report_job(
    client: &async_nats::Client,
    subjects: &Subjects,
    sid: Uuid,
) -> Result<(), BusError> {
    publish(client, subjects, sid, &sid.to_string()).await
}

/// Publishes another report job of `sid` (an operator's re-run) under a message id of its own,
/// so the deduplication of the first job does not swallow it.
pub async fn publish_report_rerun(
    client: &async_nats::Client,
    subjects: &Subjects,
    sid: Uuid,
) -> Result<(), BusError> {
    publish(
        client,
        subjects,
        sid,
        &format!("{sid}.rerun.{}", Uuid::now_v7()),
    )
    .await
}

async fn publish(
    client: &async_nats::Client,
    subjects: &Subjects,
    sid: Uuid,
    msg_id: &str,
) -> Result<(), BusError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    let ack = jetstream::new(client.clone())
        .publish_with_headers(subjects.report_jobs(), headers, sid.to_string().into())
        .await
        .map_err(|e| BusError::JetStream(e.to_string()))?;
    ack.await.map_err(|e| BusError::JetStream(e.to_string()))?;
    Ok(())
}
