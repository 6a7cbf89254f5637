//! Test voices: the espeak-ng fixture as voice A, the same recording played
//! 1.35× faster (pitch and formants up, like a different speaker) as voice B,
//! and WAV / PCM encodings of them.

use inside_engine::speech::{decode, SpeakerModel};

pub fn fixture(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../engine/tests/fixtures")
        .join(path)
}

/// The small random-weight ECAPA-TDNN of the parity fixture.
pub fn model_dir() -> String {
    fixture("ecapa_small").display().to_string()
}

pub fn load_model() -> SpeakerModel {
    SpeakerModel::load(&fixture("ecapa_small")).unwrap()
}

fn speech_clip() -> Vec<f32> {
    let flac = std::fs::read(fixture("audio/speech.flac")).unwrap();
    decode(flac, None, &Default::default()).unwrap().samples
}

/// `seconds` of voice `which` (0 = A, 1 = B) at 16 kHz, quantised to 16 bits the way the
/// server will see it.
pub fn voice(which: usize, seconds: f64) -> Vec<f32> {
    let clip = speech_clip();
    let clip: Vec<f32> = if which == 0 {
        clip
    } else {
        // linear-interpolation speed-up: a higher, smaller-sounding voice
        let rate = 1.35f64;
        let n = (clip.len() as f64 / rate) as usize;
        (0..n)
            .map(|i| {
                let x = i as f64 * rate;
                let j = x as usize;
                let f = (x - j as f64) as f32;
                clip[j] * (1.0 - f) + clip.get(j + 1).copied().unwrap_or(0.0) * f
            })
            .collect()
    };
    let n = (seconds * 16_000.0) as usize;
    clip.iter()
        .cycle()
        .take(n)
        .map(|x| f32::from(to_i16(*x)) / 32768.0)
        .collect()
}

fn to_i16(x: f32) -> i16 {
    (x.clamp(-1.0, 1.0) * 32767.0) as i16
}

/// Little-endian 16-bit PCM bytes.
pub fn pcm(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|x| to_i16(*x).to_le_bytes())
        .collect()
}

/// A 16 kHz mono 16-bit WAV file.
pub fn wav(samples: &[f32]) -> Vec<u8> {
    let pcm = pcm(samples);
    let mut wav = Vec::with_capacity(44 + pcm.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&16_000u32.to_le_bytes());
    wav.extend_from_slice(&32_000u32.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(&pcm);
    wav
}
