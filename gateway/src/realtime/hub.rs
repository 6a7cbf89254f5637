//! `SessionHub`: the sockets this gateway holds, indexed by session then user and by
//! user then session (so a join, a leave or a delivery costs the sockets concerned, not
//! every socket held), and the bus subscriptions that feed them. A route (the session's
//! state and speaker subjects, a user's nudge subject, a user's poke subject) is
//! subscribed when the first socket needing it joins and unsubscribed when the last one
//! leaves. Nudges, speaker events and pokes arrive with their id in the session's history
//! (a bus header set by their producer) and go out with it as `event_id`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;
use inside_bus::{Bus, BusError, BusMessage};
use inside_schemas::{ServerMessageType, SessionState};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::caps::{CapHit, SocketCaps, SocketLimits, SocketSlot};
use super::inbound;
use super::presence;
use super::protocol;

/// Messages queued per socket before it counts as a slow reader and is dropped.
pub const SEND_QUEUE: usize = 256;
/// How long a join waits for its subscriptions to be live.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

pub use super::send_queue::{send_queue, Outbound, SendQueue};

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("subscribing to the session's subjects failed or timed out")]
    Subscribe,
    #[error(transparent)]
    Bus(#[from] BusError),
}

#[derive(Clone)]
pub struct SessionHub(Arc<HubInner>);

pub(super) struct HubInner {
    pub(super) bus: Bus,
    /// Identifies this gateway in presence announcements.
    pub(super) gateway: Uuid,
    next_socket: AtomicU64,
    pub(super) state: Mutex<HubState>,
    /// Fired at shutdown: every socket closes with 1001.
    pub(super) closing: CancellationToken,
    caps: SocketCaps,
}

#[derive(Default)]
pub(super) struct HubState {
    /// Sockets per session, then per user.
    pub(super) sessions: HashMap<Uuid, HashMap<Uuid, Vec<Socket>>>,
    /// The sessions each user has sockets in (pokes go to all of them).
    users: HashMap<Uuid, HashSet<Uuid>>,
    /// Sockets held, all sessions together.
    count: usize,
    routes: HashMap<Route, RouteEntry>,
    /// Participants other gateways announced, per session and gateway.
    pub(super) remote: HashMap<Uuid, HashMap<Uuid, presence::Remote>>,
}

pub(super) struct Socket {
    id: u64,
    queue: SendQueue,
    kill: CancellationToken,
    revoked: CancellationToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Route {
    State(Uuid),
    Speakers(Uuid),
    Nudges(Uuid, Uuid),
    Pokes(Uuid),
}

struct RouteEntry {
    refs: usize,
    ready: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

/// One socket's place in the hub; dropping it leaves (and announces it).
pub struct Membership {
    pub sid: Uuid,
    pub uid: Uuid,
    id: u64,
    /// What the send side writes; the connection's own replies (pong, errors) go here too.
    pub queue: SendQueue,
    /// Cancelled when the socket must go (slow reader, shutdown).
    pub kill: CancellationToken,
    /// Cancelled when the member's consent or membership ended: nothing more of theirs
    /// is published, and the socket closes with 4403.
    pub revoked: CancellationToken,
    hub: SessionHub,
}

impl SessionHub {
    pub fn new(bus: Bus, limits: SocketLimits) -> Self {
        Self(Arc::new(HubInner {
            bus,
            gateway: Uuid::new_v4(),
            next_socket: AtomicU64::new(1),
            state: Mutex::new(HubState::default()),
            closing: CancellationToken::new(),
            caps: SocketCaps::new(limits),
        }))
    }

    /// With NATS: re-announces this gateway's participants every `timers.heartbeat` and
    /// drops other gateways' lists not heard within `timers.ttl` (a gateway that died), until
    /// the hub closes. Call once; the in-process bus has one gateway and needs none of it.
    pub fn start_presence(&self, timers: presence::PresenceTimers) {
        if !self.0.bus.is_local() {
            tokio::spawn(presence::maintain(Arc::downgrade(&self.0), timers));
        }
    }

    /// Reserves a socket under the per-user and per-client caps (before the upgrade).
    pub fn reserve(&self, user: Uuid, client: Option<IpAddr>) -> Result<SocketSlot, CapHit> {
        self.0.caps.reserve(user, client)
    }

    pub fn bus(&self) -> &Bus {
        &self.0.bus
    }

    /// This gateway's id (presence announcements, socket rows).
    pub fn gateway_id(&self) -> Uuid {
        self.0.gateway
    }

    /// Closes every socket (graceful shutdown).
    pub fn close_all(&self) {
        self.0.closing.cancel();
    }

    /// Sockets held now.
    pub fn sockets(&self) -> usize {
        lock(&self.0).count
    }

    /// Revokes `uid`'s sockets of `sid` on this gateway (consent withdrawn, membership
    /// ended): they stop publishing at once and close with 4403.
    pub fn revoke_member(&self, sid: Uuid, uid: Uuid) {
        revoke_member(&self.0, sid, uid);
    }

    /// Registers a socket, subscribes what it needs, announces the join when it is the
    /// user's first socket in the session here (a second socket of the same user changes
    /// nobody's participant list, so it only gets the current one).
    pub async fn join(&self, sid: Uuid, uid: Uuid) -> Result<Membership, HubError> {
        let queue = send_queue(SEND_QUEUE);
        let kill = self.0.closing.child_token();
        let revoked = CancellationToken::new();
        let id = self.0.next_socket.fetch_add(1, Ordering::Relaxed);
        let (first, readies) = {
            let mut st = lock(&self.0);
            let sockets = st.sessions.entry(sid).or_default().entry(uid).or_default();
            let first = sockets.is_empty();
            sockets.push(Socket {
                id,
                queue: queue.clone(),
                kill: kill.clone(),
                revoked: revoked.clone(),
            });
            st.users.entry(uid).or_default().insert(sid);
            st.count += 1;
            let readies = [
                Route::State(sid),
                Route::Speakers(sid),
                Route::Nudges(sid, uid),
                Route::Pokes(uid),
            ]
            .into_iter()
            .map(|r| self.acquire(&mut st, r))
            .collect::<Vec<_>>();
            (first, readies)
        };
        let membership = Membership {
            sid,
            uid,
            id,
            queue,
            kill,
            revoked,
            hub: self.clone(),
        };
        for mut ready in readies {
            let live = tokio::time::timeout(SUBSCRIBE_TIMEOUT, ready.wait_for(|r| *r)).await;
            if !matches!(live, Ok(Ok(_))) {
                return Err(HubError::Subscribe);
            }
        }
        metrics::gauge!("inside_ws_connections").increment(1.0);
        if first {
            presence::announce(&self.0, sid, true).await?;
        } else {
            presence::send_state(&self.0, sid, &membership.queue);
        }
        Ok(membership)
    }

    fn acquire(&self, st: &mut HubState, route: Route) -> watch::Receiver<bool> {
        if let Some(entry) = st.routes.get_mut(&route) {
            entry.refs += 1;
            return entry.ready.clone();
        }
        let (ready_tx, ready) = watch::channel(false);
        let task = tokio::spawn(route_task(Arc::downgrade(&self.0), route, ready_tx));
        st.routes.insert(
            route,
            RouteEntry {
                refs: 1,
                ready: ready.clone(),
                task,
            },
        );
        ready
    }

    fn leave(&self, sid: Uuid, uid: Uuid, id: u64) {
        let last = {
            let mut st = lock(&self.0);
            let last = remove_socket(&mut st, sid, uid, id);
            for route in [
                Route::State(sid),
                Route::Speakers(sid),
                Route::Nudges(sid, uid),
                Route::Pokes(uid),
            ] {
                release(&mut st, route);
            }
            last
        };
        metrics::gauge!("inside_ws_connections").decrement(1.0);
        if !last {
            // the user is still here through another socket: nobody's list changed
            return;
        }
        let hub = self.0.clone();
        tokio::spawn(async move {
            if let Err(e) = presence::announce(&hub, sid, false).await {
                tracing::warn!(%sid, error = %e, "announcing a leave failed");
            }
        });
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.leave(self.sid, self.uid, self.id);
    }
}

/// Takes socket `id` out of both indexes; true when it was `uid`'s last socket of `sid`.
fn remove_socket(st: &mut HubState, sid: Uuid, uid: Uuid, id: u64) -> bool {
    let Some(users) = st.sessions.get_mut(&sid) else {
        return false;
    };
    let Some(list) = users.get_mut(&uid) else {
        return false;
    };
    let before = list.len();
    // a user holds a few sockets per session (capped), so this scan is short
    list.retain(|s| s.id != id);
    st.count -= before - list.len();
    if !list.is_empty() {
        return false;
    }
    users.remove(&uid);
    if users.is_empty() {
        st.sessions.remove(&sid);
        st.remote.remove(&sid);
    }
    if let Some(sessions) = st.users.get_mut(&uid) {
        sessions.remove(&sid);
        if sessions.is_empty() {
            st.users.remove(&uid);
        }
    }
    true
}

fn release(st: &mut HubState, route: Route) {
    if let Some(entry) = st.routes.get_mut(&route) {
        entry.refs -= 1;
        if entry.refs == 0 {
            if let Some(entry) = st.routes.remove(&route) {
                // Dropping the subscription inside the task unsubscribes.
                entry.task.abort();
            }
        }
    }
}

pub(super) fn lock(hub: &HubInner) -> MutexGuard<'_, HubState> {
    hub.state.lock().unwrap_or_else(|p| p.into_inner())
}

async fn route_task(hub: Weak<HubInner>, route: Route, ready: watch::Sender<bool>) {
    let Some(bus) = hub.upgrade().map(|h| h.bus.clone()) else {
        return;
    };
    let subjects = bus.subjects();
    let subject = match route {
        Route::State(sid) => subjects.state(sid),
        Route::Speakers(sid) => subjects.speakers(sid),
        Route::Nudges(sid, uid) => subjects.nudges(sid, uid),
        Route::Pokes(uid) => subjects.pokes(uid),
    };
    // one-time futures boxed: a route task lives as long as its sockets, and its state
    // machine is as large as its largest await (3,000 routes for 10,000 idle sockets)
    let mut sub = match Box::pin(bus.subscribe(subject)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "subscribing a socket route failed");
            return;
        }
    };
    // NATS: make sure the server has the interest before the join proceeds.
    if let Err(e) = Box::pin(bus.flush()).await {
        tracing::warn!(error = %e, "flushing after subscribe failed");
        return;
    }
    let _ = ready.send(true);
    while let Some(msg) = sub.next().await {
        let Some(hub) = hub.upgrade() else { return };
        dispatch(&hub, route, msg).await;
    }
}

/// Times a nudge from its frame's acceptance (on whichever gateway) to its handing to the
/// sockets here; a nudge no frame caused (talk time) carries no time and is not counted.
fn observe_frame_to_nudge(msg: &BusMessage) {
    let Some(received_us) = msg
        .header(inside_bus::FRAME_RECEIVED_US_HEADER)
        .and_then(|v| v.parse::<i64>().ok())
    else {
        return;
    };
    // clocks of two machines may disagree a little: a negative span is clamped, not dropped
    let took_us = (inside_schemas::server_now_us() - received_us).max(0);
    metrics::histogram!(inside_process::metrics::FRAME_TO_NUDGE).record(took_us as f64 / 1e6);
}

async fn dispatch(hub: &HubInner, route: Route, msg: BusMessage) {
    // nothing from the bus reaches a phone, or closes a socket, before it is checked
    let (kind, sid) = match route {
        Route::Nudges(sid, _) => (inbound::Kind::Nudges, Some(sid)),
        Route::Speakers(sid) => (inbound::Kind::Speakers, Some(sid)),
        Route::Pokes(_) => (inbound::Kind::Pokes, None),
        Route::State(sid) => (inbound::Kind::State, Some(sid)),
    };
    let (payload, event) = match inbound::accept(kind, sid, &msg.payload) {
        Some(inbound::Accepted::Json(json)) => (json, None),
        Some(inbound::Accepted::State(event)) => (String::new(), Some(event)),
        None => return,
    };
    let payload = payload.as_str();
    match route {
        Route::Nudges(sid, uid) => {
            let Ok(id) = inbound::event_id(kind, sid, &msg) else {
                return;
            };
            metrics::counter!("inside_nudges_delivered_total").increment(1);
            let out = outbound(ServerMessageType::Nudge, sid, id, payload);
            let st = lock(hub);
            for s in member_sockets(&st, sid, uid) {
                push(s, out.clone());
            }
            drop(st);
            observe_frame_to_nudge(&msg);
        }
        Route::Speakers(sid) => {
            let Ok(id) = inbound::event_id(kind, sid, &msg) else {
                return;
            };
            metrics::counter!("inside_speakers_delivered_total").increment(1);
            let out = outbound(ServerMessageType::Speaker, sid, id, payload);
            let st = lock(hub);
            for s in session_sockets(&st, sid) {
                push(s, out.clone());
            }
        }
        Route::Pokes(uid) => {
            let Ok(ids) = inbound::session_event_ids(&msg) else {
                return;
            };
            let st = lock(hub);
            for sid in st.users.get(&uid).into_iter().flatten() {
                // kept only in its relationship's active sessions; elsewhere it is live only
                let id = ids.iter().find(|(s, _)| s == sid).map(|(_, id)| *id);
                let out = outbound(ServerMessageType::Poke, *sid, id, payload);
                for s in member_sockets(&st, *sid, uid) {
                    push(s, out.clone());
                }
            }
        }
        Route::State(sid) => {
            if let Some(event) = event {
                Box::pin(presence::on_event(hub, sid, event)).await;
            }
        }
    }
}

/// A server message for the sockets, with its history id when it has one.
fn outbound(kind: ServerMessageType, sid: Uuid, id: Option<u64>, payload: &str) -> Outbound {
    match id {
        Some(id) => Outbound::Event(
            id,
            Utf8Bytes::from(protocol::server_event(kind, sid, id, payload)),
        ),
        None => Outbound::Text(Utf8Bytes::from(protocol::server_raw(kind, sid, payload))),
    }
}

/// Queues without waiting; a full queue means a slow reader, which is dropped.
pub(super) fn push(socket: &Socket, msg: Outbound) {
    if socket.queue.push(msg).is_err() {
        metrics::counter!("inside_ws_slow_readers_total").increment(1);
        socket.kill.cancel();
    }
}

/// `server.session_state` for every local socket of `sid`.
pub(super) fn broadcast_state(hub: &HubInner, sid: Uuid) {
    let st = lock(hub);
    let state = SessionState {
        sid,
        participants: presence::participants(&st, sid),
    };
    let text = Utf8Bytes::from(protocol::server(
        ServerMessageType::SessionState,
        sid,
        &state,
    ));
    for s in session_sockets(&st, sid) {
        push(s, Outbound::Text(text.clone()));
    }
}

/// Close every local socket of `sid` with `code`.
pub(super) fn close_session(hub: &HubInner, sid: Uuid, code: u16, reason: &'static str) {
    let st = lock(hub);
    for s in session_sockets(&st, sid) {
        push(s, Outbound::Close(code, reason));
    }
}

/// Revoke `uid`'s local sockets of `sid`: their connections stop and close with 4403.
pub(super) fn revoke_member(hub: &HubInner, sid: Uuid, uid: Uuid) {
    let st = lock(hub);
    for s in member_sockets(&st, sid, uid) {
        s.revoked.cancel();
    }
}

/// Every local socket of `sid`.
fn session_sockets(st: &HubState, sid: Uuid) -> impl Iterator<Item = &Socket> {
    st.sessions
        .get(&sid)
        .into_iter()
        .flat_map(|users| users.values().flatten())
}

/// `uid`'s local sockets of `sid`.
fn member_sockets(st: &HubState, sid: Uuid, uid: Uuid) -> impl Iterator<Item = &Socket> {
    st.sessions
        .get(&sid)
        .and_then(|users| users.get(&uid))
        .into_iter()
        .flatten()
}

#[cfg(test)]
mod tests;
