//! What travels on `inside.v1.audio.<sid>.<uid>` and `inside.v1.embed`: the
//! payload is binary (f32 little-endian, 16 kHz mono for segments; the
//! uploaded file for enrolment), the metadata rides in message headers.

use serde::{Deserialize, Serialize};

/// Wall clock in µs since the Unix epoch: the clock of `Inside-Cut-At-Us`, so gateway and
/// workers on one host measure the live path's latency against the same scale.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Header names of an audio segment message.
pub mod headers {
    pub const SEQ: &str = "Inside-Seq";
    pub const START_MS: &str = "Inside-Start-Ms";
    pub const END_MS: &str = "Inside-End-Ms";
    /// The codec the phone streamed (`pcm_s16le`, `wav`, …); the payload is always f32le.
    pub const CODEC: &str = "Inside-Codec";
    /// Wall clock (µs since the Unix epoch) when the gateway cut the segment: the live path's
    /// latency is measured from it.
    pub const CUT_AT_US: &str = "Inside-Cut-At-Us";
    /// Server clock (ms since the Unix epoch) when the gateway started the segment's stream
    /// (`client.audio_start`): places the segment's stream times on the session's time base.
    pub const STREAM_STARTED_MS: &str = "Inside-Stream-Started-Ms";
    /// On `inside.v1.embed` requests: the MIME type of the uploaded file.
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// On a segment one worker forwards to another (`{prefix}.v1.workers.<worker>.audio`): the
    /// `audio` subject it came on, which names its session and member.
    pub const FORWARDED_AUDIO_SUBJECT: &str = "Inside-Audio-Subject";
}

/// The metadata of one audio segment (stream-relative times in ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSegmentMeta {
    pub seq: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    pub codec: String,
    pub cut_at_us: u64,
    /// `None` from a gateway that does not send it.
    pub stream_started_ms: Option<u64>,
}

impl AudioSegmentMeta {
    /// As header `(name, value)` pairs.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (headers::SEQ, self.seq.to_string()),
            (headers::START_MS, self.start_ms.to_string()),
            (headers::END_MS, self.end_ms.to_string()),
            (headers::CODEC, self.codec.clone()),
            (headers::CUT_AT_US, self.cut_at_us.to_string()),
        ];
        if let Some(started) = self.stream_started_ms {
            pairs.push((headers::STREAM_STARTED_MS, started.to_string()));
        }
        pairs
    }

    /// From a header lookup; `None` when a required header is missing or not a number.
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Self> {
        let num = |name: &str| get(name)?.trim().parse::<u64>().ok();
        Some(Self {
            seq: num(headers::SEQ)?,
            start_ms: num(headers::START_MS)?,
            end_ms: num(headers::END_MS)?,
            codec: get(headers::CODEC).unwrap_or("pcm_s16le").to_string(),
            cut_at_us: num(headers::CUT_AT_US).unwrap_or(0),
            stream_started_ms: num(headers::STREAM_STARTED_MS),
        })
    }
}

/// The reply on `inside.v1.embed`: a voiceprint, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EmbedReply {
    /// The voiceprint: the ECAPA-TDNN embedding (192 values), the length of the enrolment
    /// audio in seconds, and its quality: the share, 0..=1, of 1.5 s windows the voice
    /// activity detector calls speech (low means mostly silence or noise).
    Ok {
        embedding: Vec<f32>,
        seconds: f64,
        quality: f64,
    },
    /// Why there is none; `code` is written as the API's error code.
    Error { code: EmbedRefusal, message: String },
}

/// Why a worker made no voiceprint of a recording. On the wire it is the API's error code, so
/// the gateway answers the phone with the same code; a code this build does not know reads
/// as [`EmbedRefusal::Internal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EmbedRefusal {
    /// Not a supported container (WAV, FLAC, Ogg Vorbis, MP3).
    UnsupportedMediaType,
    /// Longer than enrolment accepts.
    PayloadTooLarge,
    /// Corrupt, too short, or no speech.
    ValidationError,
    /// The worker's speaker model cannot run.
    ModelUnavailable,
    /// Anything else: the worker failed.
    #[serde(other)]
    Internal,
}

/// A worker's answer on `inside.v1.capabilities`: what it can do for live sessions. Only
/// workers with a speaker model answer, so a reply at all means `speaker: true`; the field
/// leaves room for workers that answer without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Capabilities {
    /// Attributes live audio segments (`inside.v1.audio.…`) to speakers.
    pub speaker: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embed_refusals_are_api_error_codes_and_unknown_ones_read_as_internal() {
        let reply = EmbedReply::Error {
            code: EmbedRefusal::PayloadTooLarge,
            message: "too long".into(),
        };
        let wire = serde_json::to_value(&reply).unwrap();
        assert_eq!(wire["code"], "payload_too_large");
        assert_eq!(wire["status"], "error");
        let back: EmbedReply = serde_json::from_value(wire).unwrap();
        assert_eq!(back, reply);
        let newer: EmbedReply = serde_json::from_str(
            r#"{"status":"error","code":"quota_exceeded","message":"later build"}"#,
        )
        .unwrap();
        assert!(matches!(
            newer,
            EmbedReply::Error {
                code: EmbedRefusal::Internal,
                ..
            }
        ));
    }

    #[test]
    fn segment_meta_round_trips_through_headers() {
        let meta = AudioSegmentMeta {
            seq: 3,
            start_ms: 4500,
            end_ms: 6000,
            codec: "wav".into(),
            cut_at_us: 1_700_000_000_000_000,
            stream_started_ms: Some(1_700_000_000_000),
        };
        let pairs = meta.to_headers();
        let get = |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(AudioSegmentMeta::from_headers(get), Some(meta));
        assert_eq!(AudioSegmentMeta::from_headers(|_| None), None);
    }
}
