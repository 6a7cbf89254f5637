//! The derived features of one member in one hop, and the analyzer that makes them from every
//! member's stream: rate and activity per stream, then overlap and turns across members, hop by
//! hop, aligned by hop index (each stream's hop k covers its own `[k·hop, (k+1)·hop)`; the
//! caller starts the streams together or pads the later one with silence).

use std::collections::VecDeque;

use inside_schemas::FeatureFrame;
use serde::{Deserialize, Serialize};

use super::activity::{ActivityConfig, HopActivity, StreamActivity, VoiceActivityTracker};
use super::overlap::{member_overlapped_frames, OverlapTracker};
use super::rate::{RateConfig, RateEstimate, SpeakingRateTracker};
use super::turns::{TurnConfig, TurnTracker};
use super::FRAME_MS;
use super::{ConversationError, Hop};

/// Everything derived for one member at the end of one hop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DerivedFeatures {
    /// Index of the member (the order the analyzer was given its streams in).
    pub member: usize,
    pub hop: u64,
    /// Stream time at the end of the hop.
    pub end_ms: u64,
    /// Speaking for at least half the hop.
    pub speaking: bool,
    /// This member's speech in this hop, and the part of it in which someone else spoke too
    /// (10 ms resolution): what a report sums, where the window shares below are for rules.
    #[serde(default)]
    pub speech_ms: u32,
    #[serde(default)]
    pub overlapped_ms: u32,
    /// Syllables per second over the member's last few seconds of speech; `None` until there
    /// is enough of it.
    pub speaking_rate: Option<f64>,
    /// Share of the recent window in which this member spoke while someone else did (0..=1).
    pub overlap_ratio: f64,
    /// Share of the recent window in which any two members spoke at once (0..=1).
    pub conversation_overlap_ratio: f64,
    /// RMS level of the member's speech in the hop (dBFS); `None` when silent.
    pub loudness_db: Option<f32>,
    /// That level over the member's own baseline; `None` until it is settled.
    pub loudness_over_baseline_db: Option<f32>,
    pub turns: u32,
    /// Interruptions this member made, and suffered.
    pub interruptions: u32,
    pub interrupted: u32,
    pub monologues: u32,
    pub raised_voice_episodes: u32,
    /// Length of the member's current turn (0 when not in one).
    pub turn_ms: u64,
    /// Silences so far, and the length of the current one (0 while someone speaks).
    pub silences: u32,
    pub silence_ms: u64,
}

impl DerivedFeatures {
    /// The feature frame `NudgePolicy::evaluate` reads. The rate only counts while the member
    /// speaks: a listener is never told to slow down for what they said a while ago.
    pub fn to_frame(&self, timestamp_ms: i64) -> FeatureFrame {
        let rate = if self.speaking {
            self.speaking_rate.unwrap_or(0.0)
        } else {
            0.0
        };
        FeatureFrame {
            timestamp_ms,
            speaking_rate: if rate.is_finite() { rate.max(0.0) } else { 0.0 },
            overlap_ratio: if self.overlap_ratio.is_finite() {
                self.overlap_ratio.clamp(0.0, 1.0)
            } else {
                0.0
            },
            seq: None,
            received_ms: None,
        }
    }
}

/// Settings of the whole analysis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConversationConfig {
    /// One result per member every hop (100–250 ms; 250 by default).
    pub hop_ms: u32,
    /// Window of the overlap share (3 s, a whole number of hops).
    pub overlap_window_ms: u32,
    pub rate: RateConfig,
    pub activity: ActivityConfig,
    pub turns: TurnConfig,
}

impl Default for ConversationConfig {
    fn default() -> Self {
        Self {
            hop_ms: Hop::default().ms(),
            overlap_window_ms: 3000,
            rate: RateConfig::default(),
            activity: ActivityConfig::default(),
            turns: TurnConfig::default(),
        }
    }
}

#[derive(Debug, Clone)]
struct MemberStream {
    rate: SpeakingRateTracker,
    activity: VoiceActivityTracker,
    rates: VecDeque<RateEstimate>,
    acts: VecDeque<StreamActivity>,
}

/// Derived features for a conversation of N members, one stream each.
#[derive(Debug, Clone)]
pub struct ConversationAnalyzer {
    hop: Hop,
    streams: Vec<MemberStream>,
    overlap: OverlapTracker,
    turns: TurnTracker,
}

impl ConversationAnalyzer {
    pub fn new(members: usize, cfg: ConversationConfig) -> Result<Self, ConversationError> {
        if !(1..=8).contains(&members) {
            return Err(ConversationError::Members(members));
        }
        let hop = Hop::new(cfg.hop_ms)?;
        let streams = (0..members)
            .map(|_| {
                Ok(MemberStream {
                    rate: SpeakingRateTracker::new(cfg.rate, hop)?,
                    activity: VoiceActivityTracker::new(cfg.activity, hop)?,
                    rates: VecDeque::new(),
                    acts: VecDeque::new(),
                })
            })
            .collect::<Result<Vec<_>, ConversationError>>()?;
        Ok(Self {
            hop,
            streams,
            overlap: OverlapTracker::new(members, cfg.overlap_window_ms, hop)?,
            turns: TurnTracker::new(members, cfg.turns),
        })
    }

    pub fn members(&self) -> usize {
        self.streams.len()
    }

    pub fn hop(&self) -> Hop {
        self.hop
    }

    /// Feed one member's samples (16 kHz mono, any chunk size). Returns the hops now complete
    /// for every member, oldest first, each with one entry per member in member order.
    pub fn push(
        &mut self,
        member: usize,
        samples: &[f32],
    ) -> Result<Vec<Vec<DerivedFeatures>>, ConversationError> {
        let s = self
            .streams
            .get_mut(member)
            .ok_or(ConversationError::NoSuchMember(member))?;
        s.rates.extend(s.rate.push(samples));
        s.acts.extend(s.activity.push(samples));
        let mut out = Vec::new();
        while self
            .streams
            .iter()
            .all(|s| !s.rates.is_empty() && !s.acts.is_empty())
        {
            out.push(self.next_hop());
        }
        Ok(out)
    }

    fn next_hop(&mut self) -> Vec<DerivedFeatures> {
        let mut rates = Vec::with_capacity(self.streams.len());
        let mut members = Vec::with_capacity(self.streams.len());
        let mut index = 0;
        for s in &mut self.streams {
            let r = s.rates.pop_front();
            let a = s.acts.pop_front();
            index = a.map_or(index, |a| a.hop);
            rates.push(r.and_then(|r| r.syllables_per_s));
            members.push(a.map(|a| a.activity).unwrap_or_default());
        }
        let hop = HopActivity {
            hop: index,
            start_ms: index * u64::from(self.hop.ms()),
            hop_ms: self.hop.ms(),
            members,
        };
        let (conversation_overlap, per_member) = self.overlap.push(&hop);
        let snap = self.turns.push(&hop);
        (0..self.streams.len())
            .map(|m| {
                let act = hop.members.get(m).copied().unwrap_or_default();
                let t = snap.members.get(m).copied().unwrap_or_default();
                DerivedFeatures {
                    member: m,
                    hop: index,
                    end_ms: hop.start_ms + u64::from(hop.hop_ms),
                    speaking: act.speaking(),
                    speech_ms: act.speech_ms(),
                    overlapped_ms: member_overlapped_frames(&hop, m) * FRAME_MS,
                    speaking_rate: rates.get(m).copied().flatten(),
                    overlap_ratio: per_member.get(m).copied().unwrap_or(0.0),
                    conversation_overlap_ratio: conversation_overlap,
                    loudness_db: t.loudness_db,
                    loudness_over_baseline_db: t.loudness_over_baseline_db,
                    turns: t.turns,
                    interruptions: t.interruptions,
                    interrupted: t.interrupted,
                    monologues: t.monologues,
                    raised_voice_episodes: t.raised_voice_episodes,
                    turn_ms: t.turn_ms,
                    silences: snap.silences,
                    silence_ms: snap.silence_ms,
                }
            })
            .collect()
    }
}
