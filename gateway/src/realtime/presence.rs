//! Who is in a session across gateways: each gateway announces the users it
//! holds sockets for on `inside.v1.state.<sid>` when its list changes (a user's
//! first socket joins or last one leaves), and answers a newcomer's `hello` with
//! its own list, so every gateway can send the full participant list in
//! `server.session_state`. The same subject carries the finalize signal and
//! the expulsion of a member whose consent or membership ended.
//!
//! A gateway that dies announces nothing, so lists expire: every gateway re-announces its
//! non-empty lists every heartbeat (one message per session), and drops another gateway's
//! list not heard within the TTL, sending the new `server.session_state`. The others see a
//! member of a dead gateway leave within the TTL plus one sweep ([`PresenceTimers::bound`]).

use std::sync::Weak;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use inside_bus::{BusError, StateEvent};
use inside_schemas::{ServerMessageType, SessionState};
use uuid::Uuid;

use super::hub::{broadcast_state, close_session, lock, revoke_member, HubInner, HubState};
use super::protocol;
use super::send_queue::{Outbound, SendQueue};

/// Close code for a finalized session (API.md).
pub const CLOSE_FINALIZED: u16 = 4409;
/// Close code for a member whose consent was withdrawn or whose membership ended.
pub const CLOSE_REVOKED: u16 = 4403;

/// How often a gateway re-announces its lists, and how long another's list lives unheard
/// (`PRESENCE_HEARTBEAT_SECONDS`, `PRESENCE_TTL_SECONDS`).
#[derive(Debug, Clone, Copy)]
pub struct PresenceTimers {
    pub heartbeat: Duration,
    pub ttl: Duration,
}

impl PresenceTimers {
    /// How often expired lists are looked for.
    fn sweep(&self) -> Duration {
        (self.ttl / 10).min(Duration::from_secs(1))
    }

    /// The longest a dead gateway's members stay listed after it died.
    pub fn bound(&self) -> Duration {
        self.ttl + self.sweep()
    }
}

/// Another gateway's participants of a session, and when they were last announced.
pub(super) struct Remote {
    participants: Vec<Uuid>,
    heard: Instant,
}

/// Publishes this gateway's participants of `sid`.
pub(super) async fn announce(hub: &HubInner, sid: Uuid, hello: bool) -> Result<(), BusError> {
    let participants = local_participants(&lock(hub), sid);
    let event = StateEvent::Presence {
        gateway: hub.gateway,
        participants,
        hello,
        refresh: false,
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
    let text = Utf8Bytes::from(protocol::server(
        ServerMessageType::SessionState,
        sid,
        &state,
    ));
    // a fresh socket's queue is empty: this cannot fill it
    let _ = queue.push(Outbound::Text(text));
}

pub(super) async fn on_event(hub: &HubInner, sid: Uuid, event: StateEvent) {
    match event {
        StateEvent::Presence {
            gateway,
            mut participants,
            hello,
            refresh,
        } => {
            if refresh && gateway == hub.gateway {
                // our own heartbeat: nothing changed
                return;
            }
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
                        let heard = Instant::now();
                        gateways.insert(
                            gateway,
                            Remote {
                                participants: participants.clone(),
                                heard,
                            },
                        )
                    };
                    old.map(|r| r.participants).unwrap_or_default() != participants
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
        users.extend(
            gateways
                .values()
                .flat_map(|r| r.participants.iter().copied()),
        );
    }
    users.sort();
    users.dedup();
    users
}

/// Heartbeats and expiry (see the module's doc) until the hub closes or is gone.
pub(super) async fn maintain(hub: Weak<HubInner>, timers: PresenceTimers) {
    let Some(closing) = hub.upgrade().map(|h| h.closing.clone()) else {
        return;
    };
    let mut beat = tokio::time::interval(timers.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(timers.sweep());
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = closing.cancelled() => return,
            _ = beat.tick() => {
                let Some(hub) = hub.upgrade() else { return };
                Box::pin(heartbeat(&hub)).await;
            }
            _ = sweep.tick() => {
                let Some(hub) = hub.upgrade() else { return };
                expire(&hub, timers.ttl);
            }
        }
    }
}

/// Re-announces every non-empty participant list of this gateway, one message per session.
async fn heartbeat(hub: &HubInner) {
    let lists: Vec<(Uuid, Vec<Uuid>)> = {
        let st = lock(hub);
        st.sessions
            .keys()
            .map(|sid| (*sid, local_participants(&st, *sid)))
            .filter(|(_, users)| !users.is_empty())
            .collect()
    };
    for (sid, participants) in lists {
        let event = StateEvent::Presence {
            gateway: hub.gateway,
            participants,
            hello: false,
            refresh: true,
        };
        if let Err(e) = hub
            .bus
            .publish_json(hub.bus.subjects().state(sid), &event)
            .await
        {
            tracing::warn!(%sid, error = %e, "presence heartbeat failed");
        }
    }
}

/// Drops other gateways' lists not heard within `ttl`; sessions whose participants changed
/// get `server.session_state`.
fn expire(hub: &HubInner, ttl: Duration) {
    let changed: Vec<Uuid> = {
        let mut st = lock(hub);
        let stale: Vec<Uuid> = st
            .remote
            .iter()
            .filter(|(_, gateways)| gateways.values().any(|r| r.heard.elapsed() >= ttl))
            .map(|(sid, _)| *sid)
            .collect();
        stale
            .into_iter()
            .filter(|sid| {
                let before = participants(&st, *sid);
                if let Some(gateways) = st.remote.get_mut(sid) {
                    let n = gateways.len();
                    gateways.retain(|_, r| r.heard.elapsed() < ttl);
                    let gone = n - gateways.len();
                    metrics::counter!("inside_presence_expired_total").increment(gone as u64);
                    tracing::info!(%sid, gateways = gone, "presence of a silent gateway expired");
                }
                participants(&st, *sid) != before
            })
            .collect()
    };
    for sid in changed {
        broadcast_state(hub, sid);
    }
}
