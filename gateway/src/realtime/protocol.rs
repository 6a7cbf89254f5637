//! The WebSocket message shapes: `{"type","sid","payload"}` text frames,
//! client messages parsed and validated, server messages encoded (payloads
//! already in JSON from the bus are spliced in, not decoded and re-encoded). A frame's
//! payload is forwarded as the phone sent it with one field spliced in: `received_ms`, the
//! gateway's clock when it accepted the frame (the session's time base).

use inside_engine::speech::Codec;
use inside_schemas::{
    AudioStartPayload, ClientMessageType, ErrorDetail, FeatureFrame, ServerMessageType,
};
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
    /// A validated frame and its payload as sent, to forward stamped.
    FeatureFrame(FeatureFrame, RawFrame<'a>),
    Ping,
    AudioStart(AudioStart),
    AudioStop,
}

/// A frame's payload exactly as the phone sent it: a JSON object of a valid frame without
/// `received_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The object up to (not including) its closing brace.
    open: &'a str,
}

impl<'a> RawFrame<'a> {
    /// `None` unless `raw` is an object (a frame also parses from a JSON array).
    fn new(raw: &'a str) -> Option<Self> {
        let open = raw.trim_end().strip_suffix('}')?;
        open.trim_start().starts_with('{').then_some(Self { open })
    }

    /// The payload with `"received_ms": received_ms` added: the object has its required fields
    /// and not this one, so the result is an object with no key twice.
    pub fn stamped(&self, received_ms: i64) -> String {
        const KEY: &str = r#","received_ms":"#;
        // sized exactly: a buffer with spare room becomes a payload whose shared count is
        // a separate allocation, touched again by the thread that drops it
        // (`concat` reserves the sum of the parts' lengths)
        let digits = inside_bus::ToCompactString::to_compact_string(&received_ms);
        [self.open, KEY, &digits, "}"].concat()
    }
}

/// `client.audio_start`: what the binary frames that follow hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioStart {
    pub codec: Codec,
    /// Required for `pcm_s16le`; containers carry their own.
    pub sample_rate: u32,
    pub channels: usize,
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
    let kind = ClientMessageType::parse(env.kind).ok_or(BadMessage::UnknownType)?;
    match kind {
        ClientMessageType::FeatureFrame => {
            let raw = env
                .payload
                .ok_or(BadMessage::InvalidFrame("payload missing"))?
                .get();
            let frame: FeatureFrame = serde_json::from_str(raw).map_err(|_| {
                BadMessage::InvalidFrame("needs timestamp_ms, speaking_rate, overlap_ratio")
            })?;
            if frame.received_ms.is_some() {
                return Err(BadMessage::InvalidFrame(
                    "received_ms is the server's to set, not the client's",
                ));
            }
            let raw = RawFrame::new(raw)
                .ok_or(BadMessage::InvalidFrame("payload must be a JSON object"))?;
            validate(&frame)?;
            Ok(ClientMessage::FeatureFrame(frame, raw))
        }
        ClientMessageType::Ping => Ok(ClientMessage::Ping),
        ClientMessageType::AudioStart => audio_start(env.payload).map(ClientMessage::AudioStart),
        ClientMessageType::AudioStop => Ok(ClientMessage::AudioStop),
    }
}

fn audio_start(payload: Option<&RawValue>) -> Result<AudioStart, BadMessage> {
    let bad = |m: &str| BadMessage::InvalidAudioStart(m.to_string());
    let p: AudioStartPayload = serde_json::from_str(
        payload.ok_or_else(|| bad("payload missing"))?.get(),
    )
    .map_err(|_| bad("needs codec (pcm_s16le, wav, flac, ogg, mp3), sample_rate, channels"))?;
    let codec: Codec = p
        .codec
        .parse()
        .map_err(|_| bad("codec must be pcm_s16le, wav, flac, ogg or mp3"))?;
    let channels = p.channels.map(|c| c as usize);
    let (sample_rate, channels) = match (codec, p.sample_rate, channels) {
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
pub fn server_raw(kind: ServerMessageType, sid: Uuid, payload_json: &str) -> String {
    envelope(kind, sid, None, payload_json)
}

/// A history event: a server message with its `event_id`, around a payload already in JSON.
pub fn server_event(
    kind: ServerMessageType,
    sid: Uuid,
    event_id: u64,
    payload_json: &str,
) -> String {
    envelope(kind, sid, Some(event_id), payload_json)
}

/// `{"type","sid"[,"event_id"],"payload"}` in a buffer of exactly its length: every nudge
/// is one, and a buffer with room left becomes a message whose shared count is a second
/// allocation, fetched again by the thread that writes it to the socket.
fn envelope(
    kind: ServerMessageType,
    sid: Uuid,
    event_id: Option<u64>,
    payload_json: &str,
) -> String {
    let mut sid_buf = Uuid::encode_buffer();
    let sid = sid.hyphenated().encode_lower(&mut sid_buf);
    let id = event_id.map(|id| inside_bus::ToCompactString::to_compact_string(&id));
    let (id_key, id) = match &id {
        Some(id) => (r#","event_id":"#, id.as_str()),
        None => ("", ""),
    };
    [
        r#"{"type":""#,
        kind.as_str(),
        r#"","sid":""#,
        sid,
        "\"",
        id_key,
        id,
        r#","payload":"#,
        payload_json,
        "}",
    ]
    .concat()
}

/// `server.pong`, with the highest frame seq accepted for the user.
pub fn pong(sid: Uuid, last_frame_seq: Option<i64>) -> String {
    server(
        ServerMessageType::Pong,
        sid,
        &inside_schemas::Pong { last_frame_seq },
    )
}

/// A server message around a payload to encode.
pub fn server<T: serde::Serialize>(kind: ServerMessageType, sid: Uuid, payload: &T) -> String {
    match serde_json::to_string(payload) {
        Ok(json) => server_raw(kind, sid, &json),
        Err(_) => server_raw(kind, sid, "null"),
    }
}

pub fn error(sid: Uuid, bad: &BadMessage) -> String {
    let detail = ErrorDetail {
        code: bad.code().to_string(),
        message: bad.to_string(),
        details: None,
    };
    server(ServerMessageType::Error, sid, &detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_are_json_envelopes_around_the_payload() {
        let sid = Uuid::new_v4();
        let payload = r#"{"message":"Try slowing down","n":[1,2]}"#;
        for (text, id) in [
            (server_raw(ServerMessageType::Nudge, sid, payload), None),
            (
                server_event(ServerMessageType::Nudge, sid, u64::MAX, payload),
                Some(u64::MAX),
            ),
            (
                server_event(ServerMessageType::Speaker, sid, 0, payload),
                Some(0),
            ),
        ] {
            let v: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert_eq!(v["sid"], sid.to_string());
            assert!(v["type"] == "server.nudge" || v["type"] == "server.speaker");
            assert_eq!(v["event_id"].as_u64(), id);
            assert_eq!(v["payload"]["message"], "Try slowing down");
            assert_eq!(text.capacity(), text.len(), "sized exactly");
        }
    }

    #[test]
    fn frames_are_validated_and_forwarded_with_the_server_stamp() {
        let ok = r#"{"type":"client.feature_frame","sid":"x","payload":{"timestamp_ms":1,"speaking_rate":2.5,"overlap_ratio":0.1,"seq":7 }}"#;
        match parse(ok) {
            Ok(ClientMessage::FeatureFrame(f, raw)) => {
                assert_eq!(f.seq, Some(7));
                let stamped = raw.stamped(1_765_000_000_123);
                assert_eq!(
                    stamped,
                    r#"{"timestamp_ms":1,"speaking_rate":2.5,"overlap_ratio":0.1,"seq":7 ,"received_ms":1765000000123}"#
                );
                assert_eq!(stamped.capacity(), stamped.len(), "sized exactly");
                let back: FeatureFrame = serde_json::from_str(&stamped).unwrap();
                assert_eq!(back.received_ms, Some(1_765_000_000_123));
                assert!(raw
                    .stamped(i64::MIN)
                    .ends_with(r#","received_ms":-9223372036854775808}"#));
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
            // the server's stamp, in any spelling, and the array form a struct also parses from
            (
                r#"{"type":"client.feature_frame","payload":{"timestamp_ms":1,"speaking_rate":1,"overlap_ratio":0,"received_ms":5}}"#,
                "invalid_frame",
            ),
            (
                r#"{"type":"client.feature_frame","payload":{"timestamp_ms":1,"speaking_rate":1,"overlap_ratio":0,"received_ms":null}}"#,
                "invalid_frame",
            ),
            (
                r#"{"type":"client.feature_frame","payload":{"timestamp_ms":1,"speaking_rate":1,"overlap_ratio":0,"received\u005fms":null}}"#,
                "invalid_frame",
            ),
            (
                r#"{"type":"client.feature_frame","payload":[1,1.0,0.0]}"#,
                "invalid_frame",
            ),
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
