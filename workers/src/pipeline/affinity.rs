//! Session affinity for live audio (NATS with Redis): every segment of a session is analysed
//! by one worker, its owner, so the derived features see all of the session's streams. The
//! queue group still spreads segments over the workers; the one that takes a segment looks up
//! the session's owner (this process's cache, else Redis `audio-owner:<sid>`, claimed for
//! itself when free) and, when it is another worker, forwards the segment unchanged to that
//! worker's own subject as a request. An owner that does not answer is gone: its claim is
//! deleted (only if it still names it), taken over, and the segment handled here, so nothing
//! accepted is lost. The owner keeps its claim alive while it handles the session's audio.
//! In-process, or on NATS without Redis, there is no affinity: any worker takes any segment.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use inside_bus::inbound::reject;
use inside_bus::{sid_uid, Bus, BusError, BusMessage, Subscription};
use inside_schemas::audio::headers::FORWARDED_AUDIO_SUBJECT;
use inside_store::limiter::Limiter;
use inside_store::ownership::Claims;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a claim lasts without its owner handling the session's audio; also how long a
/// dead owner's sessions wait to be noticed when no segment arrives to notice it.
pub const CLAIM_TTL: Duration = Duration::from_secs(30);
/// How long a forwarding worker waits for the owner's answer before it takes the session over.
/// The owner answers as soon as the segment is queued, not after the analysis.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Forwarded segments queued for the audio consumer; when full, answers wait (backpressure on
/// the forwarding workers).
pub const INBOX_CAPACITY: usize = 1_024;
/// Sessions whose owner this process remembers before it forgets the expired ones.
const SWEEP_AT: usize = 10_000;

/// A segment as the audio consumer takes it.
#[derive(Debug)]
pub enum Arrival {
    /// From the queue group: its session may be another worker's.
    Bus(BusMessage),
    /// Forwarded by a worker that found this one owning its session; its subject is the
    /// `audio` subject it was published on, checked.
    Forwarded(BusMessage),
}

/// Who owns a session's audio, as far as this process knows, and until when.
#[derive(Debug, Clone, Copy)]
struct Known {
    owner: Uuid,
    until: Instant,
}

/// This worker's side of the affinity: its id, the claims, and the owners it has learned.
pub struct AudioOwnership {
    me: Uuid,
    me_text: String,
    bus: Bus,
    claims: Claims,
    known: HashMap<Uuid, Known>,
}

impl AudioOwnership {
    /// `None` on the in-process bus or without Redis: no affinity there.
    pub fn new(bus: Bus, limiter: &Limiter, me: Uuid) -> Option<Self> {
        if bus.is_local() {
            return None;
        }
        let claims = Claims::from_limiter(limiter)?;
        Some(Self {
            me,
            me_text: me.to_string(),
            bus,
            claims,
            known: HashMap::new(),
        })
    }

    /// This worker's id, which its claims name.
    pub fn worker(&self) -> Uuid {
        self.me
    }

    /// Subscribes to this worker's own audio subject (every message, no queue group).
    pub async fn subscribe(&self) -> Result<Subscription, BusError> {
        self.bus
            .subscribe(self.bus.subjects().worker_audio(self.me))
            .await
    }

    /// A segment taken from the queue group: back when it is this worker's to handle, `None`
    /// when its session's owner has taken it.
    pub async fn route(&mut self, msg: BusMessage) -> Option<BusMessage> {
        // a subject naming no session is refused by the consumer's own checks
        let Some((sid, _)) = sid_uid(&msg.subject) else {
            return Some(msg);
        };
        let mut gone = None;
        for _ in 0..2 {
            let Some(owner) = self.owner(sid).await else {
                // Redis unavailable: handled here rather than lost
                break;
            };
            if owner == self.me || Some(owner) == gone {
                break;
            }
            match self.forward(owner, &msg).await {
                Ok(()) => {
                    metrics::counter!("inside_audio_forwarded_total").increment(1);
                    return None;
                }
                Err(e) => {
                    tracing::warn!(%sid, %owner, error = %e, "the owner of a session's audio is gone; taking it over");
                    self.known.remove(&sid);
                    if let Err(e) = self.claims.release(&key(sid), &owner.to_string()).await {
                        tracing::warn!(%sid, error = %e, "giving up a gone worker's claim failed");
                    }
                    metrics::counter!("inside_audio_owner_takeovers_total").increment(1);
                    gone = Some(owner);
                }
            }
        }
        Some(msg)
    }

    /// Keeps this worker's claim on `sid` alive while it handles the session's audio: renewed
    /// once less than half is left, and only while it is still this worker's. A claim found
    /// lost (it ran out and someone else took it) is learned, so the next segments go there.
    pub async fn keep(&mut self, sid: Uuid) {
        let now = Instant::now();
        if self.known.get(&sid).is_some_and(|k| {
            k.owner == self.me && k.until.saturating_duration_since(now) >= CLAIM_TTL / 2
        }) {
            return;
        }
        match self.claims.keep(&key(sid), &self.me_text, CLAIM_TTL).await {
            Ok(true) => self.remember(sid, self.me, now + CLAIM_TTL),
            Ok(false) => {
                self.known.remove(&sid);
                // free: ours again; someone else's: learned for the next segment
                let _ = self.owner(sid).await;
            }
            Err(e) => {
                tracing::warn!(%sid, error = %e, "keeping the claim on a session's audio failed")
            }
        }
    }

    /// The session's owner: remembered, else claimed for this worker or read in one round trip.
    async fn owner(&mut self, sid: Uuid) -> Option<Uuid> {
        let now = Instant::now();
        if let Some(k) = self.known.get(&sid).filter(|k| k.until > now) {
            return Some(k.owner);
        }
        match self.claims.claim(&key(sid), &self.me_text, CLAIM_TTL).await {
            Ok(claim) => {
                let Ok(owner) = claim.owner.parse::<Uuid>() else {
                    tracing::warn!(%sid, owner = %claim.owner, "a session's audio claim names no worker");
                    return None;
                };
                self.remember(sid, owner, now + claim.left);
                Some(owner)
            }
            Err(e) => {
                tracing::warn!(%sid, error = %e, "reading who owns a session's audio failed; handling it here");
                None
            }
        }
    }

    fn remember(&mut self, sid: Uuid, owner: Uuid, until: Instant) {
        if self.known.len() >= SWEEP_AT {
            let now = Instant::now();
            self.known.retain(|_, k| k.until > now);
        }
        self.known.insert(sid, Known { owner, until });
    }

    async fn forward(&self, owner: Uuid, msg: &BusMessage) -> Result<(), BusError> {
        let mut headers = msg.headers.clone().unwrap_or_default();
        headers.insert(FORWARDED_AUDIO_SUBJECT, msg.subject.as_str());
        self.bus
            .request(
                self.bus.subjects().worker_audio(owner),
                headers,
                msg.payload.clone(),
                FORWARD_TIMEOUT,
            )
            .await
            .map(|_| ())
    }
}

/// The claim's key under the limiter's prefix.
fn key(sid: Uuid) -> String {
    format!("audio-owner:{sid}")
}

/// Takes the segments other workers forward to this one (`sub`, its own subject), queues each
/// for the audio consumer under the `audio` subject it came on, and answers the request once it
/// is queued. The subject header is untrusted like any bus message: one that is not an audio
/// subject of this deployment is refused and counted. Ends, having drained, at `shutdown`.
pub async fn run_inbox(
    bus: Bus,
    sub: Subscription,
    queue: mpsc::Sender<BusMessage>,
    shutdown: CancellationToken,
) {
    sub.serve(&shutdown, |msg| async {
        if accept(&bus, msg, &queue).await {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    })
    .await;
}

/// Queues one forwarded segment and answers it; false once the consumer is gone.
async fn accept(bus: &Bus, msg: BusMessage, queue: &mpsc::Sender<BusMessage>) -> bool {
    let reply = msg.reply.clone();
    if let Some(segment) = unwrap_forwarded(bus, msg) {
        if queue.send(segment).await.is_err() {
            // no answer: the sender takes the segment over
            return false;
        }
    }
    // refused ones are answered too: sending them elsewhere would not make them valid
    if let Some(reply) = reply {
        if let Err(e) = bus.publish(reply, bytes::Bytes::new()).await {
            tracing::warn!(error = %e, "answering a forwarded audio segment failed");
        }
    }
    true
}

/// The segment as it was on the `audio` subject its header names; `None` (refused, counted)
/// when the header is missing or names anything else.
fn unwrap_forwarded(bus: &Bus, mut msg: BusMessage) -> Option<BusMessage> {
    let subject = msg.header(FORWARDED_AUDIO_SUBJECT).map(str::to_string);
    let ids = subject.as_deref().and_then(sid_uid);
    match (subject, ids) {
        (Some(subject), Some((sid, uid))) if subject == bus.subjects().audio(sid, uid) => {
            msg.subject = subject;
            msg.reply = None;
            Some(msg)
        }
        (_, ids) => {
            metrics::counter!("inside_audio_segments_invalid_total").increment(1);
            reject("audio", "forwarded_subject", ids.map(|(sid, _)| sid));
            None
        }
    }
}
