//! The WebSocket message shapes: `{"type","sid","payload"}` text frames,
//! client messages parsed and validated, server messages encoded (payloads
//! already in JSON from the bus are spliced in, not decoded and re-encoded).

use inside_engine::speech::Codec;
use inside_schemas::FeatureFrame;
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

/// A client text frame, with the payload kept as raw JSON.
#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
}

/// What a client asked for.
#[derive(Debug, PartialEq)]
pub enum ClientMessage<'a> {
    /// A validated frame and the exact payload bytes to forward.
    FeatureFrame(FeatureFrame, &'a str),
    Ping,
    AudioStart(AudioStart),
    AudioStop,
}

/// `client.audio_start`: what the binary frames that follow hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioStart {
    pub codec: Codec,
    /// Required for `pcm_s16le`; containers carry their own.
    pub sample_rate: u32,
    pub channels: usize,
}

#[derive(Deserialize)]
struct AudioStartPayload<'a> {
    codec: &'a str,
    sample_rate: Option<u32>,
    channels: Option<usize>,
}

/// Why a client message was refused (sent back as `server.error`).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum BadMessage {
    #[error("message is not JSON of the form {{\"type\",\"sid\",\"payload\"}}")]
    Malformed,
    #[error("unknown message type")]
    UnknownType,
    #[error("feature frame payload is not valid: {0}")]
    InvalidFrame(&'static str),
    #[error("binary frames are only accepted after client.audio_start")]
    UnexpectedBinary,
    #[error("no speaker model would attribute the audio: none on this server and no worker with one answered (ECAPA_MODEL_DIR)")]
    AudioUnavailable,
    #[error("client.audio_start payload is not valid: {0}")]
    InvalidAudioStart(String),
    #[error("audio stream refused: {0}")]
    AudioInvalid(String),
    #[error("audio stream over the limit: {0}")]
    AudioTooLarge(String),
}

impl BadMessage {
    pub fn code(&self) -> &'static str {
        match self {
            BadMessage::Malformed => "malformed_message",
            BadMessage::UnknownType => "unknown_type",
            BadMessage::InvalidFrame(_) => "invalid_frame",
            BadMessage::UnexpectedBinary => "unexpected_binary",
            BadMessage::AudioUnavailable => "audio_unavailable",
            BadMessage::InvalidAudioStart(_) => "invalid_audio_start",
            BadMessage::AudioInvalid(_) => "audio_invalid",
            BadMessage::AudioTooLarge(_) => "payload_too_large",
        }
    }
}

pub fn parse(text: &str) -> Result<ClientMessage<'_>, BadMessage> {
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|_| BadMessage::Malformed)?;
    match env.kind {
        "client.feature_frame" => {
            let raw = env
                .payload
                .ok_or(BadMessage::InvalidFrame("payload missing"))?
                .get();
            let frame: FeatureFrame = serde_json::from_str(raw).map_err(|_| {
                BadMessage::InvalidFrame("needs timestamp_ms, speaking_rate, overlap_ratio")
            })?;
            validate(&frame)?;
            Ok(ClientMessage::FeatureFrame(frame, raw))
        }
        "client.ping" => Ok(ClientMessage::Ping),
        "client.audio_start" => audio_start(env.payload).map(ClientMessage::AudioStart),
        "client.audio_stop" => Ok(ClientMessage::AudioStop),
        _ => Err(BadMessage::UnknownType),
    }
}

fn audio_start(payload: Option<&RawValue>) -> Result<AudioStart, BadMessage> {
    let bad = |m: &str| BadMessage::InvalidAudioStart(m.to_string());
    let p: AudioStartPayload<'_> = serde_json::from_str(
        payload.ok_or_else(|| bad("payload missing"))?.get(),
    )
    .map_err(|_| bad("needs codec (pcm_s16le, wav, flac, ogg, mp3), sample_rate, channels"))?;
    let codec: Codec = p
        .codec
        .parse()
        .map_err(|_| bad("codec must be pcm_s16le, wav, flac, ogg or mp3"))?;
    let (sample_rate, channels) = match (codec, p.sample_rate, p.channels) {
        (Codec::PcmS16le, Some(r), Some(c)) => (r, c),
        (Codec::PcmS16le, _, _) => return Err(bad("pcm_s16le needs sample_rate and channels")),
        (_, r, c) => (r.unwrap_or(16_000), c.unwrap_or(1)),
    };
    if !(8_000..=192_000).contains(&sample_rate) {
        return Err(bad("sample_rate must be 8000..=192000"));
    }
    if !(1..=8).contains(&channels) {
        return Err(bad("channels must be 1..=8"));
    }
    Ok(AudioStart {
        codec,
        sample_rate,
        channels,
    })
}

fn validate(f: &FeatureFrame) -> Result<(), BadMessage> {
    if !f.speaking_rate.is_finite() || f.speaking_rate < 0.0 {
        return Err(BadMessage::InvalidFrame(
            "speaking_rate must be a finite number >= 0",
        ));
    }
    if !f.overlap_ratio.is_finite() || !(0.0..=1.0).contains(&f.overlap_ratio) {
        return Err(BadMessage::InvalidFrame(
            "overlap_ratio must be between 0 and 1",
        ));
    }
    Ok(())
}

/// A server message around a payload that is already JSON.
pub fn server_raw(kind: &str, sid: Uuid, payload_json: &str) -> String {
    format!(r#"{{"type":"{kind}","sid":"{sid}","payload":{payload_json}}}"#)
}

/// A server message around a payload to encode.
pub fn server<T: serde::Serialize>(kind: &str, sid: Uuid, payload: &T) -> String {
    match serde_json::to_string(payload) {
        Ok(json) => server_raw(kind, sid, &json),
        Err(_) => server_raw(kind, sid, "null"),
    }
}

pub fn error(sid: Uuid, bad: &BadMessage) -> String {
    server(
        "server.error",
        sid,
        &serde_json::json!({"code": bad.code(), "message": bad.to_string()}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_validated_and_forwarded_verbatim() {
        let ok = r#"{"type":"client.feature_frame","sid":"x","payload":{"timestamp_ms":1,"speaking_rate":2.5,"overlap_ratio":0.1,"seq":7}}"#;
        match parse(ok) {
            Ok(ClientMessage::FeatureFrame(f, raw)) => {
                assert_eq!(f.seq, Some(7));
                assert_eq!(
                    raw,
                    r#"{"timestamp_ms":1,"speaking_rate":2.5,"overlap_ratio":0.1,"seq":7}"#
                );
            }
            other => panic!("{other:?}"),
        }
        let cases = [
            (
                r#"{"type":"client.feature_frame","payload":{"timestamp_ms":1,"speaking_rate":-1,"overlap_ratio":0.1}}"#,
                "invalid_frame",
            ),
            (
                r#"{"type":"client.feature_frame","payload":{"timestamp_ms":1,"speaking_rate":1,"overlap_ratio":1.5}}"#,
                "invalid_frame",
            ),
            (
                r#"{"type":"client.feature_frame","payload":{"timestamp_ms":1}}"#,
                "invalid_frame",
            ),
            (r#"{"type":"client.feature_frame"}"#, "invalid_frame"),
            (r#"{"type":"client.dance"}"#, "unknown_type"),
            ("not json", "malformed_message"),
        ];
        for (text, code) in cases {
            assert_eq!(parse(text).map(|_| ()).unwrap_err().code(), code, "{text}");
        }
        assert_eq!(
            parse(r#"{"type":"client.ping","sid":"x"}"#),
            Ok(ClientMessage::Ping)
        );
    }

    #[test]
    fn audio_start_needs_a_known_codec_and_pcm_needs_its_format() {
        assert_eq!(
            parse(
                r#"{"type":"client.audio_start","payload":{"codec":"pcm_s16le","sample_rate":48000,"channels":2}}"#
            ),
            Ok(ClientMessage::AudioStart(AudioStart {
                codec: Codec::PcmS16le,
                sample_rate: 48_000,
                channels: 2
            }))
        );
        assert!(matches!(
            parse(r#"{"type":"client.audio_start","payload":{"codec":"ogg"}}"#),
            Ok(ClientMessage::AudioStart(AudioStart {
                codec: Codec::Ogg,
                ..
            }))
        ));
        for bad in [
            r#"{"type":"client.audio_start"}"#,
            r#"{"type":"client.audio_start","payload":{"codec":"aac","sample_rate":16000,"channels":1}}"#,
            r#"{"type":"client.audio_start","payload":{"codec":"pcm_s16le"}}"#,
            r#"{"type":"client.audio_start","payload":{"codec":"pcm_s16le","sample_rate":5,"channels":1}}"#,
            r#"{"type":"client.audio_start","payload":{"codec":"wav","channels":0}}"#,
        ] {
            assert_eq!(
                parse(bad).map(|_| ()).unwrap_err().code(),
                "invalid_audio_start",
                "{bad}"
            );
        }
    }
}
