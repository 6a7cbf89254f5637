//! Who is in a session across gateways: each gateway announces the users it
//! holds sockets for on `inside.v1.state.<sid>` after every join and leave,
//! and answers a newcomer's `hello` with its own list, so every gateway can
//! send the full participant list in `server.session_state`.

use inside_bus::{BusError, StateEvent};
use uuid::Uuid;

use super::hub::{broadcast_state, close_session, lock, HubInner, HubState};

/// Close code for a finalized session (API.md).
pub const CLOSE_FINALIZED: u16 = 4409;

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

pub(super) async fn on_event(hub: &HubInner, sid: Uuid, event: StateEvent) {
    match event {
        StateEvent::Presence {
            gateway,
            participants,
            hello,
        } => {
            if gateway != hub.gateway {
                let mut st = lock(hub);
                let gateways = st.remote.entry(sid).or_default();
                if participants.is_empty() {
                    gateways.remove(&gateway);
                } else {
                    gateways.insert(gateway, participants);
                }
            }
            broadcast_state(hub, sid);
            if hello && gateway != hub.gateway {
                if let Err(e) = announce(hub, sid, false).await {
                    tracing::warn!(%sid, error = %e, "answering a presence hello failed");
                }
            }
        }
        StateEvent::Finalized => close_session(hub, sid, CLOSE_FINALIZED, "session finalized"),
    }
}

fn local_participants(st: &HubState, sid: Uuid) -> Vec<Uuid> {
    let mut users: Vec<Uuid> = st
        .sockets
        .keys()
        .filter(|(s, _)| *s == sid)
        .map(|(_, u)| *u)
        .collect();
    users.sort();
    users.dedup();
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
