//! Request telemetry: a `tracing` span with a request id on every request (access tokens
//! redacted from URIs), request metrics, and the `# HELP` of every series the gateway emits.
//! The recorder itself and log set-up are `inside_process`'s, shared with the worker.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// A unique id per request: a random per-process base and a counter, cheaper
/// than a UUID on the hot path and still unique across processes in practice.
fn next_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static BASE: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(rand::random::<u64>);
    format!(
        "{:016x}",
        base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
    )
}

/// Query keys whose values are credentials.
const SECRET_KEYS: &[&str] = &["token", "access_token"];

/// `?token=…` never reaches a log line. Keys are compared after
/// percent-decoding, as the query extractor decodes them: `?%74oken=…`
/// authenticates exactly like `?token=…` and must be redacted like it.
pub fn redact_query(uri: &axum::http::Uri) -> std::borrow::Cow<'_, str> {
    match uri.query() {
        None => std::borrow::Cow::Borrowed(uri.path()),
        Some(q) => {
            let redacted: Vec<String> = q
                .split('&')
                .map(|kv| {
                    let raw_key = kv.split_once('=').map_or(kv, |(k, _)| k);
                    let secret = url::form_urlencoded::parse(kv.as_bytes())
                        .next()
                        .is_some_and(|(k, _)| {
                            SECRET_KEYS.iter().any(|s| k.trim().eq_ignore_ascii_case(s))
                        });
                    if secret {
                        format!("{raw_key}=REDACTED")
                    } else {
                        kv.to_string()
                    }
                })
                .collect();
            std::borrow::Cow::Owned(format!("{}?{}", uri.path(), redacted.join("&")))
        }
    }
}

/// One span per request carrying its id; request count and latency metrics.
pub async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(next_request_id);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().clone();
    let span = tracing::info_span!("request", id = %request_id, method = %method, uri = %redact_query(req.uri()));
    let mut res = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!(status, ms = elapsed.as_secs_f64() * 1e3, "request failed");
        } else {
            tracing::debug!(status, ms = elapsed.as_secs_f64() * 1e3, "request done");
        }
    });
    metrics::counter!("inside_http_requests_total", "method" => method.to_string(), "route" => route.clone(), "status" => status.to_string()).increment(1);
    metrics::histogram!("inside_http_request_duration_seconds", "route" => route)
        .record(elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// `# HELP` of every series the gateway emits (and the bus under it), so a scrape explains
/// each one; called once the recorder is installed.
pub fn describe_metrics() {
    inside_bus::describe_metrics();
    inside_process::describe(
        &[
            ("inside_http_requests_total", "HTTP requests answered, by method, route and status"),
            ("inside_http_connections_refused_total", "TCP connections refused: a client over its connection cap"),
            ("inside_http_header_timeouts_total", "Connections closed for not sending a request head in time"),
            ("inside_http_idle_closed_total", "HTTP connections closed after a stalled body or response"),
            ("inside_bcrypt_verifications_total", "Password hashes verified"),
            ("inside_frames_published_total", "Feature frames accepted from sockets and published to the workers"),
            ("inside_audio_segments_published_total", "Live audio segments published to the workers"),
            ("inside_audio_streams_total", "Live audio streams ended, by outcome"),
            ("inside_ws_bad_messages_total", "Socket messages refused, by error code"),
            ("inside_ws_flood_closed_total", "Sockets closed for sending too fast"),
            ("inside_ws_oversized_closed_total", "Sockets closed for an oversized message"),
            ("inside_ws_slow_readers_total", "Messages dropped or sockets closed because a client read too slowly"),
            ("inside_ws_sockets_refused_total", "Socket upgrades refused, by the cap hit"),
            ("inside_ws_resumes_total", "Reconnecting sockets, by outcome (replayed or resync)"),
            ("inside_ws_replayed_events_total", "Events replayed to reconnecting sockets"),
            ("inside_events_stream_restarts_total", "Times the gateway followed the events stream again (made anew, or its feed ended): every socket got server.resync"),
            ("inside_events_skipped_total", "Events the events stream let go before this gateway read them (its feed fell behind, or a purge): every socket got server.resync"),
            ("inside_nudges_delivered_total", "Nudges handed to sockets"),
            ("inside_speakers_delivered_total", "Speaker events handed to sockets"),
            ("inside_presence_expired_total", "Participants of a silent gateway dropped from presence"),
            ("inside_research_copies_total", "Live data copied to the research subjects, by kind"),
        ],
        &[
            ("inside_ws_connections", "Open WebSocket connections on this gateway"),
            ("inside_report_jobs_open", "Report jobs queued or running in the database queue"),
        ],
        &[
            ("inside_http_request_duration_seconds", "HTTP request latency, by route"),
            (inside_process::metrics::FRAME_TO_NUDGE, "From the gateway receiving a feature frame to it handing the nudge that frame caused to a socket"),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(uri: &str) -> String {
        redact_query(&uri.parse().unwrap_or_default()).into_owned()
    }

    #[test]
    fn tokens_are_redacted_under_any_spelling_of_the_key() {
        for uri in [
            "/ws?token=SECRET",
            "/ws?%74oken=SECRET",
            "/ws?%54%4F%4B%45%4E=SECRET",
            "/ws?a=1&t%6fken=SECRET&b=2",
            "/ws?access%5Ftoken=SECRET",
            "/ws?Access_Token=SECRET",
            "/ws?token+=SECRET",
        ] {
            let line = logged(uri);
            assert!(!line.contains("SECRET"), "{uri} logged as {line}");
        }
        assert_eq!(
            logged("/ws?a=1&%74oken=S&b=2"),
            "/ws?a=1&%74oken=REDACTED&b=2"
        );
        assert_eq!(logged("/ws?other=kept"), "/ws?other=kept");
    }
}
