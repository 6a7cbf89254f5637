//! Voice activity detection for 16 kHz mono audio, so that silence and steady noise never
//! become speaker segments.
//!
//! Per 25 ms frame (10 ms hop): energy, spectral flatness in 100–4000 Hz (speech is harmonic and
//! formant-shaped, white noise is flat), the share of energy in the voice band 250–4000 Hz
//! (mains hum and rumble sit below it) and the zero-crossing rate (hiss crosses zero far more
//! often than voiced speech). A window is speech when enough frames pass and its energy moves
//! like syllables do (steady noise, even harmonic hum, has a flat energy contour).

use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{RealFftPlanner, RealToComplex};

use super::audio::SAMPLE_RATE;

const WIN: usize = 400;
const HOP: usize = 160;

/// Thresholds; the defaults suit a phone on a table at a normal distance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Frames quieter than this (dBFS, RMS) are silence.
    pub min_energy_db: f32,
    /// Frames flatter than this (0 = pure tone, ~0.56 = white noise) are noise.
    pub max_flatness: f32,
    /// Frames with less of their energy in 250–4000 Hz are hum/rumble.
    pub min_voice_band_ratio: f32,
    /// Frames crossing zero more often than this (per sample) are hiss.
    pub max_zcr: f32,
    /// A window is speech when at least this share of its frames is voice-like …
    pub min_voiced_fraction: f32,
    /// … and the spread of its frame energies (90th − 10th percentile, dB) is at least this.
    pub min_dynamic_range_db: f32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            min_energy_db: -50.0,
            max_flatness: 0.35,
            min_voice_band_ratio: 0.3,
            max_zcr: 0.35,
            min_voiced_fraction: 0.25,
            min_dynamic_range_db: 6.0,
        }
    }
}

/// Features of one frame (exposed for tuning and tests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameFeatures {
    pub energy_db: f32,
    pub flatness: f32,
    pub voice_band_ratio: f32,
    pub zcr: f32,
}

/// A stretch of speech in a longer recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeechRegion {
    pub start_ms: u64,
    pub end_ms: u64,
}

/// The detector: an FFT plan and a configuration. `Send + Sync`.
#[derive(Clone)]
pub struct Vad {
    cfg: VadConfig,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for Vad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vad").field("cfg", &self.cfg).finish()
    }
}

impl Default for Vad {
    fn default() -> Self {
        Self::new(VadConfig::default())
    }
}

impl Vad {
    pub fn new(cfg: VadConfig) -> Self {
        Self {
            cfg,
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(WIN),
        }
    }

    pub fn config(&self) -> &VadConfig {
        &self.cfg
    }

    /// Features of every full frame of `samples`.
    pub fn frame_features(&self, samples: &[f32]) -> Vec<FrameFeatures> {
        if samples.len() < WIN {
            return Vec::new();
        }
        let hz_per_bin = SAMPLE_RATE as f32 / WIN as f32;
        let bin = |hz: f32| (hz / hz_per_bin) as usize;
        let (flat_lo, flat_hi) = (bin(100.0), bin(4000.0));
        let (voice_lo, voice_hi) = (bin(250.0), bin(4000.0));
        let mut input = self.fft.make_input_vec();
        let mut spec: Vec<Complex32> = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let hann: Vec<f32> = (0..WIN)
            .map(|n| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * n as f32 / WIN as f32).cos())
            .collect();
        let mut out = Vec::with_capacity((samples.len() - WIN) / HOP + 1);
        for frame in samples.windows(WIN).step_by(HOP) {
            let rms2 = frame.iter().map(|x| x * x).sum::<f32>() / WIN as f32;
            let energy_db = 10.0 * rms2.max(1e-12).log10();
            let crossings = frame
                .windows(2)
                .filter(|w| (w[0] >= 0.0) != (w[1] >= 0.0))
                .count();
            for ((d, s), w) in input.iter_mut().zip(frame).zip(&hann) {
                *d = s * w;
            }
            if self
                .fft
                .process_with_scratch(&mut input, &mut spec, &mut scratch)
                .is_err()
            {
                continue;
            }
            let power: Vec<f32> = spec
                .iter()
                .map(|c| c.re * c.re + c.im * c.im + 1e-12)
                .collect();
            let band = &power[flat_lo..flat_hi];
            let log_mean = band.iter().map(|p| p.ln()).sum::<f32>() / band.len() as f32;
            let mean = band.iter().sum::<f32>() / band.len() as f32;
            let total: f32 = power[1..].iter().sum();
            let voice: f32 = power[voice_lo..voice_hi].iter().sum();
            out.push(FrameFeatures {
                energy_db,
                flatness: log_mean.exp() / mean,
                voice_band_ratio: voice / total,
                zcr: crossings as f32 / (WIN - 1) as f32,
            });
        }
        out
    }

    /// Whether one frame is voice-like (loud enough, harmonic, in the voice band, not hiss):
    /// the per-frame decision windows are built from, exposed for finer-grained trackers.
    pub fn is_voice_frame(&self, f: &FrameFeatures) -> bool {
        self.voiced(f)
    }

    fn voiced(&self, f: &FrameFeatures) -> bool {
        f.energy_db >= self.cfg.min_energy_db
            && f.flatness <= self.cfg.max_flatness
            && f.voice_band_ratio >= self.cfg.min_voice_band_ratio
            && f.zcr <= self.cfg.max_zcr
    }

    /// Whether a window (e.g. one ~1.5 s live segment) holds speech.
    pub fn is_speech(&self, samples: &[f32]) -> bool {
        self.window_decision(&self.frame_features(samples))
    }

    /// Share of voice-like frames in `samples` (0 when too short for one frame).
    pub fn voiced_fraction(&self, samples: &[f32]) -> f32 {
        let feats = self.frame_features(samples);
        if feats.is_empty() {
            return 0.0;
        }
        feats.iter().filter(|f| self.voiced(f)).count() as f32 / feats.len() as f32
    }

    fn window_decision(&self, feats: &[FrameFeatures]) -> bool {
        if feats.is_empty() {
            return false;
        }
        let voiced = feats.iter().filter(|f| self.voiced(f)).count();
        if (voiced as f32) < self.cfg.min_voiced_fraction * feats.len() as f32 {
            return false;
        }
        let mut e: Vec<f32> = feats.iter().map(|f| f.energy_db).collect();
        e.sort_by(f32::total_cmp);
        let pct = |q: f32| e[((e.len() - 1) as f32 * q).round() as usize];
        pct(0.9) - pct(0.1) >= self.cfg.min_dynamic_range_db
    }

    /// Speech regions of a longer recording: 1 s windows (hop 0.5 s) decide where speech may
    /// be, voice-like frames inside them make the regions, gaps under 300 ms are bridged and
    /// regions under 100 ms dropped.
    pub fn regions(&self, samples: &[f32]) -> Vec<SpeechRegion> {
        let feats = self.frame_features(samples);
        let n = feats.len();
        let mut speech = vec![false; n];
        let (win, hop) = (100usize, 50usize);
        let mut start = 0;
        loop {
            let end = (start + win).min(n);
            if end <= start {
                break;
            }
            if self.window_decision(&feats[start..end]) {
                for i in start..end {
                    speech[i] = speech[i] || self.voiced(&feats[i]);
                }
            }
            if end == n {
                break;
            }
            start += hop;
        }
        let ms = |frame: usize| (frame * HOP) as u64 * 1000 / u64::from(SAMPLE_RATE);
        let mut regions: Vec<SpeechRegion> = Vec::new();
        let mut i = 0;
        while i < n {
            if !speech[i] {
                i += 1;
                continue;
            }
            let s = i;
            while i < n && speech[i] {
                i += 1;
            }
            let r = SpeechRegion {
                start_ms: ms(s),
                end_ms: ms(i - 1) + (WIN as u64 * 1000 / 16_000),
            };
            match regions.last_mut() {
                Some(last) if r.start_ms <= last.end_ms + 300 => last.end_ms = r.end_ms,
                _ => regions.push(r),
            }
        }
        regions.retain(|r| r.end_ms - r.start_ms >= 100);
        regions
    }
}
