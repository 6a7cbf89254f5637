//! Consent while a session runs: a socket joins only while every member of the
//! relationship has granted consent, and a member whose consent is withdrawn (or whose
//! membership or account ends) is expelled from every active session of it, on every
//! gateway, with close code 4403.

use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Refuses (403) a user who is not a member of `rid`, or any join while a member of it
/// has not granted consent.
pub(super) async fn require_consent(state: &AppState, rid: Uuid, user: Uuid) -> ApiResult<()> {
    let rel = state.store.relationship(rid).await?;
    if !rel.members.iter().any(|m| m.user_id == Some(user)) {
        return Err(ApiError::Forbidden(
            "not_a_member",
            "only members of the relationship may join its sessions".into(),
        ));
    }
    if rel.member_without_consent().is_some() {
        return Err(ApiError::Forbidden(
            "consent_required",
            "every member of the relationship must have granted consent to join".into(),
        ));
    }
    Ok(())
}

impl AppState {
    /// Closes `user_id`'s sockets of every active session of `relationship_id`, on every
    /// gateway, with 4403: call after their consent was withdrawn, they left the
    /// relationship or their account was deleted (after the database says so, so a
    /// socket joining meanwhile sees it in its own check).
    pub async fn expel_member(&self, relationship_id: Uuid, user_id: Uuid) -> ApiResult<()> {
        let running = self.store.active_sessions(relationship_id).await?;
        self.expel_from_sessions(&running, &[user_id]).await
    }

    /// Closes the sockets of `users` in the sessions `sids`, on every gateway, with 4403:
    /// for sessions already erased (account deletion), whose ids the caller read before.
    pub async fn expel_from_sessions(&self, sids: &[Uuid], users: &[Uuid]) -> ApiResult<()> {
        for sid in sids {
            for user in users {
                let event = inside_bus::StateEvent::MemberRevoked { user: *user };
                self.bus
                    .publish_json(self.bus.subjects().state(*sid), &event)
                    .await
                    .map_err(ApiError::internal)?;
            }
            tracing::info!(%sid, members = users.len(), "members expelled from a running session");
        }
        Ok(())
    }
}
