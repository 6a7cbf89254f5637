//! The conversation features the workers derive from live audio: what they publish per hop on
//! `{prefix}.v1.derived.<sid>.<uid>` ([`DerivedFrame`]) and what they record for the report
//! ([`DerivedRecord`]). Methods and limits: docs/DERIVED.md.

use serde::{Deserialize, Serialize};

/// One member's derived features at the end of one hop (250 ms), on the session's time base.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DerivedFrame {
    /// Server clock (ms since the Unix epoch) at the end of the hop: where the member's stream
    /// started (`client.audio_start` reaching the gateway) plus its place in the stream.
    pub at_ms: i64,
    pub hop_ms: u32,
    /// Speaking for at least half the hop.
    pub speaking: bool,
    /// Syllables per second over the member's last 3 s of speech (syllable nuclei, de Jong &
    /// Wempe 2009); null until there is enough speech.
    pub speaking_rate: Option<f64>,
    /// Share of the last 3 s in which this member spoke while someone else did (0..=1).
    pub overlap_ratio: f64,
    /// Share of the last 3 s in which any two members spoke at once (0..=1).
    pub conversation_overlap_ratio: f64,
    /// RMS level of the member's speech in the hop (dBFS); null when silent.
    pub loudness_db: Option<f32>,
    /// That level over the member's own baseline; null until the baseline is settled.
    pub loudness_over_baseline_db: Option<f32>,
    /// Counters since the worker's analysis of the session started.
    pub turns: u32,
    pub interruptions: u32,
    pub interrupted: u32,
    pub monologues: u32,
    pub raised_voice_episodes: u32,
    /// Length of the member's current turn (0 when not in one).
    pub turn_ms: u64,
    pub silences: u32,
    /// Length of the current silence (0 while someone speaks).
    pub silence_ms: u64,
}

/// What the workers record for the report from a run of one member's hops: sums and counts
/// over those hops only, so records add up whatever analyzer (or worker) made them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct DerivedRecord {
    /// Server clock (ms since the Unix epoch) of the first hop's start and the last hop's end.
    pub start_ms: i64,
    pub end_ms: i64,
    /// The member's speech in these hops, and the part of it overlapped by someone else.
    pub speech_ms: u64,
    pub overlapped_ms: u64,
    /// Sum and count of the speaking-rate estimates of the hops in which the member spoke.
    pub rate_sum: f64,
    pub rate_hops: u32,
    /// Turns begun, interruptions made and suffered, monologues reached in these hops.
    pub turns: u32,
    pub interruptions: u32,
    pub interrupted: u32,
    pub monologues: u32,
}
