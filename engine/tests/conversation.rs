//! Derived conversation features against ground truth: two espeak-ng dialogues made by
//! `scripts/make-dialogue-fixtures` (one FLAC per member, their mix, and truth.json with
//! utterance spans, syllable counts, overlaps and scripted interruptions).
//!
//! Run with `cargo test -p inside-engine --test conversation -- --nocapture` to see the figures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use inside_engine::conversation::{
    overlapped_frames, ActivityConfig, ConversationAnalyzer, ConversationConfig, DerivedFeatures,
    Hop, HopActivity, RateConfig, SpeakingRateTracker, TurnConfig, VoiceActivityTracker, FRAME_MS,
};
use inside_engine::speech::{decode, AudioLimits, Codec};
use inside_engine::NudgePolicy;
use inside_schemas::NudgeType;
use serde_json::Value;

const DIALOGUES: [&str; 2] = ["turns", "monologue"];
/// Odd chunk sizes, so no hop or frame boundary lines up with a chunk.
const CHUNKS: [usize; 4] = [1237, 320, 4001, 77];

struct Dialogue {
    a: Vec<f32>,
    b: Vec<f32>,
    mix: Vec<f32>,
    truth: Value,
}

fn dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dialogues")
}

fn flac(file: &str) -> Vec<f32> {
    let bytes = std::fs::read(dir().join(file)).unwrap();
    decode(bytes, Some(Codec::Flac), &AudioLimits::default())
        .unwrap()
        .samples
}

fn dialogue(name: &'static str) -> Dialogue {
    let truth = std::fs::read_to_string(dir().join(format!("{name}.truth.json"))).unwrap();
    Dialogue {
        a: flac(&format!("{name}.a.flac")),
        b: flac(&format!("{name}.b.flac")),
        mix: flac(&format!("{name}.mix.flac")),
        truth: serde_json::from_str(&truth).unwrap(),
    }
}

fn member_index(m: &str) -> usize {
    usize::from(m == "b")
}

/// (member, start_ms, end_ms, syllables) of every scripted utterance.
fn utterances(t: &Value) -> Vec<(usize, u64, u64, u64)> {
    t["utterances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                member_index(u["member"].as_str().unwrap()),
                u["start_ms"].as_u64().unwrap(),
                u["end_ms"].as_u64().unwrap(),
                u["syllables"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Feeds `samples` in the odd chunk sizes, calling `f` with each chunk.
fn chunked(samples: &[f32], mut f: impl FnMut(&[f32])) {
    let mut i = 0;
    let mut k = 0;
    while i < samples.len() {
        let n = CHUNKS[k % CHUNKS.len()].min(samples.len() - i);
        f(&samples[i..i + n]);
        i += n;
        k += 1;
    }
}

#[test]
fn speaking_rate_within_15_percent_per_utterance() {
    let hop = Hop::new(100).unwrap();
    let mut errors = Vec::new();
    for name in DIALOGUES {
        let d = dialogue(name);
        let utts = utterances(&d.truth);
        for (m, stream) in [&d.a, &d.b].into_iter().enumerate() {
            // (hop end ms, nuclei so far, speech ms so far, the hop's 3 s window estimate).
            let mut marks = vec![(0u64, 0u64, 0u64, None)];
            let mut rt = SpeakingRateTracker::new(RateConfig::default(), hop).unwrap();
            chunked(stream, |c| {
                let est = rt.push(c);
                if let Some(e) = est.last() {
                    marks.push((
                        e.end_ms,
                        rt.nuclei_total(),
                        rt.speech_ms_total(),
                        e.syllables_per_s,
                    ));
                }
            });
            let mine: Vec<_> = utts.iter().filter(|u| u.0 == m).collect();
            for (k, &&(_, start, end, syll)) in mine.iter().enumerate() {
                // Counters just before the utterance and once its last nucleus is confirmed,
                // which is before the member's next utterance (≥ 400 ms later in the script).
                let before = marks.iter().rev().find(|x| x.0 <= start).unwrap();
                let limit = mine.get(k + 1).map_or(u64::MAX, |n| n.1);
                let after = marks
                    .iter()
                    .find(|x| x.0 >= (end + 300).min(limit))
                    .unwrap_or(marks.last().unwrap());
                let (n, s) = (after.1 - before.1, after.2 - before.2);
                let truth = syll as f64 / ((end - start) as f64 / 1000.0);
                let est = n as f64 / (s as f64 / 1000.0);
                let err = (est - truth).abs() / truth;
                println!(
                    "{name} {} {start:>5}-{end:>5} ms: {syll:>2} syllables, {truth:.2}/s; \
                     {n:>2} nuclei in {s:>4} ms, {est:.2}/s; error {:.1} % \
                     (live 3 s window then: {:.2}/s)",
                    ["a", "b"][m],
                    100.0 * err,
                    after.3.unwrap_or(0.0)
                );
                if end - start >= 1000 {
                    errors.push(err);
                }
            }
        }
    }
    let mae = errors.iter().sum::<f64>() / errors.len() as f64;
    println!(
        "speaking-rate MAE over {} utterances of >= 1 s: {:.1} %",
        errors.len(),
        100.0 * mae
    );
    assert!(mae <= 0.15, "MAE {:.1} %", 100.0 * mae);
}

/// Per-frame activity of both members' streams, as `HopActivity` per hop.
fn activity(d: &Dialogue, hop: Hop) -> Vec<HopActivity> {
    let mut per_stream = Vec::new();
    for stream in [&d.a, &d.b] {
        let mut t = VoiceActivityTracker::new(ActivityConfig::default(), hop).unwrap();
        let mut hops = Vec::new();
        chunked(stream, |c| hops.extend(t.push(c)));
        per_stream.push(hops);
    }
    let n = per_stream[0].len().min(per_stream[1].len());
    (0..n)
        .map(|k| HopActivity {
            hop: k as u64,
            start_ms: per_stream[0][k].start_ms,
            hop_ms: hop.ms(),
            members: vec![per_stream[0][k].activity, per_stream[1][k].activity],
        })
        .collect()
}

fn covered(spans: &[(u64, u64)], t_ms: u64) -> bool {
    spans.iter().any(|&(s, e)| s <= t_ms && t_ms < e)
}

#[test]
fn overlap_on_two_streams_finds_90_percent_with_under_10_percent_false() {
    let (mut hit, mut truth_overlap, mut false_pos, mut clean_speech) = (0u64, 0u64, 0u64, 0u64);
    for name in DIALOGUES {
        let d = dialogue(name);
        let overlaps: Vec<(u64, u64)> = d.truth["overlaps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["start_ms"].as_u64().unwrap(),
                    o["end_ms"].as_u64().unwrap(),
                )
            })
            .collect();
        let speech: Vec<(u64, u64)> = utterances(&d.truth).iter().map(|u| (u.1, u.2)).collect();
        let hops = activity(&d, Hop::new(100).unwrap());
        let (mut h, mut to, mut fp, mut cs) = (0, 0, 0, 0);
        for hop in &hops {
            for i in 0..hop.frames() {
                let t = hop.start_ms + (i as u64) * u64::from(FRAME_MS) + 5;
                let detected = hop.speakers_in(i) >= 2;
                if covered(&overlaps, t) {
                    to += 1;
                    h += u64::from(detected);
                } else if covered(&speech, t) {
                    cs += 1;
                    fp += u64::from(detected);
                }
            }
        }
        let detected: u32 = hops.iter().map(overlapped_frames).sum();
        println!(
            "{name}: truth overlap {} ms, detected {} ms, of it in truth {} ms; \
             false {} ms of {} ms clean speech",
            to * 10,
            detected * 10,
            h * 10,
            fp * 10,
            cs * 10
        );
        (hit, truth_overlap, false_pos, clean_speech) = (
            hit + h,
            truth_overlap + to,
            false_pos + fp,
            clean_speech + cs,
        );
    }
    let recall = hit as f64 / truth_overlap as f64;
    let false_share = false_pos as f64 / clean_speech as f64;
    println!(
        "two streams: overlap recall {:.1} %, false overlap {:.1} %",
        100.0 * recall,
        100.0 * false_share
    );
    assert!(recall >= 0.90, "recall {:.1} %", 100.0 * recall);
    assert!(false_share <= 0.10, "false {:.1} %", 100.0 * false_share);
}

/// The analyzer over both streams, fed alternately in odd chunks; every hop's features.
fn analyze(d: &Dialogue, cfg: ConversationConfig) -> Vec<Vec<DerivedFeatures>> {
    let mut an = ConversationAnalyzer::new(2, cfg).unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    let n = d.a.len().min(d.b.len());
    let mut k = 0;
    while i < n {
        let c = CHUNKS[k % CHUNKS.len()].min(n - i);
        out.extend(an.push(0, &d.a[i..i + c]).unwrap());
        out.extend(an.push(1, &d.b[i..i + c]).unwrap());
        i += c;
        k += 1;
    }
    out
}

/// Member runs from the truth: each member's utterances with gaps under `bridge_ms` merged.
fn runs(t: &Value, member: usize, bridge_ms: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (m, s, e, _) in utterances(t) {
        if m != member {
            continue;
        }
        match out.last_mut() {
            Some(last) if s < last.1 + bridge_ms => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

#[test]
fn interruptions_turns_monologues_and_silences_match_the_script() {
    let turns = TurnConfig {
        monologue_ms: 8000,
        silence_ms: 2000,
        ..TurnConfig::default()
    };
    for name in DIALOGUES {
        let d = dialogue(name);
        let cfg = ConversationConfig {
            hop_ms: 100,
            turns,
            ..ConversationConfig::default()
        };
        let hops = analyze(&d, cfg);
        let last = hops.last().unwrap();
        let scripted = d.truth["interruptions"].as_array().unwrap();
        for m in 0..2 {
            let who = ["a", "b"][m];
            let made = scripted.iter().filter(|i| i["interrupter"] == who).count() as u32;
            let suffered = scripted.iter().filter(|i| i["interrupted"] == who).count() as u32;
            let r = runs(&d.truth, m, u64::from(turns.bridge_ms));
            let want_turns = r
                .iter()
                .filter(|(s, e)| e - s >= u64::from(turns.min_turn_ms))
                .count() as u32;
            let want_monologues = r
                .iter()
                .filter(|(s, e)| e - s >= u64::from(turns.monologue_ms))
                .count() as u32;
            let f = &last[m];
            println!(
                "{name} {who}: interruptions made {} (script {made}), suffered {} ({suffered}); \
                 turns {} ({want_turns}); monologues {} ({want_monologues})",
                f.interruptions, f.interrupted, f.turns, f.monologues
            );
            assert_eq!(f.interruptions, made, "{name} {who} interruptions");
            assert_eq!(f.interrupted, suffered, "{name} {who} interrupted");
            assert_eq!(f.turns, want_turns, "{name} {who} turns");
            assert_eq!(f.monologues, want_monologues, "{name} {who} monologues");
        }
        // Silences: gaps where nobody speaks for 2 s, from the merged truth spans.
        let mut all: Vec<(u64, u64)> = utterances(&d.truth).iter().map(|u| (u.1, u.2)).collect();
        all.sort_unstable();
        let mut want_silences = 0;
        let mut reach = all[0].1;
        for &(s, e) in &all[1..] {
            if s >= reach + u64::from(turns.silence_ms) {
                want_silences += 1;
            }
            reach = reach.max(e);
        }
        println!(
            "{name}: silences {} (script {want_silences})",
            last[0].silences
        );
        assert_eq!(last[0].silences, want_silences);
    }
}

#[test]
fn derived_frames_nudge_through_the_policy() {
    let d = dialogue("turns");
    let hops = analyze(
        &d,
        ConversationConfig {
            hop_ms: 100,
            ..ConversationConfig::default()
        },
    );
    let policy = NudgePolicy {
        speaking_rate_threshold: 4.5,
        ..NudgePolicy::default()
    };
    let nudges = |from: u64, to: u64, m: usize| -> Vec<NudgeType> {
        hops.iter()
            .filter(|h| h[m].end_ms > from && h[m].end_ms <= to)
            .filter_map(|h| policy.evaluate(&h[m].to_frame(h[m].end_ms as i64)))
            .map(|n| n.nudge_type)
            .collect()
    };
    let utts = utterances(&d.truth);
    // u2: b at 120 wpm (about 3 syllables/s): calm. u3: a at 200 wpm (about 5.6/s): too fast.
    let (_, s2, e2, _) = utts[1];
    let (_, s3, _, _) = utts[2];
    let (_, s4, _, _) = utts[3];
    assert!(nudges(s2, e2, 1).is_empty(), "{:?}", nudges(s2, e2, 1));
    assert!(nudges(s3 + 1000, s4, 0).contains(&NudgeType::SlowDown));
    // u4 cuts into u3: over a second of overlap in a 3 s window passes 0.3.
    let (_, _, e3, _) = utts[2];
    assert!(nudges(s4, e3 + 300, 1).contains(&NudgeType::LetPartnerFinish));
}

#[test]
fn shared_stream_is_the_mix_and_its_activity_is_printed() {
    let hop = Hop::new(100).unwrap();
    for name in DIALOGUES {
        let d = dialogue(name);
        // `sox -m` halves each input: the shared stream is (a + b) / 2, to 16-bit rounding.
        let worst = d
            .mix
            .iter()
            .zip(d.a.iter().zip(&d.b))
            .map(|(m, (a, b))| (m - (a + b) / 2.0).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 2.0 / 32768.0, "{name}: {worst}");
        // With no voiceprints a shared stream tells speech from silence, not one voice from
        // two: the share of truth speech the activity finds, and of truth overlap within it.
        let mut t = VoiceActivityTracker::new(ActivityConfig::default(), hop).unwrap();
        let mut hops = Vec::new();
        chunked(&d.mix, |c| hops.extend(t.push(c)));
        let speech: Vec<(u64, u64)> = utterances(&d.truth).iter().map(|u| (u.1, u.2)).collect();
        let (mut total, mut found) = (0u64, 0u64);
        for h in &hops {
            for i in 0..h.activity.frames as usize {
                if covered(&speech, h.start_ms + i as u64 * 10 + 5) {
                    total += 1;
                    found += u64::from(h.activity.speaks_in(i));
                }
            }
        }
        println!(
            "{name} shared stream: speech found {:.1} % of {} ms; overlap from voiceprint \
             scores is measured in tests/shared_stream.rs",
            100.0 * found as f64 / total as f64,
            total * 10
        );
        assert!(found * 10 >= total * 8);
    }
}
