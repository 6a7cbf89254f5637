//! Speaking rate in syllables per second, by syllable-nucleus detection on the intensity
//! envelope, after de Jong & Wempe (2009), "Praat script to detect syllable nuclei and measure
//! speech rate automatically", Behavior Research Methods 41(2), 385–390.
//!
//! The method, as done here, incrementally:
//! - intensity contour: mean square over a 50 ms triangular window every 10 ms, in dBFS;
//! - threshold: the loud level (99th percentile of the last 10 s of intensity, which ignores
//!   short bursts) minus `silence_db` (25 dB), and never under `floor_db`;
//! - a nucleus is an intensity peak above the threshold that stands out by `min_dip_db` (2 dB)
//!   from the dips on both sides (the paper requires the dip to the neighbouring peak), and is
//!   voiced: normalised autocorrelation ≥ `voicing_threshold` (0.45, Praat's voicing default) at
//!   a lag of 2.5–14 ms (70–400 Hz) around the peak;
//! - speaking time: frames above the threshold, with pauses shorter than `min_pause_ms`
//!   (300 ms) counted in and longer ones left out, so the rate is an articulation rate
//!   (syllables per second of speech, not of wall time), as the paper's "articulation rate".
//!
//! Each hop reports nuclei over speaking time for the last `window_ms` (3 s) of speech, ignoring
//! anything older than `max_age_ms`.

use std::collections::VecDeque;

use super::{db, ConversationError, Hop, FRAME_LEN, FRAME_MS};

/// Thresholds of the nucleus detector; defaults from de Jong & Wempe where the paper has them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateConfig {
    /// Speech time the estimate covers, counted back from the newest frame.
    pub window_ms: u32,
    /// Frames older than this never count, however little speech came since.
    pub max_age_ms: u32,
    /// Less speech than this in the window gives no estimate.
    pub min_speech_ms: u32,
    /// The threshold's distance below the loud level (the paper's "silence threshold", −25 dB).
    pub silence_db: f32,
    /// The threshold never goes under this (dBFS): digital silence and faint hiss are not speech.
    pub floor_db: f32,
    /// A peak must rise this far above the dips on either side (the paper's "minimum dip", 2 dB).
    pub min_dip_db: f32,
    /// Pauses at least this long are not speaking time (the paper's minimum pause, 0.3 s).
    pub min_pause_ms: u32,
    /// Normalised autocorrelation a peak needs to count as voiced.
    pub voicing_threshold: f32,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            window_ms: 3000,
            max_age_ms: 10_000,
            min_speech_ms: 500,
            silence_db: 25.0,
            floor_db: -55.0,
            min_dip_db: 2.0,
            min_pause_ms: 300,
            voicing_threshold: 0.45,
        }
    }
}

/// The rate at the end of one hop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateEstimate {
    /// 0, 1, 2, … from the stream's start.
    pub hop: u64,
    /// Stream time at the end of the hop.
    pub end_ms: u64,
    /// Nuclei per second of speech in the window; `None` under `min_speech_ms` of speech.
    pub syllables_per_s: Option<f64>,
    /// Nuclei and speech time the estimate counts.
    pub nuclei: u32,
    pub speech_ms: u32,
}

/// One 10 ms frame of the recent past: whether it is speaking time, nuclei found in it.
#[derive(Debug, Clone, Copy, Default)]
struct FrameMark {
    speech: bool,
    nuclei: u8,
}

/// Smoothing weights over the last five 10 ms blocks: a 50 ms triangle centred two blocks back.
const SMOOTH: [f32; 5] = [1.0, 2.0, 3.0, 2.0, 1.0];
/// Samples kept for the voicing check of a peak confirmed some frames after it.
const SAMPLE_HISTORY: usize = 16_000;
/// Voicing check: 25 ms compared with itself 40..=228 samples later (400–70 Hz).
const AC_WIN: usize = 400;
const AC_MIN_LAG: usize = 40;
const AC_MAX_LAG: usize = 228;
/// The loud level is refreshed every this many frames (a partial sort of ≤ 1,000 values).
const LOUD_REFRESH: u64 = 5;

/// Incremental speaking-rate estimator for one stream. Feed 16 kHz mono samples in any chunk
/// size with [`push`](Self::push); it returns an estimate at the end of every hop.
#[derive(Debug, Clone)]
pub struct SpeakingRateTracker {
    cfg: RateConfig,
    hop_frames: u64,
    /// Samples of an incomplete 10 ms block.
    block: Vec<f32>,
    /// Mean squares of the last five blocks, oldest first.
    blocks: VecDeque<f32>,
    /// The last second of samples, for the voicing check.
    samples: VecDeque<f32>,
    samples_seen: u64,
    frame: u64,
    /// Intensities above the floor over the last `max_age_ms`, for the loud level.
    loud_history: VecDeque<f32>,
    scratch: Vec<f32>,
    threshold_db: f32,
    /// Peak picking with hysteresis: looking for a maximum (`rising`) or for a minimum.
    rising: bool,
    extreme_db: f32,
    extreme_frame: u64,
    had_sound: bool,
    silent_run: u64,
    marks: VecDeque<FrameMark>,
    nuclei_total: u64,
    speech_frames_total: u64,
}

impl SpeakingRateTracker {
    pub fn new(cfg: RateConfig, hop: Hop) -> Result<Self, ConversationError> {
        if cfg.window_ms < 500 || cfg.max_age_ms < cfg.window_ms {
            return Err(ConversationError::Invalid(
                "rate window must be >= 500 ms and max_age_ms >= window_ms",
            ));
        }
        if !(cfg.min_dip_db > 0.0 && cfg.silence_db > 0.0 && cfg.floor_db.is_finite()) {
            return Err(ConversationError::Invalid(
                "rate dB thresholds must be positive",
            ));
        }
        let age_frames = (cfg.max_age_ms / FRAME_MS) as usize;
        Ok(Self {
            cfg,
            hop_frames: hop.frames() as u64,
            block: Vec::with_capacity(FRAME_LEN),
            blocks: VecDeque::with_capacity(SMOOTH.len()),
            samples: VecDeque::with_capacity(SAMPLE_HISTORY),
            samples_seen: 0,
            frame: 0,
            loud_history: VecDeque::with_capacity(age_frames),
            scratch: Vec::with_capacity(age_frames),
            threshold_db: cfg.floor_db,
            rising: false,
            extreme_db: f32::INFINITY,
            extreme_frame: 0,
            had_sound: false,
            silent_run: 0,
            marks: VecDeque::with_capacity(age_frames),
            nuclei_total: 0,
            speech_frames_total: 0,
        })
    }

    /// Feed samples; one estimate per hop completed by them.
    pub fn push(&mut self, samples: &[f32]) -> Vec<RateEstimate> {
        let mut out = Vec::new();
        for &x in samples {
            self.block.push(x);
            if self.samples.len() == SAMPLE_HISTORY {
                self.samples.pop_front();
            }
            self.samples.push_back(x);
            self.samples_seen += 1;
            if self.block.len() == FRAME_LEN {
                let ms = self.block.iter().map(|v| v * v).sum::<f32>() / FRAME_LEN as f32;
                self.block.clear();
                self.on_block(ms);
                if self.frame.is_multiple_of(self.hop_frames) {
                    out.push(self.estimate());
                }
            }
        }
        out
    }

    /// Nuclei found since the stream started (for whole-utterance figures).
    pub fn nuclei_total(&self) -> u64 {
        self.nuclei_total
    }

    /// Speaking time since the stream started, in ms (pauses ≥ `min_pause_ms` left out).
    pub fn speech_ms_total(&self) -> u64 {
        self.speech_frames_total * u64::from(FRAME_MS)
    }

    fn on_block(&mut self, mean_square: f32) {
        if self.blocks.len() == SMOOTH.len() {
            self.blocks.pop_front();
        }
        self.blocks.push_back(mean_square);
        let weight: f32 = SMOOTH[SMOOTH.len() - self.blocks.len()..].iter().sum();
        let sum: f32 = self
            .blocks
            .iter()
            .zip(&SMOOTH[SMOOTH.len() - self.blocks.len()..])
            .map(|(b, w)| b * w)
            .sum();
        let intensity = db(sum / weight);
        let f = self.frame;
        self.frame += 1;

        if self.marks.len() == (self.cfg.max_age_ms / FRAME_MS) as usize {
            self.marks.pop_front();
            self.loud_history.pop_front();
        }
        self.marks.push_back(FrameMark::default());
        self.loud_history.push_back(intensity);
        if f.is_multiple_of(LOUD_REFRESH) {
            self.refresh_threshold();
        }
        self.track_speech(intensity);
        self.pick_peak(f, intensity);
    }

    /// Threshold = 99th percentile of recent intensities above the floor − `silence_db`.
    fn refresh_threshold(&mut self) {
        self.scratch.clear();
        self.scratch.extend(
            self.loud_history
                .iter()
                .copied()
                .filter(|&v| v >= self.cfg.floor_db),
        );
        if self.scratch.is_empty() {
            self.threshold_db = self.cfg.floor_db;
            return;
        }
        let k = ((self.scratch.len() - 1) as f32 * 0.99).round() as usize;
        let (_, p99, _) = self.scratch.select_nth_unstable_by(k, f32::total_cmp);
        self.threshold_db = (*p99 - self.cfg.silence_db).max(self.cfg.floor_db);
    }

    /// Speaking time: frames over the threshold, and the pauses between them shorter than
    /// `min_pause_ms`, counted once the pause ends.
    fn track_speech(&mut self, intensity: f32) {
        let min_pause = u64::from(self.cfg.min_pause_ms / FRAME_MS);
        if intensity >= self.threshold_db {
            if self.had_sound && self.silent_run > 0 && self.silent_run < min_pause {
                let n = self.marks.len();
                let run = (self.silent_run as usize).min(n.saturating_sub(1));
                for m in self.marks.range_mut(n - 1 - run..n - 1) {
                    m.speech = true;
                }
                self.speech_frames_total += self.silent_run;
            }
            self.had_sound = true;
            self.silent_run = 0;
            if let Some(m) = self.marks.back_mut() {
                m.speech = true;
            }
            self.speech_frames_total += 1;
        } else {
            self.silent_run += 1;
        }
    }

    /// Peak picking with a `min_dip_db` hysteresis: a maximum is a peak once the contour has
    /// fallen `min_dip_db` below it, and the next one needs a rise of `min_dip_db` from the dip.
    fn pick_peak(&mut self, f: u64, intensity: f32) {
        if self.rising {
            if intensity > self.extreme_db {
                self.extreme_db = intensity;
                self.extreme_frame = f;
            } else if intensity < self.extreme_db - self.cfg.min_dip_db {
                let (peak_db, peak_frame) = (self.extreme_db, self.extreme_frame);
                if peak_db >= self.threshold_db && self.voiced_at(peak_frame) {
                    self.add_nucleus(peak_frame);
                }
                self.rising = false;
                self.extreme_db = intensity;
            }
        } else if intensity < self.extreme_db {
            self.extreme_db = intensity;
        } else if intensity > self.extreme_db + self.cfg.min_dip_db {
            self.rising = true;
            self.extreme_db = intensity;
            self.extreme_frame = f;
        }
    }

    fn add_nucleus(&mut self, frame: u64) {
        let oldest = self.frame - self.marks.len() as u64;
        if let Some(m) = frame
            .checked_sub(oldest)
            .and_then(|i| self.marks.get_mut(i as usize))
        {
            m.nuclei = m.nuclei.saturating_add(1);
            self.nuclei_total += 1;
        }
    }

    /// Whether the audio around frame `frame`'s centre is periodic: the best normalised
    /// autocorrelation over 70–400 Hz reaches `voicing_threshold`.
    fn voiced_at(&self, frame: u64) -> bool {
        // Frame f closes block f; the triangle's centre is the middle of block f − 2.
        let centre =
            (frame * FRAME_LEN as u64 + FRAME_LEN as u64 / 2).saturating_sub(2 * FRAME_LEN as u64);
        let span = (AC_WIN + AC_MAX_LAG) as u64;
        let start = centre.saturating_sub(span / 2);
        let oldest = self.samples_seen - self.samples.len() as u64;
        let start = start.max(oldest);
        let end = (start + span).min(self.samples_seen);
        if end - start < span {
            return false;
        }
        let first = (start - oldest) as usize;
        let (a, b) = self.samples.as_slices();
        let x: Vec<f32> = a
            .iter()
            .chain(b)
            .skip(first)
            .take(span as usize)
            .copied()
            .collect();
        let e0: f32 = x[..AC_WIN].iter().map(|v| v * v).sum();
        if e0 <= 1e-9 {
            return false;
        }
        let mut best = 0.0f32;
        let mut et: f32 = x[AC_MIN_LAG..AC_MIN_LAG + AC_WIN]
            .iter()
            .map(|v| v * v)
            .sum();
        for lag in AC_MIN_LAG..=AC_MAX_LAG {
            if lag > AC_MIN_LAG {
                let (out, inn) = (x[lag - 1], x[lag + AC_WIN - 1]);
                et = (et - out * out + inn * inn).max(0.0);
            }
            let r: f32 = x[..AC_WIN]
                .iter()
                .zip(&x[lag..lag + AC_WIN])
                .map(|(p, q)| p * q)
                .sum();
            let r = r / (e0 * et).sqrt().max(1e-12);
            best = best.max(r);
        }
        best >= self.cfg.voicing_threshold
    }

    fn estimate(&self) -> RateEstimate {
        let want = u64::from(self.cfg.window_ms / FRAME_MS);
        let (mut speech, mut nuclei) = (0u64, 0u32);
        for m in self.marks.iter().rev() {
            if speech >= want {
                break;
            }
            if m.speech {
                speech += 1;
            }
            nuclei += u32::from(m.nuclei);
        }
        let speech_ms = (speech * u64::from(FRAME_MS)) as u32;
        let syllables_per_s = (speech_ms >= self.cfg.min_speech_ms)
            .then(|| f64::from(nuclei) / (f64::from(speech_ms) / 1000.0));
        RateEstimate {
            hop: self.frame / self.hop_frames - 1,
            end_ms: self.frame * u64::from(FRAME_MS),
            syllables_per_s,
            nuclei,
            speech_ms,
        }
    }
}
