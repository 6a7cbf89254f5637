//! Report jobs: the database-backed runner (embedded default and single-node
//! deployments) and the work of writing one report, which is idempotent so
//! that a redelivered job stores the same report once. A report waits for everything the
//! gateways published for its session ([`crate::barrier`]); a job that keeps failing leaves
//! its session `failed` with the reason, for an operator to re-run.

use std::sync::Arc;
use std::time::Duration;

use inside_engine::report::ReportInput;
use inside_schemas::{ConsentStatus, EventBody, SessionStatus};
use inside_settings::Settings;
use inside_store::{events::SessionEvent, jobs::Job, Store, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::WorkerError;
use uuid::Uuid;

use crate::barrier::await_recorded;

/// How long a claimed job is ours before another runner may take it, whatever its beats.
const LEASE: Duration = Duration::from_secs(120);
/// How often a runner beats on the job it holds.
const BEAT: Duration = Duration::from_secs(1);
/// A running job whose runner has not beaten for this long is taken back: its process is gone.
const STALE: Duration = Duration::from_secs(5);
/// Attempts before a job is given up as failed.
pub const MAX_ATTEMPTS: i64 = 5;
/// The longest pause between two attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Earlier reports of the relationship that inform activity suggestions.
const HISTORY: u32 = 5;

/// How report jobs run, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct ReportConfig {
    /// Longest wait for what was published to be recorded (`REPORT_WAIT_SECONDS`).
    pub wait: Duration,
    /// A failed job runs again after this × the attempt number² (`REPORT_JOB_RETRY_MS`).
    pub retry: Duration,
    /// JetStream: how long a job may go without an ack or a progress beat.
    pub ack_wait: Duration,
    /// Database queue: how often it looks for jobs.
    pub poll: Duration,
}

impl ReportConfig {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            wait: Duration::from_secs_f64(settings.report_wait_seconds),
            retry: Duration::from_millis(settings.report_job_retry_ms),
            ack_wait: Duration::from_secs(settings.report_job_ack_wait_s),
            poll: Duration::from_millis(settings.report_job_poll_ms),
        }
    }

    /// The pause before attempt `attempt + 1`.
    pub fn retry_delay(&self, attempt: i64) -> Duration {
        let n = u32::try_from(attempt.clamp(1, 1_000)).unwrap_or(1);
        self.retry.saturating_mul(n * n).min(MAX_RETRY_DELAY)
    }
}

/// Builds and stores the report of session `sid` from its recorded events, leaving out
/// every member whose consent is not granted when the report is written: no frames,
/// talk time or nudges of theirs, and no line for them. Waits up to `wait` for everything
/// published for the session to be recorded; past it, the report says it is incomplete.
pub async fn write_report(store: &Store, sid: Uuid, wait: Duration) -> Result<(), WorkerError> {
    let session = store.session(sid).await?;
    let members: Vec<Uuid> = store
        .relationship(session.relationship_id)
        .await?
        .members
        .iter()
        .filter(|m| m.consent == ConsentStatus::Granted)
        .filter_map(|m| m.user_id)
        .collect();
    let missing = await_recorded(store, sid, &members, wait).await?;
    let mut events = store.session_events(sid).await?;
    events.retain(|e| consented(e, &members));
    let history = store
        .recent_reports(session.relationship_id, HISTORY)
        .await?;
    let generated_at = chrono::Utc::now();
    let started_ms = session.created_at.timestamp_millis();
    let ended_ms = session
        .finalized_at
        .unwrap_or(generated_at)
        .timestamp_millis();
    let report = tokio::task::spawn_blocking(move || {
        let input = ReportInput {
            session_id: sid,
            members: &members,
            started_ms,
            ended_ms,
            generated_at,
            history: &history,
        };
        let mut report =
            inside_engine::build_report(&input, events.iter().map(|e| (e.user_id, &e.body)));
        report.complete = missing.is_none();
        report.incomplete_reason = missing;
        report
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

/// Gives a session's report up after the last attempt failed: the session becomes `failed`
/// with `reason`, and `GET …/report` says so instead of "pending" forever.
pub async fn give_up(store: &Store, sid: Uuid, attempts: i64, error: &str) {
    let reason = format!("the report job failed {attempts} time(s); last error: {error}");
    tracing::error!(%sid, attempts, error, "report job given up; the session is failed (re-run: gateway report rerun {sid})");
    metrics::counter!("inside_reports_failed_total").increment(1);
    if let Err(e) = store.fail_session(sid, &reason).await {
        tracing::warn!(%sid, error = %e, "marking the session failed did not work");
    }
}

/// Whether `event` may enter the report: it concerns nobody, or a consenting member.
fn consented(event: &SessionEvent, consenting: &[Uuid]) -> bool {
    let user = match &event.body {
        EventBody::Speaker(s) => s.segment.user_id.or(event.user_id),
        _ => event.user_id,
    };
    user.is_none_or(|u| consenting.contains(&u))
}

/// Runs report jobs from the database queue until cancelled.
#[derive(Clone)]
pub struct ReportJobs {
    store: Store,
    wake: Arc<Notify>,
    config: ReportConfig,
    /// This runner, in the leases it takes (random per process).
    runner: Uuid,
}

impl ReportJobs {
    pub fn new(store: Store, config: ReportConfig) -> Self {
        Self {
            store,
            wake: Arc::new(Notify::new()),
            config,
            runner: Uuid::new_v4(),
        }
    }

    /// Call after enqueueing, so the job starts without waiting for the poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// What [`ReportJobs::wake`] notifies, for a queue that enqueues elsewhere to wake it.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(runner = %self.runner, "report job runner started");
        let poll = self.config.poll;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            match self.store.claim_job(LEASE, self.runner, STALE).await {
                Ok(Some(job)) => self.run_one(job).await,
                Ok(None) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a report job failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(poll.max(Duration::from_secs(1))) => {}
                    }
                }
            }
        }
        tracing::info!("report job runner stopped");
    }

    async fn run_one(&self, job: Job) {
        let span = tracing::info_span!("report_job", sid = %job.session_id, attempt = job.attempts);
        self.run_one_in_span(job).instrument(span).await;
    }

    async fn run_one_in_span(&self, job: Job) {
        let started = std::time::Instant::now();
        if let Ok(Some(reason)) = job_refusal(&self.store, job.session_id).await {
            inside_bus::inbound::reject("jobs", reason, Some(job.session_id));
            metrics::counter!("inside_jobs_total", "outcome" => "refused").increment(1);
            if let Err(e) = self.store.fail_job(job.id, reason, None).await {
                tracing::warn!(error = %e, "recording the job outcome failed");
            }
            return;
        }
        let outcome = self
            .beating(
                &job,
                write_report(&self.store, job.session_id, self.config.wait),
            )
            .await;
        let result = match outcome {
            Ok(()) => {
                tracing::info!(ms = started.elapsed().as_millis() as u64, "report stored");
                metrics::counter!("inside_jobs_total", "outcome" => "done").increment(1);
                self.store.complete_job(job.id).await
            }
            Err(e) => {
                let retry =
                    (job.attempts < MAX_ATTEMPTS).then(|| self.config.retry_delay(job.attempts));
                tracing::warn!(error = %e, will_retry = retry.is_some(), "report job failed");
                metrics::counter!("inside_jobs_total", "outcome" => "failed").increment(1);
                let error = e.to_string();
                if retry.is_none() {
                    give_up(&self.store, job.session_id, job.attempts, &error).await;
                }
                self.store.fail_job(job.id, &error, retry).await
            }
        };
        if let Err(e) = result {
            // The beat stops, the job is claimed again: nothing is lost.
            tracing::warn!(error = %e, "recording the job outcome failed");
        }
    }

    /// Runs `work` while beating on `job`, so no other runner takes it meanwhile.
    async fn beating<T>(&self, job: &Job, work: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(work);
        let mut beat = tokio::time::interval(BEAT);
        beat.tick().await;
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = beat.tick() => {
                    if let Err(e) = self.store.beat_job(job.id, self.runner).await {
                        tracing::warn!(error = %e, "beating on a report job failed");
                    }
                }
            }
        }
    }
}
