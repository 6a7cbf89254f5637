//! The report's clock: where each event sits on the session's time base (the server's clock,
//! as offsets from the session's start) and how long one frame stands for. Every sum and
//! difference saturates: a phone may send any `timestamp_ms`, `i64::MIN` and `i64::MAX`
//! included, and none may wrap or give a negative length.

use inside_schemas::{FeatureFrame, SpeakerRecord};

/// Frames are assumed this long when a speaker's frames give no usable gap.
const DEFAULT_FRAME_MS: f64 = 1_000.0;
/// How far outside the session's start and end an event's server time may lie (other
/// machines' clocks) before it is pulled back to the edge.
const CLOCK_SLACK_MS: i64 = 60_000;

/// One frame of a member as the report orders it.
#[derive(Debug, Clone, Copy)]
pub(super) struct FrameAt {
    received_ms: Option<i64>,
    seq: Option<i64>,
    timestamp_ms: i64,
    pub(super) speaking: bool,
}

impl FrameAt {
    pub(super) fn of(f: &FeatureFrame, speaking: bool) -> Self {
        Self {
            received_ms: f.received_ms,
            seq: f.seq,
            timestamp_ms: f.timestamp_ms,
            speaking,
        }
    }
}

/// The length one frame of a member stands for: the median gap between the phone's
/// timestamps of consecutive frames, taken in the order the gateway received them (then the
/// phone's seq): the recorded order is not that order when several consumers share the
/// frames. The phone's clock gives the cadence it computes frames at; the server's gives the
/// order.
pub(super) fn frame_ms(frames: &mut [FrameAt]) -> f64 {
    frames.sort_by_key(|f| (f.received_ms, f.seq, f.timestamp_ms));
    let mut gaps: Vec<u64> = frames
        .windows(2)
        .map(|w| w[1].timestamp_ms.abs_diff(w[0].timestamp_ms))
        .filter(|g| *g > 0)
        .collect();
    if gaps.is_empty() {
        return DEFAULT_FRAME_MS;
    }
    gaps.sort_unstable();
    (gaps[gaps.len() / 2] as f64).clamp(10.0, 5_000.0)
}

/// First and last event time of a session.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    first: i64,
    last: i64,
}

impl Bounds {
    fn add(slot: &mut Option<Bounds>, t: i64) {
        let b = slot.get_or_insert(Bounds { first: t, last: t });
        b.first = b.first.min(t);
        b.last = b.last.max(t);
    }

    fn length(b: Option<Bounds>) -> u64 {
        b.map_or(0, |b| b.last.abs_diff(b.first))
    }
}

/// The span the session's events cover. Events carrying a server time (frames the gateway
/// stamped, segments of a stream whose start it sent) are placed on the server clock, as
/// offsets from the session's start; a session recorded before those stamps existed (none
/// carries one) falls back to the phone's and the streams' own times.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    started_ms: i64,
    low: i64,
    high: i64,
    server: Option<Bounds>,
    legacy: Option<Bounds>,
}

impl Span {
    pub(super) fn new(started_ms: i64, ended_ms: i64) -> Self {
        Self {
            started_ms,
            low: started_ms.saturating_sub(CLOCK_SLACK_MS),
            high: ended_ms.max(started_ms).saturating_add(CLOCK_SLACK_MS),
            server: None,
            legacy: None,
        }
    }

    /// Offset of server time `t` from the session's start, kept within the session.
    fn offset(&self, t: i64) -> i64 {
        t.clamp(self.low, self.high).saturating_sub(self.started_ms)
    }

    pub(super) fn frame(&mut self, f: &FeatureFrame) {
        match f.received_ms {
            Some(t) => {
                let at = self.offset(t);
                Bounds::add(&mut self.server, at);
            }
            None => Bounds::add(&mut self.legacy, f.timestamp_ms),
        }
    }

    pub(super) fn speaker(&mut self, s: &SpeakerRecord) {
        match s.server_span_ms() {
            Some((start, end)) => {
                let (start, end) = (self.offset(start), self.offset(end));
                Bounds::add(&mut self.server, start);
                Bounds::add(&mut self.server, end);
            }
            None => {
                Bounds::add(&mut self.legacy, s.segment.start_ms);
                Bounds::add(&mut self.legacy, s.segment.end_ms);
            }
        }
    }

    /// From the first event to the last, in ms.
    pub(super) fn duration_ms(&self) -> u64 {
        if self.server.is_some() {
            Bounds::length(self.server)
        } else {
            Bounds::length(self.legacy)
        }
    }
}
