//! Unit tests of the conversation trackers on synthetic signals and activity masks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use inside_schemas::NudgeType;

use super::*;
use crate::rules::NudgePolicy;

const SR: f32 = 16_000.0;

/// A 120 Hz harmonic "voice" whose envelope pulses `per_s` times a second: loud for 60 % of
/// each period, 14 dB down for the rest, like syllables.
fn syllables(per_s: f32, seconds: f32) -> Vec<f32> {
    let n = (seconds * SR) as usize;
    (0..n)
        .map(|i| {
            let t = i as f32 / SR;
            let env = if (t * per_s).fract() < 0.6 { 1.0 } else { 0.2 };
            let voice: f32 = (1..10)
                .map(|k| (2.0 * std::f32::consts::PI * 120.0 * k as f32 * t).sin() / k as f32)
                .sum();
            0.1 * env * voice
        })
        .collect()
}

/// White noise (LCG) with the same pulsing envelope: loud, rhythmic, but unvoiced.
fn noise_bursts(per_s: f32, seconds: f32) -> Vec<f32> {
    let mut seed = 7u32;
    (0..(seconds * SR) as usize)
        .map(|i| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let x = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            let env = if (i as f32 / SR * per_s).fract() < 0.6 {
                1.0
            } else {
                0.2
            };
            0.2 * env * x
        })
        .collect()
}

#[test]
fn hop_accepts_100_to_250_ms_in_10_ms_steps() {
    assert_eq!(Hop::new(100).unwrap().frames(), 10);
    assert_eq!(Hop::new(250).unwrap().frames(), 25);
    assert_eq!(Hop::default().ms(), 250);
    for bad in [0, 90, 105, 260, 1000] {
        assert_eq!(Hop::new(bad), Err(ConversationError::Hop(bad)));
    }
}

#[test]
fn rate_counts_one_nucleus_per_syllable_pulse() {
    let mut t = SpeakingRateTracker::new(RateConfig::default(), Hop::default()).unwrap();
    let est = t.push(&syllables(5.0, 4.0));
    assert_eq!(est.len(), 16);
    let last = est.last().unwrap();
    let rate = last.syllables_per_s.unwrap();
    assert!((rate - 5.0).abs() < 0.5, "{last:?}");
    assert_eq!(last.end_ms, 4000);
    assert_eq!(last.hop, 15);
}

#[test]
fn rate_ignores_unvoiced_bursts() {
    let mut t = SpeakingRateTracker::new(RateConfig::default(), Hop::default()).unwrap();
    let est = t.push(&noise_bursts(5.0, 3.0));
    assert_eq!(t.nuclei_total(), 0);
    assert_eq!(est.last().unwrap().nuclei, 0);
}

#[test]
fn rate_gives_nothing_for_silence_and_leaves_long_pauses_out() {
    let mut t = SpeakingRateTracker::new(RateConfig::default(), Hop::default()).unwrap();
    assert!(t
        .push(&[0.0; 16_000])
        .iter()
        .all(|e| e.syllables_per_s.is_none()));
    let mut x = syllables(4.0, 2.0);
    x.extend(vec![0.0; 16_000]);
    x.extend(syllables(4.0, 2.0));
    t.push(&x);
    // 4 s of pulses (the trailing 14 dB dip of each counts), not the 1 s pause between them.
    let speech = t.speech_ms_total();
    assert!((3600..=4100).contains(&speech), "{speech} ms");
}

#[test]
fn rate_does_not_depend_on_chunk_size() {
    let x = syllables(4.0, 3.0);
    let mut whole =
        SpeakingRateTracker::new(RateConfig::default(), Hop::new(100).unwrap()).unwrap();
    let a = whole.push(&x);
    let mut chunked =
        SpeakingRateTracker::new(RateConfig::default(), Hop::new(100).unwrap()).unwrap();
    let b: Vec<_> = x.chunks(37).flat_map(|c| chunked.push(c)).collect();
    assert_eq!(a, b);
}

#[test]
fn activity_follows_voice_not_silence_or_hiss() {
    let hop = Hop::new(100).unwrap();
    let mut t = VoiceActivityTracker::new(ActivityConfig::default(), hop).unwrap();
    let silent = t.push(&[0.0; 8000]);
    assert!(silent
        .iter()
        .all(|h| h.activity.mask == 0 && !h.activity.speaking()));
    let voiced = t.push(&syllables(4.0, 1.0));
    assert!(voiced.iter().skip(1).all(|h| h.activity.speaking()));
    // The first of these hops is the silence's last, completed by the voice's first 15 ms.
    assert!(voiced
        .iter()
        .skip(1)
        .all(|h| h.activity.loudness_db.is_some()));
    let hops: Vec<u64> = silent.iter().chain(&voiced).map(|h| h.hop).collect();
    assert_eq!(hops, (0..hops.len() as u64).collect::<Vec<_>>());
    let mut t = VoiceActivityTracker::new(ActivityConfig::default(), hop).unwrap();
    let mut seed = 1u32;
    let hiss: Vec<f32> = (0..16_000)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            0.3 * ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        })
        .collect();
    assert!(t.push(&hiss).iter().all(|h| !h.activity.speaking()));
}

/// Hops of 100 ms from each member's speaking intervals (ms).
fn hops(members: &[&[(u64, u64)]], until_ms: u64) -> Vec<HopActivity> {
    (0..until_ms / 100)
        .map(|k| HopActivity {
            hop: k,
            start_ms: k * 100,
            hop_ms: 100,
            members: members
                .iter()
                .map(|spans| {
                    let mut mask = 0;
                    for i in 0..10 {
                        let t = k * 100 + i * 10;
                        if spans.iter().any(|&(s, e)| s <= t && t < e) {
                            mask |= 1 << i;
                        }
                    }
                    MemberActivity {
                        mask,
                        frames: 10,
                        loudness_db: (mask != 0).then_some(-30.0),
                    }
                })
                .collect(),
        })
        .collect()
}

#[test]
fn overlap_share_is_over_the_whole_window() {
    let h = hops(&[&[(0, 3000)], &[(1000, 1500)]], 3000);
    let mut t = OverlapTracker::new(2, 3000, Hop::new(100).unwrap()).unwrap();
    let mut last = (0.0, Vec::new());
    for hop in &h {
        last = t.push(hop);
    }
    assert!((last.0 - 500.0 / 3000.0).abs() < 1e-9, "{last:?}");
    assert_eq!(last.1[0], last.1[1]);
    // Three more seconds of A alone push the overlap out of the window.
    for hop in hops(&[&[(0, 6000)], &[]], 6000).iter().skip(30) {
        last = t.push(hop);
    }
    assert_eq!(last.0, 0.0);
    assert!(OverlapTracker::new(2, 3050, Hop::new(100).unwrap()).is_err());
}

fn final_turns(members: &[&[(u64, u64)]], until_ms: u64, cfg: TurnConfig) -> TurnSnapshot {
    let mut t = TurnTracker::new(members.len(), cfg);
    let mut last = None;
    for h in hops(members, until_ms) {
        last = Some(t.push(&h));
    }
    last.unwrap()
}

#[test]
fn interruption_needs_a_held_turn_and_both_talking_on() {
    let cfg = TurnConfig::default();
    // B starts 1.5 s into A's turn; both go on for a second: one interruption by B.
    let s = final_turns(&[&[(0, 3000)], &[(1500, 2500)]], 4000, cfg);
    assert_eq!(
        (s.members[1].interruptions, s.members[0].interrupted),
        (1, 1)
    );
    assert_eq!(s.members[0].interruptions, 0);
    // A backchannel of 300 ms: overlap, no interruption, no turn.
    let s = final_turns(&[&[(0, 3000)], &[(1500, 1800)]], 4000, cfg);
    assert_eq!(s.members[1].interruptions, 0);
    assert_eq!(s.members[1].turns, 0);
    // B starts 200 ms before A's end: a turn-end overlap.
    let s = final_turns(&[&[(0, 3000)], &[(2800, 5000)]], 6000, cfg);
    assert_eq!(s.members[1].interruptions, 0);
    assert_eq!((s.members[0].turns, s.members[1].turns), (1, 1));
    // A had spoken only 0.5 s.
    let s = final_turns(&[&[(0, 3000)], &[(500, 2500)]], 4000, cfg);
    assert_eq!(s.members[1].interruptions, 0);
    // B starts in A's 500 ms pause (A not mid-utterance), though A resumes over B.
    let s = final_turns(&[&[(0, 1500), (2000, 4000)], &[(1600, 3000)]], 5000, cfg);
    assert_eq!(s.members[1].interruptions, 0);
}

#[test]
fn monologues_bridge_short_pauses_and_silences_count_once() {
    let cfg = TurnConfig {
        monologue_ms: 5000,
        silence_ms: 2000,
        ..TurnConfig::default()
    };
    // A: 0–3 s, 800 ms pause, 3.8–6 s: one 6 s turn, one monologue. Then 3 s of silence.
    let s = final_turns(&[&[(0, 3000), (3800, 6000)], &[(9000, 9600)]], 10_000, cfg);
    assert_eq!((s.members[0].turns, s.members[0].monologues), (1, 1));
    assert_eq!((s.members[1].turns, s.members[1].monologues), (1, 0));
    assert_eq!(s.silences, 1);
    assert_eq!(s.silence_ms, 400);
    // A 1.2 s pause splits the turn: two turns of 3 s, no monologue.
    let s = final_turns(&[&[(0, 3000), (4200, 7200)]], 8000, cfg);
    assert_eq!((s.members[0].turns, s.members[0].monologues), (2, 0));
    assert_eq!(s.silences, 0);
}

#[test]
fn a_raised_voice_is_a_rise_over_the_members_own_baseline() {
    let mut t = TurnTracker::new(1, TurnConfig::default());
    let mut last = None;
    for k in 0..80 {
        let level = if k < 60 { -30.0 } else { -22.0 };
        last = Some(t.push(&HopActivity {
            hop: k,
            start_ms: k * 100,
            hop_ms: 100,
            members: vec![MemberActivity {
                mask: 0x3ff,
                frames: 10,
                loudness_db: Some(level),
            }],
        }));
    }
    let m = last.unwrap().members[0];
    assert_eq!(m.raised_voice_episodes, 1);
    assert!(m.loudness_over_baseline_db.unwrap() > 6.0, "{m:?}");
}

#[test]
fn shared_stream_overlap_needs_two_voiceprints_and_sound() {
    let cfg = ScoreOverlapConfig::default();
    let hop = |e: f32, s: &[f32]| HopScores {
        energy_db: e,
        scores: s.to_vec(),
    };
    assert!(overlapped_by_scores(&hop(-20.0, &[0.4, 0.3]), &cfg));
    assert!(!overlapped_by_scores(&hop(-20.0, &[0.6, 0.1]), &cfg));
    assert!(!overlapped_by_scores(&hop(-60.0, &[0.4, 0.3]), &cfg));
    assert!(!overlapped_by_scores(&hop(-20.0, &[0.4, f32::NAN]), &cfg));
    assert!(overlapped_by_scores(&hop(-20.0, &[0.1, 0.3, 0.5]), &cfg));
}

#[test]
fn derived_features_become_frames_the_policy_reads() {
    let mut f = DerivedFeatures {
        member: 0,
        hop: 9,
        end_ms: 1000,
        speaking: true,
        speech_ms: 250,
        overlapped_ms: 0,
        speaking_rate: Some(5.0),
        overlap_ratio: 0.1,
        conversation_overlap_ratio: 0.1,
        loudness_db: Some(-25.0),
        loudness_over_baseline_db: None,
        turns: 1,
        interruptions: 0,
        interrupted: 0,
        monologues: 0,
        raised_voice_episodes: 0,
        turn_ms: 1000,
        silences: 0,
        silence_ms: 0,
    };
    let policy = NudgePolicy::default();
    let frame = f.to_frame(1234);
    assert_eq!(frame.timestamp_ms, 1234);
    assert!(frame.check().is_ok());
    assert_eq!(
        policy.evaluate(&frame).map(|n| n.nudge_type),
        Some(NudgeType::SlowDown)
    );
    f.speaking = false;
    assert_eq!(f.to_frame(0).speaking_rate, 0.0);
    f.overlap_ratio = 0.5;
    assert_eq!(
        policy.evaluate(&f.to_frame(0)).map(|n| n.nudge_type),
        Some(NudgeType::LetPartnerFinish)
    );
    f.overlap_ratio = f64::NAN;
    assert!(f.to_frame(0).check().is_ok());
}

#[test]
fn analyzer_aligns_members_by_hop() {
    let mut an = ConversationAnalyzer::new(2, ConversationConfig::default()).unwrap();
    assert!(matches!(
        an.push(2, &[0.0]),
        Err(ConversationError::NoSuchMember(2))
    ));
    assert!(ConversationAnalyzer::new(0, ConversationConfig::default()).is_err());
    let x = syllables(4.0, 2.0);
    // Member 0 alone completes no hop; member 1 catching up releases them all.
    assert!(an.push(0, &x).unwrap().is_empty());
    let out = an.push(1, &vec![0.0; x.len()]).unwrap();
    assert_eq!(out.len(), 7);
    for (k, h) in out.iter().enumerate() {
        assert_eq!(h.len(), 2);
        assert_eq!((h[0].hop, h[1].hop), (k as u64, k as u64));
        assert!(!h[1].speaking);
    }
    assert!(out.last().unwrap()[0].speaking);
    assert!(out.last().unwrap()[0].speaking_rate.is_some());
}
