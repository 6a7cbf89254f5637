//! The durable job queue of the embedded default: report jobs live in the
//! database, so a job pending when the process stops runs after the restart.
//! A claimed job carries a lease and its runner's id, and the runner beats on it while it
//! works: a job whose runner stopped beating (the process died) is claimed again once the beat
//! is stale, within seconds, and any job once its lease runs out.

use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use crate::time::parse_uuid;
use crate::{now_micros, Result, Store};

pub const REPORT: &str = "report";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: Uuid,
    pub kind: String,
    pub session_id: Uuid,
    pub attempts: i64,
}

impl Store {
    /// Enqueues a job; a second one for the same (kind, session) is ignored.
    pub async fn enqueue_job(&self, kind: &str, sid: Uuid) -> Result<()> {
        let now = now_micros();
        sqlx::query(
            "INSERT INTO jobs (id, kind, session_id, status, attempts, run_after, created_at) \
             VALUES ($1, $2, $3, 'pending', 0, $4, $4) ON CONFLICT (kind, session_id) DO NOTHING",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(kind)
        .bind(sid.to_string())
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Puts the job of (`kind`, `sid`) back to run now from its first attempt, whatever became
    /// of it (an operator's re-run of a failed report).
    pub async fn requeue_job(&self, kind: &str, sid: Uuid) -> Result<()> {
        let now = now_micros();
        sqlx::query(
            "INSERT INTO jobs (id, kind, session_id, status, attempts, run_after, created_at) \
             VALUES ($1, $2, $3, 'pending', 0, $4, $4) ON CONFLICT (kind, session_id) DO UPDATE \
             SET status = 'pending', attempts = 0, run_after = $4, locked_until = NULL, \
                 last_error = NULL, runner_id = NULL, heartbeat_at = NULL",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(kind)
        .bind(sid.to_string())
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Claims the oldest runnable job for `lease` as `runner`: a pending one, or a running one
    /// whose lease ran out or whose runner has not beaten for `stale` (gone).
    pub async fn claim_job(
        &self,
        lease: Duration,
        runner: Uuid,
        stale: Duration,
    ) -> Result<Option<Job>> {
        let now = now_micros();
        let until = now.saturating_add(i64::try_from(lease.as_micros()).unwrap_or(i64::MAX / 2));
        let stale_before =
            now.saturating_sub(i64::try_from(stale.as_micros()).unwrap_or(i64::MAX / 2));
        // The outer status test makes a racing claimer of the same row update nothing.
        let row = sqlx::query(
            "UPDATE jobs SET status = 'running', locked_until = $1, attempts = attempts + 1, \
                 runner_id = $3, heartbeat_at = $2 \
             WHERE id = (SELECT id FROM jobs WHERE run_after <= $2 AND (status = 'pending' OR \
                 (status = 'running' AND (locked_until < $2 OR heartbeat_at IS NULL OR heartbeat_at < $4))) \
                 ORDER BY run_after, created_at LIMIT 1) \
             AND (status = 'pending' OR (status = 'running' AND \
                 (locked_until < $2 OR heartbeat_at IS NULL OR heartbeat_at < $4))) \
             RETURNING id, kind, session_id, attempts",
        )
        .bind(until)
        .bind(now)
        .bind(runner.to_string())
        .bind(stale_before)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(Job {
                id: parse_uuid(r.try_get::<&str, _>("id")?)?,
                kind: r.try_get("kind")?,
                session_id: parse_uuid(r.try_get::<&str, _>("session_id")?)?,
                attempts: r.try_get("attempts")?,
            })
        })
        .transpose()
    }

    /// `runner`'s sign of life on the job it holds.
    pub async fn beat_job(&self, id: Uuid, runner: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET heartbeat_at = $1 WHERE id = $2 AND runner_id = $3 AND status = 'running'",
        )
        .bind(now_micros())
        .bind(id.to_string())
        .bind(runner.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn complete_job(&self, id: Uuid) -> Result<()> {
        sqlx::query("UPDATE jobs SET status = 'done', locked_until = NULL WHERE id = $1")
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Puts a failed job back to run after `retry_in`, or gives up for good.
    pub async fn fail_job(&self, id: Uuid, error: &str, retry_in: Option<Duration>) -> Result<()> {
        let (status, run_after) = match retry_in {
            Some(d) => (
                "pending",
                now_micros() + i64::try_from(d.as_micros()).unwrap_or(0),
            ),
            None => ("failed", now_micros()),
        };
        sqlx::query("UPDATE jobs SET status = $1, run_after = $2, locked_until = NULL, last_error = $3 WHERE id = $4")
            .bind(status)
            .bind(run_after)
            .bind(error)
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Jobs not yet done (pending or running), for health and metrics.
    pub async fn open_jobs(&self) -> Result<i64> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE status IN ('pending', 'running')")
                .fetch_one(self.pool())
                .await?;
        Ok(row.try_get("n")?)
    }
}
