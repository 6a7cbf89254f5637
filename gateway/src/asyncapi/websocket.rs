//! The WebSocket channel `/v1/sessions/{sid}/ws`: one message per `ClientMessageType` and
//! `ServerMessageType`, each an envelope `{"type", "sid", "event_id"?, "payload"}` around the
//! Rust type its payload is, and the binary audio frames.

use inside_schemas::{
    AudioStartPayload, ClientMessageType, ErrorDetail, FeatureFrame, Joined, NoPayload, Nudge,
    Poke, Pong, Resync, ServerMessageType, SessionState, SpeakerSegment,
};
use serde_json::{json, Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use uuid::Uuid;

use super::{inline, to_json, uuid_schema, Builder};

pub(super) const SERVER: &str = "websocket";
const CHANNEL: &str = "session";
/// The binary frames of an audio stream (no `type`: they are not JSON).
const AUDIO_FRAME: &str = "client.audio_frame";

const CHANNEL_DESCRIPTION: &str = "One socket per phone in a coaching session. Checked before \
the upgrade: the access token (`token`, 401), the session (404), membership (403 \
`not_a_member`), consent (403 `consent_required`), the browser origin (403), socket caps (429 \
`too_many_sockets`) and `since` (400 `invalid_since`). `server.joined` comes first; with \
`since=<event_id>` the events missed after it follow, in order and once, before the live \
stream (or `server.resync` when the history no longer holds them). The server pings every \
`WEBSOCKET_HEARTBEAT_INTERVAL` s and closes a socket silent for `WEBSOCKET_TIMEOUT` s; too \
many bad frames or a flood close it with 1008, a finalized session with 4409, revoked \
consent with 4403.";

pub(super) fn add(b: &mut Builder) {
    let mut messages = Map::new();
    for &t in ClientMessageType::ALL {
        let payload = client_payload(b, t);
        let needs_payload = matches!(
            t,
            ClientMessageType::FeatureFrame | ClientMessageType::AudioStart
        );
        let envelope = envelope(t.as_str(), payload, false, needs_payload, false);
        let message = b.message(
            t.as_str(),
            json!({
                "name": t.as_str(),
                "title": t.as_str(),
                "summary": t.summary(),
                "contentType": "application/json",
                "payload": envelope,
                "examples": [{ "name": "sample", "payload": client_example(t) }],
            }),
        );
        messages.insert(t.as_str().to_string(), message);
        let mut op = json!({
            "action": "receive",
            "channel": channel_ref(),
            "summary": t.summary(),
            "messages": [message_ref(t.as_str())],
        });
        if t == ClientMessageType::Ping {
            op["reply"] = json!({
                "channel": channel_ref(),
                "messages": [message_ref(ServerMessageType::Pong.as_str())],
            });
        }
        b.operation(&format!("receive.{}", t.as_str()), op);
    }
    let audio = b.message(
        AUDIO_FRAME,
        json!({
            "name": AUDIO_FRAME,
            "title": "binary audio frame",
            "summary": "A binary WebSocket frame: audio of the stream `client.audio_start` opened, in its codec (raw `pcm_s16le` interleaved, or the bytes of a WAV, FLAC, Ogg Vorbis or MP3 file). Without a stream: `server.error` `unexpected_binary`.",
            "contentType": "application/octet-stream",
        }),
    );
    messages.insert(AUDIO_FRAME.to_string(), audio);
    b.operation(
        &format!("receive.{AUDIO_FRAME}"),
        json!({
            "action": "receive",
            "channel": channel_ref(),
            "summary": "Audio of the current stream; the gateway cuts it into ~1.5 s segments for speaker attribution.",
            "messages": [message_ref(AUDIO_FRAME)],
        }),
    );
    for &t in ServerMessageType::ALL {
        let payload = server_payload(b, t);
        let has_event_id = matches!(
            t,
            ServerMessageType::Nudge | ServerMessageType::Speaker | ServerMessageType::Poke
        );
        let envelope = envelope(t.as_str(), payload, true, true, has_event_id);
        let message = b.message(
            t.as_str(),
            json!({
                "name": t.as_str(),
                "title": t.as_str(),
                "summary": t.summary(),
                "contentType": "application/json",
                "payload": envelope,
                "examples": [{ "name": "sample", "payload": server_example(t) }],
            }),
        );
        messages.insert(t.as_str().to_string(), message);
        b.operation(
            &format!("send.{}", t.as_str()),
            json!({
                "action": "send",
                "channel": channel_ref(),
                "summary": t.summary(),
                "messages": [message_ref(t.as_str())],
            }),
        );
    }
    b.channel(
        CHANNEL,
        json!({
            "address": "/v1/sessions/{sid}/ws",
            "title": "Coaching session socket",
            "description": CHANNEL_DESCRIPTION,
            "servers": [{ "$ref": format!("#/servers/{SERVER}") }],
            "parameters": {
                "sid": { "description": "The coaching session's id (a UUID)." },
            },
            "messages": messages,
            "bindings": {
                "ws": {
                    "method": "GET",
                    "query": to_json(
                        ObjectBuilder::new()
                            .property("token", super::text_schema("The access token of a member (`TokenPair.access_token`); never logged."))
                            .required("token")
                            .property("since", ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).description(Some("The last `event_id` seen: resume after it."))),
                    ),
                    "bindingVersion": "0.1.0",
                },
            },
        }),
    );
}

/// The payload type of each client message: a new variant does not compile until it has one.
fn client_payload(b: &mut Builder, t: ClientMessageType) -> Value {
    match t {
        ClientMessageType::FeatureFrame => b.schema_ref::<FeatureFrame>(),
        ClientMessageType::AudioStart => b.schema_ref::<AudioStartPayload>(),
        ClientMessageType::AudioStop | ClientMessageType::Ping => b.schema_ref::<NoPayload>(),
    }
}

/// The payload type of each server message.
fn server_payload(b: &mut Builder, t: ServerMessageType) -> Value {
    match t {
        ServerMessageType::Joined => b.schema_ref::<Joined>(),
        ServerMessageType::SessionState => b.schema_ref::<SessionState>(),
        ServerMessageType::Nudge => b.schema_ref::<Nudge>(),
        ServerMessageType::Speaker => b.schema_ref::<SpeakerSegment>(),
        ServerMessageType::Poke => b.schema_ref::<Poke>(),
        ServerMessageType::Resync => b.schema_ref::<Resync>(),
        ServerMessageType::Pong => b.schema_ref::<Pong>(),
        ServerMessageType::Error => b.schema_ref::<ErrorDetail>(),
    }
}

/// The text frame around a payload, as `realtime::protocol` writes and reads it.
fn envelope(
    kind: &str,
    payload: Value,
    from_server: bool,
    needs_payload: bool,
    has_event_id: bool,
) -> Value {
    let mut schema = to_json(
        ObjectBuilder::new()
            .property(
                "type",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([kind])),
            )
            .required("type")
            .property("sid", uuid_schema())
            .description(Some(if from_server {
                "`sid` is the session's id."
            } else {
                "`sid` is optional and not read: the socket's session is the URL's."
            })),
    );
    if from_server {
        push_required(&mut schema, "sid");
    }
    if has_event_id {
        schema["properties"]["event_id"] = inline::<u64>();
        schema["properties"]["event_id"]["description"] = json!(
            "Per-session, increasing: reconnect with `since=<the last one seen>` to get what was missed. Absent when this server keeps no history (or, for a poke, outside a running session)."
        );
    }
    schema["properties"]["payload"] = payload;
    if needs_payload {
        push_required(&mut schema, "payload");
    }
    schema
}

fn push_required(schema: &mut Value, field: &str) {
    if let Some(required) = schema["required"].as_array_mut() {
        required.push(json!(field));
    }
}

fn channel_ref() -> Value {
    json!({ "$ref": format!("#/channels/{CHANNEL}") })
}

fn message_ref(id: &str) -> Value {
    json!({ "$ref": format!("#/channels/{CHANNEL}/messages/{id}") })
}

const SAMPLE_SID: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
const SAMPLE_UID: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002);

/// A sample of each client message, serialized from the real types.
fn client_example(t: ClientMessageType) -> Value {
    let payload = match t {
        ClientMessageType::FeatureFrame => serde_json::to_value(FeatureFrame {
            timestamp_ms: 12_500,
            speaking_rate: 3.4,
            overlap_ratio: 0.1,
            seq: Some(25),
            received_ms: None,
        }),
        ClientMessageType::AudioStart => serde_json::to_value(AudioStartPayload {
            codec: "pcm_s16le".into(),
            sample_rate: Some(16_000),
            channels: Some(1),
        }),
        ClientMessageType::AudioStop | ClientMessageType::Ping => {
            serde_json::to_value(NoPayload {})
        }
    };
    json!({ "type": t.as_str(), "sid": SAMPLE_SID, "payload": payload.unwrap_or(Value::Null) })
}

/// A sample of each server message, serialized from the real types.
fn server_example(t: ServerMessageType) -> Value {
    let payload = match t {
        ServerMessageType::Joined => serde_json::to_value(Joined {
            sid: SAMPLE_SID,
            last_event_id: Some(41),
            last_frame_seq: Some(24),
        }),
        ServerMessageType::SessionState => serde_json::to_value(SessionState {
            sid: SAMPLE_SID,
            participants: vec![SAMPLE_UID],
        }),
        ServerMessageType::Nudge => serde_json::to_value(Nudge {
            nudge_type: inside_schemas::NudgeType::SlowDown,
            intensity: 1,
            message: "Try slowing down a little".into(),
            frame_seq: Some(25),
            frame_timestamp_ms: Some(12_500),
        }),
        ServerMessageType::Speaker => serde_json::to_value(SpeakerSegment {
            user_id: Some(SAMPLE_UID),
            score: 0.71,
            start_ms: 4_500,
            end_ms: 6_000,
        }),
        ServerMessageType::Poke => serde_json::to_value(Poke {
            id: SAMPLE_UID,
            relationship_id: SAMPLE_SID,
            from_user_id: SAMPLE_UID,
            kind: inside_schemas::PokeKind::Hug,
            message: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
        }),
        ServerMessageType::Resync => {
            serde_json::to_value(Resync::history_expired(Some(120), Some(180)))
        }
        ServerMessageType::Pong => serde_json::to_value(Pong {
            last_frame_seq: Some(25),
        }),
        ServerMessageType::Error => serde_json::to_value(ErrorDetail {
            code: "invalid_frame".into(),
            message: "feature frame payload is not valid: overlap_ratio must be between 0 and 1"
                .into(),
            details: None,
        }),
    };
    let mut msg =
        json!({ "type": t.as_str(), "sid": SAMPLE_SID, "payload": payload.unwrap_or(Value::Null) });
    if matches!(
        t,
        ServerMessageType::Nudge | ServerMessageType::Speaker | ServerMessageType::Poke
    ) {
        msg["event_id"] = json!(42);
    }
    msg
}
