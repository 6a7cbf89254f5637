//! What happened in a session (frames, nudges, speaker segments), recorded
//! for the report. Written in batches: one INSERT per frame would cap the
//! realtime path at the database's commit rate.

pub use inside_schemas::EventBody;
use sqlx::Row;
use uuid::Uuid;

use crate::time::parse_uuid;
use crate::{Backend, Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct SessionEvent {
    pub session_id: Uuid,
    /// The member it concerns; `None` for an unattributed speaker segment.
    pub user_id: Option<Uuid>,
    pub body: EventBody,
}

/// Rows per INSERT statement on PostgreSQL.
const BATCH_ROWS: usize = 500;
/// Rows per INSERT statement on SQLite.
const SQLITE_BATCH_ROWS: usize = 32;

impl Store {
    /// Appends events in multi-row INSERTs inside one transaction. SQLite's parser matches
    /// `$N` names pairwise, so a 500-row statement cost more to prepare than to run (a fifth of
    /// the gateway's CPU at 2,000 frames/s, re-prepared for every batch size): on SQLite the
    /// chunks are at most 32 rows, whose few statement shapes stay in the statement cache.
    pub async fn append_events(&self, events: &[SessionEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let rows = match self.backend() {
            Backend::Sqlite => SQLITE_BATCH_ROWS,
            Backend::Postgres => BATCH_ROWS,
        };
        let mut tx = self.pool().begin().await?;
        for chunk in events.chunks(rows) {
            let sql = insert_sql(chunk.len());
            let mut q = sqlx::query(&sql);
            for e in chunk {
                q = q
                    .bind(e.session_id.to_string())
                    .bind(e.user_id.map(|u| u.to_string()))
                    .bind(e.body.kind())
                    .bind(e.body.ts_ms())
                    .bind(payload(e)?);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every event of a session in the order it was recorded.
    pub async fn session_events(&self, sid: Uuid) -> Result<Vec<SessionEvent>> {
        let rows = sqlx::query(
            "SELECT user_id, payload FROM session_events WHERE session_id = $1 ORDER BY id",
        )
        .bind(sid.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let user: Option<String> = row.try_get("user_id")?;
                let payload: &str = row.try_get("payload")?;
                Ok(SessionEvent {
                    session_id: sid,
                    user_id: user.as_deref().map(parse_uuid).transpose()?,
                    body: serde_json::from_str(payload)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                })
            })
            .collect()
    }
}

fn payload(e: &SessionEvent) -> Result<String> {
    serde_json::to_string(&e.body).map_err(|err| StoreError::Corrupt(err.to_string()))
}

/// `INSERT ... VALUES ($1,..,$5),($6,..)` for `rows` events.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO session_events (session_id, user_id, kind, ts_ms, payload) VALUES ",
    );
    for i in 0..rows {
        let b = i * 5;
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${},${},${},${},${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5
        ));
    }
    sql
}
