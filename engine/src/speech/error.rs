//! The one error type of `inside_engine::speech`: bad audio, bad model files, bad inputs.

use std::path::PathBuf;

/// Everything that can go wrong between audio bytes and a speaker embedding.
///
/// Callers map these to their own answers: `TooLarge` is a 413 / `server.error`, the audio
/// variants are 400/422, the model variants mean "model unavailable" (503).
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    /// The bytes are not a container or codec we decode (or no audio track in it).
    #[error("unsupported audio format: {0}")]
    Unsupported(String),
    /// The stream is damaged: bad header, undecodable packets.
    #[error("corrupt audio: {0}")]
    Corrupt(String),
    /// The stream ends before the length its header announces.
    #[error("truncated audio: decoded {decoded} of {expected} frames")]
    Truncated { decoded: u64, expected: u64 },
    /// Over the caller's bound (bytes or seconds); nothing beyond the bound was decoded.
    #[error("audio over the limit: {0}")]
    TooLarge(String),
    /// Decoded fine but holds no samples.
    #[error("audio holds no samples")]
    Empty,
    /// Too little audio for the operation (e.g. fewer frames than the model's receptive padding).
    #[error("audio too short: {got} samples, need at least {need}")]
    TooShort { got: usize, need: usize },
    /// Decoded fine, but too little of it is speech to identify a voice.
    #[error("no speech detected in the recording")]
    NoSpeech,
    /// Sample rate, channel count or codec parameters out of range.
    #[error("invalid audio parameters: {0}")]
    InvalidParams(String),
    /// The resampler refused its input (should not happen with valid parameters).
    #[error("resampling failed: {0}")]
    Resample(String),
    /// No weights where the model was expected.
    #[error(
        "no model weights in {0} (expected embedding_model.ckpt or embedding_model.safetensors)"
    )]
    ModelMissing(PathBuf),
    /// `hyperparams.yaml` unreadable or inconsistent.
    #[error("model config: {0}")]
    Config(String),
    /// Weights missing, mis-shaped or unreadable, or a tensor operation failed.
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, SpeechError>;
