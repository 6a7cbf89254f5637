//! Where a message from the hub's feeds goes: its route read off the subject, whether any
//! socket held here is concerned, the check every message from the bus passes, and its
//! hand-off to those sockets' queues.

use std::borrow::Cow;
use std::sync::Weak;

use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;
use inside_bus::inbound::reject;
use inside_bus::{BusMessage, Subscription};
use inside_schemas::ServerMessageType;
use uuid::Uuid;

use super::{
    lock, member_sockets, push, session_sockets, HubInner, HubState, Outbound, Series, Socket,
};
use crate::realtime::{inbound, presence, protocol};

/// Where a message from the bus goes, read off its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Route {
    State(Uuid),
    Speakers(Uuid),
    Nudges(Uuid, Uuid),
    Pokes(Uuid),
}

/// The subject kinds the hub subscribes to, one wildcard subscription each.
#[derive(Debug, Clone, Copy)]
pub(super) enum Feed {
    State,
    Speakers,
    Nudges,
    Pokes,
}

impl Feed {
    pub(super) const ALL: [Feed; 4] = [Feed::State, Feed::Speakers, Feed::Nudges, Feed::Pokes];

    pub(super) fn subject(self, subjects: &inside_bus::Subjects) -> String {
        match self {
            Feed::State => subjects.all_state(),
            Feed::Speakers => subjects.all_speakers(),
            Feed::Nudges => subjects.all_nudges(),
            Feed::Pokes => subjects.all_pokes(),
        }
    }

    /// The route a message's subject names; `None` when its ids do not parse (the
    /// wildcard matches any token, so anyone allowed to publish there could send one).
    pub(super) fn route(self, subject: &str) -> Option<Route> {
        Some(match self {
            Feed::State => Route::State(inside_bus::last_uuid(subject)?),
            Feed::Speakers => Route::Speakers(inside_bus::last_uuid(subject)?),
            Feed::Nudges => {
                let (sid, uid) = inside_bus::sid_uid(subject)?;
                Route::Nudges(sid, uid)
            }
            Feed::Pokes => Route::Pokes(inside_bus::last_uuid(subject)?),
        })
    }

    pub(super) fn kind(self) -> inbound::Kind {
        match self {
            Feed::State => inbound::Kind::State,
            Feed::Speakers => inbound::Kind::Speakers,
            Feed::Nudges => inbound::Kind::Nudges,
            Feed::Pokes => inbound::Kind::Pokes,
        }
    }
}

/// Routes one feed's messages to the sockets held here until the hub goes.
pub(super) async fn feed_task(hub: Weak<HubInner>, feed: Feed, mut sub: Subscription) {
    while let Some(msg) = sub.next().await {
        let Some(hub) = hub.upgrade() else { return };
        let Some(route) = feed.route(&msg.subject) else {
            reject(feed.kind().label(), "subject", None);
            continue;
        };
        // another gateway's session or user: dropped before its payload is read
        if !holds(&lock(&hub), route) {
            continue;
        }
        dispatch(&hub, route, msg, None).await;
    }
}

/// Whether any socket held here is concerned by `route`.
pub(super) fn holds(st: &HubState, route: Route) -> bool {
    match route {
        Route::State(sid) | Route::Speakers(sid) => st.sessions.contains_key(&sid),
        Route::Nudges(sid, uid) => st
            .sessions
            .get(&sid)
            .is_some_and(|users| users.contains_key(&uid)),
        Route::Pokes(uid) => st.users.contains_key(&uid),
    }
}

/// Times a nudge from its frame's acceptance (on whichever gateway) to its handing to the
/// sockets here; a nudge no frame caused (talk time) carries no time and is not counted.
fn observe_frame_to_nudge(series: &Series, msg: &BusMessage) {
    let Some(received_us) = msg
        .header(inside_bus::FRAME_RECEIVED_US_HEADER)
        .and_then(|v| v.parse::<i64>().ok())
    else {
        return;
    };
    // clocks of two machines may disagree a little: a negative span is clamped, not dropped
    let took_us = (inside_schemas::server_now_us() - received_us).max(0);
    series.frame_to_nudge.record(took_us as f64 / 1e6);
}

/// `numbered`: the event's id in the events stream, which then stands for any id header.
pub(super) async fn dispatch(hub: &HubInner, route: Route, msg: BusMessage, numbered: Option<u64>) {
    // nothing from the bus reaches a phone, or closes a socket, before it is checked
    let (kind, sid) = match route {
        Route::Nudges(sid, _) => (inbound::Kind::Nudges, Some(sid)),
        Route::Speakers(sid) => (inbound::Kind::Speakers, Some(sid)),
        Route::Pokes(_) => (inbound::Kind::Pokes, None),
        Route::State(sid) => (inbound::Kind::State, Some(sid)),
    };
    let origin = if hub.bus.is_local() {
        inbound::Origin::Process
    } else {
        inbound::Origin::Bus
    };
    let (payload, event) = match inbound::accept(kind, origin, sid, &msg.payload) {
        Some(inbound::Accepted::Json(json)) => (json, None),
        Some(inbound::Accepted::State(event)) => (Cow::Borrowed(""), Some(event)),
        None => return,
    };
    let payload = &*payload;
    // the stream's id stands for any id header; a header that does not parse drops the event
    let id_of = |sid| numbered.map_or_else(|| inbound::event_id(kind, sid, &msg), |n| Ok(Some(n)));
    match route {
        Route::Nudges(sid, uid) => {
            let Ok(id) = id_of(sid) else { return };
            hub.series.nudges_delivered.increment(1);
            let out = outbound(ServerMessageType::Nudge, sid, id, payload);
            let st = lock(hub);
            push_each(member_sockets(&st, sid, uid), out);
            drop(st);
            observe_frame_to_nudge(&hub.series, &msg);
        }
        Route::Speakers(sid) => {
            let Ok(id) = id_of(sid) else { return };
            hub.series.speakers_delivered.increment(1);
            let out = outbound(ServerMessageType::Speaker, sid, id, payload);
            let st = lock(hub);
            push_each(session_sockets(&st, sid), out);
        }
        Route::Pokes(uid) => {
            let ids = match numbered {
                Some(_) => Vec::new(),
                None => match inbound::session_event_ids(&msg) {
                    Ok(ids) => ids,
                    Err(()) => return,
                },
            };
            let st = lock(hub);
            for sid in st.users.get(&uid).into_iter().flatten() {
                // in the events stream one id stands for every session; in the older history
                // it is kept only in its relationship's active sessions, elsewhere live only
                let id = numbered.or_else(|| ids.iter().find(|(s, _)| s == sid).map(|(_, id)| *id));
                let out = outbound(ServerMessageType::Poke, *sid, id, payload);
                push_each(member_sockets(&st, *sid, uid), out);
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

/// [`push`]es `msg` to each of `sockets`, the last one the message itself: most go to a
/// single socket, and a copy of a message is a shared count both threads then write.
pub(super) fn push_each<'a>(sockets: impl Iterator<Item = &'a Socket>, msg: Outbound) {
    let mut sockets = sockets.peekable();
    while let Some(s) = sockets.next() {
        if sockets.peek().is_none() {
            return push(s, msg);
        }
        push(s, msg.clone());
    }
}
