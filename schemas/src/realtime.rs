//! Realtime payloads: feature frames, nudges and speaker attributions, as they
//! travel over the WebSocket and the NATS subjects.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `client.feature_frame` payload, computed by the phone.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeatureFrame {
    pub timestamp_ms: i64,
    /// Syllables per second, ≥ 0.
    pub speaking_rate: f64,
    /// Share of the frame where both talk, 0..=1.
    pub overlap_ratio: f64,
    /// Echoed in the nudge this frame causes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
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

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NudgeType {
    SlowDown,
    LetPartnerFinish,
    BalanceTalkTime,
}

impl NudgeType {
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

/// `server.nudge` payload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Nudge {
    pub nudge_type: NudgeType,
    /// 1 (gentle) ..= 3 (strong).
    pub intensity: u8,
    pub message: String,
    pub frame_seq: Option<i64>,
    pub frame_timestamp_ms: Option<i64>,
}

/// `server.speaker` payload: who spoke in an audio segment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpeakerSegment {
    /// Null when no voiceprint scored over the threshold.
    pub user_id: Option<Uuid>,
    pub score: f64,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// `server.session_state` payload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionState {
    pub sid: Uuid,
    pub participants: Vec<Uuid>,
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
    pub fn message_type(self) -> &'static str {
        match self {
            HistoryKind::Nudge => "server.nudge",
            HistoryKind::Speaker => "server.speaker",
            HistoryKind::Poke => "server.poke",
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

/// `server.resync` payload: the events after `since` are no longer held.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resync {
    /// Always `history_expired`: refetch the session's state over REST.
    pub reason: String,
    /// The oldest `event_id` still held (null: none).
    pub oldest_event_id: Option<u64>,
    /// The session's newest `event_id`; live events after this one follow.
    pub last_event_id: Option<u64>,
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
    Speaker(SpeakerSegment),
}

impl EventBody {
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Frame(_) => "frame",
            EventBody::Nudge(_) => "nudge",
            EventBody::Speaker(_) => "speaker",
        }
    }

    /// The session-clock time it refers to, in ms.
    pub fn ts_ms(&self) -> i64 {
        match self {
            EventBody::Frame(f) => f.timestamp_ms,
            EventBody::Nudge(n) => n.frame_timestamp_ms.unwrap_or(0),
            EventBody::Speaker(s) => s.start_ms,
        }
    }
}
