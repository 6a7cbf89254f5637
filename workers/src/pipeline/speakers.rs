//! Live speaker attribution: audio segments in (queue group `workers`), VAD,
//! then fbank + ECAPA-TDNN on the speech segments, batched on a rayon pool
//! sized to the cores; each embedding scored against the session members'
//! voiceprints; appended to the session's history (for everyone in it) and published on
//! `inside.v1.speakers.<sid>` with its event id, recorded for the report, and
//! the talk-time tally that drives `BALANCE_TALK_TIME`. A segment is attributed only when it
//! is well formed and comes from a consenting member of an active (or finalizing) session; the
//! speaker event is copied to `inside.v1.research.speakers.<sid>` only while every member
//! granted research use. Every segment handled, silent ones too, leaves a [`SegmentMark`] under
//! its member, which the report's completeness check counts. With session affinity (NATS
//! with Redis, `affinity.rs`) a segment of a session another worker owns is forwarded there,
//! and the segments forwarded here join the queue group's in the same batches.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use inside_bus::inbound::reject;
use inside_bus::{Bus, BusMessage, Subscription};
use inside_engine::speech::{best_match, SpeakerModel, Vad, VadConfig};
use inside_engine::NudgePolicy;
use inside_schemas::audio::now_us;
use inside_schemas::{EventBody, HistoryKind, SegmentMark, SpeakerRecord, SpeakerSegment};
use inside_store::events::SessionEvent;
use inside_store::limiter::Limiter;
use inside_store::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::affinity::{Arrival, AudioOwnership};
use super::derived_consumer::DerivedAnalysis;
use super::segments::{ms, parse, stream_started, Pending};
use super::{EventWriter, NudgeDelivery};
use inside_store::SessionDirectory;

/// Segments embedded together at most: one GEMM per layer over all of them.
const MAX_BATCH: usize = 16;
/// How long a session's voiceprints are reused before they are read again (a new enrolment
/// shows up within this).
const PRINTS_TTL: Duration = Duration::from_secs(5);

/// A session's members and their voiceprint embeddings.
type Voiceprints = Arc<Vec<(Uuid, Vec<f32>)>>;

/// Everything the attribution needs besides the bus.
pub struct SpeakerAttribution {
    pub model: Arc<SpeakerModel>,
    pub pool: Arc<rayon::ThreadPool>,
    pub threshold: f32,
}

impl SpeakerAttribution {
    /// A pool with one thread per core: the model's GEMMs run on it.
    pub fn new(
        model: Arc<SpeakerModel>,
        threshold: f32,
    ) -> Result<Self, rayon::ThreadPoolBuildError> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("speaker-{i}"))
            .build()?;
        Ok(Self {
            model,
            pool: Arc::new(pool),
            threshold,
        })
    }
}

pub struct SpeakerConsumer {
    bus: Bus,
    store: Store,
    limiter: Limiter,
    writer: EventWriter,
    delivery: NudgeDelivery,
    policy: NudgePolicy,
    attribution: Arc<SpeakerAttribution>,
    directory: SessionDirectory,
    prints: HashMap<Uuid, (Instant, Voiceprints)>,
    /// Conversation features from the same audio; `None` with `DERIVED_FEATURES=off`.
    derived: Option<DerivedAnalysis>,
    /// Which worker handles each session's audio; `None` without affinity.
    ownership: Option<AudioOwnership>,
    /// Segments other workers forwarded here (`affinity::run_inbox`).
    inbox: Option<mpsc::Receiver<BusMessage>>,
}

impl SpeakerConsumer {
    /// The database is the directory's: voiceprints are read from the same store.
    pub fn new(
        bus: Bus,
        limiter: Limiter,
        writer: EventWriter,
        delivery: NudgeDelivery,
        policy: NudgePolicy,
        attribution: Arc<SpeakerAttribution>,
        directory: SessionDirectory,
    ) -> Self {
        Self {
            derived: None,
            ownership: None,
            inbox: None,
            bus,
            store: directory.store().clone(),
            limiter,
            writer,
            delivery,
            policy,
            attribution,
            directory,
            prints: HashMap::new(),
        }
    }

    /// Also derives conversation features from the same audio (`DERIVED_FEATURES`).
    pub fn with_derived(mut self, derived: Option<DerivedAnalysis>) -> Self {
        self.derived = derived;
        self
    }

    /// Sends each session's segments to the worker that owns it, and takes those forwarded
    /// here from `inbox` (fed by `affinity::run_inbox`).
    pub fn with_ownership(
        mut self,
        ownership: AudioOwnership,
        inbox: mpsc::Receiver<BusMessage>,
    ) -> Self {
        self.ownership = Some(ownership);
        self.inbox = Some(inbox);
        self
    }

    /// Attributes segments until `shutdown`, then what the subscription (and the inbox, which
    /// drains on the same signal) still holds.
    pub async fn run(mut self, sub: Subscription, shutdown: CancellationToken) {
        let mut inbox = self.inbox.take();
        let forwarded = futures::stream::poll_fn(move |cx| match inbox.as_mut() {
            Some(rx) => rx.poll_recv(cx),
            None => Poll::Ready(None),
        });
        // one stream, so forwarded segments share the batches (and the embeddings' GEMMs)
        let mut arrivals =
            futures::stream::select(sub.map(Arrival::Bus), forwarded.map(Arrival::Forwarded));
        // the derived analysis's clock: hops held for a member who stopped streaming come out
        // without waiting for another segment
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let first = tokio::select! {
                m = arrivals.next() => m,
                _ = tick.tick(), if self.derived.is_some() => {
                    self.derived_tick().await;
                    continue;
                }
                _ = shutdown.cancelled() => break,
            };
            let Some(first) = first else { return };
            let batch = take_ready(&mut arrivals, first);
            self.handle(batch).await;
        }
        arrivals.get_mut().0.get_mut().drain().await;
        while let Some(first) = arrivals.next().await {
            let batch = take_ready(&mut arrivals, first);
            self.handle(batch).await;
        }
    }

    /// The batch's segments this worker handles: all of them without affinity; with it, those
    /// forwarded here and those of sessions it owns (the rest go to their owners).
    async fn here(&mut self, batch: Vec<Arrival>) -> Vec<BusMessage> {
        let mut here = Vec::with_capacity(batch.len());
        for arrival in batch {
            match (arrival, self.ownership.as_mut()) {
                (Arrival::Bus(msg), Some(ownership)) => here.extend(ownership.route(msg).await),
                (Arrival::Bus(msg) | Arrival::Forwarded(msg), _) => here.push(msg),
            }
        }
        here
    }

    async fn handle(&mut self, batch: Vec<Arrival>) {
        let batch = self.here(batch).await;
        let mut pending: Vec<Pending> = Vec::with_capacity(batch.len());
        for seg in batch.into_iter().filter_map(parse) {
            // a finalizing session still takes what reached the bus: the report waits for it
            match self.directory.get(seg.sid).await {
                Some(access) if access.records_from(seg.uid) => {
                    let members = access
                        .members
                        .iter()
                        .filter(|m| m.user_id.is_some())
                        .count();
                    pending.push(Pending { members, ..seg })
                }
                Some(access) if !access.is_recording() => {
                    reject("audio", "session_not_active", Some(seg.sid))
                }
                Some(_) => reject("audio", "not_a_consenting_member", Some(seg.sid)),
                None => reject("audio", "unknown_session", Some(seg.sid)),
            }
        }
        if pending.is_empty() {
            return;
        }
        if let Some(ownership) = self.ownership.as_mut() {
            let sessions: HashSet<Uuid> = pending.iter().map(|p| p.sid).collect();
            for sid in sessions {
                ownership.keep(sid).await;
            }
        }
        // a forwarded segment may come after the next one of its stream, sent straight: in one
        // batch they are put back in order here; across batches the derived analysis holds one
        // that is ahead of a missing one
        pending.sort_by_key(|p| {
            (
                p.meta
                    .stream_started_ms
                    .unwrap_or(0)
                    .saturating_add(p.meta.start_ms),
                p.meta.seq,
            )
        });
        metrics::counter!("inside_audio_segments_received_total").increment(pending.len() as u64);
        let attribution = self.attribution.clone();
        let min_samples = attribution.model.min_samples();
        let derived = self.derived.clone();
        let (pending, derived, embeddings) = match tokio::task::spawn_blocking(move || {
            // first: it is cheap, and its nudges should not wait behind the embeddings
            let derived = derived.map(|d| d.feed(pending.iter().map(|p| p.audio())));
            let vad = Vad::new(VadConfig::default());
            let result = attribution.pool.install(|| {
                let speech: Vec<usize> = (0..pending.len())
                    .filter(|&i| {
                        pending[i].samples.len() >= min_samples
                            && vad.is_speech(&pending[i].samples)
                    })
                    .collect();
                let refs: Vec<&[f32]> = speech
                    .iter()
                    .map(|&i| pending[i].samples.as_slice())
                    .collect();
                attribution.model.embed_batch(&refs).map(|embs| {
                    let mut out: Vec<Option<Vec<f32>>> = vec![None; pending.len()];
                    for (i, e) in speech.into_iter().zip(embs) {
                        out[i] = Some(e);
                    }
                    out
                })
            });
            (pending, derived, result)
        })
        .await
        {
            Ok((p, d, Ok(e))) => (p, d, e),
            Ok((_, _, Err(e))) => {
                tracing::warn!(error = %e, "embedding a batch of audio segments failed");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "speaker attribution task failed");
                return;
            }
        };
        if let (Some(analysis), Some(out)) = (&self.derived, derived) {
            // before the segment marks: the report counts on what they precede
            analysis
                .publish(
                    out,
                    &self.bus,
                    &self.directory,
                    &self.delivery,
                    &self.policy,
                    &self.writer,
                )
                .await;
        }
        for (seg, embedding) in pending.into_iter().zip(embeddings) {
            match embedding {
                Some(e) => self.attribute(&seg, &e).await,
                None if seg.ends_stream() => {}
                None => metrics::counter!("inside_audio_segments_silent_total").increment(1),
            }
            // last, after the speaker event and any nudge: once every segment's mark is
            // recorded the report may be written
            self.mark(&seg).await;
        }
    }

    async fn derived_tick(&self) {
        let Some(analysis) = self.derived.clone() else {
            return;
        };
        let out = match tokio::task::spawn_blocking(move || analysis.tick()).await {
            Ok(out) => out,
            Err(e) => {
                tracing::error!(error = %e, "derived features task failed");
                return;
            }
        };
        if out.frames.is_empty() && out.records.is_empty() {
            return;
        }
        if let Some(analysis) = &self.derived {
            analysis
                .publish(
                    out,
                    &self.bus,
                    &self.directory,
                    &self.delivery,
                    &self.policy,
                    &self.writer,
                )
                .await;
        }
    }

    /// Records that the member's segment was received and handled, heard or silent.
    async fn mark(&self, seg: &Pending) {
        self.writer
            .record(SessionEvent {
                session_id: seg.sid,
                user_id: Some(seg.uid),
                body: EventBody::Segment(SegmentMark {
                    seq: seg.meta.seq,
                    start_ms: ms(seg.meta.start_ms),
                    end_ms: ms(seg.meta.end_ms),
                    stream_started_ms: stream_started(&seg.meta),
                }),
            })
            .await;
    }

    async fn attribute(&mut self, seg: &Pending, embedding: &[f32]) {
        let prints = self.voiceprints(seg.sid).await;
        let found = best_match(embedding, &prints, self.attribution.threshold);
        let speaker = SpeakerSegment {
            user_id: found.speaker,
            score: f64::from(found.score),
            start_ms: ms(seg.meta.start_ms),
            end_ms: ms(seg.meta.end_ms),
        };
        let Ok(payload) = serde_json::to_vec(&speaker).map(Bytes::from) else {
            return;
        };
        // for everyone in the session: a reconnecting phone gets it again
        let id = match self
            .delivery
            .events()
            .append(seg.sid, None, HistoryKind::Speaker, &payload)
            .await
        {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(sid = %seg.sid, error = %e, "event history unavailable; speaker event sent without an id");
                None
            }
        };
        let subject = self.bus.subjects().speakers(seg.sid);
        if let Err(e) = self.bus.publish_event(subject, id, payload.clone()).await {
            // the phones miss it; the report still gets it
            tracing::warn!(sid = %seg.sid, error = %e, "publishing a speaker event failed");
        }
        if self
            .directory
            .get(seg.sid)
            .await
            .is_some_and(|a| a.research_allowed())
        {
            let subject = self.bus.subjects().research_speakers(seg.sid);
            if let Err(e) = self.bus.publish(subject, payload).await {
                tracing::warn!(sid = %seg.sid, error = %e, "publishing a research speaker event failed");
            }
        }
        if seg.meta.cut_at_us > 0 {
            let waited = now_us().saturating_sub(seg.meta.cut_at_us);
            metrics::histogram!("inside_speaker_latency_seconds").record(waited as f64 / 1e6);
        }
        metrics::counter!("inside_speakers_total", "attributed" => if speaker.user_id.is_some() { "yes" } else { "no" })
            .increment(1);
        self.writer
            .record(SessionEvent {
                session_id: seg.sid,
                user_id: speaker.user_id,
                body: EventBody::Speaker(SpeakerRecord {
                    segment: speaker,
                    stream_started_ms: stream_started(&seg.meta),
                }),
            })
            .await;
        if let Some(uid) = speaker.user_id {
            let members: Vec<Uuid> = prints.iter().map(|(u, _)| *u).collect();
            let talked = seg.meta.end_ms.saturating_sub(seg.meta.start_ms);
            self.balance(seg.sid, uid, talked, &members).await;
        }
    }

    /// Adds the segment to the session's tally and nudges a speaker who holds too much of it.
    async fn balance(&self, sid: Uuid, uid: Uuid, ms: u64, members: &[Uuid]) {
        let tally = match self.limiter.add_talk_time(sid, uid, ms, members).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(%sid, error = %e, "talk-time tally unavailable");
                return;
            }
        };
        let total: u64 = tally.iter().map(|(_, ms)| ms).sum();
        let own = tally
            .iter()
            .find(|(u, _)| *u == uid)
            .map_or(0, |(_, ms)| *ms);
        let Some(nudge) = self
            .policy
            .evaluate_balance(own as f64 / 1000.0, total as f64 / 1000.0)
        else {
            return;
        };
        self.delivery.deliver(sid, uid, nudge, None).await;
    }

    /// The voiceprints of the session's members, cached for a few seconds.
    async fn voiceprints(&mut self, sid: Uuid) -> Voiceprints {
        if let Some((at, prints)) = self.prints.get(&sid) {
            if at.elapsed() < PRINTS_TTL {
                return prints.clone();
            }
        }
        let loaded = async {
            let session = self.store.session(sid).await?;
            self.store.member_voiceprints(session.relationship_id).await
        }
        .await;
        let prints = Arc::new(match loaded {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%sid, error = %e, "reading voiceprints failed; segment unattributed");
                Vec::new()
            }
        });
        if self.prints.len() > 10_000 {
            self.prints.retain(|_, (at, _)| at.elapsed() < PRINTS_TTL);
        }
        self.prints.insert(sid, (Instant::now(), prints.clone()));
        prints
    }
}

/// `first` and whatever else is already waiting, up to a batch.
fn take_ready<S: futures::Stream + Unpin>(sub: &mut S, first: S::Item) -> Vec<S::Item> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match sub.next().now_or_never() {
            Some(Some(m)) => batch.push(m),
            _ => break,
        }
    }
    batch
}
