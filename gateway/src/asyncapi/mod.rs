//! The AsyncAPI 3.0 document of the realtime protocol, `/asyncapi.json`, and its page,
//! `/asyncapi`: every WebSocket message (both directions) and every NATS subject, with
//! payload schemas derived from the Rust types that travel (`utoipa::ToSchema`), so the
//! document cannot drift from the code.

mod nats;
mod page;
mod websocket;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::response::Html;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// The AsyncAPI version the document follows.
pub const ASYNCAPI_VERSION: &str = "3.0.0";

/// `/asyncapi.json` and `/asyncapi`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/asyncapi.json", get(|| async { Json(document().clone()) }))
        .route("/asyncapi", get(|| async { Html(page().as_str()) }))
}

/// The document, built once: it depends on nothing but the code.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn page() -> &'static String {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| page::render(document()))
}

const DESCRIPTION: &str = "The realtime side of Inside. **WebSocket**: a phone joins a \
coaching session at `/v1/sessions/{sid}/ws?token=<access_token>[&since=<event_id>]`; text \
frames are JSON `{\"type\", \"sid\", \"payload\"}` (events a phone must not miss also carry \
`event_id`), binary frames carry the audio of a stream opened with `client.audio_start`. \
**NATS** (with `NATS_URL`): the subjects gateways and workers share, under the prefix \
`inside` (`NATS_SUBJECT_PREFIX`); researchers may read only `inside.v1.research.>`. \
Operations are from Inside's side: `receive` is what the gateway takes from a phone or a \
subscription, `send` what it (or a worker) sends or publishes.\n\n\
**Time base**: the server's clock. The gateway stamps each accepted frame with \
`received_ms` (ms since the Unix epoch) and each audio stream with its start; \
`server.speaker` times are ms from the stream's `client.audio_start`. The phone's \
`timestamp_ms` is kept as data only.";

/// What the document is assembled from: the schemas its payloads refer to, and its
/// messages, channels and operations.
#[derive(Default)]
pub(crate) struct Builder {
    schemas: BTreeMap<String, RefOr<Schema>>,
    messages: Map<String, Value>,
    channels: Map<String, Value>,
    operations: Map<String, Value>,
}

impl Builder {
    /// A reference to `T`'s schema, which is added (with every schema it refers to) to the
    /// document's components.
    pub(crate) fn schema_ref<T: ToSchema>(&mut self) -> Value {
        let mut nested = Vec::new();
        T::schemas(&mut nested);
        for (name, schema) in nested {
            self.schemas.insert(name, schema);
        }
        let name = T::name().into_owned();
        self.schemas.insert(name.clone(), T::schema());
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    pub(crate) fn message(&mut self, id: &str, message: Value) -> Value {
        self.messages.insert(id.to_string(), message);
        json!({ "$ref": format!("#/components/messages/{id}") })
    }

    pub(crate) fn channel(&mut self, id: &str, channel: Value) {
        self.channels.insert(id.to_string(), channel);
    }

    pub(crate) fn operation(&mut self, id: &str, operation: Value) {
        self.operations.insert(id.to_string(), operation);
    }
}

/// A schema made with utoipa's builders, as JSON.
pub(crate) fn to_json(schema: impl Into<RefOr<Schema>>) -> Value {
    serde_json::to_value(schema.into()).unwrap_or(Value::Null)
}

/// A string schema for a header or a parameter, with its meaning.
pub(crate) fn text_schema(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

/// A UUID, as utoipa writes the `Uuid` fields of the derived schemas (utoipa has no schema
/// for a bare `Uuid`).
pub(crate) fn uuid_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
}

/// The schema of a `T` that has no name of its own (a primitive, e.g. `Uuid`), as JSON.
pub(crate) fn inline<T: PartialSchema>() -> Value {
    to_json(T::schema())
}

fn build() -> Value {
    let mut b = Builder::default();
    websocket::add(&mut b);
    nats::add(&mut b);
    json!({
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:inside:realtime",
        "info": {
            "title": "Inside realtime API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": DESCRIPTION,
            "license": { "name": "MIT" },
        },
        "defaultContentType": "application/json",
        "servers": {
            websocket::SERVER: {
                "host": "localhost:8000",
                "protocol": "ws",
                "description": "A gateway (`BIND_ADDR`, default `0.0.0.0:8000`); `wss` behind TLS.",
            },
            nats::SERVER: {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": "The NATS server of a distributed deployment (`NATS_URL`).",
            },
        },
        "channels": b.channels,
        "operations": b.operations,
        "components": {
            "schemas": b.schemas,
            "messages": b.messages,
        },
    })
}
