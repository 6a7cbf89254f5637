//! Who is in a session across gateways: each gateway announces the users it
//! holds sockets for on `inside.v1.state.<sid>` when its list changes (a user's
//! first socket joins or last one leaves), and answers a newcomer's `hello` with
//! its own list, so every gateway can send the full participant list in
//! `server.session_state`. The same subject carries the finalize signal and
//! the expulsion of a member whose consent or membership ended.

use axum::extract::ws::Utf8Bytes;
use inside_bus::{BusError, StateEvent};
use inside_schemas::SessionState;
use uuid::Uuid;

use super::hub::{broadcast_state, close_session, lock, revoke_member, HubInner, HubState};
use super::protocol;
use super::send_queue::{Outbound, SendQueue};

/// Close code for a finalized session (API.md).
pub const CLOSE_FINALIZED: u16 = 4409;
/// Close code for a member whose consent was withdrawn or whose membership ended.
pub const CLOSE_REVOKED: u16 = 4403;

/// Publishes this gateway's participants of `sid`.
pub(super) async fn announce(hub: &HubInner, sid: Uuid, hello: bool) -> Result<(), BusError> {
    let participants = local_participants(&lock(hub), sid);
    let event = StateEvent::Presence {
        gateway: hub.gateway,
        participants,
        hello,
    };
    hub.bus
        .publish_json(hub.bus.subjects().state(sid), &event)
        .await
}

/// `server.session_state` to one socket (a user's further socket, which changed no list).
pub(super) fn send_state(hub: &HubInner, sid: Uuid, queue: &SendQueue) {
    let state = SessionState {
        sid,
        participants: participants(&lock(hub), sid),
    };
    let text = Utf8Bytes::from(protocol::server("server.session_state", sid, &state));
    // a fresh socket's queue is empty: this cannot fill it
    let _ = queue.push(Outbound::Text(text));
}

pub(super) async fn on_event(hub: &HubInner, sid: Uuid, event: StateEvent) {
    match event {
        StateEvent::Presence {
            gateway,
            mut participants,
            hello,
        } => {
            let changed = if gateway == hub.gateway {
                // our own announcement: our list changed
                true
            } else {
                participants.sort();
                let mut st = lock(hub);
                // only sessions this gateway holds sockets of are tracked
                if !st.sessions.contains_key(&sid) {
                    false
                } else {
                    let gateways = st.remote.entry(sid).or_default();
                    let old = if participants.is_empty() {
                        gateways.remove(&gateway)
                    } else {
                        gateways.insert(gateway, participants.clone())
                    };
                    old.unwrap_or_default() != participants
                }
            };
            if changed {
                broadcast_state(hub, sid);
            }
            if hello && gateway != hub.gateway {
                if let Err(e) = announce(hub, sid, false).await {
                    tracing::warn!(%sid, error = %e, "answering a presence hello failed");
                }
            }
        }
        StateEvent::Finalized => close_session(hub, sid, CLOSE_FINALIZED, "session finalized"),
        StateEvent::MemberRevoked { user } => revoke_member(hub, sid, user),
    }
}

fn local_participants(st: &HubState, sid: Uuid) -> Vec<Uuid> {
    let mut users: Vec<Uuid> = st
        .sessions
        .get(&sid)
        .map(|users| users.keys().copied().collect())
        .unwrap_or_default();
    users.sort();
    users
}

/// Everyone in `sid`: this gateway's users and those other gateways announced.
pub(super) fn participants(st: &HubState, sid: Uuid) -> Vec<Uuid> {
    let mut users = local_participants(st, sid);
    if let Some(gateways) = st.remote.get(&sid) {
        users.extend(gateways.values().flatten().copied());
    }
    users.sort();
    users.dedup();
    users
}
