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
    Close(u16, &'static str),
}

/// Both ends of one socket's queue; cheap to clone.
pub type SendQueue = Arc<Mailbox<Outbound>>;

pub fn send_queue(capacity: usize) -> SendQueue {
    Arc::new(Mailbox::new(capacity))
}
