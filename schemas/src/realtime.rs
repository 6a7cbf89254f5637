//! Realtime payloads: feature frames, nudges and speaker attributions, as they
//! travel over the WebSocket and the NATS subjects, and the events recorded for the report.
//!
//! One time base for a session: the server's clock. The gateway stamps each frame it accepts
//! with `received_ms` and each audio stream with the time it started; the report places
//! everything by those, never by the phone's `timestamp_ms` (which stays as data).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::messages::ServerMessageType;

/// `client.feature_frame` payload, computed by the phone over its own analysis window
/// (typically 0.5–2 s; each frame stands alone). A rule fires when a value is strictly over
/// its threshold: `SLOW_DOWN` for `speaking_rate` over `SPEAKING_RATE_THRESHOLD` (3.0),
/// `LET_PARTNER_FINISH` for `overlap_ratio` over `OVERLAP_RATIO_THRESHOLD` (0.3).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeatureFrame {
    /// The phone's clock, in ms, at the window's end: kept as data and used only for the
    /// cadence of the phone's own frames (the session's time base is `received_ms`).
    pub timestamp_ms: i64,
    /// Syllables per second of the member holding the phone over the window, finite and ≥ 0.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0))]
    pub speaking_rate: f64,
    /// The share of the same window, 0..=1, in which both people talk at once.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 1.0))]
    pub overlap_ratio: f64,
    /// The phone's own frame counter; echoed as `frame_seq` in the nudge this frame causes,
    /// and reported back as `last_frame_seq` (frames above it were not accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// Set by the gateway, never by the phone (a client frame carrying it is refused): the
    /// server clock, in ms since the Unix epoch, when the gateway accepted the frame.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_i64"
    )]
    pub received_ms: Option<i64>,
}

/// A field that, when present, is a number: `null` is refused rather than read as absent, so
/// a stamp spliced after a client's `null` cannot make a key appear twice.
fn present_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    i64::deserialize(d).map(Some)
}

/// The server clock in ms since the Unix epoch: the time base of a session's report.
pub fn server_now_ms() -> i64 {
    server_now_us().div_euclid(1_000)
}

/// The server clock in µs since the Unix epoch: when a gateway accepted a frame, carried to
/// the nudge it causes so the gateway that delivers it can time the whole path.
pub fn server_now_us() -> i64 {
    // read straight off the system clock: `chrono::Utc::now` works out the calendar date first,
    // and this is read twice per frame
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |us| -us),
    }
}

impl FeatureFrame {
    /// The ranges API.md gives: `speaking_rate` finite and ≥ 0, `overlap_ratio` in 0..=1. The
    /// gateway checks them on the socket; a worker checks them again on the bus.
    pub fn check(&self) -> Result<(), &'static str> {
        if !self.speaking_rate.is_finite() || self.speaking_rate < 0.0 {
            return Err("speaking_rate must be a finite number >= 0");
        }
        if !self.overlap_ratio.is_finite() || !(0.0..=1.0).contains(&self.overlap_ratio) {
            return Err("overlap_ratio must be between 0 and 1");
        }
        Ok(())
    }
}

/// What a nudge asks for: `SLOW_DOWN` (speaking rate over its threshold),
/// `LET_PARTNER_FINISH` (overlap over its threshold; wins a tie), `BALANCE_TALK_TIME` (one
/// speaker holds more than `BALANCE_SHARE` of the attributed talk, once there is
/// `BALANCE_MIN_SECONDS` of it).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NudgeType {
    SlowDown,
    LetPartnerFinish,
    BalanceTalkTime,
}

impl NudgeType {
    /// Every kind, e.g. to start each metric series at zero.
    pub const ALL: [NudgeType; 3] = [
        NudgeType::SlowDown,
        NudgeType::LetPartnerFinish,
        NudgeType::BalanceTalkTime,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NudgeType::SlowDown => "SLOW_DOWN",
            NudgeType::LetPartnerFinish => "LET_PARTNER_FINISH",
            NudgeType::BalanceTalkTime => "BALANCE_TALK_TIME",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "SLOW_DOWN" => Some(NudgeType::SlowDown),
            "LET_PARTNER_FINISH" => Some(NudgeType::LetPartnerFinish),
            "BALANCE_TALK_TIME" => Some(NudgeType::BalanceTalkTime),
            _ => None,
        }
    }
}

/// `server.nudge` payload. At most one per `NUDGE_RATE_LIMIT_SECONDS` (10) per session and
/// member, whatever its type, across every gateway and worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Nudge {
    pub nudge_type: NudgeType,
    /// How far over its threshold the value was: 1 just over, 2 from 25 % over, 3 from 50 %
    /// over (value / threshold ≥ 1.25, ≥ 1.5). For `BALANCE_TALK_TIME`, the part of the talk
    /// share above `BALANCE_SHARE` (0.7) over what is left up to 1.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3))]
    pub intensity: u8,
    /// The words shown to the member.
    pub message: String,
    /// The `seq` of the frame that caused it (null for audio-based nudges or frames without one).
    pub frame_seq: Option<i64>,
    /// The `timestamp_ms` of the frame that caused it.
    pub frame_timestamp_ms: Option<i64>,
}

/// `server.speaker` payload: who spoke in an audio segment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpeakerSegment {
    /// Null when no voiceprint scored over the threshold.
    pub user_id: Option<Uuid>,
    /// Cosine similarity, -1..=1, between the segment's ECAPA-TDNN embedding and the best
    /// matching voiceprint of the session's members.
    pub score: f64,
    /// Start of the segment, in ms from the stream's `client.audio_start`.
    pub start_ms: i64,
    /// End of the segment, in ms from the stream's `client.audio_start`.
    pub end_ms: i64,
}

/// `server.session_state` payload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionState {
    pub sid: Uuid,
    /// The user ids with at least one socket open on the session, on any gateway.
    pub participants: Vec<Uuid>,
}

/// The audio a `client.audio_start` announces: what the binary frames that follow hold.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AudioCodec {
    /// Raw 16-bit little-endian PCM, interleaved: needs `sample_rate` and `channels`.
    PcmS16le,
    Wav,
    Flac,
    /// Ogg Vorbis.
    Ogg,
    Mp3,
}

/// `client.audio_start` payload. The gateway reads `codec` as text so that an unknown one is
/// answered with `invalid_audio_start` and the list of codecs, not a bare parse error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AudioStartPayload {
    #[cfg_attr(feature = "openapi", schema(value_type = AudioCodec))]
    pub codec: String,
    /// Samples per second, 8000..=192000; required for `pcm_s16le` (containers carry their
    /// own; 16000 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 8000, maximum = 192000))]
    pub sample_rate: Option<u32>,
    /// Interleaved channels, 1..=8; required for `pcm_s16le` (1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 8))]
    pub channels: Option<u32>,
}

/// The payload of a message that carries nothing: `{}` (or no `payload` at all).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NoPayload {}

/// A speaker attribution as recorded for the report: the segment (times from its stream's
/// start, as phones get it) and where that stream started on the server clock.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct SpeakerRecord {
    #[serde(flatten)]
    pub segment: SpeakerSegment,
    /// Server clock (ms since the Unix epoch) when the segment's audio stream started; absent
    /// in events recorded before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_started_ms: Option<i64>,
}

impl SpeakerRecord {
    /// The segment's start and end on the server clock, when its stream's start is known.
    pub fn server_span_ms(&self) -> Option<(i64, i64)> {
        let base = self.stream_started_ms?;
        Some((
            base.saturating_add(self.segment.start_ms),
            base.saturating_add(self.segment.end_ms),
        ))
    }
}

/// One audio segment of a member that a worker received and handled (attributed, or silent),
/// recorded under that member so the report can tell that every segment the gateway published
/// is in: a segment with nobody audible in it leaves no speaker event.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentMark {
    pub seq: u64,
    /// Stream times, as in the segment's headers.
    pub start_ms: i64,
    pub end_ms: i64,
    /// Server clock (ms since the Unix epoch) when the stream started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_started_ms: Option<i64>,
}

/// The server → client events a session's history keeps for a reconnecting socket
/// (`?since=<event_id>`), each with a per-session increasing `event_id` in its envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HistoryKind {
    Nudge,
    Speaker,
    Poke,
}

impl HistoryKind {
    /// The short name a stored entry carries.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryKind::Nudge => "nudge",
            HistoryKind::Speaker => "speaker",
            HistoryKind::Poke => "poke",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "nudge" => Some(HistoryKind::Nudge),
            "speaker" => Some(HistoryKind::Speaker),
            "poke" => Some(HistoryKind::Poke),
            _ => None,
        }
    }

    /// The WebSocket message type it is delivered as.
    pub fn message_type(self) -> ServerMessageType {
        match self {
            HistoryKind::Nudge => ServerMessageType::Nudge,
            HistoryKind::Speaker => ServerMessageType::Speaker,
            HistoryKind::Poke => ServerMessageType::Poke,
        }
    }
}

/// `server.joined` payload: the first message on every socket, before any replay.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Joined {
    pub sid: Uuid,
    /// The session's newest `event_id` when the socket joined (null: this server keeps no
    /// history); a client that saw no event yet resumes from it.
    pub last_event_id: Option<u64>,
    /// The highest feature frame `seq` a gateway accepted (published) for this user in this
    /// session, across sockets and reconnects; frames after it should be sent again.
    pub last_frame_seq: Option<i64>,
}

/// `server.resync` payload: the events after `since` are no longer held. First on a resumed
/// socket, or mid-stream when the history was made anew (its ids go on past the old ones).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resync {
    /// Always `history_expired`: refetch the session's state over REST.
    pub reason: String,
    /// The oldest `event_id` still held (null: none).
    pub oldest_event_id: Option<u64>,
    /// The session's newest `event_id`; live events after this one follow (the next `since`).
    pub last_event_id: Option<u64>,
}

impl Resync {
    /// The one reason there is: the history no longer holds what the socket missed.
    pub fn history_expired(oldest_event_id: Option<u64>, last_event_id: Option<u64>) -> Self {
        Self {
            reason: "history_expired".into(),
            oldest_event_id,
            last_event_id,
        }
    }
}

/// `server.pong` payload.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pong {
    /// As in `server.joined`, including what this socket sent since.
    pub last_frame_seq: Option<i64>,
}

/// One thing that happened in a session, as recorded for its report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum EventBody {
    Frame(FeatureFrame),
    Nudge(Nudge),
    Speaker(SpeakerRecord),
    Segment(SegmentMark),
    /// What the workers derived from a member's audio over a run of hops.
    Derived(crate::DerivedRecord),
}

impl EventBody {
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Frame(_) => "frame",
            EventBody::Nudge(_) => "nudge",
            EventBody::Speaker(_) => "speaker",
            EventBody::Segment(_) => "segment",
            EventBody::Derived(_) => "derived",
        }
    }

    /// A time to order stored rows by, in ms: the server clock where the event carries it,
    /// else the phone's or the stream's. The report does not read it.
    pub fn ts_ms(&self) -> i64 {
        match self {
            EventBody::Frame(f) => f.received_ms.unwrap_or(f.timestamp_ms),
            EventBody::Nudge(n) => n.frame_timestamp_ms.unwrap_or(0),
            EventBody::Speaker(s) => s
                .server_span_ms()
                .map_or(s.segment.start_ms, |(start, _)| start),
            EventBody::Segment(m) => m
                .stream_started_ms
                .map_or(m.start_ms, |base| base.saturating_add(m.start_ms)),
            EventBody::Derived(d) => d.start_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_clock_reads_as_calendar_time_does() {
        let (us, ms) = (server_now_us(), server_now_ms());
        let calendar = chrono::Utc::now().timestamp_micros();
        assert!((calendar - us).abs() < 1_000_000, "{calendar} vs {us}");
        assert!((calendar / 1_000 - ms).abs() < 1_000, "{calendar} vs {ms}");
    }
}
