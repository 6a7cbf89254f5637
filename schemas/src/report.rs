//! The session report and activity suggestions (`GET /v1/sessions/{sid}/report`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Report {
    pub session_id: Uuid,
    pub generated_at: DateTime<Utc>,
    /// From the first to the last recorded frame or speaker segment, on the server's clock
    /// (when the gateway received each frame; where each audio stream started, plus the
    /// segment's place in it), never the phone's `timestamp_ms`.
    pub duration_s: f64,
    pub frames: u64,
    pub nudges: NudgeSummary,
    pub speakers: Vec<SpeakerStats>,
    pub highlights: Vec<String>,
    pub suggested_activities: Vec<Activity>,
    /// False when the report was written without everything the gateways published for the
    /// session (frames or audio still missing when the wait for them ran out); the reason says
    /// what was missing.
    #[serde(default = "yes")]
    pub complete: bool,
    /// Why the report is incomplete; null when it is complete.
    #[serde(default)]
    pub incomplete_reason: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NudgeSummary {
    pub total: u64,
    /// Count per nudge type, e.g. `{"SLOW_DOWN": 3}`.
    pub by_type: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpeakerStats {
    pub user_id: Uuid,
    pub talk_time_s: f64,
    /// Share of the attributed talk time, 0..=1.
    pub talk_share: f64,
    pub avg_speaking_rate: f64,
    pub overlap_ratio: f64,
    pub nudges: u64,
    /// What the workers derived from this member's own audio stream (docs/DERIVED.md); null
    /// when the member streamed no audio or `DERIVED_FEATURES` is off.
    #[serde(default)]
    pub from_audio: Option<AudioStats>,
}

/// One member's conversation figures derived from their audio stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AudioStats {
    /// Seconds of the member's speech (voice activity, 10 ms resolution).
    pub speaking_s: f64,
    /// Mean syllables per second over the member's speech (the live 3 s estimates, averaged
    /// over the hops in which they spoke).
    pub speaking_rate: f64,
    /// Share, 0..=1, of the member's speech during which someone else spoke too.
    pub overlap_share: f64,
    pub turns: u32,
    /// Interruptions this member made, and suffered.
    pub interruptions: u32,
    pub interrupted: u32,
    /// Turns that ran past the monologue length (60 s).
    pub monologues: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Activity {
    pub id: String,
    pub title: String,
    pub description: String,
    pub minutes: u32,
    /// Why this activity was chosen for this relationship.
    pub reason: String,
}

/// `202 {"status": "pending"}` while a report is being written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportPending {
    /// Always `pending`.
    pub status: String,
}
