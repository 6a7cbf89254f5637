//! The AsyncAPI document (`/asyncapi.json`) as a contract to hold messages to: its `$ref`s
//! resolved, a message's payload schema as a JSON Schema validator, and [`Contract`], which
//! checks a real socket frame or bus message against the schema its `type` or subject names.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use inside_schemas::{ClientMessageType, ServerMessageType, SubjectKind};
use serde_json::{json, Value};

/// `$ref` → the value it points at in `doc`.
pub fn resolve<'a>(doc: &'a Value, reference: &Value) -> &'a Value {
    let r = reference["$ref"].as_str().expect("a $ref");
    doc.pointer(r.strip_prefix('#').expect("a local $ref"))
        .unwrap_or_else(|| panic!("{r} does not resolve"))
}

/// A `$ref` resolved, or the schema itself.
pub fn resolve_schema<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    if schema["$ref"].is_string() {
        resolve(doc, schema)
    } else {
        schema
    }
}

/// `schema` with the document's schemas beside it, so its `#/components/schemas/…` resolve.
pub fn standalone(doc: &Value, schema: &Value) -> Value {
    let mut root = schema.clone();
    root["components"] = json!({ "schemas": doc["components"]["schemas"] });
    root
}

/// The message payload schema of `message` in `doc`, ready to validate against.
pub fn validator(doc: &Value, message: &str) -> jsonschema::Validator {
    let schema = &doc["components"]["messages"][message]["payload"];
    assert!(!schema.is_null(), "no payload for {message}");
    jsonschema::draft202012::new(&standalone(doc, schema)).unwrap()
}

/// Why `sample` does not fit `validator`, one line per error (empty when it fits).
pub fn errors(validator: &jsonschema::Validator, sample: &Value) -> Vec<String> {
    validator
        .iter_errors(sample)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

pub fn assert_valid(doc: &Value, message: &str, sample: &Value) {
    let errors = errors(&validator(doc, message), sample);
    assert!(errors.is_empty(), "{message}: {sample} → {errors:?}");
}

/// The document as a running server serves it, checking what really travels.
pub struct Contract {
    pub doc: Value,
    /// Compiled schemas by `<message id>/<part>`: a session checks hundreds of messages.
    compiled: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

impl Contract {
    /// `GET /asyncapi.json` of the server at `api`.
    pub async fn fetch(api: &super::Api) -> Contract {
        let (status, doc) = api.get("/asyncapi.json", None).await;
        assert_eq!(status, 200, "{doc}");
        Contract {
            doc,
            compiled: Mutex::new(HashMap::new()),
        }
    }

    /// `part` (`payload` or `headers`) of the component message `id`, compiled. Formats
    /// (`uuid`, `date-time`) are checked too: a real message must fill them for real.
    fn schema(&self, id: &str, part: &str) -> Option<Arc<jsonschema::Validator>> {
        let key = format!("{id}/{part}");
        let mut compiled = self.compiled.lock().unwrap();
        if let Some(v) = compiled.get(&key) {
            return Some(v.clone());
        }
        let schema = &self.doc["components"]["messages"][id][part];
        if schema.is_null() {
            return None;
        }
        let v = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&standalone(&self.doc, schema))
            .unwrap_or_else(|e| panic!("{id} {part}: {e}"));
        let v = Arc::new(v);
        compiled.insert(key, v.clone());
        Some(v)
    }

    /// The component id of the socket message `kind`; panics when the document has none.
    fn socket_message(&self, kind: &str) -> String {
        let reference = &self.doc["channels"]["session"]["messages"][kind];
        assert!(
            reference.is_object(),
            "the socket message {kind} is not in the document"
        );
        let r = reference["$ref"].as_str().expect("a $ref");
        let message = resolve(&self.doc, reference);
        assert_eq!(message["name"], kind, "{r}");
        r.rsplit('/').next().unwrap().to_string()
    }

    /// Why the socket message `kind` of the document does not describe `msg` (empty when it
    /// does).
    pub fn envelope_errors(&self, kind: &str, msg: &Value) -> Vec<String> {
        let id = self.socket_message(kind);
        let schema = self
            .schema(&id, "payload")
            .unwrap_or_else(|| panic!("{kind} has no payload schema"));
        errors(&schema, msg)
    }

    fn check_envelope(&self, kind: &str, msg: &Value) {
        let errors = self.envelope_errors(kind, msg);
        assert!(errors.is_empty(), "{kind}: {msg} → {errors:?}");
    }

    /// A text frame a server sent: its `type` is a server message of the document, and the
    /// frame is what that message's schema describes.
    pub fn check_server(&self, msg: &Value) -> ServerMessageType {
        let kind = msg["type"]
            .as_str()
            .unwrap_or_else(|| panic!("a server frame without a type: {msg}"));
        let t = ServerMessageType::parse(kind)
            .unwrap_or_else(|| panic!("{kind} is not a server message type: {msg}"));
        self.check_envelope(kind, msg);
        t
    }

    /// A text frame a phone is about to send.
    pub fn check_client(&self, msg: &Value) -> ClientMessageType {
        let kind = msg["type"].as_str().expect("a type");
        let t = ClientMessageType::parse(kind)
            .unwrap_or_else(|| panic!("{kind} is not a client message type"));
        self.check_envelope(kind, msg);
        t
    }

    /// Whether any client message of the document accepts `text`.
    pub fn accepts_client_text(&self, text: &str) -> bool {
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            return false;
        };
        ClientMessageType::ALL.iter().any(|t| {
            let id = self.socket_message(t.as_str());
            self.schema(&id, "payload").unwrap().is_valid(&msg)
        })
    }

    /// The subject family of `subject` (under `prefix`), by the channel addresses of the
    /// document: `{param}` stands for one token, a UUID.
    pub fn subject_kind(&self, prefix: &str, subject: &str) -> Option<SubjectKind> {
        let tokens: Vec<&str> = subject.split('.').collect();
        let mut found = None;
        for (id, channel) in self.doc["channels"].as_object().unwrap() {
            let Some(name) = id.strip_prefix("nats.") else {
                continue;
            };
            let Some(address) = channel["address"].as_str() else {
                continue;
            };
            // the document names the default deployment's prefix; the test has its own
            let mut pattern: Vec<&str> = address.split('.').collect();
            pattern[0] = prefix;
            let fits = pattern.len() == tokens.len()
                && pattern.iter().zip(&tokens).all(|(p, t)| {
                    if p.starts_with('{') && p.ends_with('}') {
                        t.parse::<uuid::Uuid>().is_ok()
                    } else {
                        p == t
                    }
                });
            if fits {
                let kind = SubjectKind::ALL
                    .iter()
                    .copied()
                    .find(|k| k.name() == name)
                    .unwrap_or_else(|| panic!("channel {id} names no SubjectKind"));
                assert!(found.is_none(), "{subject} fits two channels");
                found = Some(kind);
            }
        }
        found
    }

    /// The component id of the message on `kind`'s channel, or of its reply (`None`: the
    /// document gives it no reply).
    fn bus_message(&self, kind: SubjectKind, reply: bool) -> Option<String> {
        let on_channel = if reply {
            let op = &self.doc["operations"][format!("publish.{}", kind.name())];
            let reference = &op["reply"]["messages"][0];
            if reference.is_null() {
                return None;
            }
            resolve(&self.doc, reference)
        } else {
            let channel = &self.doc["channels"][format!("nats.{}", kind.name())];
            let messages = channel["messages"].as_object().expect("channel messages");
            assert_eq!(messages.len(), 1, "{kind:?}: one message per subject");
            messages.values().next().unwrap()
        };
        let r = on_channel["$ref"].as_str().expect("a component $ref");
        Some(r.rsplit('/').next().unwrap().to_string())
    }

    /// Whether `kind` is a request the document gives a reply for.
    pub fn has_reply(&self, kind: SubjectKind) -> bool {
        self.bus_message(kind, true).is_some()
    }

    /// A message captured on `kind`'s subject (or, `reply`, on the inbox answering one): its
    /// payload fits the schema for its content type, every header it carries is declared,
    /// and the declared headers fit their schema (the ones always sent are required).
    /// Returns the names of its headers.
    pub fn check_bus(
        &self,
        kind: SubjectKind,
        reply: bool,
        payload: &[u8],
        headers: &BTreeMap<String, String>,
    ) -> Vec<String> {
        let what = format!("{kind:?}{}", if reply { " reply" } else { "" });
        let id = self
            .bus_message(kind, reply)
            .unwrap_or_else(|| panic!("{what}: not in the document"));
        let message = &self.doc["components"]["messages"][&id];
        let content_type = message["contentType"]
            .as_str()
            .or(self.doc["defaultContentType"].as_str())
            .unwrap();
        let sample = match content_type {
            "application/json" => Some(serde_json::from_slice::<Value>(payload).unwrap_or_else(
                |e| {
                    panic!(
                        "{what}: not JSON ({e}): {:?}",
                        String::from_utf8_lossy(payload)
                    )
                },
            )),
            "text/plain" => Some(Value::String(
                String::from_utf8(payload.to_vec())
                    .unwrap_or_else(|_| panic!("{what}: text that is not UTF-8")),
            )),
            // bytes: nothing the document could say about them beyond their headers
            "application/octet-stream" => None,
            other => panic!("{what}: content type {other} the test does not know"),
        };
        if let Some(sample) = sample {
            let schema = self
                .schema(&id, "payload")
                .unwrap_or_else(|| panic!("{what}: no payload schema"));
            let errors = errors(&schema, &sample);
            assert!(errors.is_empty(), "{what}: {sample} → {errors:?}");
        }
        let declared = &message["headers"]["properties"];
        for name in headers.keys() {
            assert!(
                declared[name].is_object(),
                "{what}: header {name} is not in the document ({headers:?})"
            );
        }
        if let Some(schema) = self.schema(&id, "headers") {
            let sample = serde_json::to_value(headers).unwrap();
            let errors = errors(&schema, &sample);
            assert!(errors.is_empty(), "{what}: headers {sample} → {errors:?}");
        }
        headers.keys().cloned().collect()
    }

    /// The headers the document declares on `kind`'s subject.
    pub fn declared_headers(&self, kind: SubjectKind) -> Vec<String> {
        let id = self.bus_message(kind, false).unwrap();
        self.doc["components"]["messages"][&id]["headers"]["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }
}
