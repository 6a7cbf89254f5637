//! The NATS subjects: one channel per `SubjectKind`, its payload the Rust type published on
//! it (or binary audio), its headers named by the constants the code uses.

use inside_bus::{StateEvent, FRAME_RECEIVED_US_HEADER};
use inside_schemas::audio::headers;
use inside_schemas::{
    Capabilities, DerivedFrame, EmbedReply, FeatureFrame, Nudge, Poke, SpeakerSegment, SubjectKind,
};
use serde_json::{json, Map, Value};
use utoipa::openapi::schema::ObjectBuilder;

use super::{text_schema, to_json, uuid_schema, Builder};

pub(super) const SERVER: &str = "nats";
/// The prefix of a default deployment (`NATS_SUBJECT_PREFIX`).
const PREFIX: &str = "inside";

/// What travels on a subject.
enum Payload {
    /// JSON of a Rust type (its schema reference).
    Json(Value),
    /// Plain text (not JSON-quoted), with its schema.
    Text(Value),
    /// Bytes that are not JSON, with their content type and what they are.
    Binary(&'static str, &'static str),
}

/// No body at all (not even JSON's `{}`): the message itself is what it says. Plain text of
/// length 0, so a consumer that checks the schema accepts exactly what is sent.
fn empty(meaning: &str) -> Payload {
    Payload::Text(to_json(text_schema(meaning).max_length(Some(0))))
}

/// A header: its name, its meaning, and whether every message of the subject carries it (the
/// others are sent only when their description says so).
struct Header {
    name: &'static str,
    meaning: &'static str,
    always: bool,
}

const fn always(name: &'static str, meaning: &'static str) -> Header {
    Header {
        name,
        meaning,
        always: true,
    }
}

const fn sometimes(name: &'static str, meaning: &'static str) -> Header {
    Header {
        name,
        meaning,
        always: false,
    }
}

/// Who publishes, who subscribes, what it carries.
struct Subject {
    summary: &'static str,
    payload: Payload,
    headers: Vec<Header>,
    /// The reply of a request/reply subject.
    reply: Option<Payload>,
}

fn audio_headers() -> Vec<Header> {
    vec![
        always(headers::SEQ, "The segment's number in its stream, from 0."),
        always(headers::START_MS, "Start, ms from the stream's `client.audio_start`."),
        always(headers::END_MS, "End, ms from the stream's `client.audio_start`."),
        always(headers::CODEC, "The codec the phone streamed (`pcm_s16le`, `wav`, …); the payload is always f32le."),
        always(headers::CUT_AT_US, "Wall clock (µs since the Unix epoch) when the gateway cut the segment: the live path's latency is measured from it."),
        always(headers::STREAM_STARTED_MS, "Server clock (ms since the Unix epoch) when the stream started: places the segment on the session's time base."),
    ]
}

const AUDIO: Payload = Payload::Binary(
    "application/octet-stream",
    "A segment (~1.5 s) of one member's audio: f32 little-endian samples, 16 kHz, mono. One with no samples, after the last, marks the stream's end.",
);

/// The payload, headers and reply of each subject: a new kind does not compile until it has them.
fn describe(b: &mut Builder, kind: SubjectKind) -> Subject {
    let json = |payload: Value, summary, headers| Subject {
        summary,
        payload: Payload::Json(payload),
        headers,
        reply: None,
    };
    match kind {
        SubjectKind::Frames => json(
            b.schema_ref::<FeatureFrame>(),
            "Feature frames as a gateway accepted them, with `received_ms`; workers (queue group `workers`) apply the nudge rules.",
            vec![always(FRAME_RECEIVED_US_HEADER, "When the gateway accepted the frame (µs since the Unix epoch); copied onto the nudge it causes to time the path.")],
        ),
        SubjectKind::Audio => Subject {
            summary: "Audio segments of a member's stream, cut by the gateway; workers attribute them to speakers.",
            payload: AUDIO,
            headers: audio_headers(),
            reply: None,
        },
        SubjectKind::Nudges => json(
            b.schema_ref::<Nudge>(),
            "Nudges for one member, delivered by every gateway holding their sockets as `server.nudge`. Kept in the events stream (`INSIDE_EVENTS`), whose sequence number is the nudge's `event_id`.",
            vec![sometimes(FRAME_RECEIVED_US_HEADER, "Copied from the frame that caused the nudge; absent on a nudge no frame caused (one from audio).")],
        ),
        SubjectKind::Speakers => json(
            b.schema_ref::<SpeakerSegment>(),
            "Speaker attributions, delivered to the session's sockets as `server.speaker`. Kept in the events stream (`INSIDE_EVENTS`), whose sequence number is the event's `event_id`.",
            vec![],
        ),
        SubjectKind::Derived => json(
            b.schema_ref::<DerivedFrame>(),
            "Conversation features a worker derived from a member's audio, one per 250 ms hop on the server clock (docs/DERIVED.md): speaking rate, overlap, turns, interruptions, loudness. Judged by the same nudge rules and limit as feature frames.",
            vec![],
        ),
        SubjectKind::State => json(
            b.schema_ref::<StateEvent>(),
            "Presence between gateways (so `server.session_state` lists everyone), the finalize signal and revoked members.",
            vec![],
        ),
        SubjectKind::Pokes => json(
            b.schema_ref::<Poke>(),
            "Pokes for one user, delivered to their sockets as `server.poke`. Kept in the events stream (`INSIDE_EVENTS`), whose sequence number is the poke's `event_id` in every session.",
            vec![],
        ),
        SubjectKind::Embed => Subject {
            summary: "Request/reply: a gateway sends an enrolment recording, a worker with a speaker model answers with the voiceprint or why there is none.",
            payload: Payload::Binary("application/octet-stream", "The uploaded audio file (WAV, FLAC, Ogg Vorbis or MP3), or nothing when it travels as an upload."),
            headers: vec![
                always(headers::CONTENT_TYPE, "The MIME type of the uploaded file."),
                sometimes(inside_bus::uploads::UPLOAD_HEADER, "When the file is over NATS's `max_payload`: the name of the object in the uploads bucket (`INSIDE_UPLOADS`) that holds it."),
            ],
            reply: Some(Payload::Json(b.schema_ref::<EmbedReply>())),
        },
        SubjectKind::Capabilities => Subject {
            summary: "Request/reply: a gateway asks (empty body) whether a worker can attribute live audio; only workers with a speaker model answer.",
            payload: empty("Empty: the request is the question."),
            headers: vec![],
            reply: Some(Payload::Json(b.schema_ref::<Capabilities>())),
        },
        SubjectKind::WorkerAudio => Subject {
            summary: "Internal, between workers (with Redis): a segment taken from `audio` by a worker that does not own its session, forwarded unchanged as a request to the worker that does, which answers (an empty body) once it holds it. No answer: the owner is gone and the sender takes the session over.",
            payload: AUDIO,
            headers: {
                let mut h = audio_headers();
                h.push(always(headers::FORWARDED_AUDIO_SUBJECT, "The `audio` subject the segment came on: its session and member, checked like any bus message."));
                h
            },
            reply: Some(empty("Empty: the owner holds the segment.")),
        },
        SubjectKind::ReportJobs => Subject {
            summary: "JetStream stream `INSIDE_JOBS`: durable report jobs, acked once the report is stored.",
            payload: Payload::Text(
                to_json(uuid_schema().description(Some("The session's id, as plain text."))),
            ),
            headers: vec![always("Nats-Msg-Id", "Deduplicates a job queued twice.")],
            reply: None,
        },
        SubjectKind::ResearchFrames => json(
            b.schema_ref::<FeatureFrame>(),
            "For researchers: a copy of `frames`, only while every member granted research use.",
            vec![],
        ),
        SubjectKind::ResearchAudio => Subject {
            summary: "For researchers: a copy of `audio`, only while every member granted research use.",
            payload: AUDIO,
            headers: audio_headers(),
            reply: None,
        },
        SubjectKind::ResearchSpeakers => json(
            b.schema_ref::<SpeakerSegment>(),
            "For researchers: a copy of `speakers`, only while every member granted research use.",
            vec![],
        ),
        SubjectKind::ResearchDerived => json(
            b.schema_ref::<DerivedFrame>(),
            "For researchers: a copy of `derived`, only while every member granted research use.",
            vec![],
        ),
        SubjectKind::ResearchState => json(
            b.schema_ref::<StateEvent>(),
            "For researchers: `{\"event\":\"finalized\"}` once a session they were getting is finalized (`worker tap` stops on it).",
            vec![],
        ),
    }
}

pub(super) fn add(b: &mut Builder) {
    for &kind in SubjectKind::ALL {
        let subject = describe(b, kind);
        let id = format!("nats.{}", kind.name());
        let address = kind.address(PREFIX);
        let mut message = json!({
            "name": kind.name(),
            "title": address,
            "summary": subject.summary,
        });
        carry(&mut message, subject.payload);
        if !subject.headers.is_empty() {
            let mut headers = ObjectBuilder::new();
            for h in &subject.headers {
                headers = headers.property(h.name, text_schema(h.meaning));
                if h.always {
                    headers = headers.required(h.name);
                }
            }
            message["headers"] = to_json(headers);
        }
        let message_id = format!("nats.{}", kind.name());
        let message = b.message(&message_id, message);
        let mut parameters = Map::new();
        for (name, meaning) in [
            ("sid", "A coaching session's id (a UUID)."),
            ("uid", "A user's id (a UUID)."),
            (
                "worker",
                "A worker process's id (a UUID, new at each start).",
            ),
        ] {
            if address.contains(&format!("{{{name}}}")) {
                parameters.insert(name.into(), json!({ "description": meaning }));
            }
        }
        let mut channel = json!({
            "address": address,
            "title": address,
            "description": subject.summary,
            "servers": [{ "$ref": format!("#/servers/{SERVER}") }],
            "messages": { message_id.clone(): message },
        });
        if !parameters.is_empty() {
            channel["parameters"] = Value::Object(parameters);
        }
        let mut operation = json!({
            "action": "send",
            "channel": { "$ref": format!("#/channels/{id}") },
            "summary": subject.summary,
            "messages": [{ "$ref": format!("#/channels/{id}/messages/{message_id}") }],
        });
        if let Some(reply) = subject.reply {
            let reply_id = format!("{id}.reply");
            let mut reply_message = json!({
                "name": format!("{}.reply", kind.name()),
                "title": format!("reply on {address}"),
                "summary": format!("The reply to `{address}`, on the requester's inbox."),
            });
            carry(&mut reply_message, reply);
            let reply_message = b.message(&reply_id, reply_message);
            // the reply goes to the request's inbox: no fixed address
            b.channel(
                &reply_id,
                json!({
                    "address": null,
                    "title": format!("reply inbox of {address}"),
                    "servers": [{ "$ref": format!("#/servers/{SERVER}") }],
                    "messages": { reply_id.clone(): reply_message },
                }),
            );
            operation["reply"] = json!({
                "channel": { "$ref": format!("#/channels/{reply_id}") },
                "messages": [{ "$ref": format!("#/channels/{reply_id}/messages/{reply_id}") }],
            });
        }
        b.channel(&id, channel);
        b.operation(&format!("publish.{}", kind.name()), operation);
    }
}

/// `payload` as the message's content type and payload schema (or description, for bytes).
fn carry(message: &mut Value, payload: Payload) {
    match payload {
        Payload::Json(schema) => {
            message["contentType"] = json!("application/json");
            message["payload"] = schema;
        }
        Payload::Text(schema) => {
            message["contentType"] = json!("text/plain");
            message["payload"] = schema;
        }
        Payload::Binary(content_type, what) => {
            message["contentType"] = json!(content_type);
            message["description"] = json!(what);
        }
    }
}
