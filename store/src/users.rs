//! Accounts. Signing up also attaches the memberships a partner was invited to
//! by email before they had an account.

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
