//! The hub's feed from the events stream (NATS with a resume window): every nudge, speaker
//! event and poke of the deployment, in the stream's order, each numbered by it.
//!
//! The feed outlives NATS restarts: the stream is on disk and the ordered consumer picks up
//! after the last id it delivered. A stream made anew (deleted, or lost with the server's
//! store) would start its ids again, and a consumer picking up after the old ids would wait
//! for events that never come, so the feed checks every [`STREAM_CHECK`] when the stream on the
//! server was made; when that changed it moves the new stream's ids past the old ones, follows
//! it from its newest id, and every socket held here gets `server.resync` (what was published
//! meanwhile went nowhere).

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use futures::StreamExt;
use inside_bus::history::{EventStream, Following, Logged, Retention};
use inside_bus::inbound::reject;
use inside_bus::BusError;
use inside_schemas::{Resync, ServerMessageType};

use super::{dispatch, holds, lock, push_each, session_sockets, Feed, HubInner, Outbound};
use crate::realtime::protocol;

/// How often the feed checks that the stream it follows is the one on the server.
const STREAM_CHECK: Duration = Duration::from_secs(2);
/// How long a feed whose stream ended waits before following again.
const REFOLLOW_AFTER: Duration = Duration::from_secs(1);
/// After a `server.resync` for events let go, how long a later gap waits to be told (at the
/// next [`STREAM_CHECK`]): a feed falling behind under overload skips at every event, and a
/// resync to every socket for each would add to the overload.
const GAP_TOLD_EVERY: Duration = Duration::from_secs(1);

impl Feed {
    /// The feed of a subject of the events stream, by its kind token.
    fn of_event(subjects: &inside_bus::Subjects, subject: &str) -> Option<Feed> {
        let kind = subject
            .strip_prefix(subjects.prefix())?
            .strip_prefix(".v1.")?
            .split('.')
            .next()?;
        match kind {
            "nudges" => Some(Feed::Nudges),
            "speakers" => Some(Feed::Speakers),
            "pokes" => Some(Feed::Pokes),
            _ => None,
        }
    }
}

/// Ensures the events stream and follows it from its newest event, which becomes the hub's
/// `last_event_id`.
pub(super) async fn follow(
    client: &async_nats::Client,
    subjects: &inside_bus::Subjects,
    keep: Retention,
    hub: &HubInner,
) -> Result<(EventStream, Following), BusError> {
    let stream = EventStream::ensure(client, subjects, keep).await?;
    let following = stream.follow().await?;
    hub.last_event_id.store(following.head, Ordering::Release);
    Ok((stream, following))
}

/// Routes the events stream's events, each numbered by the stream, to the sockets held here
/// until the hub goes, and follows a stream made anew (see the module's doc).
pub(super) async fn feed_task(hub: Weak<HubInner>, stream: EventStream, mut following: Following) {
    let mut check =
        tokio::time::interval_at(tokio::time::Instant::now() + STREAM_CHECK, STREAM_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gaps = Gaps::default();
    loop {
        let restart = tokio::select! {
            next = following.events.next() => match next {
                Some(logged) => {
                    let Some(hub) = hub.upgrade() else { return };
                    gaps.check(&hub, logged.id);
                    route(&hub, logged).await;
                    None
                }
                None => {
                    tracing::warn!("the events stream's feed ended; following it again");
                    tokio::time::sleep(REFOLLOW_AFTER).await;
                    Some(Restart::Ended)
                }
            },
            _ = check.tick() => {
                if let Some(hub) = hub.upgrade() {
                    gaps.tell_owed(&hub);
                }
                made_anew(&stream, following.made).await
            }
        };
        let Some(restart) = restart else { continue };
        let Some(hub) = hub.upgrade() else { return };
        let known = hub.last_event_id.load(Ordering::Acquire);
        let again = async {
            if restart == Restart::MadeAnew {
                stream.continue_after(known).await?;
            }
            stream.follow().await
        };
        match again.await {
            Ok(again) => {
                following = again;
                resync_all(&hub, &following);
            }
            // tried again at the next check
            Err(e) => tracing::warn!(error = %e, "following the events stream again failed"),
        }
    }
}

/// `MadeAnew` when the stream on the server is not the one made at `followed` (the one followed).
async fn made_anew(stream: &EventStream, followed: i128) -> Option<Restart> {
    match stream.made_at().await {
        Ok(made) if made == followed => None,
        Ok(_) => {
            tracing::warn!("the events stream was made anew; following it from its newest event, and every socket gets server.resync");
            Some(Restart::MadeAnew)
        }
        // NATS away: the consumer picks up after its last id once it is back
        Err(e) => {
            tracing::debug!(error = %e, "checking the events stream");
            None
        }
    }
}

/// Why the feed follows the stream again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    /// The consumer's messages ended (the connection closed for good).
    Ended,
    /// The stream on the server is not the one followed.
    MadeAnew,
}

/// Hands one event to the sockets concerned, then records its id as handled (after the
/// sockets have it, so a socket registered meanwhile that reads the older id gets it in its
/// replay rather than not at all).
async fn route(hub: &HubInner, Logged { id, msg }: Logged) {
    let route =
        Feed::of_event(hub.bus.subjects(), &msg.subject).and_then(|feed| feed.route(&msg.subject));
    match route {
        Some(route) if holds(&lock(hub), route) => {
            dispatch(hub, route, msg, Some(id)).await;
        }
        Some(_) => {}
        None => reject("events", "subject", None),
    }
    hub.last_event_id.store(id, Ordering::Release);
}

/// Events the stream let go before this gateway read them: its feed fell further behind than
/// a subject keeps (`WEBSOCKET_RESUME_EVENTS`, `…_SECONDS`), or someone purged the stream. The
/// feed holds every event of the stream in order, so ids that skip are exactly those; whose
/// they were is gone with them, so every socket held here gets `server.resync` rather than a
/// silent hole.
#[derive(Default)]
struct Gaps {
    told_at: Option<tokio::time::Instant>,
    /// A gap came within [`GAP_TOLD_EVERY`] of the last resync: told at the next check.
    owed: bool,
}

impl Gaps {
    /// Before event `id` is routed: tells every socket of the events skipped since the last
    /// one handled, if any (so the resync reaches each socket before event `id`).
    fn check(&mut self, hub: &HubInner, id: u64) {
        let last = hub.last_event_id.load(Ordering::Acquire);
        if last == 0 || id <= last.saturating_add(1) {
            return;
        }
        let skipped = id - last - 1;
        metrics::counter!("inside_events_skipped_total").increment(skipped);
        let now = tokio::time::Instant::now();
        if self.told_at.is_some_and(|t| now < t + GAP_TOLD_EVERY) {
            self.owed = true;
            return;
        }
        tracing::warn!(
            skipped,
            after = last,
            "the events stream let go of events before this gateway read them; every socket held here gets server.resync"
        );
        self.tell(hub, last);
    }

    /// Tells the gap owed since the last resync, if one is.
    fn tell_owed(&mut self, hub: &HubInner) {
        if self.owed {
            self.tell(hub, hub.last_event_id.load(Ordering::Acquire));
        }
    }

    /// Live events after `last` follow.
    fn tell(&mut self, hub: &HubInner, last: u64) {
        self.told_at = Some(tokio::time::Instant::now());
        self.owed = false;
        resync_held(hub, &Resync::history_expired(None, Some(last)));
    }
}

/// The feed starts again from `following.head` (ids past every one handed out before, so no
/// socket's replay skips any of them): every socket held here is told, before any event of
/// the new feed reaches it.
fn resync_all(hub: &HubInner, following: &Following) {
    hub.last_event_id.store(following.head, Ordering::Release);
    resync_held(
        hub,
        &Resync::history_expired(following.oldest, Some(following.head)),
    );
    metrics::counter!("inside_events_stream_restarts_total").increment(1);
}

/// `server.resync` to every socket held here.
fn resync_held(hub: &HubInner, resync: &Resync) {
    let st = lock(hub);
    for &sid in st.sessions.keys() {
        let text = protocol::server(ServerMessageType::Resync, sid, resync);
        push_each(session_sockets(&st, sid), Outbound::Text(text.into()));
    }
}
