//! A socket's bounded queue of server messages: what the hub, the connection's own replies and
//! the audio decoder push, and the send side writes. A [`Mailbox`], which holds nothing until a
//! message is queued: an idle socket costs no buffer.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use inside_bus::mailbox::Mailbox;

/// What a connection's send side writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    Text(Utf8Bytes),
    /// A history event (nudge, speaker event, poke) and its `event_id`.
    Event(u64, Utf8Bytes),
    Close(u16, &'static str),
}

impl Outbound {
    /// True for an event a resumed socket's replay covered (or declared lost): it was
    /// queued live while the replay was read, and must not arrive twice.
    pub fn replayed(&self, through: u64) -> bool {
        matches!(self, Outbound::Event(id, _) if *id <= through)
    }
}

/// Both ends of one socket's queue; cheap to clone.
pub type SendQueue = Arc<Mailbox<Outbound>>;

pub fn send_queue(capacity: usize) -> SendQueue {
    Arc::new(Mailbox::new(capacity))
}
