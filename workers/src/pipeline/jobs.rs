//! Report jobs from JetStream (`INSIDE_JOBS`, work-queue retention): a pull
//! consumer shared by every worker; a job is acked only after its report is
//! stored (an idempotent upsert, so a redelivery stores it once), nak'd with
//! a growing delay on failure, and kept alive with `Progress` while it runs. Its last
//! delivery failing leaves the session `failed` and terminates the message.

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use inside_bus::Subjects;
use inside_store::Store;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::reports::{give_up, job_refusal};
use crate::{write_report, ReportConfig, WorkerError};

/// Durable consumer name shared by the fleet.
const CONSUMER: &str = "report-writers";
/// Deliveries of one job before it is given up (the session becomes `failed`).
pub const MAX_DELIVER: i64 = 10;

/// Runs report jobs until `shutdown`; the job in hand is finished first.
pub async fn run_report_jobs(
    client: async_nats::Client,
    subjects: Subjects,
    store: Store,
    config: ReportConfig,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let ack_wait = config.ack_wait;
    let stream = inside_bus::jobs::ensure_stream(&client, &subjects).await?;
    let consumer = stream
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.to_string()),
                ack_policy: AckPolicy::Explicit,
                ack_wait,
                max_deliver: MAX_DELIVER,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| WorkerError::Jobs {
            step: "creating the report consumer",
            message: e.to_string(),
        })?;
    tokio::spawn(crate::telemetry::poll_jobs_pending(
        stream.clone(),
        CONSUMER,
        shutdown.child_token(),
    ));
    let mut messages = consumer.messages().await.map_err(|e| WorkerError::Jobs {
        step: "pulling report jobs",
        message: e.to_string(),
    })?;
    tracing::info!(stream = %subjects.jobs_stream(), "JetStream report jobs started");
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = messages.next() => match m {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "pulling a report job failed");
                    continue;
                }
                None => break,
            },
        };
        // a job is a session id, 36 bytes: anything longer is refused before parsing
        let sid = (msg.payload.len() <= 64)
            .then(|| std::str::from_utf8(&msg.payload).ok())
            .flatten()
            .and_then(|s| s.trim().parse::<Uuid>().ok());
        let Some(sid) = sid else {
            inside_bus::inbound::reject("jobs", "malformed", None);
            let _ = msg.ack_with(AckKind::Term).await;
            continue;
        };
        match job_refusal(&store, sid).await {
            Ok(None) => {}
            Ok(Some(reason)) => {
                // terminated, not retried: no redelivery makes a forged job valid
                inside_bus::inbound::reject("jobs", reason, Some(sid));
                metrics::counter!("inside_jobs_total", "outcome" => "refused").increment(1);
                let _ = msg.ack_with(AckKind::Term).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(%sid, error = %e, "checking a report job's session failed; will be redelivered");
                let _ = msg
                    .ack_with(AckKind::Nak(Some(config.retry_delay(1))))
                    .await;
                continue;
            }
        }
        let span = tracing::info_span!("report_job", %sid);
        run_job(&store, &config, msg, sid).instrument(span).await;
    }
    tracing::info!("JetStream report jobs stopped");
    Ok(())
}

/// Writes the report of one delivered job, beating `Progress` meanwhile, and acks, naks or
/// terminates the delivery by the outcome.
async fn run_job(
    store: &Store,
    config: &ReportConfig,
    msg: async_nats::jetstream::Message,
    sid: Uuid,
) {
    let ack_wait = config.ack_wait;
    let work = write_report(store, sid, config.wait);
    tokio::pin!(work);
    let mut progress = tokio::time::interval(ack_wait / 3);
    progress.tick().await;
    let outcome = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = progress.tick() => { let _ = msg.ack_with(AckKind::Progress).await; }
        }
    };
    match outcome {
        Ok(()) => {
            metrics::counter!("inside_jobs_total", "outcome" => "done").increment(1);
            tracing::info!("report stored");
            if let Err(e) = msg.double_ack().await {
                // Redelivered and stored again, idempotently.
                tracing::warn!(error = %e, "acking a report job failed");
            }
        }
        Err(e) => {
            metrics::counter!("inside_jobs_total", "outcome" => "failed").increment(1);
            // the delivery count JetStream keeps, whichever worker had the earlier ones
            let delivered = msg.info().map_or(1, |i| i.delivered);
            if delivered >= MAX_DELIVER {
                give_up(store, sid, delivered, &e.to_string()).await;
                let _ = msg.ack_with(AckKind::Term).await;
            } else {
                tracing::warn!(error = %e, delivered, "report job failed; will be redelivered");
                let _ = msg
                    .ack_with(AckKind::Nak(Some(config.retry_delay(delivered))))
                    .await;
            }
        }
    }
}
