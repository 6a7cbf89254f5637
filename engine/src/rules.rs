//! The nudge rules: which gentle hint a feature frame (or the talk-time
//! balance so far) calls for, and how strongly.

use inside_schemas::{FeatureFrame, Nudge, NudgeType};

/// Thresholds from the settings; a value must be strictly over its threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NudgePolicy {
    pub speaking_rate_threshold: f64,
    pub overlap_ratio_threshold: f64,
    /// Share of the talk time above which one speaker is nudged to balance.
    pub talk_share_threshold: f64,
    /// Talk time (s) needed before balance is judged at all.
    pub min_talk_time_s: f64,
}

impl Default for NudgePolicy {
    fn default() -> Self {
        Self {
            speaking_rate_threshold: 3.0,
            overlap_ratio_threshold: 0.3,
            talk_share_threshold: 0.7,
            min_talk_time_s: 30.0,
        }
    }
}

impl NudgePolicy {
    /// The nudge a frame calls for, the strongest reason first; `None` for a
    /// calm frame or one whose numbers are not finite and non-negative.
    pub fn evaluate(&self, frame: &FeatureFrame) -> Option<Nudge> {
        let overlap = over(frame.overlap_ratio, self.overlap_ratio_threshold);
        let rate = over(frame.speaking_rate, self.speaking_rate_threshold);
        let (kind, ratio) = match (overlap, rate) {
            (Some(o), Some(r)) if r > o => (NudgeType::SlowDown, r),
            (Some(o), _) => (NudgeType::LetPartnerFinish, o),
            (None, Some(r)) => (NudgeType::SlowDown, r),
            (None, None) => return None,
        };
        Some(nudge(kind, intensity(ratio), Some(frame)))
    }

    /// `BALANCE_TALK_TIME` for a speaker holding more than the allowed share.
    pub fn evaluate_balance(&self, own_talk_s: f64, total_talk_s: f64) -> Option<Nudge> {
        if !own_talk_s.is_finite()
            || !total_talk_s.is_finite()
            || total_talk_s < self.min_talk_time_s
        {
            return None;
        }
        let share = own_talk_s / total_talk_s;
        over(share, self.talk_share_threshold)?;
        // Shares live in 0..=1, so scale what is left above the threshold.
        let headroom = (1.0 - self.talk_share_threshold).max(f64::EPSILON);
        let scaled = 1.0 + (share - self.talk_share_threshold) / headroom;
        Some(nudge(NudgeType::BalanceTalkTime, intensity(scaled), None))
    }
}

/// `value / threshold` when the value is a real number strictly over the threshold.
fn over(value: f64, threshold: f64) -> Option<f64> {
    (value.is_finite() && value >= 0.0 && threshold > 0.0 && value > threshold)
        .then(|| value / threshold)
}

/// 1 just over the threshold, 2 from 25 % over, 3 from 50 % over.
fn intensity(ratio: f64) -> u8 {
    if ratio >= 1.5 {
        3
    } else if ratio >= 1.25 {
        2
    } else {
        1
    }
}

fn nudge(kind: NudgeType, intensity: u8, frame: Option<&FeatureFrame>) -> Nudge {
    Nudge {
        nudge_type: kind,
        intensity,
        message: message(kind, intensity).to_string(),
        frame_seq: frame.and_then(|f| f.seq),
        frame_timestamp_ms: frame.map(|f| f.timestamp_ms),
    }
}

fn message(kind: NudgeType, intensity: u8) -> &'static str {
    match (kind, intensity) {
        (NudgeType::SlowDown, 1) => "Try slowing down a little.",
        (NudgeType::SlowDown, 2) => "Take a breath and slow down; there's time.",
        (NudgeType::SlowDown, _) => "Pause for a moment, breathe, then continue more slowly.",
        (NudgeType::LetPartnerFinish, 1) => "Let your partner finish their thought.",
        (NudgeType::LetPartnerFinish, 2) => {
            "You're talking over each other; let them finish first."
        }
        (NudgeType::LetPartnerFinish, _) => {
            "Pause and listen: let your partner finish before you answer."
        }
        (NudgeType::BalanceTalkTime, 1) => "Invite your partner to share their view.",
        (NudgeType::BalanceTalkTime, 2) => {
            "You've done most of the talking; ask your partner what they think."
        }
        (NudgeType::BalanceTalkTime, _) => {
            "Give your partner the floor for a while and just listen."
        }
    }
}

#[cfg(test)]
mod tests;
