//! Tests of the report builder: talk time, nudge counts and duration from recorded events,
//! speaker segments over frames, an empty session, and the activity catalogue.

use inside_schemas::{FeatureFrame, Nudge, NudgeType, SpeakerSegment};

use super::*;

fn frame(ts: i64, rate: f64, overlap: f64) -> EventBody {
    EventBody::Frame(FeatureFrame {
        timestamp_ms: ts,
        speaking_rate: rate,
        overlap_ratio: overlap,
        seq: None,
    })
}

fn slow_down() -> EventBody {
    EventBody::Nudge(Nudge {
        nudge_type: NudgeType::SlowDown,
        intensity: 2,
        message: "x".into(),
        frame_seq: None,
        frame_timestamp_ms: Some(0),
    })
}

#[test]
fn report_from_frames_counts_talk_time_nudges_and_duration() {
    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let mut events = Vec::new();
    for i in 0..30 {
        events.push((Some(a), frame(i * 1000, 4.0, 0.1)));
    }
    for i in 0..10 {
        events.push((Some(b), frame(i * 1000, 2.0, 0.0)));
    }
    events.push((Some(a), slow_down()));
    events.push((Some(a), slow_down()));
    let r = build_report(
        Uuid::nil(),
        &[a, b],
        events.iter().map(|(u, e)| (*u, e)),
        Utc::now(),
        &[],
    );
    assert_eq!(r.frames, 40);
    assert_eq!(r.duration_s, 29.0);
    assert_eq!(r.nudges.total, 2);
    assert_eq!(r.nudges.by_type["SLOW_DOWN"], 2);
    assert_eq!(r.speakers[0].user_id, a);
    assert_eq!(r.speakers[0].talk_time_s, 30.0);
    assert_eq!(r.speakers[0].talk_share, 0.75);
    assert_eq!(r.speakers[0].avg_speaking_rate, 4.0);
    assert_eq!(r.speakers[0].nudges, 2);
    assert_eq!(r.speakers[1].talk_time_s, 10.0);
    assert!(
        r.suggested_activities
            .iter()
            .any(|x| x.id == "paced-breathing"),
        "{:?}",
        r.suggested_activities
    );
    assert!(r.suggested_activities.iter().all(|x| !x.reason.is_empty()));
}

#[test]
fn speaker_segments_take_precedence_for_talk_time() {
    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let seg = |u: Option<Uuid>, s: i64, e: i64| {
        EventBody::Speaker(SpeakerSegment {
            user_id: u,
            score: 0.9,
            start_ms: s,
            end_ms: e,
        })
    };
    let events = [
        (None, seg(Some(a), 0, 1500)),
        (None, seg(Some(b), 1500, 6000)),
        (None, seg(None, 6000, 7500)),
    ];
    let r = build_report(
        Uuid::nil(),
        &[a, b],
        events.iter().map(|(u, e)| (*u, e)),
        Utc::now(),
        &[],
    );
    assert_eq!(r.duration_s, 7.5);
    assert_eq!(r.speakers[0].user_id, b);
    assert_eq!(r.speakers[0].talk_time_s, 4.5);
    assert_eq!(r.speakers[0].talk_share, 0.75);
    assert_eq!(r.speakers[1].talk_time_s, 1.5);
}

#[test]
fn empty_session_still_gives_a_report_with_every_member() {
    let a = Uuid::from_u128(1);
    let r = build_report(Uuid::nil(), &[a], std::iter::empty(), Utc::now(), &[]);
    assert_eq!(r.frames, 0);
    assert_eq!(r.duration_s, 0.0);
    assert_eq!(r.speakers.len(), 1);
    assert!(!r.highlights.is_empty());
    assert_eq!(r.suggested_activities.len(), 4);
}

#[test]
fn catalogue_has_at_least_twelve_distinct_activities() {
    let mut ids: Vec<_> = crate::ACTIVITIES.iter().map(|a| a.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert!(ids.len() >= 12);
}
