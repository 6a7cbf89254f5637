//! Who is speaking: cosine scores of a segment's embedding against the session members'
//! voiceprints, and the voiceprint made at enrolment (embedding + a quality figure).

use super::audio::{decode, AudioLimits, Codec};
use super::ecapa::{cosine, SpeakerModel};
use super::error::{Result, SpeechError};
use super::vad::{Vad, VadConfig};

/// Cosine below which a segment is attributed to nobody (`user_id: null`). 0.25 is the
/// threshold SpeechBrain's `SpeakerRecognition.verify_batch` uses with spkrec-ecapa-voxceleb.
/// With random weights scores mean nothing: only the plumbing can be tested then.
pub const DEFAULT_MATCH_THRESHOLD: f32 = 0.25;

/// The best-scoring candidate, if it clears the threshold; `score` is its cosine either way.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerMatch<K> {
    pub speaker: Option<K>,
    pub score: f32,
}

/// Scores `embedding` against each `(key, voiceprint)`; ties go to the first candidate.
/// No candidates: no speaker, score 0.
pub fn best_match<K: Clone>(
    embedding: &[f32],
    candidates: &[(K, Vec<f32>)],
    threshold: f32,
) -> SpeakerMatch<K> {
    let mut best: Option<(&K, f32)> = None;
    for (key, print) in candidates {
        let s = cosine(embedding, print);
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((key, s));
        }
    }
    match best {
        Some((k, s)) => SpeakerMatch {
            speaker: (s >= threshold).then(|| k.clone()),
            score: s,
        },
        None => SpeakerMatch {
            speaker: None,
            score: 0.0,
        },
    }
}

/// What enrolment stores: never the audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Voiceprint {
    pub embedding: Vec<f32>,
    /// Length of the enrolment audio.
    pub seconds: f32,
    /// Share of 1.5 s windows the VAD calls speech, in [0, 1]: low means mostly silence or noise.
    pub quality: f32,
}

/// Shortest and longest enrolment audio (API: 3–60 s).
pub const ENROL_MIN_SECONDS: f32 = 3.0;
pub const ENROL_MAX_SECONDS: f32 = 60.0;

/// Embeds 3–60 s of 16 kHz mono audio for a voiceprint.
pub fn enrol(model: &SpeakerModel, vad: &Vad, samples: &[f32]) -> Result<Voiceprint> {
    let seconds = samples.len() as f32 / 16_000.0;
    if seconds < ENROL_MIN_SECONDS {
        return Err(SpeechError::TooShort {
            got: samples.len(),
            need: (ENROL_MIN_SECONDS * 16_000.0) as usize,
        });
    }
    if seconds > ENROL_MAX_SECONDS {
        return Err(SpeechError::TooLarge(format!(
            "{seconds:.1} s > {ENROL_MAX_SECONDS} s"
        )));
    }
    let windows: Vec<bool> = samples
        .chunks_exact(24_000)
        .map(|w| vad.is_speech(w))
        .collect();
    let quality = windows.iter().filter(|s| **s).count() as f32 / windows.len().max(1) as f32;
    Ok(Voiceprint {
        embedding: model.embed(samples)?,
        seconds,
        quality,
    })
}

/// Share of 1.5 s windows that must be speech for an enrolment to count.
pub const ENROL_MIN_QUALITY: f32 = 0.2;
/// Largest enrolment upload: 60 s of 48 kHz stereo 16-bit WAV is 11.5 MB.
pub const ENROL_MAX_BYTES: usize = 16 << 20;

/// Enrolment from an uploaded file (WAV, FLAC, Ogg Vorbis, MP3): decode, embed, and refuse a
/// recording that is mostly silence or noise. The same function serves the gateway (embedded
/// default) and the workers (`inside.v1.embed`).
pub fn enrol_recording(model: &SpeakerModel, data: Vec<u8>, codec: Codec) -> Result<Voiceprint> {
    let limits = AudioLimits {
        max_bytes: ENROL_MAX_BYTES,
        max_seconds: f64::from(ENROL_MAX_SECONDS),
    };
    let audio = decode(data, Some(codec), &limits)?;
    let print = enrol(model, &Vad::new(VadConfig::default()), &audio.samples)?;
    if print.quality < ENROL_MIN_QUALITY {
        return Err(SpeechError::NoSpeech);
    }
    Ok(print)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_closest_above_threshold() {
        let c = vec![("a", vec![1.0, 0.0]), ("b", vec![0.0, 1.0])];
        let m = best_match(&[0.2, 0.9], &c, 0.25);
        assert_eq!(m.speaker, Some("b"));
        assert!(m.score > 0.9);
        let m = best_match(&[-1.0, -1.0], &c, 0.25);
        assert_eq!(m.speaker, None);
        assert!(m.score < 0.0);
        let none: Vec<(&str, Vec<f32>)> = Vec::new();
        assert_eq!(
            best_match(&[1.0], &none, 0.25),
            SpeakerMatch {
                speaker: None,
                score: 0.0
            }
        );
    }
}
