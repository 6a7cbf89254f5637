//! Tests of the report builder: talk time, nudge counts and duration from recorded events,
//! speaker segments over frames, frames recorded out of order, one server time base for frames
//! and audio, phone timestamps at the ends of i64, an empty session, and the activity catalogue.

use inside_schemas::{FeatureFrame, Nudge, NudgeType, SpeakerRecord, SpeakerSegment};

use super::*;

/// The server clock when the test sessions start (ms since the Unix epoch).
const START: i64 = 1_765_000_000_000;

fn frame(ts: i64, rate: f64, overlap: f64) -> EventBody {
    EventBody::Frame(FeatureFrame {
        timestamp_ms: ts,
        speaking_rate: rate,
        overlap_ratio: overlap,
        seq: None,
        received_ms: None,
    })
}

/// A frame the gateway received at `START + at` ms.
fn stamped(at: i64, seq: i64, ts: i64, rate: f64) -> EventBody {
    EventBody::Frame(FeatureFrame {
        timestamp_ms: ts,
        speaking_rate: rate,
        overlap_ratio: 0.0,
        seq: Some(seq),
        received_ms: Some(START + at),
    })
}

fn input(members: &[Uuid]) -> ReportInput<'_> {
    ReportInput {
        session_id: Uuid::nil(),
        members,
        started_ms: START,
        ended_ms: START + 600_000,
        generated_at: Utc::now(),
        history: &[],
    }
}

fn build(members: &[Uuid], events: &[(Option<Uuid>, EventBody)]) -> Report {
    build_report(&input(members), events.iter().map(|(u, e)| (*u, e)))
}

fn seg(u: Option<Uuid>, s: i64, e: i64, stream_started: Option<i64>) -> EventBody {
    EventBody::Speaker(SpeakerRecord {
        segment: SpeakerSegment {
            user_id: u,
            score: 0.9,
            start_ms: s,
            end_ms: e,
        },
        stream_started_ms: stream_started,
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
    let r = build(&[a, b], &events);
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
    let events = [
        (None, seg(Some(a), 0, 1500, None)),
        (None, seg(Some(b), 1500, 6000, None)),
        (None, seg(None, 6000, 7500, None)),
    ];
    let r = build(&[a, b], &events);
    assert_eq!(r.duration_s, 7.5);
    assert_eq!(r.speakers[0].user_id, b);
    assert_eq!(r.speakers[0].talk_time_s, 4.5);
    assert_eq!(r.speakers[0].talk_share, 0.75);
    assert_eq!(r.speakers[1].talk_time_s, 1.5);
}

#[test]
fn empty_session_still_gives_a_report_with_every_member() {
    let a = Uuid::from_u128(1);
    let r = build(&[a], &[]);
    assert!(r.complete);
    assert_eq!(r.incomplete_reason, None);
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

#[test]
fn talk_time_follows_the_order_frames_were_received_not_recorded() {
    // 200 frames 100 ms apart, recorded in a scrambled order (several consumers): 20 s of talk
    let a = Uuid::from_u128(1);
    let mut events: Vec<(Option<Uuid>, EventBody)> = (0..200)
        .map(|i| (Some(a), stamped(i * 100, i, 5_000 + i * 100, 4.0)))
        .collect();
    // a fixed scramble: every 7th frame first, then the rest backwards
    let (mut firsts, mut rest): (Vec<_>, Vec<_>) =
        events.drain(..).enumerate().partition(|(i, _)| i % 7 == 0);
    rest.reverse();
    firsts.extend(rest);
    let events: Vec<_> = firsts.into_iter().map(|(_, e)| e).collect();
    let r = build(&[a], &events);
    assert_eq!(r.speakers[0].talk_time_s, 20.0, "{r:?}");
    assert_eq!(r.duration_s, 19.9);
}

#[test]
fn frames_received_in_the_same_millisecond_are_ordered_by_seq() {
    let a = Uuid::from_u128(1);
    // a burst: all received at once, the phone's timestamps 100 ms apart
    let events: Vec<_> = (0..50)
        .rev()
        .map(|i| (Some(a), stamped(0, i, i * 100, 3.0)))
        .collect();
    let r = build(&[a], &events);
    assert_eq!(r.speakers[0].talk_time_s, 5.0, "{r:?}");
}

#[test]
fn frames_and_speaker_segments_share_the_server_time_base() {
    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    // the phone's clock is epoch ms from another day; the audio stream started 2 s into the
    // session, its segments count from there
    let mut events: Vec<(Option<Uuid>, EventBody)> = (0..10)
        .map(|i| {
            (
                Some(a),
                stamped(1_000 + i * 1_000, i, 1_600_000_000_000 + i * 1_000, 2.0),
            )
        })
        .collect();
    events.push((None, seg(Some(b), 0, 1_500, Some(START + 2_000))));
    events.push((None, seg(Some(b), 13_500, 15_000, Some(START + 2_000))));
    let r = build(&[a, b], &events);
    // first event: the frame at 1 s; last: the segment ending at 2 s + 15 s
    assert_eq!(r.duration_s, 16.0, "{r:?}");
    assert!(r.duration_s < 3_600.0);
}

#[test]
fn phone_timestamps_at_the_ends_of_i64_neither_wrap_nor_go_negative() {
    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let extremes = [i64::MIN, i64::MAX, 0, i64::MIN + 1, i64::MAX - 1, -1];
    let events: Vec<(Option<Uuid>, EventBody)> = extremes
        .iter()
        .enumerate()
        .map(|(i, ts)| (Some(a), stamped(i as i64 * 500, i as i64, *ts, 3.0)))
        .chain([(None, seg(Some(b), i64::MAX - 10, i64::MAX, Some(i64::MAX)))])
        .collect();
    let r = build(&[a, b], &events);
    assert!(r.duration_s.is_finite() && r.duration_s >= 0.0, "{r:?}");
    // the segment's time is out of the session: pulled back to its end plus the slack
    assert!(r.duration_s <= 660.0, "{r:?}");
    for s in &r.speakers {
        assert!(s.talk_time_s.is_finite() && s.talk_time_s >= 0.0, "{r:?}");
    }
    // frames alone: the gaps saturate at the 5 s cap, six frames
    let frames_only: Vec<_> = events[..extremes.len()].to_vec();
    let r = build(&[a], &frames_only);
    assert_eq!(r.duration_s, 2.5);
    assert_eq!(r.speakers[0].talk_time_s, 30.0, "{r:?}");

    // a legacy session (no server times at all) with the same timestamps
    let legacy: Vec<_> = extremes
        .iter()
        .map(|ts| (Some(a), frame(*ts, 3.0, 0.0)))
        .collect();
    let r = build(&[a], &legacy);
    assert!(r.duration_s.is_finite() && r.duration_s >= 0.0, "{r:?}");
}

#[test]
fn segment_marks_count_nothing_themselves() {
    let a = Uuid::from_u128(1);
    let mark = EventBody::Segment(inside_schemas::SegmentMark {
        seq: 0,
        start_ms: 0,
        end_ms: 1_500,
        stream_started_ms: Some(START),
    });
    let r = build(&[a], &[(Some(a), mark)]);
    assert_eq!((r.frames, r.duration_s), (0, 0.0));
    assert_eq!(r.speakers[0].talk_time_s, 0.0);
}

#[test]
fn derived_records_add_up_to_from_audio_and_only_for_who_streamed() {
    use inside_schemas::DerivedRecord;
    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let rec = |speech, overlapped, rate_sum, rate_hops, turns, interruptions| {
        EventBody::Derived(DerivedRecord {
            start_ms: 0,
            end_ms: 1500,
            speech_ms: speech,
            overlapped_ms: overlapped,
            rate_sum,
            rate_hops,
            turns,
            interruptions,
            interrupted: 0,
            monologues: 0,
        })
    };
    let events = vec![
        (Some(a), rec(1000, 250, 16.0, 4, 1, 0)),
        (Some(a), rec(1500, 250, 24.0, 6, 0, 1)),
        // a forged negative rate sum is left out rather than pulling the mean down
        (Some(a), rec(0, 0, -50.0, 1, 0, 0)),
    ];
    let r = build(&[a, b], &events);
    let stats = |u: Uuid| {
        r.speakers
            .iter()
            .find(|s| s.user_id == u)
            .unwrap()
            .from_audio
            .clone()
    };
    let fa = stats(a).expect("a streamed");
    assert_eq!(fa.speaking_s, 2.5);
    assert_eq!(fa.speaking_rate, 4.0);
    assert_eq!(fa.overlap_share, 0.2);
    assert_eq!((fa.turns, fa.interruptions), (1, 1));
    assert_eq!(stats(b), None);
}
