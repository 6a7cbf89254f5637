//! Overlap on one shared stream (one phone, two people) from voiceprint scores, against the
//! scripted truth of the espeak-ng dialogues: sliding-window embeddings of the mix, scored
//! against each member's voiceprint, decided per hop by `overlapped_by_scores`.
//!
//! Run with `cargo test -p inside-engine --test shared_stream -- --nocapture` to see
//! the figures. The model is `ECAPA_MODEL_DIR` when set, else the committed `ecapa_small`
//! (random weights: its figures say whether the plumbing runs, not how well a trained model
//! separates voices).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use inside_engine::conversation::{overlapped_by_scores, HopScores, ScoreOverlapConfig};
use inside_engine::speech::{cosine, decode, enrol, AudioLimits, Codec, SpeakerModel, Vad};
use serde_json::Value;

/// The analyzer's default hop: one decision per published hop.
const HOP_MS: u64 = 250;
/// 1.5 s is the segment the workers already embed for attribution (ECAPA embeddings of much
/// less than a second are noisy); 1.0 s is printed beside it because a shorter window dilutes
/// a short overlap less. Each window is centred on its hop, so a live decision would lag by
/// half a window.
const WINDOWS_MS: [u64; 2] = [1000, 1500];
const SR_PER_MS: usize = 16;

struct Dialogue {
    streams: [Vec<f32>; 2],
    mix: Vec<f32>,
    truth: Value,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dialogues")
}

fn flac(file: String) -> Vec<f32> {
    let bytes = std::fs::read(dir().join(file)).unwrap();
    decode(bytes, Some(Codec::Flac), &AudioLimits::default())
        .unwrap()
        .samples
}

fn dialogue(name: &str) -> Dialogue {
    let truth = std::fs::read_to_string(dir().join(format!("{name}.truth.json"))).unwrap();
    Dialogue {
        streams: [
            flac(format!("{name}.a.flac")),
            flac(format!("{name}.b.flac")),
        ],
        mix: flac(format!("{name}.mix.flac")),
        truth: serde_json::from_str(&truth).unwrap(),
    }
}

fn spans(t: &Value, key: &str, member: Option<&str>) -> Vec<(u64, u64)> {
    t[key]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| member.is_none_or(|m| u["member"] == m))
        .map(|u| {
            (
                u["start_ms"].as_u64().unwrap(),
                u["end_ms"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn covered(spans: &[(u64, u64)], t_ms: u64) -> bool {
    spans.iter().any(|&(s, e)| s <= t_ms && t_ms < e)
}

/// A member's voiceprint from their own stream where they speak alone (truth utterances minus
/// overlaps), through the enrolment code the API uses.
fn voiceprint(model: &SpeakerModel, d: &Dialogue, m: usize) -> Vec<f32> {
    let mine = spans(&d.truth, "utterances", Some(["a", "b"][m]));
    let overlaps = spans(&d.truth, "overlaps", None);
    let solo: Vec<f32> = d.streams[m]
        .chunks(SR_PER_MS * 10)
        .enumerate()
        .filter(|(k, _)| {
            let t = *k as u64 * 10 + 5;
            covered(&mine, t) && !covered(&overlaps, t)
        })
        .flat_map(|(_, c)| c.iter().copied())
        .collect();
    enrol(model, &Vad::default(), &solo).unwrap().embedding
}

fn model() -> (SpeakerModel, String) {
    match std::env::var("ECAPA_MODEL_DIR") {
        Ok(d) if !d.is_empty() => (SpeakerModel::load(Path::new(&d)).unwrap(), d),
        _ => {
            let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ecapa_small");
            let label = "engine/tests/fixtures/ecapa_small (random weights, not trained)";
            (SpeakerModel::load(&d).unwrap(), label.into())
        }
    }
}

/// Per hop of the mix: its `HopScores` (level of the hop itself, scores of the window centred
/// on it, clamped inside the recording).
fn hop_scores(
    model: &SpeakerModel,
    mix: &[f32],
    prints: &[Vec<f32>],
    window_ms: u64,
) -> Vec<HopScores> {
    let hop = HOP_MS as usize * SR_PER_MS;
    let win = window_ms as usize * SR_PER_MS;
    let hops = mix.len() / hop;
    let windows: Vec<&[f32]> = (0..hops)
        .map(|k| {
            let centre = k * hop + hop / 2;
            let start = centre.saturating_sub(win / 2).min(mix.len() - win);
            &mix[start..start + win]
        })
        .collect();
    let embeddings = model.embed_batch(&windows).unwrap();
    (0..hops)
        .map(|k| {
            let h = &mix[k * hop..(k + 1) * hop];
            let ms = h.iter().map(|x| x * x).sum::<f32>() / h.len() as f32;
            HopScores {
                energy_db: 10.0 * ms.max(1e-12).log10(),
                scores: prints.iter().map(|p| cosine(&embeddings[k], p)).collect(),
            }
        })
        .collect()
}

/// Share of pairs (overlapped hop, clean-speech hop) in which the overlapped one has the higher
/// second-best score: 0.5 means the scores carry no overlap signal at all, whatever threshold.
fn auc(overlapped: &[f32], clean: &[f32]) -> f64 {
    let mut wins = 0.0;
    for o in overlapped {
        for c in clean {
            wins += if o > c {
                1.0
            } else if o == c {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (overlapped.len() * clean.len()).max(1) as f64
}

#[test]
fn shared_stream_overlap_from_voiceprint_scores_is_measured() {
    let (model, label) = model();
    println!("model: {label}");
    let names = ["turns", "monologue"];
    let dialogues: Vec<Dialogue> = names.iter().map(|n| dialogue(n)).collect();
    // Each dialogue is scored with voiceprints enrolled on the other one (same two voices), so
    // no audio under test went into a voiceprint.
    let prints: Vec<Vec<Vec<f32>>> = (0..2)
        .map(|i| {
            (0..2)
                .map(|m| voiceprint(&model, &dialogues[1 - i], m))
                .collect()
        })
        .collect();
    println!(
        "voiceprints: cos(a, b) = {:.3} (turns enrolment), {:.3} (monologue enrolment)",
        cosine(&prints[1][0], &prints[1][1]),
        cosine(&prints[0][0], &prints[0][1])
    );
    let cfg = ScoreOverlapConfig::default();
    for window_ms in WINDOWS_MS {
        let (mut hit, mut truth, mut false_pos, mut clean) = (0u64, 0u64, 0u64, 0u64);
        let (mut own, mut other) = (Vec::new(), Vec::new());
        let (mut second_overlapped, mut second_clean) = (Vec::new(), Vec::new());
        for (i, d) in dialogues.iter().enumerate() {
            let overlaps = spans(&d.truth, "overlaps", None);
            let by_member = [
                spans(&d.truth, "utterances", Some("a")),
                spans(&d.truth, "utterances", Some("b")),
            ];
            let hops = hop_scores(&model, &d.mix, &prints[i], window_ms);
            for (k, h) in hops.iter().enumerate() {
                let detected = overlapped_by_scores(h, &cfg);
                let start = k as u64 * HOP_MS;
                for f in 0..HOP_MS / 10 {
                    let t = start + f * 10 + 5;
                    if covered(&overlaps, t) {
                        truth += 1;
                        hit += u64::from(detected);
                    } else if by_member.iter().any(|s| covered(s, t)) {
                        clean += 1;
                        false_pos += u64::from(detected);
                    }
                }
                let centre = start + HOP_MS / 2;
                let second = h.scores[0].min(h.scores[1]);
                if covered(&overlaps, centre) {
                    second_overlapped.push(second);
                } else if let Some(m) = (0..2).find(|&m| covered(&by_member[m], centre)) {
                    second_clean.push(second);
                    own.push(h.scores[m]);
                    other.push(h.scores[1 - m]);
                }
            }
        }
        let recall = hit as f64 / truth.max(1) as f64;
        let false_share = false_pos as f64 / clean.max(1) as f64;
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
        // Whether windows, hops and truth line up: a single-voice hop should at least lean
        // towards its own speaker's voiceprint, even where the scores cannot find overlap.
        let leaning = own.iter().zip(&other).filter(|(o, x)| o > x).count();
        println!(
            "one stream, {window_ms} ms windows every {HOP_MS} ms, threshold {}: overlap \
             detected {:.1} % of {} ms, false overlap {:.1} % of {} ms clean speech",
            cfg.score_threshold,
            100.0 * recall,
            truth * 10,
            100.0 * false_share,
            clean * 10
        );
        println!(
            "  single-voice hops: mean score own voiceprint {:.3}, other's {:.3}, own higher in \
             {} of {}; second-best score, overlapped vs single-voice hops: AUC {:.2} (0.5: no \
             signal; {} vs {} hops)",
            mean(&own),
            mean(&other),
            leaning,
            own.len(),
            auc(&second_overlapped, &second_clean),
            second_overlapped.len(),
            second_clean.len()
        );
        assert!(truth > 0 && clean > 0);
        assert!((0.0..=1.0).contains(&recall) && (0.0..=1.0).contains(&false_share));
    }
}
