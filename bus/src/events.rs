//! What travels on `inside.v1.state.<sid>`: presence announcements by which
//! gateways learn each other's participants (so `server.session_state` lists
//! everyone, whichever gateway they are on), the finalize signal, and the
//! expulsion of a member whose consent or membership ended.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A message on `{prefix}.v1.state.<sid>`, told apart by `event`; researchers get only
/// `finalized`, on `{prefix}.v1.research.state.<sid>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StateEvent {
    /// The users a gateway holds sockets for in this session, after a join or
    /// leave. `hello` asks the other gateways to announce theirs (a newcomer
    /// does not know them yet). `refresh` marks the periodic re-announcement of a
    /// list that did not change: it keeps the list alive on the other gateways,
    /// which drop a gateway's list once it stops coming (the gateway died).
    Presence {
        gateway: Uuid,
        participants: Vec<Uuid>,
        hello: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        refresh: bool,
    },
    /// The session was finalized: sockets close with 4409.
    Finalized,
    /// `user` withdrew consent, left the relationship or deleted their account: their
    /// sockets of this session close with 4403, on every gateway.
    MemberRevoked { user: Uuid },
}
