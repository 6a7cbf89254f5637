//! Overlap: the share of a recent window (3 s by default) in which two or more members speak
//! at once.
//!
//! - Two or more streams (one phone per member): from each member's voice activity, frame by
//!   frame (10 ms), so the share is exact up to the activity's own errors.
//! - One shared stream (one phone on the table): the caller scores one embedding per hop against
//!   each member's voiceprint; [`overlapped_by_scores`] calls the hop overlapped when two members
//!   score over the threshold and the hop is loud enough to be speech. Its limits: an embedding
//!   of a mixture leans towards the louder voice, so an overlap by a much quieter member (a
//!   murmured "mm") is missed; a hop shorter than ~1 s gives a noisy embedding, so one hop's
//!   decision is weak and the window share is what to trust; two similar voices (same sex, same
//!   accent) score high for each other even alone, which reads as overlap: raise the threshold
//!   for such a pair. It resolves overlap at the hop, not the frame. `tests/shared_stream.rs`
//!   measures it on the fixtures' mix; with the random-weight test model it has no signal.

use std::collections::VecDeque;

use crate::speech::DEFAULT_MATCH_THRESHOLD;

use super::activity::HopActivity;
use super::{ConversationError, Hop};

/// Frames of a hop in which at least two members speak.
pub fn overlapped_frames(hop: &HopActivity) -> u32 {
    (0..hop.frames())
        .filter(|&i| hop.speakers_in(i) >= 2)
        .count() as u32
}

/// Frames of a hop in which `member` speaks while someone else does too.
pub fn member_overlapped_frames(hop: &HopActivity, member: usize) -> u32 {
    let Some(me) = hop.members.get(member) else {
        return 0;
    };
    (0..hop.frames())
        .filter(|&i| me.speaks_in(i) && hop.speakers_in(i) >= 2)
        .count() as u32
}

/// Overlap over the last `window_ms`: the whole conversation's share and each member's (the
/// share of the window in which that member speaks while another does).
#[derive(Debug, Clone)]
pub struct OverlapTracker {
    window_frames: u32,
    window_hops: usize,
    hops: VecDeque<(u32, Vec<u32>)>,
    /// Running sums over `hops`.
    total: u32,
    per_member: Vec<u32>,
}

impl OverlapTracker {
    /// `window_ms` must hold whole hops (3000 ms is 12 hops of 250 ms, 30 of 100 ms).
    pub fn new(members: usize, window_ms: u32, hop: Hop) -> Result<Self, ConversationError> {
        if window_ms < hop.ms() || !window_ms.is_multiple_of(hop.ms()) {
            return Err(ConversationError::Invalid(
                "overlap window must be a whole number of hops",
            ));
        }
        let window_hops = (window_ms / hop.ms()) as usize;
        Ok(Self {
            window_frames: (window_hops * hop.frames()) as u32,
            window_hops,
            hops: VecDeque::with_capacity(window_hops),
            total: 0,
            per_member: vec![0; members],
        })
    }

    /// Add one hop; the shares over the window ending with it. The window counts in full from
    /// the start (a stream's first second of overlap is 1/3 of a 3 s window, not all of it), so
    /// a session's first hop cannot trip a nudge on its own.
    pub fn push(&mut self, hop: &HopActivity) -> (f64, Vec<f64>) {
        if self.hops.len() == self.window_hops {
            if let Some((t, m)) = self.hops.pop_front() {
                self.total -= t;
                for (s, v) in self.per_member.iter_mut().zip(m) {
                    *s -= v;
                }
            }
        }
        let t = overlapped_frames(hop);
        let m: Vec<u32> = (0..self.per_member.len())
            .map(|i| member_overlapped_frames(hop, i))
            .collect();
        self.total += t;
        for (s, v) in self.per_member.iter_mut().zip(&m) {
            *s += v;
        }
        self.hops.push_back((t, m));
        let share = |n: u32| f64::from(n) / f64::from(self.window_frames);
        (
            share(self.total),
            self.per_member.iter().map(|&n| share(n)).collect(),
        )
    }
}

/// One hop of a shared stream: its level and each member's voiceprint score for the hop's
/// embedding (cosine, as `speech::best_match` computes it), members in a fixed order.
#[derive(Debug, Clone, PartialEq)]
pub struct HopScores {
    pub energy_db: f32,
    pub scores: Vec<f32>,
}

/// Thresholds of overlap detection on a shared stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreOverlapConfig {
    /// Both members must score at least this (default: the attribution threshold, 0.25).
    pub score_threshold: f32,
    /// A hop quieter than this (dBFS) is silence, whatever the scores.
    pub min_energy_db: f32,
}

impl Default for ScoreOverlapConfig {
    fn default() -> Self {
        Self {
            score_threshold: DEFAULT_MATCH_THRESHOLD,
            min_energy_db: -45.0,
        }
    }
}

/// Whether a shared-stream hop holds two voices: loud enough, and at least two members'
/// voiceprints score over the threshold. Non-finite scores never count.
pub fn overlapped_by_scores(hop: &HopScores, cfg: &ScoreOverlapConfig) -> bool {
    hop.energy_db.is_finite()
        && hop.energy_db >= cfg.min_energy_db
        && hop
            .scores
            .iter()
            .filter(|s| s.is_finite() && **s >= cfg.score_threshold)
            .count()
            >= 2
}
