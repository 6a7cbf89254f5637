//! The session report: talk time, pace, overlap and nudges per speaker,
//! aggregated from the session's recorded events, on the server's clock.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use inside_schemas::{AudioStats, DerivedRecord, EventBody, NudgeSummary, Report, SpeakerStats};
use uuid::Uuid;

use crate::activities::suggest_activities;

mod timing;

use timing::{frame_ms, FrameAt, Span};

/// What the report is written from besides the events.
#[derive(Debug, Clone, Copy)]
pub struct ReportInput<'a> {
    pub session_id: Uuid,
    /// The members whose data may enter the report (consent granted).
    pub members: &'a [Uuid],
    /// The session's start (`sessions.created_at`) on the server clock, ms since the Unix
    /// epoch: the report's times are offsets from it.
    pub started_ms: i64,
    /// Its end (finalize, or when the report is written), same clock: with the start, the
    /// window an event's time must fall in (a little slack allowed for other machines' clocks).
    pub ended_ms: i64,
    pub generated_at: DateTime<Utc>,
    /// The relationship's earlier reports, newest first: they inform the activity suggestions.
    pub history: &'a [Report],
}

#[derive(Default)]
struct Tally {
    frames: Vec<FrameAt>,
    rate_sum: f64,
    rate_n: u64,
    overlap_sum: f64,
    overlap_n: u64,
    segment_ms: u64,
    nudges: u64,
    /// The sums of the member's derived-feature records; `None` when there are none.
    derived: Option<DerivedRecord>,
}

/// Adds one record's sums and counts to the member's.
fn add_derived(into: &mut DerivedRecord, d: &DerivedRecord) {
    into.speech_ms = into.speech_ms.saturating_add(d.speech_ms);
    into.overlapped_ms = into.overlapped_ms.saturating_add(d.overlapped_ms);
    if d.rate_sum.is_finite() && d.rate_sum >= 0.0 {
        into.rate_sum += d.rate_sum;
        into.rate_hops = into.rate_hops.saturating_add(d.rate_hops);
    }
    into.turns = into.turns.saturating_add(d.turns);
    into.interruptions = into.interruptions.saturating_add(d.interruptions);
    into.interrupted = into.interrupted.saturating_add(d.interrupted);
    into.monologues = into.monologues.saturating_add(d.monologues);
}

fn audio_stats(d: &DerivedRecord) -> AudioStats {
    AudioStats {
        speaking_s: round3(d.speech_ms as f64 / 1000.0),
        speaking_rate: round3(ratio(d.rate_sum, u64::from(d.rate_hops))),
        overlap_share: if d.speech_ms > 0 {
            round3((d.overlapped_ms.min(d.speech_ms)) as f64 / d.speech_ms as f64)
        } else {
            0.0
        },
        turns: d.turns,
        interruptions: d.interruptions,
        interrupted: d.interrupted,
        monologues: d.monologues,
    }
}

/// Builds the report from the session's recorded events (any order: each member's frames are
/// put back in the order the gateway received them). The report says it is complete; the
/// caller marks it otherwise when it knows something is missing.
pub fn build_report<'a>(
    input: &ReportInput<'_>,
    events: impl IntoIterator<Item = (Option<Uuid>, &'a EventBody)>,
) -> Report {
    let mut tallies: HashMap<Uuid, Tally> = input
        .members
        .iter()
        .map(|m| (*m, Tally::default()))
        .collect();
    let mut nudges = NudgeSummary::default();
    let mut span = Span::new(input.started_ms, input.ended_ms);
    let mut frames = 0u64;
    let mut segments_seen = false;
    for (user, body) in events {
        match body {
            EventBody::Frame(f) => {
                frames += 1;
                span.frame(f);
                if let Some(t) = user.map(|u| tallies.entry(u).or_default()) {
                    let speaking = f.speaking_rate.is_finite() && f.speaking_rate > 0.0;
                    t.frames.push(FrameAt::of(f, speaking));
                    if speaking {
                        t.rate_sum += f.speaking_rate;
                        t.rate_n += 1;
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
                span.speaker(s);
                if let Some(u) = s.segment.user_id {
                    segments_seen = true;
                    let ms = s.segment.end_ms.saturating_sub(s.segment.start_ms).max(0);
                    let t = tallies.entry(u).or_default();
                    t.segment_ms = t.segment_ms.saturating_add(ms.unsigned_abs());
                }
            }
            // proof of receipt for the completeness check; the speaker event carries the time
            EventBody::Segment(_) => {}
            EventBody::Derived(d) => {
                if let Some(u) = user {
                    let t = tallies.entry(u).or_default();
                    add_derived(t.derived.get_or_insert_with(Default::default), d);
                }
            }
        }
    }
    let duration_s = span.duration_ms() as f64 / 1000.0;

    let mut talk: BTreeMap<Uuid, f64> = BTreeMap::new();
    for (u, t) in tallies.iter_mut() {
        let secs = if segments_seen {
            t.segment_ms as f64 / 1000.0
        } else {
            let speech = t.frames.iter().filter(|f| f.speaking).count();
            speech as f64 * frame_ms(&mut t.frames) / 1000.0
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
                from_audio: t.derived.as_ref().map(audio_stats),
            }
        })
        .collect();
    speakers.sort_by(|a, b| {
        b.talk_time_s
            .total_cmp(&a.talk_time_s)
            .then(a.user_id.cmp(&b.user_id))
    });

    let sid = input.session_id;
    let mut report = Report {
        session_id: sid,
        generated_at: input.generated_at,
        duration_s: round3(duration_s),
        frames,
        highlights: highlights(&speakers, &nudges, frames),
        nudges,
        speakers,
        suggested_activities: Vec::new(),
        complete: true,
        incomplete_reason: None,
    };
    let mut recent = Vec::with_capacity(input.history.len() + 1);
    recent.push(report.clone());
    recent.extend(
        input
            .history
            .iter()
            .filter(|r| r.session_id != sid)
            .cloned(),
    );
    report.suggested_activities = suggest_activities(&recent);
    report
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
