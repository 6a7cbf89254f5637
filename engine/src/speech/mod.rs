//! Audio in, voice activity, fbank and the ECAPA-TDNN speaker model: everything between the
//! bytes a phone sends and a 192-d speaker embedding, pure and synchronous (model files are the
//! only thing read from disk).
//!
//! - [`audio`]: decode WAV/FLAC/Ogg Vorbis/MP3 (symphonia) and raw `pcm_s16le`, downmix,
//!   resample to 16 kHz (rubato), with caller-given bounds.
//! - [`stream`]: the live path's incremental decoder that cuts ~1.5 s segments.
//! - [`vad`]: energy + spectral voice activity detection.
//! - [`fbank`]: SpeechBrain's `Fbank(n_mels=80)` and sentence mean normalisation, bit-for-bit
//!   in structure, within float tolerance in value.
//! - [`ecapa`]: SpeechBrain's ECAPA_TDNN in candle, loading SpeechBrain checkpoints.
//! - [`scoring`]: cosine attribution against voiceprints, and enrolment.

pub mod audio;
pub mod ecapa;
mod error;
pub mod fbank;
pub mod scoring;
pub mod stream;
pub mod vad;

pub use audio::{
    decode, decode_pcm_s16le, decode_stream, AudioLimits, Codec, DecodedAudio, SAMPLE_RATE,
};
pub use ecapa::{cosine, EcapaConfig, SpeakerModel};
pub use error::{Result, SpeechError};
pub use fbank::Fbank;
pub use scoring::{
    best_match, enrol, enrol_recording, SpeakerMatch, Voiceprint, DEFAULT_MATCH_THRESHOLD,
    ENROL_MAX_BYTES,
};
pub use stream::{Segment, StreamSegmenter, WavStreamHeader, DEFAULT_SEGMENT_MS};
pub use vad::{SpeechRegion, Vad, VadConfig};
