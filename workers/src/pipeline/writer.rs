//! Batched recording of session events: a bounded channel drained into
//! `Store::append_events` a short linger after the first event of a batch, or at once when full,
//! because one INSERT per frame would cap the pipeline at the commit rate. A batch holding an
//! event the database refuses keeps the other sessions' events (see `Store::append_events`).

use std::time::Duration;

use inside_store::events::SessionEvent;
use inside_store::Store;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Events per transaction: the store packs them a row per (session, user), so a large batch
/// is few rows, and a small one made commits the pipeline's limit at high frame rates.
const BATCH: usize = 8_192;
/// Short, because a batch is a burst of database work on the machine the frames share, and
/// the longer the linger the bigger the burst the frames behind it wait out.
const LINGER: Duration = Duration::from_millis(20);
/// Events buffered before recording waits (backpressure, not memory growth).
const CAPACITY: usize = 65_536;

#[derive(Clone)]
pub struct EventWriter {
    tx: mpsc::Sender<SessionEvent>,
}

impl EventWriter {
    /// The writer and its task; the task ends after every handle is dropped
    /// and the last batch is stored.
    pub fn start(store: Store) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        (Self { tx }, tokio::spawn(run(store, rx)))
    }

    pub async fn record(&self, event: SessionEvent) {
        if self.tx.send(event).await.is_err() {
            tracing::warn!("event writer stopped; event not recorded");
        }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<SessionEvent>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            break;
        }
        let mut closed = false;
        if batch.len() < BATCH {
            // Sleeps out the linger instead of waiting on the channel: a waiting receiver
            // is woken by every event, a thread wakeup per frame on the nudge's path.
            tokio::time::sleep(LINGER).await;
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        flush(&store, &mut batch).await;
        if closed {
            break;
        }
    }
    flush(&store, &mut batch).await;
}

async fn flush(store: &Store, batch: &mut Vec<SessionEvent>) {
    if batch.is_empty() {
        return;
    }
    match store.append_events(batch).await {
        Ok(done) => {
            metrics::counter!("inside_events_recorded_total").increment(done.stored as u64);
            if done.dropped > 0 {
                // the store logged which sessions; the other sessions' events are kept
                metrics::counter!("inside_events_dropped_total").increment(done.dropped as u64);
            }
        }
        Err(e) => {
            metrics::counter!("inside_events_lost_total").increment(batch.len() as u64);
            tracing::error!(events = batch.len(), error = %e, "recording session events failed");
        }
    }
    batch.clear();
}
