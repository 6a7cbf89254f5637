//! Audio in, the streaming segmenter and VAD: every container from small files (WAV made here,
//! FLAC/Ogg Vorbis/MP3 tones and an espeak-ng utterance made by
//! `scripts/make_ecapa_fixture.py --audio-fixtures`), corrupt and truncated inputs, bounds,
//! resampling quality, and silence/noise/hum versus voice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::f32::consts::PI;
use std::path::Path;

use inside_engine::speech::{
    decode, decode_pcm_s16le, AudioLimits, Codec, SpeechError, StreamSegmenter, Vad,
    WavStreamHeader,
};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/audio")
            .join(name),
    )
    .unwrap()
}

fn limits() -> AudioLimits {
    AudioLimits::default()
}

/// A 16-bit PCM WAV file built by hand.
fn wav(samples: &[i16], rate: u32, channels: u16) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut v = Vec::with_capacity(44 + data_len as usize);
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data_len).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    v.extend_from_slice(&(channels * 2).to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        v.extend_from_slice(&s.to_le_bytes());
    }
    v
}

fn tone(freq: f32, rate: u32, seconds: f32, amp: f32) -> Vec<f32> {
    (0..(seconds * rate as f32) as usize)
        .map(|i| amp * (2.0 * PI * freq * i as f32 / rate as f32).sin())
        .collect()
}

fn to_i16(x: &[f32]) -> Vec<i16> {
    x.iter().map(|v| (v * 32767.0).round() as i16).collect()
}

fn interleave(mono: &[i16], channels: usize) -> Vec<i16> {
    mono.iter()
        .flat_map(|s| std::iter::repeat_n(*s, channels))
        .collect()
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
}

/// Goertzel power of `freq` in 16 kHz audio, normalised by length.
fn power_at(x: &[f32], freq: f32) -> f32 {
    let w = 2.0 * PI * freq / 16_000.0;
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for v in x {
        let s = v + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / (x.len() as f32).powi(2)
}

/// A deterministic LCG white noise in [-amp, amp).
fn noise(n: usize, amp: f32, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            amp * (2.0 * ((s >> 8) as f32 / (1u32 << 24) as f32) - 1.0)
        })
        .collect()
}

/// A voice-like signal: harmonics of a gliding 120–180 Hz pitch with a formant bump, switched
/// on and off like syllables (~4 per second).
fn voiced(seconds: f32) -> Vec<f32> {
    let n = (seconds * 16_000.0) as usize;
    let mut phase = 0.0f32;
    let hiss = noise(n, 0.002, 9);
    (0..n)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            let f0 = 150.0 + 30.0 * (2.0 * PI * 0.8 * t).sin();
            phase += 2.0 * PI * f0 / 16_000.0;
            let v: f32 = (1..25)
                .map(|k| {
                    let fk = k as f32 * f0;
                    let formant = (-((fk - 700.0) / 300.0).powi(2)).exp()
                        + 0.5 * (-((fk - 1800.0) / 400.0).powi(2)).exp();
                    (0.15 / k as f32 + formant) * (k as f32 * phase).sin()
                })
                .sum();
            let env = (0.5 - 0.5 * (2.0 * PI * 4.0 * t).cos()).powi(2);
            0.2 * v * env + hiss[i]
        })
        .collect()
}

#[test]
fn wav_decodes_downmixes_and_resamples() {
    // 44.1 kHz stereo 440 Hz, 0.5 s
    let mono = to_i16(&tone(440.0, 44_100, 0.5, 0.5));
    let d = decode(
        wav(&interleave(&mono, 2), 44_100, 2),
        Some(Codec::Wav),
        &limits(),
    )
    .unwrap();
    assert_eq!((d.source_rate, d.source_channels), (44_100, 2));
    assert_eq!(d.samples.len(), 8000);
    assert!(
        (rms(&d.samples[400..7600]) - 0.5 / 2f32.sqrt()).abs() < 0.01,
        "rms {}",
        rms(&d.samples)
    );
    assert!(power_at(&d.samples, 440.0) > 100.0 * power_at(&d.samples, 1000.0));
    // 16 kHz mono passes through bit-exactly (i16 / 32768)
    let pcm = to_i16(&tone(300.0, 16_000, 0.25, 0.3));
    let d = decode(wav(&pcm, 16_000, 1), None, &limits()).unwrap();
    assert_eq!(d.samples.len(), pcm.len());
    assert!(d
        .samples
        .iter()
        .zip(&pcm)
        .all(|(a, b)| *a == f32::from(*b) / 32768.0));
}

#[test]
fn flac_ogg_mp3_decode() {
    for (name, codec) in [
        ("tone.flac", Codec::Flac),
        ("tone.ogg", Codec::Ogg),
        ("tone.mp3", Codec::Mp3),
    ] {
        for hint in [Some(codec), None] {
            let d =
                decode(fixture(name), hint, &limits()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((d.source_rate, d.source_channels), (44_100, 2), "{name}");
            assert!(
                (d.seconds() - 0.5).abs() < 0.08,
                "{name}: {} s",
                d.seconds()
            );
            let mid = &d.samples[1000..7000];
            assert!(
                power_at(mid, 440.0) > 100.0 * power_at(mid, 1000.0),
                "{name}: not a 440 Hz tone"
            );
            // ffmpeg's sine source has amplitude 1/8, upmixed to stereo at -3 dB: rms 0.0625
            assert!((rms(mid) - 0.0625).abs() < 0.01, "{name}: rms {}", rms(mid));
        }
    }
}

#[test]
fn corrupt_inputs_are_errors_not_panics() {
    assert!(matches!(
        decode(Vec::new(), None, &limits()),
        Err(SpeechError::Empty)
    ));
    let garbage = noise(4000, 1.0, 3)
        .iter()
        .map(|v| (v * 127.0) as i8 as u8)
        .collect::<Vec<u8>>();
    assert!(decode(garbage.clone(), None, &limits()).is_err());
    assert!(decode(garbage, Some(Codec::Mp3), &limits()).is_err());
    // a WAV header claiming an absurd format
    let mut bad = wav(&[0; 100], 16_000, 1);
    bad[22] = 0; // zero channels
    assert!(decode(bad, None, &limits()).is_err());
    // FLAC frames are CRC-protected: damaged frames must not decode silently (the first 8 KiB
    // of ffmpeg's FLAC are a padding block, so damage the frames near the end)
    let mut flac = fixture("tone.flac");
    let n = flac.len();
    for b in &mut flac[n * 3 / 4..n * 3 / 4 + 200] {
        *b ^= 0x5a;
    }
    assert!(decode(flac, None, &limits()).is_err());
    // damaged Ogg/MP3 bodies: an error or audio, never a panic
    for name in ["tone.ogg", "tone.mp3"] {
        let mut bytes = fixture(name);
        let n = bytes.len();
        for b in &mut bytes[n / 2..n / 2 + 300] {
            *b = b.wrapping_mul(31).wrapping_add(7);
        }
        let _ = decode(bytes, None, &limits());
    }
}

#[test]
fn truncated_inputs_are_errors() {
    let pcm = to_i16(&tone(440.0, 16_000, 1.0, 0.3));
    let full = wav(&pcm, 16_000, 1);
    let cut = full[..full.len() / 2].to_vec();
    assert!(matches!(
        decode(cut, None, &limits()),
        Err(SpeechError::Truncated { .. })
    ));
    for name in ["tone.flac", "tone.ogg", "tone.mp3"] {
        let bytes = fixture(name);
        let cut = bytes[..bytes.len() / 2].to_vec();
        let r = decode(cut, None, &limits());
        assert!(
            r.is_err(),
            "{name}: truncated file decoded to {:?} s",
            r.map(|d| d.seconds())
        );
    }
    // a header cut short
    assert!(decode(full[..30].to_vec(), None, &limits()).is_err());
}

#[test]
fn bounds_are_enforced_before_decoding_everything() {
    let pcm = to_i16(&tone(440.0, 16_000, 2.0, 0.3));
    let small = AudioLimits {
        max_bytes: 1000,
        max_seconds: 60.0,
    };
    assert!(matches!(
        decode(wav(&pcm, 16_000, 1), None, &small),
        Err(SpeechError::TooLarge(_))
    ));
    let short = AudioLimits {
        max_bytes: 1 << 20,
        max_seconds: 1.0,
    };
    assert!(matches!(
        decode(wav(&pcm, 16_000, 1), None, &short),
        Err(SpeechError::TooLarge(_))
    ));
    assert!(matches!(
        decode(
            fixture("tone.flac"),
            None,
            &AudioLimits {
                max_bytes: 1 << 20,
                max_seconds: 0.2
            }
        ),
        Err(SpeechError::TooLarge(_))
    ));
    let raw: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    assert!(matches!(
        decode_pcm_s16le(&raw, 16_000, 1, &short),
        Err(SpeechError::TooLarge(_))
    ));
}

#[test]
fn raw_pcm_s16le() {
    let mono = to_i16(&tone(440.0, 48_000, 0.5, 0.4));
    let raw: Vec<u8> = interleave(&mono, 2)
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let d = decode_pcm_s16le(&raw, 48_000, 2, &limits()).unwrap();
    assert_eq!(d.samples.len(), 8000);
    assert!((rms(&d.samples[500..7500]) - 0.4 / 2f32.sqrt()).abs() < 0.01);
    assert!(matches!(
        decode_pcm_s16le(&raw[..raw.len() - 1], 48_000, 2, &limits()),
        Err(SpeechError::Truncated { .. })
    ));
    assert!(decode_pcm_s16le(&raw, 0, 2, &limits()).is_err());
    assert!(decode_pcm_s16le(&raw, 48_000, 0, &limits()).is_err());
    assert!(decode_pcm_s16le(&[], 16_000, 1, &limits()).is_err());
    assert_eq!("pcm_s16le".parse::<Codec>().unwrap(), Codec::PcmS16le);
    assert!("aac".parse::<Codec>().is_err());
    assert_eq!(Codec::from_mime("audio/mpeg"), Some(Codec::Mp3));
}

#[test]
fn resampling_is_band_limited() {
    // 10 kHz at 48 kHz is above the 8 kHz Nyquist of the output: it must vanish, not alias to 6 kHz
    let mono = to_i16(&tone(10_000.0, 48_000, 0.5, 0.5));
    let raw: Vec<u8> = mono.iter().flat_map(|s| s.to_le_bytes()).collect();
    let d = decode_pcm_s16le(&raw, 48_000, 1, &limits()).unwrap();
    assert!(
        rms(&d.samples[500..7500]) < 0.005,
        "alias rms {}",
        rms(&d.samples[500..7500])
    );
    // 3 kHz passes with its amplitude
    let mono = to_i16(&tone(3_000.0, 48_000, 0.5, 0.5));
    let raw: Vec<u8> = mono.iter().flat_map(|s| s.to_le_bytes()).collect();
    let d = decode_pcm_s16le(&raw, 48_000, 1, &limits()).unwrap();
    assert!((rms(&d.samples[500..7500]) - 0.5 / 2f32.sqrt()).abs() < 0.01);
}

#[test]
fn stream_segments_have_stream_times() {
    let mono = to_i16(&tone(440.0, 48_000, 4.0, 0.4));
    let raw: Vec<u8> = interleave(&mono, 2)
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let mut seg = StreamSegmenter::new(48_000, 2, 1500, 60.0).unwrap();
    let mut out = Vec::new();
    // odd chunk sizes: frames and even samples split across chunks
    for chunk in raw.chunks(3333) {
        out.extend(seg.push_s16le(chunk).unwrap());
    }
    out.extend(seg.finish().unwrap());
    let times: Vec<(u64, u64, u64)> = out.iter().map(|s| (s.seq, s.start_ms, s.end_ms)).collect();
    assert_eq!(times, vec![(0, 0, 1500), (1, 1500, 3000), (2, 3000, 4000)]);
    assert!(out[..2].iter().all(|s| s.samples.len() == 24_000));
    assert_eq!(out[2].samples.len(), 16_000);
    // the streamed audio equals the one-shot decode
    let whole = decode_pcm_s16le(&raw, 48_000, 2, &limits())
        .unwrap()
        .samples;
    let streamed: Vec<f32> = out.iter().flat_map(|s| s.samples.iter().copied()).collect();
    assert_eq!(streamed.len(), whole.len());
    let max_diff = streamed
        .iter()
        .zip(&whole)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(max_diff < 1e-3, "stream vs one-shot {max_diff}");
    // the stream bound
    let mut capped = StreamSegmenter::new(16_000, 1, 1500, 1.0).unwrap();
    assert!(capped.push_f32(&vec![0.0; 16_000]).is_ok());
    assert!(matches!(
        capped.push_f32(&[0.0; 160]),
        Err(SpeechError::TooLarge(_))
    ));
}

#[test]
fn vad_rejects_silence_and_steady_noise() {
    let vad = Vad::default();
    let n = 24_000;
    assert!(!vad.is_speech(&vec![0.0; n]), "digital silence");
    assert!(!vad.is_speech(&noise(n, 0.001, 1)), "room tone");
    assert!(!vad.is_speech(&noise(n, 0.3, 2)), "loud white noise");
    let hum: Vec<f32> = (0..n)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            0.3 * (2.0 * PI * 50.0 * t).sin()
                + 0.1 * (2.0 * PI * 100.0 * t).sin()
                + 0.05 * (2.0 * PI * 150.0 * t).sin()
        })
        .collect();
    assert!(!vad.is_speech(&hum), "mains hum");
    assert!(
        !vad.is_speech(&tone(1000.0, 16_000, 1.5, 0.3)),
        "steady whistle"
    );
    let buzz: Vec<f32> = voiced(1.5)
        .iter()
        .zip(0..)
        .map(|(_, i)| {
            let t = i as f32 / 16_000.0;
            (1..20)
                .map(|k| 0.05 * (2.0 * PI * 120.0 * k as f32 * t).sin())
                .sum::<f32>()
        })
        .collect();
    assert!(!vad.is_speech(&buzz), "steady harmonic buzz");
    assert!(!vad.is_speech(&[0.1; 100]), "too short");
}

#[test]
fn vad_accepts_voice() {
    let vad = Vad::default();
    assert!(vad.is_speech(&voiced(1.5)), "synthetic voice");
    // voice over a noise floor is still voice
    let noisy: Vec<f32> = voiced(1.5)
        .iter()
        .zip(noise(24_000, 0.01, 5))
        .map(|(a, b)| a + b)
        .collect();
    assert!(vad.is_speech(&noisy), "voice over noise");
    // espeak-ng speech
    let speech = decode(fixture("speech.flac"), None, &limits())
        .unwrap()
        .samples;
    assert!(speech.len() > 24_000);
    let windows: Vec<bool> = speech
        .chunks_exact(24_000)
        .map(|w| vad.is_speech(w))
        .collect();
    assert!(windows.iter().all(|s| *s), "espeak windows {windows:?}");
}

#[test]
fn vad_regions_find_the_speech() {
    let vad = Vad::default();
    let mut x = noise(16_000, 0.001, 7);
    x.extend(voiced(1.5));
    x.extend(noise(16_000, 0.001, 8));
    let regions = vad.regions(&x);
    assert_eq!(regions.len(), 1, "{regions:?}");
    let r = regions[0];
    assert!(r.start_ms >= 900 && r.start_ms <= 1200, "{r:?}");
    assert!(r.end_ms >= 2200 && r.end_ms <= 2600, "{r:?}");
}

#[test]
fn streamed_wav_header() {
    let pcm = to_i16(&tone(440.0, 48_000, 0.1, 0.3));
    let file = wav(&interleave(&pcm, 2), 48_000, 2);
    for cut in 0..44 {
        assert_eq!(
            WavStreamHeader::parse(&file[..cut]).unwrap(),
            None,
            "cut {cut}"
        );
    }
    let h = WavStreamHeader::parse(&file).unwrap().unwrap();
    assert_eq!(
        h,
        WavStreamHeader {
            sample_rate: 48_000,
            channels: 2,
            data_offset: 44
        }
    );
    let mut seg = StreamSegmenter::new(h.sample_rate, h.channels, 1500, 60.0).unwrap();
    assert!(seg.push_s16le(&file[h.data_offset..]).unwrap().is_empty());
    assert!(WavStreamHeader::parse(b"RIFX\0\0\0\0WAVEfmt ").is_err());
    let mut float = file.clone();
    float[34] = 32; // 32-bit samples
    assert!(WavStreamHeader::parse(&float).is_err());
}
