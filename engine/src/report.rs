//! The session report: talk time, pace, overlap and nudges per speaker,
//! aggregated from the session's recorded events.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use inside_schemas::{EventBody, NudgeSummary, Report, SpeakerStats};
use uuid::Uuid;

use crate::activities::suggest_activities;

/// Frames are assumed this long when a speaker sent only one.
const DEFAULT_FRAME_MS: f64 = 1_000.0;

#[derive(Default)]
struct Tally {
    frame_ts: Vec<i64>,
    rate_sum: f64,
    rate_n: u64,
    overlap_sum: f64,
    overlap_n: u64,
    speech_frames: u64,
    segment_ms: i64,
    nudges: u64,
}

/// Builds the report of session `sid` for its `members` from its `events`;
/// `history` (the relationship's earlier reports, newest first) informs the
/// activity suggestions.
pub fn build_report<'a>(
    sid: Uuid,
    members: &[Uuid],
    events: impl IntoIterator<Item = (Option<Uuid>, &'a EventBody)>,
    generated_at: DateTime<Utc>,
    history: &[Report],
) -> Report {
    let mut tallies: HashMap<Uuid, Tally> =
        members.iter().map(|m| (*m, Tally::default())).collect();
    let mut nudges = NudgeSummary::default();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let mut frames = 0u64;
    let mut segments_seen = false;
    for (user, body) in events {
        match body {
            EventBody::Frame(f) => {
                frames += 1;
                first = first.min(f.timestamp_ms);
                last = last.max(f.timestamp_ms);
                if let Some(t) = user.map(|u| tallies.entry(u).or_default()) {
                    t.frame_ts.push(f.timestamp_ms);
                    if f.speaking_rate.is_finite() && f.speaking_rate > 0.0 {
                        t.rate_sum += f.speaking_rate;
                        t.rate_n += 1;
                        t.speech_frames += 1;
                    }
                    if f.overlap_ratio.is_finite() {
                        t.overlap_sum += f.overlap_ratio;
                        t.overlap_n += 1;
                    }
                }
            }
            EventBody::Nudge(n) => {
                nudges.total += 1;
                *nudges
                    .by_type
                    .entry(n.nudge_type.as_str().to_string())
                    .or_default() += 1;
                if let Some(u) = user {
                    tallies.entry(u).or_default().nudges += 1;
                }
            }
            EventBody::Speaker(s) => {
                first = first.min(s.start_ms);
                last = last.max(s.end_ms);
                if let Some(u) = s.user_id {
                    segments_seen = true;
                    tallies.entry(u).or_default().segment_ms += (s.end_ms - s.start_ms).max(0);
                }
            }
        }
    }
    let duration_s = if last >= first {
        (last - first) as f64 / 1000.0
    } else {
        0.0
    };

    let mut talk: BTreeMap<Uuid, f64> = BTreeMap::new();
    for (u, t) in &tallies {
        let secs = if segments_seen {
            t.segment_ms as f64 / 1000.0
        } else {
            t.speech_frames as f64 * frame_ms(&t.frame_ts) / 1000.0
        };
        talk.insert(*u, secs);
    }
    let total_talk: f64 = talk.values().sum();
    let mut speakers: Vec<SpeakerStats> = talk
        .iter()
        .map(|(u, secs)| {
            let t = &tallies[u];
            SpeakerStats {
                user_id: *u,
                talk_time_s: round3(*secs),
                talk_share: if total_talk > 0.0 {
                    round3(secs / total_talk)
                } else {
                    0.0
                },
                avg_speaking_rate: round3(ratio(t.rate_sum, t.rate_n)),
                overlap_ratio: round3(ratio(t.overlap_sum, t.overlap_n)),
                nudges: t.nudges,
            }
        })
        .collect();
    speakers.sort_by(|a, b| {
        b.talk_time_s
            .total_cmp(&a.talk_time_s)
            .then(a.user_id.cmp(&b.user_id))
    });

    let mut report = Report {
        session_id: sid,
        generated_at,
        duration_s: round3(duration_s),
        frames,
        highlights: highlights(&speakers, &nudges, frames),
        nudges,
        speakers,
        suggested_activities: Vec::new(),
    };
    let mut recent = Vec::with_capacity(history.len() + 1);
    recent.push(report.clone());
    recent.extend(history.iter().filter(|r| r.session_id != sid).cloned());
    report.suggested_activities = suggest_activities(&recent);
    report
}

/// Median gap between a speaker's frames: the length one frame stands for.
fn frame_ms(ts: &[i64]) -> f64 {
    let mut gaps: Vec<i64> = ts
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .filter(|g| *g > 0)
        .collect();
    if gaps.is_empty() {
        return DEFAULT_FRAME_MS;
    }
    gaps.sort_unstable();
    (gaps[gaps.len() / 2] as f64).clamp(10.0, 5_000.0)
}

fn ratio(sum: f64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn highlights(speakers: &[SpeakerStats], nudges: &NudgeSummary, frames: u64) -> Vec<String> {
    let mut out = Vec::new();
    if frames == 0 && speakers.iter().all(|s| s.talk_time_s == 0.0) {
        out.push("This session was short: nothing was recorded to analyse.".to_string());
        return out;
    }
    let talking: Vec<&SpeakerStats> = speakers.iter().filter(|s| s.talk_time_s > 0.0).collect();
    if let [a, b, ..] = talking.as_slice() {
        if a.talk_share <= 0.6 {
            out.push(format!(
                "Talk time was well balanced ({:.0}% / {:.0}%).",
                a.talk_share * 100.0,
                b.talk_share * 100.0
            ));
        } else {
            out.push(format!(
                "One voice held {:.0}% of the talk time.",
                a.talk_share * 100.0
            ));
        }
    }
    match nudges.total {
        0 => out.push("No nudges were needed: a calm, attentive conversation.".to_string()),
        n => {
            let top = nudges
                .by_type
                .iter()
                .max_by_key(|(_, c)| **c)
                .map(|(t, _)| t.as_str())
                .unwrap_or("");
            out.push(format!("{n} nudge(s) in total, most often {top}."));
        }
    }
    if let Some(s) = speakers
        .iter()
        .filter(|s| s.overlap_ratio > 0.3)
        .max_by(|a, b| a.overlap_ratio.total_cmp(&b.overlap_ratio))
    {
        out.push(format!(
            "Voices overlapped {:.0}% of the time: try letting each other finish.",
            s.overlap_ratio * 100.0
        ));
    }
    out
}

#[cfg(test)]
mod tests;
