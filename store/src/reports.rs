//! Stored reports. Storing is an idempotent upsert, so a redelivered job
//! rewrites the same row instead of adding a second report.

use inside_schemas::Report;
use sqlx::Row;
use uuid::Uuid;

use crate::{Result, Store, StoreError};

impl Store {
    /// Stores the report and marks its session completed, in one transaction.
    pub async fn store_report(&self, report: &Report) -> Result<()> {
        let body = serde_json::to_string(report).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sid = report.session_id.to_string();
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO reports (session_id, body, generated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id) DO UPDATE SET body = excluded.body, generated_at = excluded.generated_at",
        )
        .bind(&sid)
        .bind(body)
        .bind(report.generated_at.timestamp_micros())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE sessions SET status = 'completed' WHERE id = $1")
            .bind(&sid)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn report(&self, sid: Uuid) -> Result<Option<Report>> {
        let row = sqlx::query("SELECT body FROM reports WHERE session_id = $1")
            .bind(sid.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| parse(r.try_get("body")?)).transpose()
    }

    /// The relationship's latest reports, newest first.
    pub async fn recent_reports(&self, rid: Uuid, limit: u32) -> Result<Vec<Report>> {
        let rows = sqlx::query(
            "SELECT r.body FROM reports r JOIN sessions s ON s.id = r.session_id \
             WHERE s.relationship_id = $1 ORDER BY r.generated_at DESC LIMIT $2",
        )
        .bind(rid.to_string())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| parse(r.try_get("body")?)).collect()
    }
}

fn parse(body: &str) -> Result<Report> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(e.to_string()))
}
