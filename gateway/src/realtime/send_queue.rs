//! A socket's bounded queue of server messages: what the hub, the connection's own replies and
//! the audio decoder push, and the send side writes.
//!
//! Not a tokio mpsc channel: that allocates its first block of 32 slots (about 5 KB with its
//! shared state) the moment it is made, which was the largest cost of an idle socket (heaptrack,
//! 2,000 idle sockets). This one is a `VecDeque` that holds nothing until a message is queued.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

/// What a connection's send side writes.
#[derive(Debug, Clone)]
pub enum Outbound {
    Text(Utf8Bytes),
    Close(u16, &'static str),
}

/// A full queue: the reader is too slow and is dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// Both ends of one socket's queue; cheap to clone.
#[derive(Clone)]
pub struct SendQueue(Arc<Inner>);

struct Inner {
    messages: Mutex<VecDeque<Outbound>>,
    /// Woken on every push; keeps a permit when the send side is busy, so no push is missed.
    ready: Notify,
    capacity: usize,
}

impl SendQueue {
    pub fn new(capacity: usize) -> Self {
        Self(Arc::new(Inner {
            messages: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            capacity,
        }))
    }

    /// Queues without waiting.
    pub fn push(&self, msg: Outbound) -> Result<(), Full> {
        {
            let mut q = self.lock();
            if q.len() >= self.0.capacity {
                return Err(Full);
            }
            q.push_back(msg);
        }
        self.0.ready.notify_one();
        Ok(())
    }

    /// Waits for at least one message, then takes everything queued (one flush for a burst).
    pub async fn take_all(&self, into: &mut Vec<Outbound>) {
        loop {
            {
                let mut q = self.lock();
                if !q.is_empty() {
                    into.extend(q.drain(..));
                    // an idle socket keeps no buffer
                    if q.capacity() > 64 {
                        q.shrink_to_fit();
                    }
                    return;
                }
            }
            self.0.ready.notified().await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Outbound>> {
        self.0
            .messages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_burst_is_taken_at_once() {
        let q = SendQueue::new(2);
        assert_eq!(q.push(Outbound::Close(1000, "a")), Ok(()));
        assert_eq!(q.push(Outbound::Close(1000, "b")), Ok(()));
        assert_eq!(q.push(Outbound::Close(1000, "c")), Err(Full));
        let mut got = Vec::new();
        q.take_all(&mut got).await;
        assert_eq!(got.len(), 2);
        assert_eq!(q.push(Outbound::Close(1000, "d")), Ok(()));
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_send_side() {
        let q = SendQueue::new(4);
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                q.take_all(&mut got).await;
                got.len()
            })
        };
        tokio::task::yield_now().await;
        q.push(Outbound::Close(1000, "x")).ok();
        assert_eq!(waiter.await.ok(), Some(1));
    }
}
