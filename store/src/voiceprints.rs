//! Voiceprints: the ECAPA-TDNN embedding of a user's voice and a quality
//! figure. The audio itself is never stored.

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use crate::time::{from_micros, parse_uuid};
use crate::{now_micros, Result, Store, StoreError};

impl Store {
    pub async fn put_voiceprint(
        &self,
        user: Uuid,
        embedding: &[f32],
        seconds: f64,
        quality: f64,
    ) -> Result<()> {
        let bytes: Vec<u8> = embedding.iter().flat_map(|f| f.to_le_bytes()).collect();
        sqlx::query(
            "INSERT INTO voiceprints (user_id, embedding, seconds, quality, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id) DO UPDATE SET embedding = excluded.embedding, seconds = excluded.seconds, \
             quality = excluded.quality, updated_at = excluded.updated_at",
        )
        .bind(user.to_string())
        .bind(bytes)
        .bind(seconds)
        .bind(quality)
        .bind(now_micros())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// When the user's voiceprint was last enrolled, if it is.
    pub async fn voiceprint_updated_at(&self, user: Uuid) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query("SELECT updated_at FROM voiceprints WHERE user_id = $1")
            .bind(user.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| from_micros(r.try_get("updated_at")?))
            .transpose()
    }

    pub async fn delete_voiceprint(&self, user: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM voiceprints WHERE user_id = $1")
            .bind(user.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Embeddings of the enrolled members of a relationship.
    pub async fn member_voiceprints(&self, rid: Uuid) -> Result<Vec<(Uuid, Vec<f32>)>> {
        let rows = sqlx::query(
            "SELECT v.user_id, v.embedding FROM voiceprints v \
             JOIN relationship_members m ON m.user_id = v.user_id WHERE m.relationship_id = $1",
        )
        .bind(rid.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let bytes: Vec<u8> = r.try_get("embedding")?;
                if !bytes.len().is_multiple_of(4) {
                    return Err(StoreError::Corrupt("embedding length".into()));
                }
                let emb = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Ok((parse_uuid(r.try_get::<&str, _>("user_id")?)?, emb))
            })
            .collect()
    }
}
