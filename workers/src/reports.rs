//! Report jobs: the database-backed runner (embedded default and single-node
//! deployments) and the work of writing one report, which is idempotent so
//! that a redelivered job stores the same report once.

use std::sync::Arc;
use std::time::Duration;

use inside_schemas::{ConsentStatus, EventBody, SessionStatus};
use inside_store::{events::SessionEvent, jobs::Job, Store, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a claimed job is ours before another runner may take it.
const LEASE: Duration = Duration::from_secs(120);
/// Attempts before a job is given up as failed.
const MAX_ATTEMPTS: i64 = 5;
/// Earlier reports of the relationship that inform activity suggestions.
const HISTORY: u32 = 5;

/// Builds and stores the report of session `sid` from its recorded events, leaving out
/// every member whose consent is not granted when the report is written: no frames,
/// talk time or nudges of theirs, and no line for them.
pub async fn write_report(store: &Store, sid: Uuid) -> anyhow::Result<()> {
    let session = store.session(sid).await?;
    let members: Vec<Uuid> = store
        .relationship(session.relationship_id)
        .await?
        .members
        .iter()
        .filter(|m| m.consent == ConsentStatus::Granted)
        .filter_map(|m| m.user_id)
        .collect();
    let mut events = store.session_events(sid).await?;
    events.retain(|e| consented(e, &members));
    let history = store
        .recent_reports(session.relationship_id, HISTORY)
        .await?;
    let report = tokio::task::spawn_blocking(move || {
        inside_engine::build_report(
            sid,
            &members,
            events.iter().map(|e| (e.user_id, &e.body)),
            chrono::Utc::now(),
            &history,
        )
    })
    .await?;
    store.store_report(&report).await?;
    metrics::counter!("inside_reports_written_total").increment(1);
    Ok(())
}

/// Why a report job must not run, if it must not: only a session that exists and is being
/// finalized gets a report (a job for any other is a forgery or a leftover).
pub async fn job_refusal(store: &Store, sid: Uuid) -> Result<Option<&'static str>, StoreError> {
    match store.session(sid).await {
        Ok(s) if s.status == SessionStatus::Finalizing => Ok(None),
        Ok(_) => Ok(Some("session_not_finalizing")),
        Err(StoreError::NotFound) => Ok(Some("unknown_session")),
        Err(e) => Err(e),
    }
}

/// Whether `event` may enter the report: it concerns nobody, or a consenting member.
fn consented(event: &SessionEvent, consenting: &[Uuid]) -> bool {
    let user = match &event.body {
        EventBody::Speaker(s) => s.user_id.or(event.user_id),
        _ => event.user_id,
    };
    user.is_none_or(|u| consenting.contains(&u))
}

/// Runs report jobs from the database queue until cancelled.
#[derive(Clone)]
pub struct ReportJobs {
    store: Store,
    wake: Arc<Notify>,
    poll: Duration,
}

impl ReportJobs {
    pub fn new(store: Store, poll: Duration) -> Self {
        Self {
            store,
            wake: Arc::new(Notify::new()),
            poll,
        }
    }

    /// Call after enqueueing, so the job starts without waiting for the poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!("report job runner started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            match self.store.claim_job(LEASE).await {
                Ok(Some(job)) => self.run_one(job).await,
                Ok(None) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(self.poll) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a report job failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(self.poll.max(Duration::from_secs(1))) => {}
                    }
                }
            }
        }
        tracing::info!("report job runner stopped");
    }

    async fn run_one(&self, job: Job) {
        let span = tracing::info_span!("report_job", sid = %job.session_id, attempt = job.attempts);
        let _enter = span.enter();
        let started = std::time::Instant::now();
        if let Ok(Some(reason)) = job_refusal(&self.store, job.session_id).await {
            inside_bus::inbound::reject("jobs", reason, Some(job.session_id));
            metrics::counter!("inside_jobs_total", "outcome" => "refused").increment(1);
            if let Err(e) = self.store.fail_job(job.id, reason, None).await {
                tracing::warn!(error = %e, "recording the job outcome failed");
            }
            return;
        }
        let outcome = write_report(&self.store, job.session_id).await;
        let result = match outcome {
            Ok(()) => {
                tracing::info!(ms = started.elapsed().as_millis() as u64, "report stored");
                metrics::counter!("inside_jobs_total", "outcome" => "done").increment(1);
                self.store.complete_job(job.id).await
            }
            Err(e) => {
                let retry = (job.attempts < MAX_ATTEMPTS)
                    .then(|| Duration::from_secs((job.attempts * job.attempts) as u64));
                tracing::warn!(error = %e, will_retry = retry.is_some(), "report job failed");
                metrics::counter!("inside_jobs_total", "outcome" => "failed").increment(1);
                self.store.fail_job(job.id, &e.to_string(), retry).await
            }
        };
        if let Err(e) = result {
            // The lease runs out and the job is claimed again: nothing is lost.
            tracing::warn!(error = %e, "recording the job outcome failed");
        }
    }
}
