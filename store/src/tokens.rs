//! Refresh-token families. Tokens are stored as SHA-256 hashes; each use
//! rotates the token, and presenting an already-rotated token revokes the
//! whole family, because it means the token was stolen or replayed.

use sqlx::Row;
use uuid::Uuid;

use crate::time::parse_uuid;
use crate::{now_micros, Result, Store};

#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live: it is now used; issue the next one in `family`.
    Rotated { user_id: Uuid, family: Uuid },
    /// The token had been rotated already: the family is now revoked.
    Reused,
    /// Unknown, expired, or its family revoked.
    Invalid,
}

impl Store {
    /// Starts a new family (a login or signup) and stores its first token.
    pub async fn start_token_family(
        &self,
        user_id: Uuid,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<Uuid> {
        let family = Uuid::now_v7();
        let now = now_micros();
        let mut tx = self.pool().begin().await?;
        sqlx::query("INSERT INTO token_families (id, user_id, created_at) VALUES ($1, $2, $3)")
            .bind(family.to_string())
            .bind(user_id.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        insert_token(&mut tx, family, token_hash, expires_at, now).await?;
        tx.commit().await?;
        Ok(family)
    }

    /// Marks `token_hash` used and stores `next_hash` in the same family, atomically.
    pub async fn rotate_refresh_token(
        &self,
        token_hash: &str,
        next_hash: &str,
        next_expires_at: i64,
    ) -> Result<Rotation> {
        let now = now_micros();
        let mut tx = self.pool().begin().await?;
        // Only one concurrent presenter can flip used_at from NULL.
        let claimed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL \
             RETURNING family_id, expires_at",
        )
        .bind(now)
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = claimed else {
            let known = sqlx::query("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&mut *tx)
                .await?;
            return match known {
                Some(row) => {
                    let family: String = row.try_get("family_id")?;
                    revoke_family(&mut tx, &family, now).await?;
                    tx.commit().await?;
                    Ok(Rotation::Reused)
                }
                None => Ok(Rotation::Invalid),
            };
        };
        let family: String = row.try_get("family_id")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let fam = sqlx::query("SELECT user_id, revoked_at FROM token_families WHERE id = $1")
            .bind(&family)
            .fetch_one(&mut *tx)
            .await?;
        let revoked: Option<i64> = fam.try_get("revoked_at")?;
        if revoked.is_some() || expires_at <= now {
            tx.commit().await?;
            return Ok(Rotation::Invalid);
        }
        let user_id = parse_uuid(fam.try_get::<&str, _>("user_id")?)?;
        let family = parse_uuid(&family)?;
        insert_token(&mut tx, family, next_hash, next_expires_at, now).await?;
        tx.commit().await?;
        Ok(Rotation::Rotated { user_id, family })
    }

    /// Revokes the family `token_hash` belongs to; false when the token is unknown.
    pub async fn revoke_family_of(&self, token_hash: &str) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(false) };
        let family: String = row.try_get("family_id")?;
        revoke_family(&mut tx, &family, now_micros()).await?;
        tx.commit().await?;
        Ok(true)
    }
}

async fn insert_token(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    family: Uuid,
    token_hash: &str,
    expires_at: i64,
    now: i64,
) -> Result<()> {
    sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, expires_at, created_at) VALUES ($1, $2, $3, $4)")
        .bind(token_hash)
        .bind(family.to_string())
        .bind(expires_at)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn revoke_family(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    family: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE token_families SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(family)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
