//! Accounts. Signing up also attaches the memberships a partner was invited to
//! by email before they had an account; deleting one erases the account and
//! every relationship it was in.

use inside_schemas::User;
use sqlx::Row;
use uuid::Uuid;

use crate::time::{from_micros, parse_uuid};
use crate::{now_micros, Result, Store, StoreError};

/// A user together with the bcrypt hash, for login.
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

fn user_from(row: &sqlx::any::AnyRow) -> Result<User> {
    Ok(User {
        id: parse_uuid(row.try_get::<&str, _>("id")?)?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        created_at: from_micros(row.try_get("created_at")?)?,
    })
}

impl Store {
    pub async fn create_user(&self, email: &str, name: &str, password_hash: &str) -> Result<User> {
        let id = Uuid::now_v7();
        let now = now_micros();
        let mut tx = self.pool().begin().await?;
        sqlx::query("INSERT INTO users (id, email, name, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id.to_string())
            .bind(email)
            .bind(name)
            .bind(password_hash)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::unique(e, "email already registered"))?;
        sqlx::query(
            "UPDATE relationship_members SET user_id = $1 WHERE email = $2 AND user_id IS NULL",
        )
        .bind(id.to_string())
        .bind(email)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(User {
            id,
            email: email.to_string(),
            name: name.to_string(),
            created_at: from_micros(now)?,
        })
    }

    pub async fn user(&self, id: Uuid) -> Result<User> {
        let row = sqlx::query("SELECT id, email, name, created_at FROM users WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        user_from(&row)
    }

    /// Whether the account still exists (cheap: the primary key only).
    pub async fn user_exists(&self, id: Uuid) -> Result<bool> {
        let row = sqlx::query("SELECT 1 AS one FROM users WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Erases account `id` in one transaction: the user, their voiceprint and
    /// refresh tokens (cascades), and every relationship they were a member of
    /// (or invited to by their address), which ends for every member: its
    /// memberships, invitations, pokes, sessions with their events and
    /// reports (cascades), and the sessions' pending report jobs. Returns the
    /// ended relationships with the account ids of their members, the deleted
    /// one included, so the caller can close their sockets. `NotFound` when
    /// the account is already gone.
    pub async fn delete_user(&self, id: Uuid) -> Result<Vec<(Uuid, Vec<Uuid>)>> {
        let uid = id.to_string();
        let mut tx = self.pool().begin().await?;
        let email: String = sqlx::query("SELECT email FROM users WHERE id = $1")
            .bind(&uid)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?
            .try_get("email")?;
        const THEIRS: &str = "SELECT relationship_id FROM relationship_members \
             WHERE user_id = $1 OR (user_id IS NULL AND email = $2)";
        let members = sqlx::query(&format!(
            "SELECT relationship_id, user_id FROM relationship_members \
             WHERE relationship_id IN ({THEIRS}) ORDER BY relationship_id, position"
        ))
        .bind(&uid)
        .bind(&email)
        .fetch_all(&mut *tx)
        .await?;
        let mut ended: Vec<(Uuid, Vec<Uuid>)> = Vec::new();
        for row in &members {
            let rid = parse_uuid(row.try_get::<&str, _>("relationship_id")?)?;
            let member: Option<String> = row.try_get("user_id")?;
            if ended.last().is_none_or(|(last, _)| *last != rid) {
                ended.push((rid, Vec::new()));
            }
            if let (Some(m), Some((_, ids))) = (member, ended.last_mut()) {
                ids.push(parse_uuid(&m)?);
            }
        }
        // Jobs name their session without a foreign key: removed by hand.
        sqlx::query(&format!(
            "DELETE FROM jobs WHERE session_id IN \
             (SELECT id FROM sessions WHERE relationship_id IN ({THEIRS}))"
        ))
        .bind(&uid)
        .bind(&email)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!("DELETE FROM relationships WHERE id IN ({THEIRS})"))
            .bind(&uid)
            .bind(&email)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(&uid)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ended)
    }

    pub async fn credentials(&self, email: &str) -> Result<Option<Credentials>> {
        let row = sqlx::query(
            "SELECT id, email, name, created_at, password_hash FROM users WHERE email = $1",
        )
        .bind(email)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(Credentials {
                user: user_from(&row)?,
                password_hash: row.try_get("password_hash")?,
            })
        })
        .transpose()
    }
}
