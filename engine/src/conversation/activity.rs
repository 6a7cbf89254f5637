//! Voice activity per member, per 10 ms frame and per hop, from the speech VAD's frame
//! features (energy, spectral flatness, voice-band share, zero crossings) with hysteresis: a
//! member starts speaking after `onset_frames` voice-like frames in a row and stops after
//! `hangover_ms` without one, which bridges stop closures and unvoiced consonants.
//!
//! One tracker per stream. With one phone per member each stream is one member's voice; the
//! trackers know nothing of each other, so crosstalk (a member's voice reaching the other's
//! phone loudly enough to pass the VAD) shows as that member speaking on both streams.

use crate::speech::vad::{FrameFeatures, Vad, VadConfig};

use super::{db, ConversationError, Hop, FRAME_LEN, FRAME_MS};

/// The VAD's per-frame window (25 ms): a frame's features need this many samples.
const VAD_WIN: usize = 400;

/// How a stream's frames become speaking time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivityConfig {
    /// Per-frame thresholds (the speech VAD's; its window-level settings are not used here).
    pub vad: VadConfig,
    /// Voice-like frames in a row that start speech (2: 20 ms; one stray frame is a click).
    pub onset_frames: u32,
    /// Time without a voice-like frame after which speech stops (150 ms: longer than a stop
    /// closure or an unvoiced consonant, shorter than the gap of a quick turn change).
    pub hangover_ms: u32,
}

impl Default for ActivityConfig {
    fn default() -> Self {
        Self {
            vad: VadConfig::default(),
            onset_frames: 2,
            hangover_ms: 150,
        }
    }
}

/// One member's activity in one hop.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MemberActivity {
    /// Bit i set: the member speaks in the hop's frame i (10 ms each, at most 25).
    pub mask: u32,
    /// Frames in the hop.
    pub frames: u8,
    /// RMS level of the member's speaking frames (dBFS); `None` when silent all hop.
    pub loudness_db: Option<f32>,
}

impl MemberActivity {
    /// Speaking for at least half the hop.
    pub fn speaking(&self) -> bool {
        2 * self.mask.count_ones() >= u32::from(self.frames)
    }

    pub fn speech_ms(&self) -> u32 {
        self.mask.count_ones() * FRAME_MS
    }

    /// Whether the member speaks in frame `i` of the hop.
    pub fn speaks_in(&self, i: usize) -> bool {
        i < 32 && self.mask & (1 << i) != 0
    }
}

/// One hop of one stream, as a [`VoiceActivityTracker`] emits it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamActivity {
    pub hop: u64,
    /// Stream time at the hop's start.
    pub start_ms: u64,
    pub activity: MemberActivity,
}

/// One hop of the whole conversation: every member's activity, members in a fixed order.
#[derive(Debug, Clone, PartialEq)]
pub struct HopActivity {
    pub hop: u64,
    pub start_ms: u64,
    pub hop_ms: u32,
    pub members: Vec<MemberActivity>,
}

impl HopActivity {
    /// Frames in the hop.
    pub fn frames(&self) -> usize {
        (self.hop_ms / FRAME_MS) as usize
    }

    /// Members speaking in frame `i`.
    pub fn speakers_in(&self, i: usize) -> usize {
        self.members.iter().filter(|m| m.speaks_in(i)).count()
    }
}

/// Incremental voice activity for one stream of 16 kHz mono samples, any chunk size.
#[derive(Debug, Clone)]
pub struct VoiceActivityTracker {
    cfg: ActivityConfig,
    vad: Vad,
    hop: Hop,
    hop_index: u64,
    /// Samples from the next frame's start on.
    pending: Vec<f32>,
    speaking: bool,
    voiced_run: u32,
    since_voice: u32,
}

impl VoiceActivityTracker {
    pub fn new(cfg: ActivityConfig, hop: Hop) -> Result<Self, ConversationError> {
        if cfg.onset_frames == 0 || cfg.onset_frames as usize > hop.frames() {
            return Err(ConversationError::Invalid(
                "onset_frames must be between 1 and a hop's frames",
            ));
        }
        Ok(Self {
            cfg,
            vad: Vad::new(cfg.vad),
            hop,
            hop_index: 0,
            pending: Vec::with_capacity(hop.frames() * FRAME_LEN + VAD_WIN),
            speaking: false,
            voiced_run: 0,
            since_voice: u32::MAX,
        })
    }

    /// Feed samples; one result per hop completed by them. A frame needs 15 ms of audio past
    /// its own 10 ms, so a hop completes that much after its end.
    pub fn push(&mut self, samples: &[f32]) -> Vec<StreamActivity> {
        self.pending.extend_from_slice(samples);
        let frames = self.hop.frames();
        let need = (frames - 1) * FRAME_LEN + VAD_WIN;
        let mut out = Vec::new();
        let mut consumed = 0;
        while self.pending.len() - consumed >= need {
            let feats = self
                .vad
                .frame_features(&self.pending[consumed..consumed + need]);
            out.push(self.hop_of(&feats));
            consumed += frames * FRAME_LEN;
        }
        self.pending.drain(..consumed);
        out
    }

    fn hop_of(&mut self, feats: &[FrameFeatures]) -> StreamActivity {
        let hangover = self.cfg.hangover_ms / FRAME_MS;
        let mut mask = 0u32;
        for (i, f) in feats.iter().enumerate() {
            if self.vad.is_voice_frame(f) {
                self.voiced_run += 1;
                self.since_voice = 0;
            } else {
                self.voiced_run = 0;
                self.since_voice = self.since_voice.saturating_add(1);
            }
            if !self.speaking && self.voiced_run >= self.cfg.onset_frames {
                self.speaking = true;
                // The onset's earlier frames were speech too, where they lie in this hop.
                let back = (self.cfg.onset_frames - 1) as usize;
                for j in i.saturating_sub(back)..i {
                    mask |= 1 << j;
                }
            } else if self.speaking && self.since_voice > hangover {
                self.speaking = false;
            }
            if self.speaking {
                mask |= 1 << i;
            }
        }
        let (mut power, mut n) = (0.0f32, 0u32);
        for (i, f) in feats.iter().enumerate() {
            if mask & (1 << i) != 0 {
                power += 10f32.powf(f.energy_db / 10.0);
                n += 1;
            }
        }
        let hop = self.hop_index;
        self.hop_index += 1;
        StreamActivity {
            hop,
            start_ms: hop * u64::from(self.hop.ms()),
            activity: MemberActivity {
                mask,
                frames: feats.len() as u8,
                loudness_db: (n > 0).then(|| db(power / n as f32)),
            },
        }
    }
}
