//! `/asyncapi`: the AsyncAPI document rendered as one self-contained HTML page (no script,
//! no external style or font), so it reads offline and under the docs' CSP: every channel,
//! its messages with direction, headers and payload schema, then every schema.

use std::fmt::Write;

use serde_json::{Map, Value};

/// The page's only style, inline (the CSP allows inline styles, not other origins).
const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;max-width:72rem;margin:2rem auto;\
padding:0 1rem;color:#1d2430}code,pre{font-family:ui-monospace,monospace;font-size:13px}\
pre{background:#f4f6f8;padding:.6rem;overflow:auto}table{border-collapse:collapse;\
margin:.4rem 0 1rem}td,th{border:1px solid #d6dbe1;padding:.25rem .5rem;text-align:left;\
vertical-align:top}th{background:#f4f6f8}section{border-top:1px solid #d6dbe1;\
margin-top:1.5rem}.dir{font-weight:600;color:#0b5cad}h4{margin-bottom:.2rem}";

pub(super) fn render(doc: &Value) -> String {
    let mut out = String::new();
    let title = text(&doc["info"]["title"]);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>{STYLE}</style></head><body>\n<h1>{t} <small>{v}</small></h1>\n\
         <p>AsyncAPI {a} — the machine-readable document is <a href=\"/asyncapi.json\">/asyncapi.json</a>; \
         the REST API is at <a href=\"/docs\">/docs</a>.</p>\n{d}\n",
        t = escape(&title),
        v = escape(&text(&doc["info"]["version"])),
        a = escape(&text(&doc["asyncapi"])),
        d = markdown(&text(&doc["info"]["description"])),
    );
    // the phone's socket first, then the NATS subjects (JSON objects come sorted by key)
    let mut channels: Vec<(String, Value)> = doc["channels"]
        .as_object()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    channels.sort_by_key(|(_, c)| c["servers"][0]["$ref"] != "#/servers/websocket");
    out.push_str("<h2>Channels</h2>\n<ul>");
    for (id, channel) in &channels {
        let _ = write!(
            out,
            "<li><a href=\"#channel-{}\"><code>{}</code></a></li>",
            escape(id),
            escape(&address(channel))
        );
    }
    out.push_str("</ul>\n");
    for (id, channel) in &channels {
        render_channel(&mut out, doc, id, channel);
    }
    out.push_str("<h2>Schemas</h2>\n");
    for (name, schema) in doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "<section id=\"schema-{n}\"><h3>{n}</h3>{}</section>",
            schema_html(schema),
            n = escape(name)
        );
    }
    out.push_str("</body></html>\n");
    out
}

fn render_channel(out: &mut String, doc: &Value, id: &str, channel: &Value) {
    let server = text(&channel["servers"][0]["$ref"]).replace("#/servers/", "");
    let _ = writeln!(
        out,
        "<section id=\"channel-{}\"><h3><code>{}</code> <small>({})</small></h3>{}",
        escape(id),
        escape(&address(channel)),
        escape(&server),
        markdown(&text(&channel["description"]))
    );
    for (key, reference) in channel["messages"].as_object().into_iter().flatten() {
        let message = resolve(doc, reference);
        let directions = directions(doc, id, key);
        // a subject's one message says what its channel says: not twice
        let summary = match message["summary"] == channel["description"] {
            true => String::new(),
            false => markdown(&text(&message["summary"])),
        };
        let _ = write!(
            out,
            "<h4 id=\"message-{k}\"><code>{k}</code> <span class=\"dir\">{}</span></h4>{}\n\
             <p>content type <code>{}</code></p>",
            escape(&directions),
            summary,
            escape(&text(&message["contentType"])),
            k = escape(key),
        );
        if message["description"].is_string() {
            out.push_str(&markdown(&text(&message["description"])));
        }
        if message["headers"].is_object() {
            let _ = write!(out, "<p>Headers</p>{}", schema_html(&message["headers"]));
        }
        if !message["payload"].is_null() {
            let _ = write!(out, "<p>Payload</p>{}", schema_html(&message["payload"]));
        }
        if let Some(example) = message["examples"][0].get("payload") {
            let pretty = serde_json::to_string_pretty(example).unwrap_or_default();
            let _ = write!(out, "<p>Example</p><pre>{}</pre>", escape(&pretty));
        }
    }
    out.push_str("</section>\n");
}

/// "receives" / "sends" / "request → reply", from the operations naming this message.
fn directions(doc: &Value, channel: &str, message: &str) -> String {
    let wanted = format!("#/channels/{channel}/messages/{message}");
    let mut found: Vec<String> = Vec::new();
    for op in doc["operations"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, op)| op)
    {
        let named = |list: &Value| {
            list.as_array()
                .into_iter()
                .flatten()
                .any(|m| m["$ref"] == wanted.as_str())
        };
        if named(&op["messages"]) {
            found.push(match op["action"].as_str() {
                Some("receive") => "Inside receives".into(),
                _ => "Inside sends".into(),
            });
        }
        if named(&op["reply"]["messages"]) {
            found.push("reply".into());
        }
    }
    found.dedup();
    found.join(", ")
}

/// A `$ref` inside the document, or the value itself.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => doc.pointer(pointer).unwrap_or(value),
        None => value,
    }
}

/// A schema as HTML: its description, then its properties or variants.
fn schema_html(schema: &Value) -> String {
    let mut out = markdown(&text(&schema["description"]));
    if let Some(props) = schema["properties"].as_object() {
        out.push_str(&properties_html(schema, props));
    } else if let Some(variants) = schema["oneOf"].as_array() {
        out.push_str("<p>One of:</p><ul>");
        for variant in variants {
            let _ = write!(out, "<li>{}</li>", schema_html(variant));
        }
        out.push_str("</ul>");
    } else if schema.get("$ref").is_some() || schema.get("type").is_some() {
        let _ = write!(out, "<p>{}</p>", type_label(schema));
    }
    out
}

fn properties_html(schema: &Value, props: &Map<String, Value>) -> String {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = String::from(
        "<table><tr><th>field</th><th>type</th><th>required</th><th>meaning</th></tr>",
    );
    for (name, prop) in props {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            type_label(prop),
            if required.contains(&name.as_str()) {
                "yes"
            } else {
                ""
            },
            markdown(&text(&prop["description"]))
        );
    }
    out.push_str("</table>");
    out
}

/// A short type: a link for a reference, `array of …`, enum values, format and range.
fn type_label(schema: &Value) -> String {
    if let Some(name) = schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        return format!("<a href=\"#schema-{n}\">{n}</a>", n = escape(name));
    }
    if let Some(variants) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        return variants
            .iter()
            .map(type_label)
            .collect::<Vec<_>>()
            .join(" | ");
    }
    let mut label = match &schema["type"] {
        Value::Array(types) => types.iter().map(text).collect::<Vec<_>>().join(" | "),
        Value::Null => "any".into(),
        t => text(t),
    };
    label = escape(&label);
    if schema["items"].is_object() {
        label = label.replace(
            "array",
            &format!("array of {}", type_label(&schema["items"])),
        );
    }
    if let Some(format) = schema["format"].as_str() {
        let _ = write!(label, " ({})", escape(format));
    }
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .map(|v| format!("<code>{}</code>", escape(&v.to_string())))
            .collect();
        let _ = write!(label, ": {}", values.join(", "));
    }
    for (key, sign) in [("minimum", "≥"), ("maximum", "≤")] {
        if let Some(n) = schema[key].as_f64() {
            let _ = write!(label, " {sign} {n}");
        }
    }
    label
}

fn address(channel: &Value) -> String {
    match channel["address"].as_str() {
        Some(a) => a.to_string(),
        // a reply goes to the requester's inbox: its title says to what
        None => text(&channel["title"]),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The little Markdown the descriptions use: paragraphs, `code` and **bold**, escaped.
fn markdown(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    s.split("\n\n")
        .map(|para| {
            let mut html = String::new();
            for (i, part) in escape(para).split('`').enumerate() {
                if i % 2 == 1 {
                    let _ = write!(html, "<code>{part}</code>");
                } else {
                    html.push_str(&bold(part));
                }
            }
            format!("<p>{html}</p>")
        })
        .collect()
}

fn bold(s: &str) -> String {
    let mut html = String::new();
    for (i, part) in s.split("**").enumerate() {
        if i % 2 == 1 {
            let _ = write!(html, "<strong>{part}</strong>");
        } else {
            html.push_str(part);
        }
    }
    html
}
