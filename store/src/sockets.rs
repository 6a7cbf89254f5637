//! What each gateway published per WebSocket: a row from the socket's join to its end with the
//! frames and audio segments the gateway put on the bus for it. With the recorded counts of
//! `session_events`, the report job knows when everything published for a session is in.

use std::collections::HashMap;

use sqlx::Row;
use uuid::Uuid;

use crate::time::parse_uuid;
use crate::{now_micros, Result, Store};

/// One member's frames and audio segments (published by the gateways, or recorded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub frames: u64,
    pub segments: u64,
}

/// A session's sockets as the report job sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Per member, over the sockets that ended.
    pub per_member: HashMap<Uuid, Counts>,
    /// Sockets not ended yet, per gateway.
    pub open: HashMap<Uuid, u64>,
}

impl Store {
    /// Records a socket that joined: nothing is published for it before this row exists.
    pub async fn open_socket(&self, id: Uuid, sid: Uuid, uid: Uuid, gateway: Uuid) -> Result<()> {
        sqlx::query(
            "INSERT INTO session_sockets (id, session_id, user_id, gateway_id, opened_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_string())
        .bind(sid.to_string())
        .bind(uid.to_string())
        .bind(gateway.to_string())
        .bind(now_micros())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a socket's end with what was published for it.
    pub async fn close_socket(&self, id: Uuid, published: Counts) -> Result<()> {
        sqlx::query(
            "UPDATE session_sockets SET frames = $1, segments = $2, closed_at = $3 WHERE id = $4",
        )
        .bind(i64::try_from(published.frames).unwrap_or(i64::MAX))
        .bind(i64::try_from(published.segments).unwrap_or(i64::MAX))
        .bind(now_micros())
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// What the gateways published for session `sid`, and which sockets are still open.
    pub async fn published_counts(&self, sid: Uuid) -> Result<Published> {
        let rows = sqlx::query(
            "SELECT user_id, gateway_id, frames, segments, closed_at FROM session_sockets \
             WHERE session_id = $1",
        )
        .bind(sid.to_string())
        .fetch_all(self.pool())
        .await?;
        let mut out = Published::default();
        for row in &rows {
            if row.try_get::<Option<i64>, _>("closed_at")?.is_none() {
                let gateway = parse_uuid(row.try_get::<&str, _>("gateway_id")?)?;
                *out.open.entry(gateway).or_default() += 1;
                continue;
            }
            let user = parse_uuid(row.try_get::<&str, _>("user_id")?)?;
            let c = out.per_member.entry(user).or_default();
            c.frames += count(row.try_get("frames")?);
            c.segments += count(row.try_get("segments")?);
        }
        Ok(out)
    }

    /// Frames and segment marks recorded for session `sid`, per member.
    pub async fn recorded_counts(&self, sid: Uuid) -> Result<HashMap<Uuid, Counts>> {
        let rows = sqlx::query(
            "SELECT user_id, CAST(SUM(frames) AS BIGINT) AS frames, \
                    CAST(SUM(segments) AS BIGINT) AS segments \
             FROM session_events WHERE session_id = $1 AND user_id IS NOT NULL GROUP BY user_id",
        )
        .bind(sid.to_string())
        .fetch_all(self.pool())
        .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in &rows {
            let user = parse_uuid(row.try_get::<&str, _>("user_id")?)?;
            out.insert(
                user,
                Counts {
                    frames: count(row.try_get::<Option<i64>, _>("frames")?.unwrap_or(0)),
                    segments: count(row.try_get::<Option<i64>, _>("segments")?.unwrap_or(0)),
                },
            );
        }
        Ok(out)
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
