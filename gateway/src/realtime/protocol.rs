//! The WebSocket message shapes: `{"type","sid","payload"}` text frames,
//! client messages parsed and validated, server messages encoded (payloads
//! already in JSON from the bus are spliced in, not decoded and re-encoded).

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
    AudioStart,
    AudioStop,
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
    #[error("audio streaming is not available on this server yet")]
    AudioUnavailable,
}

impl BadMessage {
    pub fn code(&self) -> &'static str {
        match self {
            BadMessage::Malformed => "malformed_message",
            BadMessage::UnknownType => "unknown_type",
            BadMessage::InvalidFrame(_) => "invalid_frame",
            BadMessage::UnexpectedBinary => "unexpected_binary",
            BadMessage::AudioUnavailable => "audio_unavailable",
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
        "client.audio_start" => Ok(ClientMessage::AudioStart),
        "client.audio_stop" => Ok(ClientMessage::AudioStop),
        _ => Err(BadMessage::UnknownType),
    }
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
}
