//! Stream alignment of the derived analysis: members placed on the server clock, gaps padded,
//! nothing of an old analysis carried into a new one, the stream cap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use inside_engine::conversation::ConversationConfig;
use inside_engine::speech::decode;
use uuid::Uuid;

use super::*;

/// Server clock of the first segment, ms since the epoch.
const T0: i64 = 1_700_000_000_000;

/// Member A's side of the monologue fixture: speech from 500 ms (truth.json).
fn speech() -> Vec<f32> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../engine/tests/fixtures/dialogues/monologue.a.flac"
    );
    decode(std::fs::read(path).unwrap(), None, &Default::default())
        .unwrap()
        .samples
}

/// Feeds `audio` as 1.5 s segments from server time `start_ms`, the n-th received at
/// `now + n × 1.5 s`.
fn stream(
    s: &mut DerivedSessions,
    sid: Uuid,
    uid: Uuid,
    start_ms: i64,
    audio: &[f32],
    now: Instant,
) -> Derived {
    let mut out = Derived::default();
    for (i, seg) in audio.chunks(24_000).enumerate() {
        let d = s
            .feed(
                &SegmentAudio {
                    sid,
                    uid,
                    start_ms: start_ms + i as i64 * 1500,
                    samples: seg,
                    members: 2,
                    place: None,
                    ends: false,
                },
                now + Duration::from_millis(i as u64 * 1500),
            )
            .unwrap();
        out.frames.extend(d.frames);
        out.records.extend(d.records);
    }
    out
}

fn first_speaking(out: &Derived, uid: Uuid) -> Option<i64> {
    out.frames
        .iter()
        .filter(|h| h.uid == uid && h.derived.speaking)
        .map(|h| h.derived.at_ms)
        .min()
}

#[test]
fn a_member_joining_later_is_lined_up_on_the_server_clock() {
    let audio = speech();
    let (sid, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut s = DerivedSessions::new(ConversationConfig::default());
    let now = Instant::now();
    // A: 0–4.5 s of the fixture (speech from 0.5 s), streamed from T0
    let out_a = stream(&mut s, sid, a, T0, &audio[..72_000], now);
    // B, on another phone, starts 6 s later on the server clock with speech at once
    let speech_b = &audio[8_000..8_000 + 48_000];
    let mut out_b = stream(
        &mut s,
        sid,
        b,
        T0 + 6_000,
        speech_b,
        now + Duration::from_secs(6),
    );
    // A has stopped: once A no longer counts as streaming, B's hops are no longer held for A
    let tail = s
        .feed(
            &SegmentAudio {
                sid,
                uid: b,
                start_ms: T0 + 9_000,
                samples: &[0.0; 16_000],
                members: 2,
                place: None,
                ends: false,
            },
            now + Duration::from_secs(20),
        )
        .unwrap();
    out_b.frames.extend(tail.frames);

    // A's hops may wait for B's slot (B has 4 s to show up), so they come out with B's calls
    let mut all = out_a;
    all.frames.extend(out_b.frames.iter().copied());
    let a_starts = first_speaking(&all, a).expect("A speaks");
    assert!(
        (T0 + 500..=T0 + 1_000).contains(&a_starts),
        "A's speech starts 500 ms into its stream: hop ending at {}",
        a_starts - T0
    );
    let b_starts = first_speaking(&out_b, b).expect("B speaks");
    assert!(
        (T0 + 6_000..=T0 + 6_500).contains(&b_starts),
        "B's speech starts with its stream, 6 s after A's: hop ending at {}",
        b_starts - T0
    );
    // B's frames are on the session's time base, one per hop, none before B joined repeated
    let mut at: Vec<i64> = out_b
        .frames
        .iter()
        .filter(|h| h.uid == b)
        .map(|h| h.derived.at_ms)
        .collect();
    let n = at.len();
    at.dedup();
    assert_eq!(at.len(), n, "one frame per hop");
    assert!(at.windows(2).all(|w| w[1] - w[0] == 250), "{at:?}");
    // the silence padded into A's slot is not A's speech
    assert!(all
        .frames
        .iter()
        .filter(|h| h.uid == a && h.derived.at_ms > T0 + 5_000)
        .all(|h| !h.derived.speaking));
}

#[test]
fn a_new_analysis_carries_nothing_of_the_old_one() {
    let audio = speech();
    let (sid, a) = (Uuid::new_v4(), Uuid::new_v4());
    let mut s = DerivedSessions::new(ConversationConfig::default());
    let now = Instant::now();
    let first = stream(&mut s, sid, a, T0, &audio[..160_000], now);
    let turns: u32 = first.records.iter().map(|(_, _, r)| r.turns).sum();
    let speech_ms: u64 = first.records.iter().map(|(_, _, r)| r.speech_ms).sum();
    assert!(
        turns >= 1 && speech_ms > 5_000,
        "{turns} turns, {speech_ms} ms"
    );

    // 61 s after its last segment the session's analysis is gone; the member streams again
    let later = now + Duration::from_secs(9) + IDLE + Duration::from_secs(1);
    let again = stream(&mut s, sid, a, T0 + 30_000, &audio[..48_000], later);
    assert_eq!(s.sessions(), 1);
    let own: Vec<&HopFrame> = again.frames.iter().filter(|h| h.uid == a).collect();
    // no padding of the 20 s since: only the new audio (and the slack before it) is analysed
    assert!(own.len() <= 16, "{} hops", own.len());
    assert!(own.iter().all(|h| h.derived.at_ms > T0 + 28_000));
    // the new analyzer's counters start at zero and the records carry only what is new
    assert!(own.iter().all(|h| h.derived.turns <= 1));
    let turns: u32 = again.records.iter().map(|(_, _, r)| r.turns).sum();
    assert!(turns <= 1, "{turns}");

    // a gap past MAX_GAP_MS without the idle timeout starts over the same way
    let jump = stream(
        &mut s,
        sid,
        a,
        T0 + 30_000 + MAX_GAP_MS as i64 + 10_000,
        &audio[..24_000],
        later + Duration::from_secs(5),
    );
    assert!(jump.frames.iter().filter(|h| h.uid == a).count() <= 10);
}

#[test]
fn the_same_audio_twice_counts_once_and_streams_past_the_cap_are_ignored() {
    let audio = speech();
    let (sid, a) = (Uuid::new_v4(), Uuid::new_v4());
    let mut s = DerivedSessions::new(ConversationConfig::default());
    let now = Instant::now();
    let seg = SegmentAudio {
        sid,
        uid: a,
        start_ms: T0,
        samples: &audio[8_000..32_000],
        members: 20,
        place: None,
        ends: false,
    };
    // the second copy arrives once the members who have not streamed are no longer waited
    // for, so every hop of the first comes out
    let first = s.feed(&seg, now).unwrap();
    let again = s.feed(&seg, now + Duration::from_secs(5)).unwrap();
    let speech: u64 = first
        .records
        .iter()
        .chain(&again.records)
        .map(|(_, _, r)| r.speech_ms)
        .sum();
    assert!(
        (500..=1_500).contains(&speech),
        "1.5 s of audio sent twice is at most 1.5 s of speech: {speech} ms"
    );

    // 20 members: 8 streams; the 9th is not analysed
    for i in 1..MAX_STREAMS {
        let other = SegmentAudio {
            uid: Uuid::from_u128(i as u128),
            ..seg
        };
        assert!(s.feed(&other, now).is_ok());
    }
    let ninth = SegmentAudio {
        uid: Uuid::from_u128(99),
        ..seg
    };
    assert_eq!(s.feed(&ninth, now).unwrap_err(), Skipped::TooManyStreams);
}

fn side(name: &str) -> Vec<f32> {
    let path = format!(
        "{}/../engine/tests/fixtures/dialogues/{name}.flac",
        env!("CARGO_MANIFEST_DIR")
    );
    decode(std::fs::read(path).unwrap(), None, &Default::default())
        .unwrap()
        .samples
}

#[test]
fn two_phones_of_the_turns_dialogue_overlap_where_the_script_does() {
    let (a, b) = (side("turns.a"), side("turns.b"));
    let (sid, ua, ub) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut s = DerivedSessions::new(ConversationConfig::default());
    let now = Instant::now();
    let mut frames = Vec::new();
    // B's phone started 40 ms after A's; segments arrive interleaved
    for (i, (ca, cb)) in a.chunks(24_000).zip(b.chunks(24_000)).enumerate() {
        let at = now + Duration::from_millis(i as u64 * 1500);
        for (uid, chunk, start) in [(ua, ca, T0), (ub, cb, T0 + 40)] {
            let seg = SegmentAudio {
                sid,
                uid,
                start_ms: start + i as i64 * 1500,
                samples: chunk,
                members: 2,
                place: None,
                ends: false,
            };
            frames.extend(s.feed(&seg, at).unwrap().frames);
        }
    }
    let peak = |u: Uuid| {
        frames
            .iter()
            .filter(|h| h.uid == u)
            .map(|h| (h.rules.overlap_ratio, h.derived.at_ms - T0))
            .fold((0.0, 0), |m, x| if x.0 > m.0 { x } else { m })
    };
    let (pa, pb) = (peak(ua), peak(ub));
    println!(
        "peak overlap (ratio, ms): a {pa:?}, b {pb:?}; {} frames",
        frames.len()
    );
    // 10.0–11.2 s scripted: 1.18 s of a 3 s window
    assert!(pa.0 > 0.3 && pb.0 > 0.3);
    assert!((10_000..=12_500).contains(&pa.1), "{pa:?}");
}

#[test]
fn a_lone_phones_last_hops_come_out_on_the_clock() {
    let audio = speech();
    let (sid, a) = (Uuid::new_v4(), Uuid::new_v4());
    let mut s = DerivedSessions::new(ConversationConfig::default());
    let now = Instant::now();
    // the whole stream arrives at once: the partner's slot is still waited for
    let held = stream(&mut s, sid, a, T0, &audio[..48_000], now);
    assert!(s.tick(now + Duration::from_secs(1)).frames.is_empty());
    // once the partner has had LIVE to show up, the clock lets A's hops out
    let later = s.tick(now + LIVE + Duration::from_secs(1));
    let n = held.frames.len() + later.frames.len();
    assert!(later.frames.iter().any(|h| h.derived.speaking));
    // 1 s of slack and 3 s of audio in 250 ms hops (the last one may still wait for its end)
    assert!((15..=16).contains(&n), "{n}");
}

/// Speech (ms) in the records of feeding `order` of `audio`'s 1.5 s segments (one stream, one
/// member, all at `now`), then of the clock `later`.
fn speech_fed_in(audio: &[f32], order: &[usize], later: Duration) -> u64 {
    let (sid, a) = (Uuid::new_v4(), Uuid::new_v4());
    let mut s = DerivedSessions::new(ConversationConfig::default());
    let now = Instant::now();
    let mut records = Vec::new();
    for &i in order {
        let seg = SegmentAudio {
            sid,
            uid: a,
            start_ms: T0 + i as i64 * 1500,
            samples: &audio[i * 24_000..(i + 1) * 24_000],
            members: 1,
            place: Some((T0, i as u64)),
            ends: false,
        };
        records.extend(s.feed(&seg, now).unwrap().records);
    }
    records.extend(s.tick(now + later).records);
    records.iter().map(|(_, _, r)| r.speech_ms).sum()
}

#[test]
fn a_segment_overtaken_by_the_next_of_its_stream_is_not_lost() {
    let audio = speech();
    let in_order = speech_fed_in(&audio, &[0, 1, 2, 3], Duration::ZERO);
    assert!(in_order > 3_000, "{in_order} ms");
    // forwarded ones overtaken by the next sent straight: held until the gap fills
    let overtaken = speech_fed_in(&audio, &[0, 2, 1, 3], Duration::ZERO);
    assert_eq!(overtaken, in_order);
    // one that never comes: what was held goes once it has waited HOLD, the gap padded
    let without_2 = speech_fed_in(&audio, &[0, 1, 3], Duration::ZERO);
    let gap_padded = speech_fed_in(&audio, &[0, 1, 3], HOLD);
    assert!(gap_padded > without_2, "{gap_padded} vs {without_2} ms");
    assert!(gap_padded < in_order, "{gap_padded} vs {in_order} ms");
}

/// The gateway's empty segment at a stream's end lets the hops that waited for that member out
/// at once, not after [`LIVE`]: a report asked for right after the phones stop has them all.
#[test]
fn a_partners_stream_end_lets_the_last_speakers_hops_out_at_once() {
    let audio = speech();
    let silence = [0f32; 24_000];
    let (sid, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut s = DerivedSessions::new(ConversationConfig::default());
    let now = Instant::now();
    let seg = |uid, seq: u64, samples| SegmentAudio {
        sid,
        uid,
        start_ms: T0 + seq as i64 * 1500,
        samples,
        members: 2,
        place: Some((T0, seq)),
        ends: false,
    };
    let mut frames = Vec::new();
    // A speaks 3 s; B's phone sent 1.5 s of silence
    for d in [
        s.feed(&seg(a, 0, &audio[..24_000]), now),
        s.feed(&seg(b, 0, &silence), now),
        s.feed(&seg(a, 1, &audio[24_000..48_000]), now),
    ] {
        frames.extend(d.unwrap().frames);
    }
    let waiting = frames.iter().filter(|h| h.uid == a).count();
    // B's stream ends (no samples, after its last segment), still well within LIVE
    let end = SegmentAudio {
        start_ms: T0 + 1500,
        samples: &[],
        ends: true,
        ..seg(b, 1, &[])
    };
    frames.extend(s.feed(&end, now).unwrap().frames);
    let n = frames.iter().filter(|h| h.uid == a).count();
    println!("A's hops: {waiting} before B's end, {n} after");
    // 1 s of slack and 3 s of audio in 250 ms hops (the last one may still wait for its end)
    assert!((15..=16).contains(&n), "{n}");
    assert!(waiting < n - 4, "{waiting} of {n} came out before B's end");
    assert!(frames
        .iter()
        .any(|h| h.uid == a && h.derived.speaking && h.derived.at_ms >= T0 + 2_500));
    assert!(s
        .tick(now + LIVE + Duration::from_secs(1))
        .frames
        .is_empty());
}

/// A lone phone's stream end lets its last hops out at once, though the partner who never
/// streamed would otherwise still be waited for ([`LIVE`] from the analysis's start).
#[test]
fn a_lone_phones_stream_end_lets_its_last_hops_out_at_once() {
    let audio = speech();
    let (sid, a) = (Uuid::new_v4(), Uuid::new_v4());
    let mut s = DerivedSessions::new(ConversationConfig::default());
    let now = Instant::now();
    let held = stream(&mut s, sid, a, T0, &audio[..48_000], now);
    assert!(held.frames.is_empty(), "{}", held.frames.len());
    let end = SegmentAudio {
        sid,
        uid: a,
        start_ms: T0 + 3_000,
        samples: &[],
        members: 2,
        place: Some((T0, 2)),
        ends: true,
    };
    let n = s.feed(&end, now).unwrap().frames.len();
    assert!((15..=16).contains(&n), "{n}");
}
