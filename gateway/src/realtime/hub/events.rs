//! The hub's feed from the events stream (NATS with a resume window): every nudge, speaker
//! event and poke of the deployment, in the stream's order, each numbered by it.

use std::sync::atomic::Ordering;
use std::sync::Weak;

use futures::StreamExt;
use inside_bus::history::{EventStream, Logged, Retention};
use inside_bus::inbound::reject;
use inside_bus::BusError;

use super::{dispatch, holds, lock, Feed, HubInner};

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
) -> Result<(EventStream, impl futures::Stream<Item = Logged>), BusError> {
    let stream = EventStream::ensure(client, subjects, keep).await?;
    let (head, events) = stream.follow().await?;
    hub.last_event_id.store(head, Ordering::Release);
    Ok((stream, events))
}

/// Routes the events stream's events, each numbered by the stream, to the sockets held here
/// until the hub goes; then records the id as handled (after the sockets have it, so a socket
/// registered meanwhile that reads the older id gets it in its replay rather than not at all).
pub(super) async fn feed_task(hub: Weak<HubInner>, events: impl futures::Stream<Item = Logged>) {
    let mut events = std::pin::pin!(events);
    while let Some(Logged { id, msg }) = events.next().await {
        let Some(hub) = hub.upgrade() else { return };
        let route = Feed::of_event(hub.bus.subjects(), &msg.subject)
            .and_then(|feed| Some((feed, feed.route(&msg.subject)?)));
        match route {
            Some((_, route)) if holds(&lock(&hub), route) => {
                dispatch(&hub, route, msg, Some(id)).await;
            }
            Some(_) => {}
            None => reject("events", "subject", None),
        }
        hub.last_event_id.store(id, Ordering::Release);
    }
}
