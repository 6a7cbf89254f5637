//! Pokes between members of a relationship.

use inside_schemas::{Poke, PokeKind};
use sqlx::Row;
use uuid::Uuid;

use crate::sessions::page;
use crate::time::{enum_from_db, enum_to_db, from_micros, parse_uuid};
use crate::{now_micros, Result, Store};

impl Store {
    pub async fn create_poke(
        &self,
        rid: Uuid,
        from: Uuid,
        kind: PokeKind,
        message: Option<&str>,
    ) -> Result<Poke> {
        let id = Uuid::now_v7();
        let now = now_micros();
        sqlx::query("INSERT INTO pokes (id, relationship_id, from_user_id, kind, message, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id.to_string())
            .bind(rid.to_string())
            .bind(from.to_string())
            .bind(enum_to_db(&kind))
            .bind(message.map(str::to_string))
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(Poke {
            id,
            relationship_id: rid,
            from_user_id: from,
            kind,
            message: message.map(str::to_string),
            created_at: from_micros(now)?,
        })
    }

    /// One page of a relationship's pokes, newest first.
    pub async fn pokes(
        &self,
        rid: Uuid,
        limit: u32,
        before: Option<(i64, String)>,
    ) -> Result<(Vec<Poke>, Option<String>)> {
        let (t, id) = before.unwrap_or((i64::MAX, "~".to_string()));
        let rows = sqlx::query(
            "SELECT id, relationship_id, from_user_id, kind, message, created_at FROM pokes \
             WHERE relationship_id = $1 AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
             ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(rid.to_string())
        .bind(t)
        .bind(id)
        .bind(i64::from(limit) + 1)
        .fetch_all(self.pool())
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            let created: i64 = row.try_get("created_at")?;
            keys.push(created);
            items.push(Poke {
                id: parse_uuid(row.try_get::<&str, _>("id")?)?,
                relationship_id: parse_uuid(row.try_get::<&str, _>("relationship_id")?)?,
                from_user_id: parse_uuid(row.try_get::<&str, _>("from_user_id")?)?,
                kind: enum_from_db(row.try_get::<&str, _>("kind")?)?,
                message: row.try_get("message")?,
                created_at: from_micros(created)?,
            });
        }
        Ok(page(items, keys, limit, |p| p.id))
    }
}
