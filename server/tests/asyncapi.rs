//! The AsyncAPI document (`/asyncapi.json`) and its page (`/asyncapi`): every WebSocket
//! message and NATS subject the code knows is in it, it holds together as AsyncAPI 3, its
//! payload schemas are JSON Schema and accept what the Rust types put on the wire.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::asyncapi::{assert_valid, resolve, resolve_schema, standalone, validator};
use common::*;
use inside_bus::StateEvent;
use inside_gateway::realtime::protocol;
use inside_schemas::{
    AudioStartPayload, Capabilities, ClientMessageType, EmbedRefusal, EmbedReply, ErrorDetail,
    FeatureFrame, Joined, NoPayload, Nudge, NudgeType, Poke, PokeKind, Pong, Resync,
    ServerMessageType, SessionState, SpeakerSegment, SubjectKind,
};
use serde_json::{json, Value};
use uuid::Uuid;

async fn fetch_document() -> Value {
    let app = spawn_app(Db::Sqlite).await;
    let (status, doc) = app.get("/asyncapi.json", None).await;
    assert_eq!(status, 200, "{doc}");
    doc
}

/// The operations (id, operation) naming `channel`'s message `message`.
fn operations_for<'a>(doc: &'a Value, channel: &str, message: &str) -> Vec<&'a Value> {
    let wanted = format!("#/channels/{channel}/messages/{message}");
    doc["operations"]
        .as_object()
        .unwrap()
        .values()
        .filter(|op| {
            op["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["$ref"] == wanted.as_str())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncapi_lists_every_websocket_message_and_subject() {
    let doc = fetch_document().await;
    let socket = &doc["channels"]["session"];
    assert_eq!(socket["address"], "/v1/sessions/{sid}/ws");
    let directions = ClientMessageType::ALL
        .iter()
        .map(|t| (t.as_str(), "receive"))
        .chain(ServerMessageType::ALL.iter().map(|t| (t.as_str(), "send")));
    let mut listed = 0;
    for (kind, action) in directions {
        let message = resolve(&doc, &socket["messages"][kind]);
        assert_eq!(message["name"], kind);
        assert!(message["summary"].as_str().is_some_and(|s| !s.is_empty()));
        // the envelope names its type, and its payload is a schema of a Rust type
        assert_eq!(
            message["payload"]["properties"]["type"]["enum"],
            json!([kind])
        );
        let payload = &message["payload"]["properties"]["payload"];
        assert!(resolve(&doc, payload).is_object(), "{kind}: {payload}");
        let ops = operations_for(&doc, "session", kind);
        assert!(
            ops.iter().any(|op| op["action"] == action),
            "{kind} has no {action} operation"
        );
        listed += 1;
    }
    assert_eq!(
        listed,
        ClientMessageType::ALL.len() + ServerMessageType::ALL.len()
    );
    assert!(socket["messages"]["client.audio_frame"].is_object());

    let channels = doc["channels"].as_object().unwrap();
    for kind in SubjectKind::ALL {
        let address = kind.address("inside");
        let (id, channel) = channels
            .iter()
            .find(|(_, c)| c["address"] == address.as_str())
            .unwrap_or_else(|| panic!("no channel for {address}"));
        let (key, reference) = channel["messages"]
            .as_object()
            .unwrap()
            .iter()
            .next()
            .unwrap();
        let message = resolve(&doc, reference);
        let binary = message["contentType"] == "application/octet-stream";
        assert!(
            binary || resolve_schema(&doc, &message["payload"]).is_object(),
            "{address}: no payload schema"
        );
        assert!(
            !operations_for(&doc, id, key).is_empty(),
            "{address}: no operation"
        );
        for name in ["sid", "uid"] {
            assert_eq!(
                address.contains(&format!("{{{name}}}")),
                channel["parameters"][name].is_object(),
                "{address}: parameter {name}"
            );
        }
    }
    // request/reply subjects document their reply
    for kind in [SubjectKind::Embed, SubjectKind::Capabilities] {
        let op = &doc["operations"][format!("publish.{}", kind.name())];
        // operation → the channel's message → the component
        let reply = resolve(&doc, resolve(&doc, &op["reply"]["messages"][0]));
        assert!(reply["payload"]["$ref"].is_string(), "{kind:?}: {op}");
    }
    // the numbers' meaning comes from the Rust doc comments
    let frame = &doc["components"]["schemas"]["FeatureFrame"];
    let rate = frame["properties"]["speaking_rate"]["description"]
        .as_str()
        .unwrap();
    assert!(rate.contains("Syllables per second"), "{rate}");
    assert_eq!(frame["properties"]["overlap_ratio"]["maximum"], 1.0);
    assert!(doc["components"]["schemas"]["StateEvent"].is_object());
}

/// Every `$ref` anywhere under `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncapi_document_is_valid_asyncapi_3() {
    let doc = fetch_document().await;
    assert_eq!(doc["asyncapi"], "3.0.0");
    for field in ["title", "version"] {
        assert!(doc["info"][field].as_str().is_some_and(|s| !s.is_empty()));
    }
    assert_eq!(doc["defaultContentType"], "application/json");
    for (name, server) in doc["servers"].as_object().unwrap() {
        assert!(
            server["host"].is_string() && server["protocol"].is_string(),
            "{name}"
        );
    }
    // AsyncAPI 3: component and channel keys are `[a-zA-Z0-9.\-_]+`
    let key_ok = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    for section in [
        "/channels",
        "/operations",
        "/components/messages",
        "/components/schemas",
    ] {
        for key in doc.pointer(section).unwrap().as_object().unwrap().keys() {
            assert!(key_ok(key), "{section}: {key}");
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50, "{} refs", all.len());
    for r in all {
        assert!(doc.pointer(&r[1..]).is_some(), "{r} does not resolve");
    }
    for (id, channel) in doc["channels"].as_object().unwrap() {
        assert!(
            channel["address"].is_string() || channel["address"].is_null(),
            "{id}"
        );
        assert!(channel["messages"].is_object(), "{id}");
        // every `{param}` of the address is declared, and nothing else
        let address = channel["address"].as_str().unwrap_or("");
        let params: Vec<&str> = address
            .split('{')
            .skip(1)
            .filter_map(|p| p.split('}').next())
            .collect();
        let declared = channel["parameters"].as_object().map_or(0, |p| p.len());
        assert_eq!(params.len(), declared, "{id}: {address}");
        for p in params {
            assert!(channel["parameters"][p].is_object(), "{id}: {p}");
        }
    }
    for (id, op) in doc["operations"].as_object().unwrap() {
        assert!(op["action"] == "send" || op["action"] == "receive", "{id}");
        let channel = op["channel"]["$ref"].as_str().unwrap();
        // an operation's messages are its channel's
        for m in op["messages"].as_array().unwrap() {
            let m = m["$ref"].as_str().unwrap();
            assert!(m.starts_with(&format!("{channel}/messages/")), "{id}: {m}");
        }
    }

    // every payload and headers schema is JSON Schema (draft 7, what AsyncAPI's schema
    // format extends, and 2020-12, what OpenAPI 3.1 uses), and the examples fit it
    let mut checked = 0;
    for (id, message) in doc["components"]["messages"].as_object().unwrap() {
        for part in ["payload", "headers"] {
            if message[part].is_null() {
                continue;
            }
            let schema = standalone(&doc, &message[part]);
            jsonschema::draft7::meta::validate(&schema)
                .unwrap_or_else(|e| panic!("{id} {part}: not draft 7: {e}"));
            jsonschema::draft202012::meta::validate(&schema)
                .unwrap_or_else(|e| panic!("{id} {part}: not 2020-12: {e}"));
            let validator = jsonschema::draft202012::new(&schema)
                .unwrap_or_else(|e| panic!("{id} {part}: {e}"));
            checked += 1;
            if part == "payload" {
                for example in message["examples"].as_array().into_iter().flatten() {
                    let errors: Vec<String> = validator
                        .iter_errors(&example["payload"])
                        .map(|e| e.to_string())
                        .collect();
                    assert!(errors.is_empty(), "{id} example: {errors:?}");
                }
            }
        }
    }
    assert!(checked >= 30, "{checked} schemas checked");
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        jsonschema::draft202012::meta::validate(&standalone(&doc, schema))
            .unwrap_or_else(|e| panic!("schema {name}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncapi_schemas_accept_what_the_rust_types_send() {
    let doc = fetch_document().await;
    let (sid, uid) = (Uuid::new_v4(), Uuid::new_v4());
    let wire = |text: String| serde_json::from_str::<Value>(&text).unwrap();

    // server → client, as `realtime::protocol` writes them
    let server_samples: Vec<(ServerMessageType, Value)> = vec![
        (
            ServerMessageType::Joined,
            serde_json::to_value(Joined {
                sid,
                last_event_id: None,
                last_frame_seq: Some(3),
            })
            .unwrap(),
        ),
        (
            ServerMessageType::SessionState,
            serde_json::to_value(SessionState {
                sid,
                participants: vec![uid],
            })
            .unwrap(),
        ),
        (
            ServerMessageType::Speaker,
            serde_json::to_value(SpeakerSegment {
                user_id: None,
                score: 0.2,
                start_ms: 0,
                end_ms: 1500,
            })
            .unwrap(),
        ),
        (
            ServerMessageType::Poke,
            serde_json::to_value(Poke {
                id: uid,
                relationship_id: sid,
                from_user_id: uid,
                kind: PokeKind::Custom,
                message: Some("hi".into()),
                created_at: chrono::Utc::now(),
            })
            .unwrap(),
        ),
        (
            ServerMessageType::Resync,
            serde_json::to_value(Resync::history_expired(None, Some(9))).unwrap(),
        ),
        (
            ServerMessageType::Pong,
            serde_json::to_value(Pong {
                last_frame_seq: None,
            })
            .unwrap(),
        ),
        (
            ServerMessageType::Error,
            serde_json::to_value(ErrorDetail {
                code: "invalid_frame".into(),
                message: "bad".into(),
                details: None,
            })
            .unwrap(),
        ),
    ];
    let mut seen = Vec::new();
    for (kind, payload) in server_samples {
        assert_valid(
            &doc,
            kind.as_str(),
            &wire(protocol::server(kind, sid, &payload)),
        );
        seen.push(kind);
    }
    for nudge_type in NudgeType::ALL {
        let nudge = Nudge {
            nudge_type,
            intensity: 3,
            message: "Let them finish".into(),
            frame_seq: None,
            frame_timestamp_ms: Some(5),
        };
        let json = serde_json::to_string(&nudge).unwrap();
        // with and without an event id, as the hub sends them
        assert_valid(
            &doc,
            "server.nudge",
            &wire(protocol::server_event(
                ServerMessageType::Nudge,
                sid,
                7,
                &json,
            )),
        );
        assert_valid(
            &doc,
            "server.nudge",
            &wire(protocol::server_raw(ServerMessageType::Nudge, sid, &json)),
        );
    }
    seen.push(ServerMessageType::Nudge);
    assert_valid(&doc, "server.pong", &wire(protocol::pong(sid, Some(4))));
    for kind in ServerMessageType::ALL {
        assert!(seen.contains(kind), "{kind} has no sample");
    }

    // client → server, as a phone sends them
    let frame = FeatureFrame {
        timestamp_ms: 1,
        speaking_rate: 2.5,
        overlap_ratio: 0.0,
        seq: Some(1),
        received_ms: None,
    };
    let start = AudioStartPayload {
        codec: "flac".into(),
        sample_rate: None,
        channels: None,
    };
    for (kind, payload) in [
        (
            ClientMessageType::FeatureFrame,
            serde_json::to_value(frame).unwrap(),
        ),
        (
            ClientMessageType::AudioStart,
            serde_json::to_value(&start).unwrap(),
        ),
        (
            ClientMessageType::AudioStop,
            serde_json::to_value(NoPayload {}).unwrap(),
        ),
        (
            ClientMessageType::Ping,
            serde_json::to_value(NoPayload {}).unwrap(),
        ),
    ] {
        let msg = json!({"type": kind.as_str(), "sid": sid, "payload": payload});
        assert_valid(&doc, kind.as_str(), &msg);
        // the gateway parses what the schema accepts
        protocol::parse(&msg.to_string()).unwrap_or_else(|e| panic!("{kind}: {e}"));
    }
    assert_valid(&doc, "client.ping", &json!({"type": "client.ping"}));

    // and the schemas refuse what the gateway refuses
    let refused = [
        (
            "client.feature_frame",
            json!({"type": "client.feature_frame", "payload": {"timestamp_ms": 1, "speaking_rate": 1.0, "overlap_ratio": 1.5}}),
        ),
        (
            "client.feature_frame",
            json!({"type": "client.feature_frame", "payload": {"timestamp_ms": 1, "speaking_rate": -1.0, "overlap_ratio": 0.1}}),
        ),
        (
            "client.feature_frame",
            json!({"type": "client.feature_frame", "payload": {"timestamp_ms": 1}}),
        ),
        (
            "client.audio_start",
            json!({"type": "client.audio_start", "payload": {"codec": "aac"}}),
        ),
        (
            "client.feature_frame",
            json!({"type": "client.dance", "payload": {}}),
        ),
    ];
    for (message, sample) in refused {
        assert!(
            !validator(&doc, message).is_valid(&sample),
            "{message} accepted {sample}"
        );
        assert!(protocol::parse(&sample.to_string()).is_err(), "{sample}");
    }

    // NATS payloads
    let nats = |kind: SubjectKind| format!("nats.{}", kind.name());
    let stamped = FeatureFrame {
        received_ms: Some(1_700_000_000_000),
        ..frame
    };
    assert_valid(
        &doc,
        &nats(SubjectKind::Frames),
        &serde_json::to_value(stamped).unwrap(),
    );
    assert_valid(
        &doc,
        &nats(SubjectKind::ResearchFrames),
        &serde_json::to_value(stamped).unwrap(),
    );
    let states = [
        StateEvent::Presence {
            gateway: uid,
            participants: vec![uid],
            hello: true,
            refresh: false,
        },
        StateEvent::Presence {
            gateway: uid,
            participants: vec![],
            hello: false,
            refresh: true,
        },
        StateEvent::Finalized,
        StateEvent::MemberRevoked { user: uid },
    ];
    for event in &states {
        assert_valid(
            &doc,
            &nats(SubjectKind::State),
            &serde_json::to_value(event).unwrap(),
        );
    }
    assert!(!validator(&doc, &nats(SubjectKind::State)).is_valid(&json!({"event": "exploded"})));
    let speaker = SpeakerSegment {
        user_id: Some(uid),
        score: 0.8,
        start_ms: 1500,
        end_ms: 3000,
    };
    assert_valid(
        &doc,
        &nats(SubjectKind::Speakers),
        &serde_json::to_value(speaker).unwrap(),
    );
    let nudge = Nudge {
        nudge_type: NudgeType::SlowDown,
        intensity: 1,
        message: "Slow".into(),
        frame_seq: Some(1),
        frame_timestamp_ms: None,
    };
    assert_valid(
        &doc,
        &nats(SubjectKind::Nudges),
        &serde_json::to_value(&nudge).unwrap(),
    );
    for reply in [
        EmbedReply::Ok {
            embedding: vec![0.1; 192],
            seconds: 4.0,
            quality: 0.9,
        },
        EmbedReply::Error {
            code: EmbedRefusal::ValidationError,
            message: "too short".into(),
        },
    ] {
        assert_valid(
            &doc,
            "nats.embed.reply",
            &serde_json::to_value(reply).unwrap(),
        );
    }
    assert_valid(
        &doc,
        "nats.capabilities.reply",
        &serde_json::to_value(Capabilities { speaker: true }).unwrap(),
    );
    assert_valid(
        &doc,
        &nats(SubjectKind::ReportJobs),
        &json!(sid.to_string()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncapi_page_renders_without_external_resources() {
    let app = spawn_app(Db::Sqlite).await;
    let res = app.http.get(app.url("/asyncapi")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = res.text().await.unwrap();
    for kind in ClientMessageType::ALL
        .iter()
        .map(|t| t.as_str())
        .chain(ServerMessageType::ALL.iter().map(|t| t.as_str()))
    {
        assert!(
            html.contains(&format!("id=\"message-{kind}\"")),
            "{kind} missing"
        );
    }
    for kind in SubjectKind::ALL {
        assert!(html.contains(&kind.address("inside")), "{kind:?} missing");
    }
    // payload schemas are on the page, with the numbers' meaning
    assert!(html.contains("id=\"schema-FeatureFrame\""));
    assert!(html.contains("Syllables per second"));
    // nothing to load from elsewhere, and nothing to run
    let lower = html.to_ascii_lowercase();
    for banned in [
        "<script", "<link", "<iframe", "http://", "https://", "src=\"//", "@import",
    ] {
        assert!(!lower.contains(banned), "the page contains {banned}");
    }
}
