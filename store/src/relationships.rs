//! Relationships, their members and consent, and invitations. A member is
//! stored by email so that an invited partner without an account can be
//! attached when they sign up.

use std::collections::HashMap;

use inside_schemas::{ConsentStatus, Member, Relationship, RelationshipKind};
use sqlx::Row;
use uuid::Uuid;

use crate::time::{enum_from_db, enum_to_db, from_micros, parse_uuid};
use crate::{now_micros, Result, Store, StoreError};

const MEMBERS: &str =
    "SELECT m.relationship_id, m.email, m.user_id, m.consent, m.research_consent, u.name \
     FROM relationship_members m LEFT JOIN users u ON u.id = m.user_id";

impl Store {
    /// Creates a relationship of `creator` with `partner_email` and records the invitation.
    pub async fn create_relationship(
        &self,
        creator: Uuid,
        creator_email: &str,
        partner_email: &str,
        kind: RelationshipKind,
    ) -> Result<Relationship> {
        let id = Uuid::now_v7();
        let now = now_micros();
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO relationships (id, kind, created_by, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.to_string())
        .bind(enum_to_db(&kind))
        .bind(creator.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let partner: Option<String> = sqlx::query("SELECT id FROM users WHERE email = $1")
            .bind(partner_email)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("id"))
            .transpose()?;
        for (pos, email, user) in [
            (0_i64, creator_email, Some(creator.to_string())),
            (1, partner_email, partner),
        ] {
            sqlx::query(
                "INSERT INTO relationship_members (relationship_id, email, user_id, consent, position) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id.to_string())
            .bind(email)
            .bind(user)
            .bind(enum_to_db(&ConsentStatus::Pending))
            .bind(pos)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("INSERT INTO invitations (id, relationship_id, email, invited_by, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(Uuid::now_v7().to_string())
            .bind(id.to_string())
            .bind(partner_email)
            .bind(creator.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.relationship(id).await
    }

    pub async fn relationship(&self, id: Uuid) -> Result<Relationship> {
        let row = sqlx::query("SELECT id, kind, created_at FROM relationships WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        let members = sqlx::query(&format!(
            "{MEMBERS} WHERE m.relationship_id = $1 ORDER BY m.position"
        ))
        .bind(id.to_string())
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(member_from)
        .collect::<Result<Vec<_>>>()?;
        relationship_from(&row, members.into_iter().map(|(_, m)| m).collect())
    }

    /// Relationships `user` is a member of, newest first.
    pub async fn relationships_of(&self, user: Uuid) -> Result<Vec<Relationship>> {
        let rows = sqlx::query(
            "SELECT r.id, r.kind, r.created_at FROM relationships r \
             JOIN relationship_members m ON m.relationship_id = r.id \
             WHERE m.user_id = $1 ORDER BY r.created_at DESC, r.id DESC",
        )
        .bind(user.to_string())
        .fetch_all(self.pool())
        .await?;
        let member_rows = sqlx::query(&format!(
            "{MEMBERS} WHERE m.relationship_id IN \
             (SELECT relationship_id FROM relationship_members WHERE user_id = $1) \
             ORDER BY m.relationship_id, m.position"
        ))
        .bind(user.to_string())
        .fetch_all(self.pool())
        .await?;
        let mut members: HashMap<Uuid, Vec<Member>> = HashMap::new();
        for row in &member_rows {
            let (rid, m) = member_from(row)?;
            members.entry(rid).or_default().push(m);
        }
        rows.iter()
            .map(|row| {
                let id = parse_uuid(row.try_get::<&str, _>("id")?)?;
                relationship_from(row, members.remove(&id).unwrap_or_default())
            })
            .collect()
    }

    /// Whether `user` is a member of relationship `rid`.
    pub async fn is_member(&self, rid: Uuid, user: Uuid) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 AS one FROM relationship_members WHERE relationship_id = $1 AND user_id = $2",
        )
        .bind(rid.to_string())
        .bind(user.to_string())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    /// Account ids of the members who have signed up.
    pub async fn member_ids(&self, rid: Uuid) -> Result<Vec<Uuid>> {
        sqlx::query("SELECT user_id FROM relationship_members WHERE relationship_id = $1 AND user_id IS NOT NULL ORDER BY position")
            .bind(rid.to_string())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| parse_uuid(r.try_get::<&str, _>("user_id")?))
            .collect()
    }

    /// Sets `user`'s consent in relationship `rid`; `NotFound` when they are not a member.
    pub async fn set_consent(
        &self,
        rid: Uuid,
        user: Uuid,
        consent: ConsentStatus,
    ) -> Result<Relationship> {
        self.set_member_choice(rid, user, "consent", consent).await
    }

    /// Sets `user`'s research use of relationship `rid`; `NotFound` when they are not a member.
    pub async fn set_research_consent(
        &self,
        rid: Uuid,
        user: Uuid,
        research: ConsentStatus,
    ) -> Result<Relationship> {
        self.set_member_choice(rid, user, "research_consent", research)
            .await
    }

    /// `column` is one of the two fixed names above, never caller input.
    async fn set_member_choice(
        &self,
        rid: Uuid,
        user: Uuid,
        column: &'static str,
        status: ConsentStatus,
    ) -> Result<Relationship> {
        let sql = format!(
            "UPDATE relationship_members SET {column} = $1 WHERE relationship_id = $2 AND user_id = $3"
        );
        let done = sqlx::query(&sql)
            .bind(enum_to_db(&status))
            .bind(rid.to_string())
            .bind(user.to_string())
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.relationship(rid).await
    }
}

fn member_from(row: &sqlx::any::AnyRow) -> Result<(Uuid, Member)> {
    let rid = parse_uuid(row.try_get::<&str, _>("relationship_id")?)?;
    let user_id: Option<String> = row.try_get("user_id")?;
    Ok((
        rid,
        Member {
            user_id: user_id.as_deref().map(parse_uuid).transpose()?,
            email: row.try_get("email")?,
            name: row.try_get("name")?,
            consent: enum_from_db(row.try_get::<&str, _>("consent")?)?,
            research_consent: enum_from_db(row.try_get::<&str, _>("research_consent")?)?,
        },
    ))
}

fn relationship_from(row: &sqlx::any::AnyRow, members: Vec<Member>) -> Result<Relationship> {
    Ok(Relationship {
        id: parse_uuid(row.try_get::<&str, _>("id")?)?,
        kind: enum_from_db(row.try_get::<&str, _>("kind")?)?,
        created_at: from_micros(row.try_get("created_at")?)?,
        members,
    })
}
