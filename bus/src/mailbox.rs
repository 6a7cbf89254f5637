//! `Mailbox`: a bounded single-consumer queue that allocates only while messages wait, for the
//! many long-lived, mostly idle queues of a gateway (a buffer per in-process bus subscription,
//! a send queue per socket).
//!
//! Not a tokio mpsc channel: that allocates its first block of 32 slots (about 4 KB with its
//! shared state) the moment it is made, which was the largest cost of an idle socket (heaptrack,
//! 2,000 idle sockets).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::sync::Notify;

/// A burst's buffer over this many slots is given back once it has been read.
const KEEP_SLOTS: usize = 64;

#[derive(Debug)]
pub struct Mailbox<T> {
    messages: Mutex<VecDeque<T>>,
    capacity: usize,
    /// The one consumer, woken on every push and on close.
    waker: AtomicWaker,
    /// No more pushes: what is buffered is still taken, then takes yield `None`.
    closed: AtomicBool,
    /// Producers waiting for room ([`push_waiting`](Self::push_waiting)); made by the first
    /// one, so the many mailboxes nobody waits on stay small.
    room: OnceLock<Box<Notify>>,
}

impl<T> Mailbox<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            messages: Mutex::new(VecDeque::new()),
            capacity,
            waker: AtomicWaker::new(),
            closed: AtomicBool::new(false),
            room: OnceLock::new(),
        }
    }

    /// Queues without waiting; a full mailbox hands the message back.
    pub fn push(&self, msg: T) -> Result<(), T> {
        {
            let mut q = self.lock();
            if q.len() >= self.capacity {
                return Err(msg);
            }
            q.push_back(msg);
        }
        self.waker.wake();
        Ok(())
    }

    /// Queues, waiting up to `patience` for room when full; hands the message back if the
    /// mailbox is still full then, or closed.
    pub async fn push_waiting(&self, msg: T, patience: Duration) -> Result<(), T> {
        let room = self.room.get_or_init(|| Box::new(Notify::new()));
        let deadline = tokio::time::Instant::now() + patience;
        let mut msg = msg;
        loop {
            let notified = room.notified();
            tokio::pin!(notified);
            // registered before the look, so a take between the two is not missed
            notified.as_mut().enable();
            msg = match self.push(msg) {
                Ok(()) => return Ok(()),
                Err(m) => m,
            };
            if self.closed.load(Ordering::Acquire)
                || tokio::time::timeout_at(deadline, notified).await.is_err()
            {
                return self.push(msg);
            }
        }
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Messages waiting now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next message; `None` once closed and empty.
    pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.poll_with(cx, |q| q.pop_front())
    }

    /// Waits for at least one message, then moves everything queued into `into` (one flush for
    /// a burst). Returns false once closed and empty.
    pub async fn take_all(&self, into: &mut Vec<T>) -> bool {
        poll_fn(|cx| {
            self.poll_with(cx, |q| {
                if q.is_empty() {
                    return None;
                }
                into.extend(q.drain(..));
                Some(())
            })
        })
        .await
        .is_some()
    }

    fn poll_with<R>(
        &self,
        cx: &mut Context<'_>,
        mut take: impl FnMut(&mut VecDeque<T>) -> Option<R>,
    ) -> Poll<Option<R>> {
        // A consumer whose mailbox never runs dry (a saturated worker pool, a feed under load)
        // must still yield now and then, as it would on a tokio channel: else the tasks that
        // share its thread (the sockets' send sides) starve and their queues overflow.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        if let Some(r) = self.take_with(&mut take) {
            coop.made_progress();
            return Poll::Ready(Some(r));
        }
        self.waker.register(cx.waker());
        // a push between the first look and the registration must not be missed
        match self.take_with(&mut take) {
            Some(r) => {
                coop.made_progress();
                Poll::Ready(Some(r))
            }
            None if self.closed.load(Ordering::Acquire) => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    fn take_with<R>(&self, take: &mut impl FnMut(&mut VecDeque<T>) -> Option<R>) -> Option<R> {
        let mut q = self.lock();
        let r = take(&mut q);
        if q.is_empty() && q.capacity() > KEEP_SLOTS {
            q.shrink_to_fit();
        }
        drop(q);
        if r.is_some() {
            if let Some(room) = self.room.get() {
                room.notify_waiters();
            }
        }
        r
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        self.messages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_full_mailbox_hands_back_and_a_burst_is_taken_at_once() {
        let m = Mailbox::new(2);
        assert_eq!(m.push("a"), Ok(()));
        assert_eq!(m.push("b"), Ok(()));
        assert_eq!(m.push("c"), Err("c"));
        let mut got = Vec::new();
        assert!(m.take_all(&mut got).await);
        assert_eq!(got, ["a", "b"]);
        assert_eq!(m.push("d"), Ok(()));
    }

    #[tokio::test]
    async fn a_waiting_push_gets_in_once_the_consumer_takes() {
        let m = Arc::new(Mailbox::new(1));
        assert_eq!(m.push(1), Ok(()));
        let producer = {
            let m = m.clone();
            tokio::spawn(async move { m.push_waiting(2, Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        let mut got = Vec::new();
        assert!(m.take_all(&mut got).await);
        assert_eq!(producer.await.ok(), Some(Ok(())));
        assert!(m.take_all(&mut got).await);
        assert_eq!(got, [1, 2]);
    }

    #[tokio::test]
    async fn a_waiting_push_gives_up_after_its_patience() {
        let m = Mailbox::new(1);
        assert_eq!(m.push(1), Ok(()));
        assert_eq!(m.push_waiting(2, Duration::from_millis(20)).await, Err(2));
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_consumer_and_close_ends_it() {
        let m = Arc::new(Mailbox::new(4));
        let waiter = {
            let m = m.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while m.take_all(&mut got).await {}
                got
            })
        };
        tokio::task::yield_now().await;
        m.push(1).ok();
        tokio::task::yield_now().await;
        m.push(2).ok();
        m.close();
        assert_eq!(waiter.await.ok(), Some(vec![1, 2]));
    }
}
