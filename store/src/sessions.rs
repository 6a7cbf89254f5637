//! Coaching sessions and the newest-first history.

use inside_schemas::{HistoryItem, Session, SessionStatus};
use sqlx::Row;
use uuid::Uuid;

use crate::time::{enum_from_db, enum_to_db, from_micros, parse_uuid};
use crate::{encode_cursor, now_micros, Result, Store, StoreError};

impl Store {
    pub async fn create_session(&self, rid: Uuid, creator: Uuid) -> Result<Session> {
        let id = Uuid::now_v7();
        let now = now_micros();
        sqlx::query("INSERT INTO sessions (id, relationship_id, status, created_by, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id.to_string())
            .bind(rid.to_string())
            .bind(enum_to_db(&SessionStatus::Active))
            .bind(creator.to_string())
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(Session {
            id,
            relationship_id: rid,
            status: SessionStatus::Active,
            created_at: from_micros(now)?,
            finalized_at: None,
        })
    }

    pub async fn session(&self, id: Uuid) -> Result<Session> {
        let row = sqlx::query("SELECT id, relationship_id, status, created_at, finalized_at FROM sessions WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        session_from(&row)
    }

    /// Ids of the relationship's sessions still active (sockets may be open on them).
    pub async fn active_sessions(&self, rid: Uuid) -> Result<Vec<Uuid>> {
        sqlx::query("SELECT id FROM sessions WHERE relationship_id = $1 AND status = $2")
            .bind(rid.to_string())
            .bind(enum_to_db(&SessionStatus::Active))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| parse_uuid(r.try_get::<&str, _>("id")?))
            .collect()
    }

    /// active → finalizing; `Conflict` when it was finalized already.
    pub async fn begin_finalize(&self, id: Uuid) -> Result<Session> {
        let done = sqlx::query(
            "UPDATE sessions SET status = $1, finalized_at = $2 WHERE id = $3 AND status = $4",
        )
        .bind(enum_to_db(&SessionStatus::Finalizing))
        .bind(now_micros())
        .bind(id.to_string())
        .bind(enum_to_db(&SessionStatus::Active))
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            self.session(id).await?;
            return Err(StoreError::Conflict("session already finalized".into()));
        }
        self.session(id).await
    }

    /// One page of the sessions of every relationship `user` belongs to, newest first.
    pub async fn history(
        &self,
        user: Uuid,
        limit: u32,
        before: Option<(i64, String)>,
    ) -> Result<(Vec<HistoryItem>, Option<String>)> {
        let (t, id) = before.unwrap_or((i64::MAX, "~".to_string()));
        let rows = sqlx::query(
            "SELECT s.id, s.relationship_id, s.status, s.created_at, s.finalized_at, \
                    CASE WHEN r.session_id IS NULL THEN 0 ELSE 1 END AS report_ready \
             FROM sessions s \
             JOIN relationship_members m ON m.relationship_id = s.relationship_id AND m.user_id = $1 \
             LEFT JOIN reports r ON r.session_id = s.id \
             WHERE s.created_at < $2 OR (s.created_at = $2 AND s.id < $3) \
             ORDER BY s.created_at DESC, s.id DESC LIMIT $4",
        )
        .bind(user.to_string())
        .bind(t)
        .bind(id)
        .bind(i64::from(limit) + 1)
        .fetch_all(self.pool())
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            let s = session_from(row)?;
            let ready: i64 = row.try_get("report_ready")?;
            keys.push(row.try_get::<i64, _>("created_at")?);
            items.push(HistoryItem {
                id: s.id,
                relationship_id: s.relationship_id,
                status: s.status,
                created_at: s.created_at,
                finalized_at: s.finalized_at,
                report_ready: ready == 1,
            });
        }
        Ok(page(items, keys, limit, |i| i.id))
    }
}

/// Cuts `limit + 1` rows to `limit` and makes the cursor of the last one kept.
pub(crate) fn page<T>(
    mut items: Vec<T>,
    keys: Vec<i64>,
    limit: u32,
    id: impl Fn(&T) -> Uuid,
) -> (Vec<T>, Option<String>) {
    let limit = (limit as usize).max(1);
    if items.len() <= limit {
        return (items, None);
    }
    items.truncate(limit);
    let cursor = items
        .last()
        .zip(keys.get(limit - 1))
        .map(|(last, key)| encode_cursor(*key, &id(last)));
    (items, cursor)
}

fn session_from(row: &sqlx::any::AnyRow) -> Result<Session> {
    let finalized: Option<i64> = row.try_get("finalized_at")?;
    Ok(Session {
        id: parse_uuid(row.try_get::<&str, _>("id")?)?,
        relationship_id: parse_uuid(row.try_get::<&str, _>("relationship_id")?)?,
        status: enum_from_db(row.try_get::<&str, _>("status")?)?,
        created_at: from_micros(row.try_get("created_at")?)?,
        finalized_at: finalized.map(from_micros).transpose()?,
    })
}

impl Store {
    /// finalizing → failed, with why (the report job gave up after its retries); `false` when
    /// the session was not finalizing (a report was stored meanwhile, or it is gone).
    pub async fn fail_session(&self, id: Uuid, reason: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET status = $1, failure_reason = $2 WHERE id = $3 AND status = $4",
        )
        .bind(enum_to_db(&SessionStatus::Failed))
        .bind(reason)
        .bind(id.to_string())
        .bind(enum_to_db(&SessionStatus::Finalizing))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Why the session's report failed, when it did.
    pub async fn session_failure(&self, id: Uuid) -> Result<Option<String>> {
        let row = sqlx::query("SELECT failure_reason FROM sessions WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(row.try_get("failure_reason")?)
    }

    /// Back to finalizing for another report job (an operator's re-run): from failed, from
    /// finalizing (a job that was lost) or from completed (to write the report again).
    /// `Conflict` for a session still active.
    pub async fn reopen_finalize(&self, id: Uuid) -> Result<Session> {
        let done = sqlx::query(
            "UPDATE sessions SET status = $1, failure_reason = NULL WHERE id = $2 AND status <> $3",
        )
        .bind(enum_to_db(&SessionStatus::Finalizing))
        .bind(id.to_string())
        .bind(enum_to_db(&SessionStatus::Active))
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            self.session(id).await?;
            return Err(StoreError::Conflict(
                "the session is still active: finalize it instead".into(),
            ));
        }
        self.session(id).await
    }

    /// finalizing → completed, once the report is stored.
    pub async fn complete_session(&self, id: Uuid) -> Result<()> {
        sqlx::query("UPDATE sessions SET status = $1 WHERE id = $2")
            .bind(enum_to_db(&SessionStatus::Completed))
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
