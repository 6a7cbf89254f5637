//! SpeechBrain's `Fbank(n_mels=80)` log-mel filterbank and the sentence mean normalisation of
//! `spkrec-ecapa-voxceleb`, reproduced from SpeechBrain's source:
//!
//! - ref: speechbrain/processing/features.py `STFT`: n_fft 400, win 400 (25 ms), hop 160
//!   (10 ms), `torch.hamming_window` (periodic), `center=True`, `pad_mode="constant"` (zeros,
//!   n_fft/2 each side), so `1 + n / 160` frames;
//! - `spectral_magnitude(power=1)`: the power spectrum `re² + im²`;
//! - `Filterbank`: mel = 2595·log10(1 + f/700), 82 points linear in mel from 0 to 8 kHz, and
//!   SpeechBrain's own triangle: centred on each inner point, symmetric, half-width = the gap
//!   to the previous point (not the usual asymmetric mel triangle); bins at linspace(0, 8000, 201);
//! - `_amplitude_to_DB`: 10·log10(max(x, 1e-10)), then clamped from below at the utterance's
//!   maximum minus 80 dB (`top_db`);
//! - ref: `InputNormalization(norm_type="sentence", std_norm=False)`: subtract each bin's mean
//!   over the utterance.

use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{RealFftPlanner, RealToComplex};

pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
pub const N_MELS: usize = 80;
const N_BINS: usize = N_FFT / 2 + 1;
const AMIN: f32 = 1e-10;
const TOP_DB: f32 = 80.0;

/// A filter's non-zero stretch of the spectrum.
#[derive(Debug, Clone)]
struct MelFilter {
    first_bin: usize,
    weights: Vec<f32>,
}

/// The 80-bin fbank computer. Cheap to share across threads (`Send + Sync`); each call
/// allocates only its output and one frame of scratch.
#[derive(Clone)]
pub struct Fbank {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    filters: Vec<MelFilter>,
}

impl std::fmt::Debug for Fbank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fbank")
            .field("n_mels", &self.filters.len())
            .finish()
    }
}

impl Default for Fbank {
    fn default() -> Self {
        Self::new()
    }
}

impl Fbank {
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        // torch.hamming_window(400), periodic=True
        let window = (0..N_FFT)
            .map(|n| {
                let x = 2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64;
                (0.54 - 0.46 * x.cos()) as f32
            })
            .collect();
        Self {
            fft,
            window,
            filters: mel_filters(16_000, N_FFT, N_MELS),
        }
    }

    /// Number of frames for `n` samples (`center=True`).
    pub fn num_frames(n: usize) -> usize {
        1 + n / HOP
    }

    /// Log-mel fbank of 16 kHz mono samples: `num_frames(n) × 80`, frame-major. Empty input
    /// gives one frame of the zero-padded silence, as SpeechBrain would.
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        let frames = Self::num_frames(samples.len());
        let mut out = vec![0.0f32; frames * N_MELS];
        let mut input = self.fft.make_input_vec();
        let mut spec: Vec<Complex32> = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = [0.0f32; N_BINS];
        let pad = N_FFT / 2;
        let mut max_db = f32::NEG_INFINITY;
        for (f, row) in out.chunks_exact_mut(N_MELS).enumerate() {
            // frame f covers padded[f*HOP .. f*HOP+N_FFT], padded = [0; 200] ++ samples ++ [0; 200]
            let start = (f * HOP) as isize - pad as isize;
            for (i, (x, w)) in input.iter_mut().zip(&self.window).enumerate() {
                let idx = start + i as isize;
                *x = if idx >= 0 && (idx as usize) < samples.len() {
                    samples[idx as usize] * w
                } else {
                    0.0
                };
            }
            // lengths are fixed by construction, so this cannot fail
            if self
                .fft
                .process_with_scratch(&mut input, &mut spec, &mut scratch)
                .is_err()
            {
                continue;
            }
            for (p, c) in power.iter_mut().zip(&spec) {
                *p = c.re * c.re + c.im * c.im;
            }
            for (o, filt) in row.iter_mut().zip(&self.filters) {
                let bins = &power[filt.first_bin..filt.first_bin + filt.weights.len()];
                let e: f32 = bins.iter().zip(&filt.weights).map(|(p, w)| p * w).sum();
                let db = 10.0 * e.max(AMIN).log10();
                max_db = max_db.max(db);
                *o = db;
            }
        }
        let floor = max_db - TOP_DB;
        for v in &mut out {
            *v = v.max(floor);
        }
        out
    }

    /// `compute` followed by sentence mean normalisation: the features ECAPA-TDNN takes.
    pub fn features(&self, samples: &[f32]) -> Vec<f32> {
        let mut feats = self.compute(samples);
        mean_normalize(&mut feats, N_MELS);
        feats
    }
}

/// Subtracts each column's mean over the rows (frame-major `rows × dim`), in place.
pub fn mean_normalize(feats: &mut [f32], dim: usize) {
    if dim == 0 || feats.len() < dim {
        return;
    }
    let rows = feats.len() / dim;
    // accumulate in f64: thousands of frames of dB values would lose digits in f32
    let mut mean = vec![0.0f64; dim];
    for row in feats.chunks_exact(dim) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v);
        }
    }
    let mean: Vec<f32> = mean.iter().map(|m| (m / rows as f64) as f32).collect();
    for row in feats.chunks_exact_mut(dim) {
        for (v, m) in row.iter_mut().zip(&mean) {
            *v -= m;
        }
    }
}

/// SpeechBrain's triangular filters, computed with torch's float32 arithmetic order.
fn mel_filters(sample_rate: usize, n_fft: usize, n_mels: usize) -> Vec<MelFilter> {
    let to_mel = |hz: f64| 2595.0 * (1.0 + hz / 700.0).log10();
    let m_max = to_mel((sample_rate / 2) as f64) as f32;
    let pts = n_mels + 2;
    let hz: Vec<f32> = linspace_f32(0.0, m_max, pts)
        .iter()
        .map(|m| 700.0 * (10f32.powf(m / 2595.0) - 1.0))
        .collect();
    let n_bins = n_fft / 2 + 1;
    let freqs = linspace_f32(0.0, (sample_rate / 2) as f32, n_bins);
    (0..n_mels)
        .map(|m| {
            let fc = hz[m + 1];
            let band = hz[m + 1] - hz[m];
            let w: Vec<f32> = freqs
                .iter()
                .map(|f| {
                    let slope = (f - fc) / band;
                    (slope + 1.0).min(1.0 - slope).max(0.0)
                })
                .collect();
            let first = w.iter().position(|v| *v > 0.0).unwrap_or(0);
            let last = w.iter().rposition(|v| *v > 0.0).map_or(first, |l| l + 1);
            MelFilter {
                first_bin: first,
                weights: w[first..last.max(first)].to_vec(),
            }
        })
        .collect()
}

/// torch.linspace in float32: the first half counts up from `start`, the second down from `end`.
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (steps - 1 - i) as f32
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frame_count_matches_center_true() {
        assert_eq!(Fbank::num_frames(48_000), 301);
        assert_eq!(Fbank::num_frames(24_000), 151);
        assert_eq!(Fbank::new().compute(&[]).len(), N_MELS);
    }

    #[test]
    fn filters_cover_the_band() {
        let f = mel_filters(16_000, 400, 80);
        assert_eq!(f.len(), 80);
        assert!(f.iter().all(|m| !m.weights.is_empty()));
        assert!(f.windows(2).all(|w| w[0].first_bin <= w[1].first_bin));
    }

    #[test]
    fn mean_normalisation_zeroes_columns() {
        let mut x = vec![1.0, 10.0, 3.0, 20.0];
        mean_normalize(&mut x, 2);
        assert_eq!(x, vec![-1.0, -5.0, 1.0, 5.0]);
    }
}
