//! What the realtime path needs to know about a session to trust a message for it: whether it
//! exists and is active, who its members are, and each member's consent and research consent.
//! One query, so the caches in front of it (bus validation, the research gate) refresh cheaply.

use inside_schemas::{ConsentStatus, SessionStatus};
use sqlx::Row;
use uuid::Uuid;

use crate::time::{enum_from_db, parse_uuid};
use crate::{Result, Store};

/// One member as the realtime path sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAccess {
    /// `None` for an invited partner who has not signed up.
    pub user_id: Option<Uuid>,
    pub consent: ConsentStatus,
    pub research_consent: ConsentStatus,
}

/// A session, its status and its relationship's members, read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAccess {
    pub session_id: Uuid,
    pub relationship_id: Uuid,
    pub status: SessionStatus,
    pub members: Vec<MemberAccess>,
}

impl SessionAccess {
    pub fn is_active(&self) -> bool {
        self.status == SessionStatus::Active
    }

    /// Whether data that reached the bus is still recorded: active or finalizing.
    pub fn is_recording(&self) -> bool {
        matches!(
            self.status,
            SessionStatus::Active | SessionStatus::Finalizing
        )
    }

    /// Whether `uid` is a member (whatever their consent).
    pub fn is_member(&self, uid: Uuid) -> bool {
        self.members.iter().any(|m| m.user_id == Some(uid))
    }

    /// Whether data from `uid` may be processed now: the session is active and `uid` is a
    /// member whose consent is granted.
    pub fn accepts_from(&self, uid: Uuid) -> bool {
        self.is_active()
            && self
                .members
                .iter()
                .any(|m| m.user_id == Some(uid) && m.consent == ConsentStatus::Granted)
    }

    /// Whether data from `uid` that reached the bus may still be recorded: the session is
    /// active or finalizing (anything on the bus was published before its socket stopped, and
    /// the report waits for it) and `uid` is a member whose consent is granted.
    pub fn records_from(&self, uid: Uuid) -> bool {
        self.is_recording()
            && self
                .members
                .iter()
                .any(|m| m.user_id == Some(uid) && m.consent == ConsentStatus::Granted)
    }

    /// Whether the session's data may be copied to the research subjects: it is active and
    /// every member (an invited partner who never signed up included) has granted both
    /// consent and research use.
    pub fn research_allowed(&self) -> bool {
        self.is_active()
            && !self.members.is_empty()
            && self.members.iter().all(|m| {
                m.user_id.is_some()
                    && m.consent == ConsentStatus::Granted
                    && m.research_consent == ConsentStatus::Granted
            })
    }
}

impl Store {
    /// The session `sid` with its members; `None` when no such session exists.
    pub async fn session_access(&self, sid: Uuid) -> Result<Option<SessionAccess>> {
        let rows = sqlx::query(
            "SELECT s.relationship_id, s.status, m.user_id, m.consent, m.research_consent \
             FROM sessions s LEFT JOIN relationship_members m ON m.relationship_id = s.relationship_id \
             WHERE s.id = $1",
        )
        .bind(sid.to_string())
        .fetch_all(self.pool())
        .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut access = SessionAccess {
            session_id: sid,
            relationship_id: parse_uuid(first.try_get::<&str, _>("relationship_id")?)?,
            status: enum_from_db(first.try_get::<&str, _>("status")?)?,
            members: Vec::with_capacity(rows.len()),
        };
        for row in &rows {
            // a relationship without members (never, but LEFT JOIN) gives one row of NULLs
            let Some(consent) = row.try_get::<Option<String>, _>("consent")? else {
                continue;
            };
            let user: Option<String> = row.try_get("user_id")?;
            access.members.push(MemberAccess {
                user_id: user.as_deref().map(parse_uuid).transpose()?,
                consent: enum_from_db(&consent)?,
                research_consent: enum_from_db(row.try_get::<&str, _>("research_consent")?)?,
            });
        }
        Ok(Some(access))
    }
}
