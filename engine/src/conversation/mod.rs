//! Conversation features derived from audio alone: speaking rate, voice activity per member,
//! overlap, turns, interruptions, monologues, silences and loudness, per short hop, so that a
//! phone that only streams audio can be coached by the same `NudgePolicy` as one that sends
//! feature frames. Pure and incremental: samples in (16 kHz mono f32, any chunk size), one
//! result per hop out, state carried across chunks. Methods, defaults and measured accuracy:
//! docs/DERIVED.md.
//!
//! - [`rate`]: syllables per second by syllable-nucleus detection (de Jong & Wempe 2009).
//! - [`activity`]: who speaks, per 10 ms frame and per hop, from the speech VAD's features.
//! - [`overlap`]: the share of a recent window in which two members speak at once.
//! - [`turns`]: turns, interruptions, monologues, silences and loudness.
//! - [`features`]: all of it per member per hop, convertible to a `FeatureFrame`.

pub mod activity;
pub mod features;
pub mod overlap;
pub mod rate;
pub mod turns;

pub use activity::{
    ActivityConfig, HopActivity, MemberActivity, StreamActivity, VoiceActivityTracker,
};
pub use features::{ConversationAnalyzer, ConversationConfig, DerivedFeatures};
pub use overlap::{
    overlapped_by_scores, overlapped_frames, HopScores, OverlapTracker, ScoreOverlapConfig,
};
pub use rate::{RateConfig, RateEstimate, SpeakingRateTracker};
pub use turns::{MemberTurns, TurnConfig, TurnSnapshot, TurnTracker};

use crate::speech::SAMPLE_RATE;

/// Every tracker here works on 10 ms frames: fine enough for syllables and turn edges.
pub const FRAME_MS: u32 = 10;
/// Samples in one 10 ms frame at 16 kHz.
pub const FRAME_LEN: usize = (SAMPLE_RATE / 1000 * FRAME_MS) as usize;

/// A configuration the trackers cannot work with, or a member they do not know.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConversationError {
    #[error("hop of {0} ms: must be 100..=250 ms and a multiple of 10 ms")]
    Hop(u32),
    #[error("{0} members: between 1 and 8")]
    Members(usize),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("no member {0} in this conversation")]
    NoSuchMember(usize),
}

/// The hop every result is emitted at: 100–250 ms in whole 10 ms frames, short enough to follow
/// turns, long enough that a result per hop stays cheap to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    ms: u32,
}

impl Hop {
    pub fn new(ms: u32) -> Result<Self, ConversationError> {
        if (100..=250).contains(&ms) && ms.is_multiple_of(FRAME_MS) {
            Ok(Self { ms })
        } else {
            Err(ConversationError::Hop(ms))
        }
    }

    pub fn ms(self) -> u32 {
        self.ms
    }

    /// 10 ms frames per hop (10..=25, so a hop's frames fit a `u32` mask).
    pub fn frames(self) -> usize {
        (self.ms / FRAME_MS) as usize
    }
}

impl Default for Hop {
    /// 250 ms: four results a second per member.
    fn default() -> Self {
        Self { ms: 250 }
    }
}

/// dB of a mean square, floored so silence stays finite.
pub(crate) fn db(mean_square: f32) -> f32 {
    10.0 * mean_square.max(1e-12).log10()
}

#[cfg(test)]
mod tests;
