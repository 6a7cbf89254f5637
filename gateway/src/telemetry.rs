//! Logs and metrics: `tracing` with a request id on every line (and access
//! tokens redacted from URIs), and the Prometheus recorder behind `/metrics`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub fn init_tracing(debug: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if debug {
        "debug,hyper=info,sqlx=warn"
    } else {
        "info,sqlx=warn"
    };
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// The process-wide recorder (installed once; tests build many apps).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

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
