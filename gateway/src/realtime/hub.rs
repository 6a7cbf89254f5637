//! `SessionHub`: the sockets this gateway holds, indexed by session then user and by
//! user then session (so a join, a leave or a delivery costs the sockets concerned, not
//! every socket held), and the bus subscriptions that feed them.
//!
//! The feeds are four wildcard subscriptions per gateway, one per subject kind (every
//! session's state, speaker events and nudges, every user's pokes), made at the first join
//! and kept: a message is routed by its subject to the sockets held here, and one for a session
//! or user this gateway holds no socket of is dropped after a subject parse and a map lookup,
//! before its payload is read. A subscription per session and user cost an async-nats channel
//! and a task each, about 4.6 kB, which was most of an idle socket's memory when every socket
//! was its own session (issue 21, `docs/benchmarks/2026-12-05-idle-memory.md`); it also made
//! every join and leave change the server's interest. The price: every gateway receives every
//! gateway's events, so the fan-out grows with the fleet (the same doc reasons it out).
//!
//! On NATS with a resume window the nudge, speaker and poke feeds are one ordered consumer of
//! the events stream (`inside_bus::history`) instead, and each event goes out with its stream
//! sequence as `event_id`; in-process the producer sets the id in a bus header. A socket is
//! registered here before its history is read, and the feeds are live before any socket is
//! registered, so a resuming socket misses nothing between the two.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use inside_bus::history::{EventStream, Retention};
use inside_bus::{Bus, BusError};
use inside_schemas::{ServerMessageType, SessionState};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::caps::{CapHit, SocketCaps, SocketLimits, SocketSlot};
use super::presence;
use super::protocol;

/// Messages queued per socket before it counts as a slow reader and is dropped.
pub const SEND_QUEUE: usize = 256;
/// How long a join waits for the feeds to be live.
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
    /// The feeds, made at the first join.
    feeds: OnceCell<Feeds>,
    /// With NATS and a resume window: what the events stream keeps (the hub follows the
    /// stream instead of subscribing to nudges, speaker events and pokes).
    history: Option<Retention>,
    /// The newest event id the feed has handed to the sockets held here (events stream).
    last_event_id: AtomicU64,
    series: Series,
}

/// The series every frame or nudge touches, looked up in the recorder once rather than per
/// message (made after the recorder is installed, or they count nothing).
struct Series {
    frames_published: metrics::Counter,
    nudges_delivered: metrics::Counter,
    speakers_delivered: metrics::Counter,
    frame_to_nudge: metrics::Histogram,
}

impl Series {
    fn new() -> Self {
        Self {
            frames_published: metrics::counter!("inside_frames_published_total"),
            nudges_delivered: metrics::counter!("inside_nudges_delivered_total"),
            speakers_delivered: metrics::counter!("inside_speakers_delivered_total"),
            frame_to_nudge: metrics::histogram!(inside_process::metrics::FRAME_TO_NUDGE),
        }
    }
}

/// The feed tasks, stopped (and so unsubscribed) when the hub goes, and the events stream
/// when they follow one.
struct Feeds {
    tasks: Vec<JoinHandle<()>>,
    stream: Option<EventStream>,
}

impl Drop for Feeds {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Default)]
pub(super) struct HubState {
    /// Sockets per session, then per user.
    pub(super) sessions: HashMap<Uuid, HashMap<Uuid, Vec<Socket>>>,
    /// The sessions each user has sockets in (pokes go to all of them).
    users: HashMap<Uuid, HashSet<Uuid>>,
    /// Sockets held, all sessions together.
    count: usize,
    /// Participants other gateways announced, per session and gateway.
    pub(super) remote: HashMap<Uuid, HashMap<Uuid, presence::Remote>>,
}

pub(super) struct Socket {
    id: u64,
    queue: SendQueue,
    kill: CancellationToken,
    revoked: CancellationToken,
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
    /// `history`: what the events stream keeps, when the events are on the bus
    /// (`EventLog::OnBus`); the hub then follows the stream and numbers events by it.
    pub fn new(bus: Bus, limits: SocketLimits, history: Option<Retention>) -> Self {
        Self(Arc::new(HubInner {
            bus,
            gateway: Uuid::new_v4(),
            next_socket: AtomicU64::new(1),
            state: Mutex::new(HubState::default()),
            closing: CancellationToken::new(),
            caps: SocketCaps::new(limits),
            feeds: OnceCell::new(),
            history,
            last_event_id: AtomicU64::new(0),
            series: Series::new(),
        }))
    }

    /// The events stream the feeds follow, once they are made, and the newest event id
    /// handed to this gateway's sockets: a socket registered before this was read gets every
    /// later event live.
    pub fn event_stream(&self) -> Option<(EventStream, u64)> {
        let stream = self.0.feeds.get()?.stream.clone()?;
        Some((stream, self.0.last_event_id.load(Ordering::Acquire)))
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

    /// Counts a frame a socket of this gateway put on the bus.
    pub fn frame_published(&self) {
        self.0.series.frames_published.increment(1);
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

    /// Registers a socket (the feeds are live once this returns: what is published for it
    /// from now on reaches its queue), announces the join when it is the user's first socket
    /// in the session here (a second socket of the same user changes nobody's participant
    /// list, so it only gets the current one).
    pub async fn join(&self, sid: Uuid, uid: Uuid) -> Result<Membership, HubError> {
        let queue = send_queue(SEND_QUEUE);
        let kill = self.0.closing.child_token();
        let revoked = CancellationToken::new();
        let id = self.0.next_socket.fetch_add(1, Ordering::Relaxed);
        let first = {
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
            first
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
        // boxed: a one-time future, kept out of the socket task's state
        Box::pin(self.subscribed()).await?;
        metrics::gauge!("inside_ws_connections").increment(1.0);
        if first {
            presence::announce(&self.0, sid, true).await?;
        } else {
            presence::send_state(&self.0, sid, &membership.queue);
        }
        Ok(membership)
    }

    /// Makes the feeds once (the first join, and any join after a failed try) and waits
    /// until the server has their interest: the events stream followed (when the events are
    /// on the bus and JetStream answers) and the state subscription, else the four wildcard
    /// subscriptions.
    async fn subscribed(&self) -> Result<(), HubError> {
        let make = async {
            let bus = &self.0.bus;
            let hub = Arc::downgrade(&self.0);
            let followed = match (self.0.history, bus.nats()) {
                (Some(keep), Some(client)) => {
                    match events::follow(client, bus.subjects(), keep, &self.0).await {
                        Ok(followed) => Some(followed),
                        Err(e) => {
                            tracing::warn!(error = %e, "following the events stream failed; events go out without ids and resumes get server.resync");
                            None
                        }
                    }
                }
                _ => None,
            };
            let feeds: &[Feed] = if followed.is_some() {
                &[Feed::State]
            } else {
                &Feed::ALL
            };
            let mut subs = Vec::with_capacity(feeds.len());
            for &feed in feeds {
                // paced: in one process a nudge waits for the feed's room rather than being lost
                subs.push((
                    feed,
                    bus.subscribe_paced(feed.subject(bus.subjects())).await?,
                ));
            }
            // NATS: the server has the interest before any join proceeds
            bus.flush().await?;
            let mut tasks: Vec<JoinHandle<()>> = subs
                .into_iter()
                .map(|(feed, sub)| tokio::spawn(feed_task(hub.clone(), feed, sub)))
                .collect();
            let stream = followed.map(|(stream, following)| {
                tasks.push(tokio::spawn(events::feed_task(
                    hub.clone(),
                    stream.clone(),
                    following,
                )));
                stream
            });
            Ok::<_, BusError>(Feeds { tasks, stream })
        };
        let made = self
            .0
            .feeds
            .get_or_try_init(|| async {
                match tokio::time::timeout(SUBSCRIBE_TIMEOUT, make).await {
                    Ok(Ok(feeds)) => Ok(feeds),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "subscribing the hub's feeds failed");
                        Err(HubError::Subscribe)
                    }
                    Err(_) => Err(HubError::Subscribe),
                }
            })
            .await;
        made.map(|_| ())
    }

    fn leave(&self, sid: Uuid, uid: Uuid, id: u64) {
        let last = remove_socket(&mut lock(&self.0), sid, uid, id);
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

pub(super) fn lock(hub: &HubInner) -> MutexGuard<'_, HubState> {
    hub.state.lock().unwrap_or_else(|p| p.into_inner())
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

mod events;
mod routing;

use routing::{dispatch, feed_task, holds, push_each, Feed};

#[cfg(test)]
mod tests;
