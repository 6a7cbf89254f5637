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
/// The `kind` of a row that packs several events of one (session, user) ([`crate::compact`]).
const PACKED: &str = "compact";
/// The `kind` such rows had before: a plain array of event objects.
const PACKED_OBJECTS: &str = "batch";

/// The rows one batch of events becomes: a row per (session, user) holding, in order, what
/// that member did in the batch. One row per event cost the pipeline more than everything else
/// together; packed, a batch of 20 busy sockets is 20 rows whatever the frame rate. A lone event
/// keeps a plain row of its own kind, so rare events (speaker segments) stay easy to query.
struct PackedRow<'a> {
    session_id: Uuid,
    user_id: Option<Uuid>,
    events: Vec<&'a SessionEvent>,
}

fn pack(events: &[SessionEvent]) -> Vec<PackedRow<'_>> {
    let mut rows: Vec<PackedRow<'_>> = Vec::new();
    let mut index: std::collections::HashMap<(Uuid, Option<Uuid>), usize> = Default::default();
    for e in events {
        let at = *index.entry((e.session_id, e.user_id)).or_insert_with(|| {
            rows.push(PackedRow {
                session_id: e.session_id,
                user_id: e.user_id,
                events: Vec::new(),
            });
            rows.len() - 1
        });
        rows[at].events.push(e);
    }
    rows
}

impl PackedRow<'_> {
    fn kind(&self) -> &'static str {
        match self.events.as_slice() {
            [one] => one.body.kind(),
            _ => PACKED,
        }
    }

    fn ts_ms(&self) -> i64 {
        self.events
            .iter()
            .map(|e| e.body.ts_ms())
            .min()
            .unwrap_or(0)
    }

    /// Frames and segment marks the row holds: what the report's barrier counts.
    fn counts(&self) -> (i64, i64) {
        self.events.iter().fold((0, 0), |(f, m), e| match e.body {
            EventBody::Frame(_) => (f + 1, m),
            EventBody::Segment(_) => (f, m + 1),
            _ => (f, m),
        })
    }

    fn payload(&self) -> Result<String> {
        let encoded = match self.events.as_slice() {
            [one] => serde_json::to_string(&one.body),
            many => crate::compact::encode(many.iter().map(|e| &e.body)),
        };
        encoded.map_err(|err| StoreError::Corrupt(err.to_string()))
    }
}

/// What [`Store::append_events`] did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    pub stored: usize,
    /// Events of rows the database refused (an unknown or deleted session), dropped so the
    /// rest of the batch is kept.
    pub dropped: usize,
}

impl Store {
    /// Appends events, packed a row per (session, user), in multi-row INSERTs inside one
    /// transaction. SQLite's parser matches `$N` names pairwise, so a 500-row statement cost
    /// more to prepare than to run (re-prepared for every batch size): on SQLite the chunks are
    /// at most 32 rows, whose few statement shapes stay in the statement cache.
    ///
    /// One refused row (an event for a session that does not exist, or was deleted meanwhile:
    /// the foreign key) would roll back everyone's events of the batch, so a failed batch is
    /// written again a row at a time and only the rows refused again are dropped. An error is
    /// returned only when nothing could be stored.
    pub async fn append_events(&self, events: &[SessionEvent]) -> Result<Appended> {
        if events.is_empty() {
            return Ok(Appended::default());
        }
        let rows = pack(events);
        let batch_error = match self.insert_rows(&rows).await {
            Ok(()) => {
                return Ok(Appended {
                    stored: events.len(),
                    dropped: 0,
                })
            }
            Err(e) => e,
        };
        tracing::warn!(rows = rows.len(), error = %batch_error, "an event batch was refused; writing it a row at a time");
        let mut done = Appended::default();
        let mut last_error = batch_error;
        for row in &rows {
            match self.insert_rows(std::slice::from_ref(row)).await {
                Ok(()) => done.stored += row.events.len(),
                Err(e) => {
                    done.dropped += row.events.len();
                    tracing::warn!(session_id = %row.session_id, events = row.events.len(), error = %e, "session events refused; dropped");
                    last_error = e;
                }
            }
        }
        if done.stored == 0 {
            return Err(last_error);
        }
        Ok(done)
    }

    /// The rows in one transaction.
    async fn insert_rows(&self, rows: &[PackedRow<'_>]) -> Result<()> {
        let per_statement = match self.backend() {
            Backend::Sqlite => SQLITE_BATCH_ROWS,
            Backend::Postgres => BATCH_ROWS,
        };
        let mut tx = self.pool().begin().await?;
        for chunk in rows.chunks(per_statement) {
            let sql = insert_sql(chunk.len());
            let mut q = sqlx::query(&sql);
            for row in chunk {
                let (frames, segments) = row.counts();
                q = q
                    .bind(row.session_id.to_string())
                    .bind(row.user_id.map(|u| u.to_string()))
                    .bind(row.kind())
                    .bind(row.ts_ms())
                    .bind(row.payload()?)
                    .bind(frames)
                    .bind(segments);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every event of a session in the order it was recorded.
    pub async fn session_events(&self, sid: Uuid) -> Result<Vec<SessionEvent>> {
        let rows = sqlx::query(
            "SELECT user_id, kind, payload FROM session_events WHERE session_id = $1 ORDER BY id",
        )
        .bind(sid.to_string())
        .fetch_all(self.pool())
        .await?;
        let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let user: Option<String> = row.try_get("user_id")?;
            let user_id = user.as_deref().map(parse_uuid).transpose()?;
            let kind: &str = row.try_get("kind")?;
            let payload: &str = row.try_get("payload")?;
            let bodies: Vec<EventBody> = match kind {
                PACKED => crate::compact::decode(payload).map_err(corrupt)?,
                PACKED_OBJECTS => serde_json::from_str(payload).map_err(corrupt)?,
                _ => vec![serde_json::from_str(payload).map_err(corrupt)?],
            };
            out.extend(bodies.into_iter().map(|body| SessionEvent {
                session_id: sid,
                user_id,
                body,
            }));
        }
        Ok(out)
    }
}

/// Columns bound per row.
const COLUMNS: usize = 7;

/// `INSERT ... VALUES ($1,..,$7),($8,..)` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO session_events (session_id, user_id, kind, ts_ms, payload, frames, segments) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        let names: Vec<String> = (1..=COLUMNS)
            .map(|c| format!("${}", i * COLUMNS + c))
            .collect();
        sql.push('(');
        sql.push_str(&names.join(","));
        sql.push(')');
    }
    sql
}
