//! Conversation features derived from live audio (docs/DERIVED.md, **In the workers**): per
//! session, one `ConversationAnalyzer` in this process, fed the audio segments this process
//! receives, each member's stream placed on the session's time base (the server clock: where
//! the gateway started the stream, plus the segment's place in it). Gaps are padded with
//! silence; a member who is not streaming (or has gone quiet on the bus) is padded up to the
//! member furthest ahead so the others' hops keep coming; a member who streams but lags is
//! waited for, up to [`MAX_LAG_MS`] of audio, or until the gateway's empty segment says their
//! stream ended (then at once: the report may be asked for right away). A segment that arrives
//! ahead of one still missing from its stream (a forwarded segment overtaken by the next one,
//! sent straight) is held for up to [`HOLD`] for the gap to fill. Pure and synchronous: the
//! consumer runs it off the async runtime, on the blocking pool.
//!
//! Bounds, since every segment is untrusted: at most [`MAX_STREAMS`] streams per session (the
//! analyzer's limit; later ones are ignored), at most [`MAX_SESSIONS`] sessions per process, a
//! gap of more than [`MAX_GAP_MS`] starts the session's analysis afresh instead of padding it,
//! and a session idle for [`IDLE`] is dropped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use inside_engine::conversation::{ConversationAnalyzer, ConversationConfig, DerivedFeatures};
use inside_schemas::{DerivedFrame, DerivedRecord, FeatureFrame};
use uuid::Uuid;

/// Streams one session's analysis takes (the engine's limit on members).
pub const MAX_STREAMS: usize = 8;
/// Sessions analysed at once by one process; new ones past it are not analysed.
pub const MAX_SESSIONS: usize = 10_000;
/// A session's analysis is dropped after this long without a segment.
pub const IDLE: Duration = Duration::from_secs(60);
/// A member who keeps streaming may lag the one furthest ahead by this much audio before the
/// gap is padded with silence (their late audio for it is then dropped). Phones stream in real
/// time, so the lag is the network's jitter; it is generous because a phone catching up after a
/// stall (or a client sending faster than real time) must not lose its audio, and bounded
/// because the hops waiting for it are held in memory.
pub const MAX_LAG_MS: u64 = 30_000;
/// A member whose last segment reached this process longer ago than this (or who has not
/// streamed this long after the analysis began) counts as not streaming: their slot is padded
/// with silence up to the member furthest ahead.
pub const LIVE: Duration = Duration::from_secs(4);
/// A gap in a stream longer than this restarts the session's analysis rather than being padded.
pub const MAX_GAP_MS: u64 = 60_000;
/// Session time starts this long before the first segment seen, so a member whose stream began
/// a little earlier, but whose segment arrived later, is not cut.
const ORIGIN_SLACK_MS: i64 = 1_000;
/// How long a segment ahead of a missing one of its stream waits for it before the gap is padded.
pub const HOLD: Duration = Duration::from_secs(2);
/// Segments held per member at most; past it the gap is padded at once.
const MAX_HELD: usize = 8;
/// Samples per ms at 16 kHz.
const PER_MS: u64 = 16;
/// Silence is fed in pieces of this many samples (1 s), not in one allocation.
const PAD_CHUNK: usize = 16_000;

/// One segment's audio, placed on the server clock.
pub struct SegmentAudio<'a> {
    pub sid: Uuid,
    pub uid: Uuid,
    /// Server clock (ms since the Unix epoch) of the segment's first sample.
    pub start_ms: i64,
    pub samples: &'a [f32],
    /// Members of the session (the analyzer's slots, at most [`MAX_STREAMS`]).
    pub members: usize,
    /// Its stream (where the stream started on the server clock) and its number in it, when
    /// known: a segment ahead of a missing one of its stream is held for it.
    pub place: Option<(i64, u64)>,
    /// The gateway's mark that the stream ended (a segment with no samples, after its last).
    pub ends: bool,
}

/// One member's hop: the frame published on the derived subject, and the feature frame the
/// nudge rules read (`DerivedFeatures::to_frame`: no rate while the member is silent).
#[derive(Debug, Clone, Copy)]
pub struct HopFrame {
    pub sid: Uuid,
    pub uid: Uuid,
    pub derived: DerivedFrame,
    pub rules: FeatureFrame,
}

/// What feeding a segment produced: per-hop frames to publish and judge, and one record per
/// member whose hops advanced, for the report.
#[derive(Debug, Default)]
pub struct Derived {
    pub frames: Vec<HopFrame>,
    pub records: Vec<(Uuid, Uuid, DerivedRecord)>,
}

/// Why a segment was not analysed (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    TooManySessions,
    TooManyStreams,
}

impl Skipped {
    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::TooManySessions => "too_many_sessions",
            Skipped::TooManyStreams => "too_many_streams",
        }
    }
}

/// The analyses of every session this process hears audio for.
pub struct DerivedSessions {
    config: ConversationConfig,
    sessions: HashMap<Uuid, SessionStreams>,
    last_sweep: Option<Instant>,
}

/// One member's place in a session's analysis.
#[derive(Debug, Clone, Default)]
struct Slot {
    /// `None` until a member's first segment takes the slot.
    uid: Option<Uuid>,
    /// Samples fed so far, on the session's time base.
    fed: u64,
    last_segment: Option<Instant>,
    /// The counters of the last hop seen, so records carry what changed since.
    seen: Counters,
    /// The stream of the last segment fed and the number its next segment has.
    next: Option<(i64, u64)>,
    /// Segments that came ahead of a missing one of their stream, waiting for it.
    held: Vec<Held>,
    /// The stream whose end was fed: while it is the member's latest, they are not streaming.
    ended_stream: Option<i64>,
}

impl Slot {
    /// The member's latest stream has ended (its end was fed).
    fn ended(&self) -> bool {
        self.ended_stream.is_some() && self.ended_stream == self.next.map(|(stream, _)| stream)
    }
}

/// A segment held for a missing one before it.
#[derive(Debug, Clone)]
struct Held {
    place: (i64, u64),
    /// Where it starts, in samples on the session's time base.
    start: u64,
    samples: Vec<f32>,
    since: Instant,
    ends: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    turns: u32,
    interruptions: u32,
    interrupted: u32,
    monologues: u32,
}

struct SessionStreams {
    analyzer: ConversationAnalyzer,
    /// Server clock (ms) of session sample 0.
    origin_ms: i64,
    slots: Vec<Slot>,
    /// When this analysis began: members who have not streamed yet get [`LIVE`] from it to
    /// show up before they are padded (phones that start together may reach it in any order).
    created: Instant,
    last_seen: Instant,
}

impl DerivedSessions {
    pub fn new(config: ConversationConfig) -> Self {
        Self {
            config,
            sessions: HashMap::new(),
            last_sweep: None,
        }
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Feeds one segment, received at `now`; what it completed comes back.
    pub fn feed(&mut self, seg: &SegmentAudio<'_>, now: Instant) -> Result<Derived, Skipped> {
        self.sweep(now);
        if !self.sessions.contains_key(&seg.sid) && self.sessions.len() >= MAX_SESSIONS {
            return Err(Skipped::TooManySessions);
        }
        let mut restarted = false;
        loop {
            let session = match self.sessions.entry(seg.sid) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    match SessionStreams::new(self.config, seg, now) {
                        Some(s) => e.insert(s),
                        // the engine refused the configuration: nothing to analyse with
                        None => return Ok(Derived::default()),
                    }
                }
            };
            match session.feed(seg, now) {
                Fed::Done(out) => return out,
                // a gap too long to pad: the conversation starts over from this segment
                Fed::Restart if !restarted => {
                    self.sessions.remove(&seg.sid);
                    restarted = true;
                }
                Fed::Restart => return Ok(Derived::default()),
            }
        }
    }

    /// What time alone completes: the hops held for members who have since stopped streaming
    /// (a lone phone's last hops, or the tail of a stream that ended). Call it every second or so.
    pub fn tick(&mut self, now: Instant) -> Derived {
        self.sweep(now);
        let mut out = Derived::default();
        for (sid, session) in &mut self.sessions {
            let mut hops = Vec::new();
            session.catch_up(now, &mut hops);
            if !hops.is_empty() {
                let d = session.outputs(*sid, &hops);
                out.frames.extend(d.frames);
                out.records.extend(d.records);
            }
        }
        out
    }

    /// Drops the sessions idle for [`IDLE`] (at most every few seconds).
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(5))
        {
            return;
        }
        self.last_sweep = Some(now);
        self.sessions
            .retain(|_, s| now.saturating_duration_since(s.last_seen) < IDLE);
    }
}

enum Fed {
    Done(Result<Derived, Skipped>),
    Restart,
}

impl SessionStreams {
    fn new(config: ConversationConfig, seg: &SegmentAudio<'_>, now: Instant) -> Option<Self> {
        let members = seg.members.clamp(1, MAX_STREAMS);
        let analyzer = ConversationAnalyzer::new(members, config).ok()?;
        Some(Self {
            analyzer,
            origin_ms: seg.start_ms.saturating_sub(ORIGIN_SLACK_MS),
            slots: vec![Slot::default(); members],
            created: now,
            last_seen: now,
        })
    }

    fn feed(&mut self, seg: &SegmentAudio<'_>, now: Instant) -> Fed {
        let slot = match self.slots.iter().position(|s| s.uid == Some(seg.uid)) {
            Some(i) => i,
            None => match self.slots.iter().position(|s| s.uid.is_none()) {
                Some(i) => {
                    self.slots[i].uid = Some(seg.uid);
                    i
                }
                None => return Fed::Done(Err(Skipped::TooManyStreams)),
            },
        };
        self.last_seen = now;
        self.slots[slot].last_segment = Some(now);
        let offset_ms = seg.start_ms.saturating_sub(self.origin_ms);
        let mut samples = seg.samples;
        // before session time 0: the part before it is dropped
        let start = if offset_ms < 0 {
            let cut = (offset_ms.unsigned_abs().saturating_mul(PER_MS)) as usize;
            samples = samples.get(cut..).unwrap_or(&[]);
            0
        } else {
            offset_ms.unsigned_abs().saturating_mul(PER_MS)
        };
        let fed = self.slots[slot].fed;
        if start > fed && start - fed > MAX_GAP_MS * PER_MS {
            return Fed::Restart;
        }
        let mut hops = Vec::new();
        let held = &self.slots[slot].held;
        match seg.place {
            Some(place) if start > fed && self.ahead(slot, place) && held.len() < MAX_HELD => {
                self.slots[slot].held.push(Held {
                    place,
                    start,
                    samples: samples.to_vec(),
                    since: now,
                    ends: seg.ends,
                });
            }
            place => {
                self.place(slot, start, samples, &mut hops);
                if let Some(place) = place {
                    self.fed_through(slot, place, seg.ends);
                }
            }
        }
        self.catch_up(now, &mut hops);
        Fed::Done(Ok(self.outputs(seg.sid, &hops)))
    }

    /// True when a segment at `place` comes after one of its stream not fed yet (a stream this
    /// member has not fed from yet starts at 0).
    fn ahead(&self, slot: usize, (stream, seq): (i64, u64)) -> bool {
        let expected = match self.slots[slot].next {
            Some((s, n)) if s == stream => n,
            _ => 0,
        };
        seq > expected
    }

    /// The segment at `(stream, seq)` was fed: the next one expected follows it, and when it
    /// was the stream's end, the member is not streaming until a new stream of theirs comes.
    fn fed_through(&mut self, slot: usize, (stream, seq): (i64, u64), ends: bool) {
        let s = &mut self.slots[slot];
        s.next = Some((stream, seq.saturating_add(1)));
        if ends {
            s.ended_stream = Some(stream);
        }
    }

    /// Feeds `samples` starting at `start`: a gap before them padded with silence, a part
    /// already covered (padded while the member lagged, or sent twice) dropped.
    fn place(
        &mut self,
        slot: usize,
        start: u64,
        mut samples: &[f32],
        hops: &mut Vec<Vec<DerivedFeatures>>,
    ) {
        let fed = self.slots[slot].fed;
        if start > fed {
            self.pad(slot, start - fed, hops);
        } else if start < fed {
            let skip = usize::try_from(fed - start).unwrap_or(usize::MAX);
            samples = samples.get(skip..).unwrap_or(&[]);
        }
        if !samples.is_empty() {
            self.push(slot, samples, hops);
        }
    }

    /// Feeds the member's held segments that may go now, in their stream's order: the next one
    /// expected, and any that waited [`HOLD`] (the gap before it is then padded).
    fn release(&mut self, slot: usize, now: Instant, hops: &mut Vec<Vec<DerivedFeatures>>) {
        loop {
            let held = &self.slots[slot].held;
            let Some(i) = (0..held.len()).min_by_key(|&i| held[i].place) else {
                return;
            };
            let due = now.saturating_duration_since(held[i].since) >= HOLD;
            if !due && self.ahead(slot, held[i].place) {
                return;
            }
            let seg = self.slots[slot].held.swap_remove(i);
            self.place(slot, seg.start, &seg.samples, hops);
            self.fed_through(slot, seg.place, seg.ends);
        }
    }

    /// Feeds what held segments may go, then pads the others up to the member furthest ahead:
    /// at once for a member who is not streaming (their stream ended, or went quiet for
    /// [`LIVE`]), with up to MAX_LAG_MS of patience for one who is.
    fn catch_up(&mut self, now: Instant, hops: &mut Vec<Vec<DerivedFeatures>>) {
        for k in 0..self.slots.len() {
            if !self.slots[k].held.is_empty() {
                self.release(k, now, hops);
            }
        }
        let leader = self.slots.iter().map(|s| s.fed).max().unwrap_or(0);
        // every stream seen has ended: a member yet to stream has nothing to line up with
        let all_ended = self
            .slots
            .iter()
            .filter(|s| s.uid.is_some())
            .all(Slot::ended);
        for k in 0..self.slots.len() {
            let slot = &self.slots[k];
            let since = slot.last_segment.unwrap_or(self.created);
            let waited_for = match slot.uid {
                Some(_) => !slot.ended(),
                None => !all_ended,
            };
            let streaming = waited_for && now.saturating_duration_since(since) < LIVE;
            let target = if streaming {
                leader.saturating_sub(MAX_LAG_MS * PER_MS)
            } else {
                leader
            };
            let behind = target.saturating_sub(self.slots[k].fed);
            if behind > 0 {
                self.pad(k, behind, hops);
            }
        }
    }

    fn pad(&mut self, slot: usize, samples: u64, hops: &mut Vec<Vec<DerivedFeatures>>) {
        let zeros = [0f32; PAD_CHUNK];
        let mut left = samples;
        while left > 0 {
            let n = usize::try_from(left.min(PAD_CHUNK as u64)).unwrap_or(PAD_CHUNK);
            self.push(slot, &zeros[..n], hops);
            left -= n as u64;
        }
    }

    fn push(&mut self, slot: usize, samples: &[f32], hops: &mut Vec<Vec<DerivedFeatures>>) {
        // the slot exists (it indexes `slots`, sized as the analyzer): no error to handle
        if let Ok(done) = self.analyzer.push(slot, samples) {
            hops.extend(done);
        }
        self.slots[slot].fed += samples.len() as u64;
    }

    /// The frames of the members who streamed, and each one's record over these hops.
    fn outputs(&mut self, sid: Uuid, hops: &[Vec<DerivedFeatures>]) -> Derived {
        let mut out = Derived::default();
        let hop_ms = self.analyzer.hop().ms();
        let mut records: Vec<Option<DerivedRecord>> = vec![None; self.slots.len()];
        for row in hops {
            for f in row {
                let Some(slot) = self.slots.get_mut(f.member) else {
                    continue;
                };
                let Some(uid) = slot.uid else { continue };
                let end_ms = self
                    .origin_ms
                    .saturating_add(i64::try_from(f.end_ms).unwrap_or(i64::MAX));
                let mut rules = f.to_frame(end_ms);
                rules.received_ms = Some(end_ms);
                out.frames.push(HopFrame {
                    sid,
                    uid,
                    derived: frame(f, end_ms, hop_ms),
                    rules,
                });
                let r = records[f.member].get_or_insert_with(|| DerivedRecord {
                    start_ms: end_ms.saturating_sub(i64::from(hop_ms)),
                    ..Default::default()
                });
                r.end_ms = end_ms;
                r.speech_ms += u64::from(f.speech_ms);
                r.overlapped_ms += u64::from(f.overlapped_ms);
                if let (true, Some(rate)) = (f.speaking, f.speaking_rate) {
                    if rate.is_finite() {
                        r.rate_sum += rate;
                        r.rate_hops += 1;
                    }
                }
                // counters only grow within one analyzer; a new analyzer starts a new `seen`
                r.turns += f.turns.saturating_sub(slot.seen.turns);
                r.interruptions += f.interruptions.saturating_sub(slot.seen.interruptions);
                r.interrupted += f.interrupted.saturating_sub(slot.seen.interrupted);
                r.monologues += f.monologues.saturating_sub(slot.seen.monologues);
                slot.seen = Counters {
                    turns: f.turns,
                    interruptions: f.interruptions,
                    interrupted: f.interrupted,
                    monologues: f.monologues,
                };
            }
        }
        for (slot, record) in self.slots.iter().zip(records) {
            if let (Some(uid), Some(r)) = (slot.uid, record) {
                out.records.push((sid, uid, r));
            }
        }
        out
    }
}

fn frame(f: &DerivedFeatures, at_ms: i64, hop_ms: u32) -> DerivedFrame {
    DerivedFrame {
        at_ms,
        hop_ms,
        speaking: f.speaking,
        speaking_rate: f.speaking_rate.filter(|r| r.is_finite()),
        overlap_ratio: f.overlap_ratio,
        conversation_overlap_ratio: f.conversation_overlap_ratio,
        loudness_db: f.loudness_db.filter(|l| l.is_finite()),
        loudness_over_baseline_db: f.loudness_over_baseline_db.filter(|l| l.is_finite()),
        turns: f.turns,
        interruptions: f.interruptions,
        interrupted: f.interrupted,
        monologues: f.monologues,
        raised_voice_episodes: f.raised_voice_episodes,
        turn_ms: f.turn_ms,
        silences: f.silences,
        silence_ms: f.silence_ms,
    }
}

#[cfg(test)]
#[path = "derived_tests.rs"]
mod tests;
