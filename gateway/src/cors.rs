//! CORS with the seed's wildcard origins: `*` inside a host or port, e.g.
//! `http://localhost:*` or `https://*.inside.app`.

use axum::http::{header, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// One allowed-origin pattern, split at its stars.
#[derive(Debug, Clone)]
pub struct OriginPattern(Vec<String>);

impl OriginPattern {
    pub fn new(pattern: &str) -> Self {
        Self(
            pattern
                .trim_end_matches('/')
                .split('*')
                .map(str::to_ascii_lowercase)
                .collect(),
        )
    }

    /// Stars match one or more host/port characters, never `/`, `@` or `:`
    /// (so `http://localhost:*` does not admit `http://localhost:1@evil`).
    pub fn matches(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        if self.0.len() == 1 {
            return self.0[0] == "*" || self.0[0] == origin;
        }
        let Some(rest) = origin.strip_prefix(self.0[0].as_str()) else {
            return false;
        };
        match_from(rest, &self.0[1..])
    }
}

fn match_from(s: &str, parts: &[String]) -> bool {
    let Some((lit, more)) = parts.split_first() else {
        return s.is_empty();
    };
    // The star before `lit` eats 1.. allowed chars.
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    for (i, c) in s.char_indices() {
        if !allowed(c) {
            break;
        }
        let after = &s[i + c.len_utf8()..];
        if let Some(rest) = after.strip_prefix(lit.as_str()) {
            if match_from(rest, more) {
                return true;
            }
        }
    }
    false
}

pub fn layer(patterns: &[String]) -> CorsLayer {
    let allow_any = patterns.iter().any(|p| p == "*");
    let patterns: Vec<OriginPattern> = patterns.iter().map(|p| OriginPattern::new(p)).collect();
    let origin = AllowOrigin::predicate(move |origin: &HeaderValue, _| {
        allow_any
            || origin
                .to_str()
                .is_ok_and(|o| patterns.iter().any(|p| p.matches(o)))
    });
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([
            header::RETRY_AFTER,
            header::HeaderName::from_static("x-request-id"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// Whether a browser `Origin` is allowed (the WebSocket checks it itself).
pub fn origin_allowed(patterns: &[String], origin: &str) -> bool {
    patterns
        .iter()
        .any(|p| p == "*" || OriginPattern::new(p).matches(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_patterns_match_host_and_port_only() {
        let cases = [
            ("http://localhost:*", "http://localhost:3000", true),
            ("http://localhost:*", "http://localhost", false),
            (
                "http://localhost:*",
                "http://localhost:3000@evil.com",
                false,
            ),
            ("http://localhost:*", "http://localhost:1/x", false),
            ("https://*.inside.app", "https://web.inside.app", true),
            ("https://*.inside.app", "https://a.b.inside.app", true),
            ("https://*.inside.app", "https://inside.app", false),
            (
                "https://*.inside.app",
                "https://evil.com/.inside.app",
                false,
            ),
            ("https://*.inside.app", "http://web.inside.app", false),
            ("https://app.example.com", "https://app.example.com", true),
            (
                "https://app.example.com",
                "https://app.example.com.evil",
                false,
            ),
            ("http://*:*", "http://10.0.0.1:8080", true),
        ];
        for (p, o, want) in cases {
            assert_eq!(OriginPattern::new(p).matches(o), want, "{p} vs {o}");
        }
    }
}
