//! Cross-cutting behaviour: error shape of axum's own rejections, body limit,
//! CORS, health, docs, metrics, login throttling, Redis, SendGrid, voiceprints
//! without a model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{json, Value};

both_databases!(
    unknown_routes_and_methods_answer_in_the_error_shape,
    json_body_over_one_mebibyte_is_refused_with_413,
    cors_allows_configured_origins_only,
    health_reports_every_dependency,
    openapi_documents_every_route,
    metrics_are_prometheus_text,
    repeated_failed_logins_are_throttled,
    voiceprint_enrolment_without_a_model_is_503,
);

async fn unknown_routes_and_methods_answer_in_the_error_shape(db: Db) {
    let app = spawn_app(db).await;
    let (s, body) = app.get("/v1/nope", None).await;
    assert_eq!(s, 404);
    assert_error(&body, "not_found");
    let (s, body) = app.delete("/v1/auth/login", None).await;
    assert_eq!(s, 405);
    assert_error(&body, "method_not_allowed");
}

async fn json_body_over_one_mebibyte_is_refused_with_413(db: Db) {
    let app = spawn_app(db).await;
    let big = json!({"email": "a@b.co", "password": "x".repeat(1 << 20), "name": "A"});
    let (s, body) = app.post("/v1/auth/signup", None, big).await;
    assert_eq!(s, 413);
    assert_error(&body, "payload_too_large");
    let (s, _) = app.get("/health", None).await;
    assert_eq!(s, 200, "still serving");
}

async fn cors_allows_configured_origins_only(db: Db) {
    let app = spawn_app_with(
        db,
        &[("CORS_ORIGINS", "http://localhost:*,https://*.inside.app")],
    )
    .await;
    for (origin, allowed) in [
        ("http://localhost:5173", true),
        ("https://web.inside.app", true),
        ("https://evil.example", false),
    ] {
        let res = app
            .http
            .request(reqwest::Method::OPTIONS, app.url("/v1/users/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
            .await
            .unwrap();
        let acao = res
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string());
        if allowed {
            assert_eq!(acao.as_deref(), Some(origin), "{origin}");
            let headers = res.headers()["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .to_lowercase();
            assert!(
                headers.contains("authorization") && headers.contains("content-type"),
                "{headers}"
            );
        } else {
            assert_eq!(acao, None, "{origin}");
        }
    }
    let res = app
        .http
        .post(app.url("/v1/auth/login"))
        .header("origin", "http://localhost:3000")
        .json(&json!({"email": "x@y.zz", "password": "12345678"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
}

async fn health_reports_every_dependency(db: Db) {
    let app = spawn_app(db).await;
    let (s, body) = app.get("/health", None).await;
    assert_eq!(s, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(
        body["checks"],
        json!({"database": "ok", "bus": "ok", "limiter": "ok"})
    );
    assert!(body["version"].is_string());
    // no ECAPA_MODEL_DIR: live audio would not be attributed, which /health says without failing
    assert_eq!(body["speaker_available"], false, "{body}");
    let (s, ready) = app.get("/readyz", None).await;
    assert_eq!((s, &ready["checks"]), (200, &body["checks"]));
    assert_eq!(app.get("/livez", None).await.0, 200);
}

async fn openapi_documents_every_route(db: Db) {
    let app = spawn_app(db).await;
    let (s, doc) = app.get("/openapi.json", None).await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/auth/signup",
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/users/me",
        "/v1/users/me/voiceprint",
        "/v1/relationships",
        "/v1/relationships/{rid}/consent/{uid}",
        "/v1/sessions",
        "/v1/sessions/{sid}",
        "/v1/sessions/{sid}/finalize",
        "/v1/sessions/{sid}/report",
        "/v1/history/sessions",
        "/v1/activities/suggestions",
        "/v1/pokes",
        "/health",
        "/livez",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    let res = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("<html"));
}

async fn metrics_are_prometheus_text(db: Db) {
    let app = spawn_app(db).await;
    app.get("/health", None).await;
    let res = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("inside_http_requests_total"), "{text}");
}

async fn repeated_failed_logins_are_throttled(db: Db) {
    let app = spawn_app_with(db, &[("LOGIN_MAX_FAILURES", "3")]).await;
    let email = unique_email("t");
    app.signup(&email).await;
    for _ in 0..5 {
        let (s, _) = app
            .post(
                "/v1/auth/login",
                None,
                json!({"email": email, "password": "correct horse"}),
            )
            .await;
        assert_eq!(s, 200, "successful logins are never throttled");
    }
    for _ in 0..3 {
        let (s, _) = app
            .post(
                "/v1/auth/login",
                None,
                json!({"email": email, "password": "wrong password"}),
            )
            .await;
        assert_eq!(s, 401);
    }
    let res = app
        .http
        .post(app.url("/v1/auth/login"))
        .json(&json!({"email": email, "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(
        res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
}

async fn voiceprint_enrolment_without_a_model_is_503(db: Db) {
    let app = spawn_app(db).await;
    let pair = app.signup(&unique_email("v")).await;
    let res = app
        .http
        .put(app.url("/v1/users/me/voiceprint"))
        .bearer_auth(token(&pair))
        .header("content-type", "audio/wav")
        .body(vec![0u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_error(&body, "model_unavailable");
    let (s, status) = app.get("/v1/users/me/voiceprint", Some(token(&pair))).await;
    assert_eq!(
        (s, status),
        (200, json!({"enrolled": false, "updated_at": null}))
    );
    let (s, _) = app
        .delete("/v1/users/me/voiceprint", Some(token(&pair)))
        .await;
    assert_eq!(s, 204);
    let res = app
        .http
        .put(app.url("/v1/users/me/voiceprint"))
        .bearer_auth(token(&pair))
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_limiter_is_shared_and_checked_by_health() {
    let app = spawn_app_with(
        Db::Postgres,
        &[("REDIS_URL", "redis://127.0.0.1:6379"), ("POKE_LIMIT", "1")],
    )
    .await;
    let (s, body) = app.get("/health", None).await;
    assert_eq!(
        (s, &body["checks"]["limiter"]),
        (200, &json!("ok")),
        "Redis must run on 127.0.0.1:6379 (scripts/services starts it)"
    );
    let (a, _b, rid) = app.couple().await;
    let (s, _) = app
        .post(
            "/v1/pokes",
            Some(token(&a)),
            json!({"relationship_id": rid, "kind": "hug"}),
        )
        .await;
    assert_eq!(s, 201);
    // A second gateway on the same Redis sees the same window.
    let other = app.another_gateway().await;
    let (s, _) = other
        .post(
            "/v1/pokes",
            Some(token(&a)),
            json!({"relationship_id": rid, "kind": "hug"}),
        )
        .await;
    assert_eq!(s, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_when_the_database_is_down() {
    let app = spawn_app(Db::Sqlite).await;
    app.state.store.close().await;
    let (s, body) = app.get("/health", None).await;
    assert_eq!(s, 503);
    assert_eq!(body["status"], "degraded");
    assert!(
        body["checks"]["database"]
            .as_str()
            .unwrap()
            .starts_with("error"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_fails_fast_with_a_clear_error() {
    let started = std::time::Instant::now();
    let dead = inside_store::limiter::Limiter::redis("redis://127.0.0.1:1", "x").await;
    assert!(dead.is_err(), "nothing listens on port 1");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitation_is_sent_through_sendgrid_when_a_key_is_set() {
    let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let stub = {
        let seen = seen.clone();
        axum::Router::new().route(
            "/v3/mail/send",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                    let seen = seen.clone();
                    async move {
                        let auth = headers
                            .get("authorization")
                            .map(|v| v.to_str().unwrap_or("").to_string())
                            .unwrap_or_default();
                        seen.lock().unwrap().push((auth, body));
                        axum::http::StatusCode::ACCEPTED
                    }
                },
            ),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v3/mail/send", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, stub).await });
    let app = spawn_app_with(
        Db::Sqlite,
        &[
            ("SENDGRID_API_KEY", "SG.test-key"),
            ("SENDGRID_API_URL", &url),
            ("EMAIL_FROM_ADDRESS", "hello@inside.app"),
        ],
    )
    .await;
    let a = app.signup(&unique_email("inviter")).await;
    let partner = unique_email("partner");
    let (s, _) = app
        .post(
            "/v1/relationships",
            Some(token(&a)),
            json!({"partner_email": partner, "kind": "friends"}),
        )
        .await;
    assert_eq!(s, 201);
    for _ in 0..100 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let seen = seen.lock().unwrap();
    let (auth, body) = seen.first().expect("SendGrid stub got no request");
    assert_eq!(auth, "Bearer SG.test-key");
    assert_eq!(body["personalizations"][0]["to"][0]["email"], partner);
    assert_eq!(body["from"]["email"], "hello@inside.app");
    assert!(body["subject"].as_str().unwrap().contains("invited you"));
    assert_eq!(body["content"][0]["type"], "text/plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voiceprint_is_enrolled_with_the_model_and_never_stores_audio() {
    let model = common::audio::fixture("ecapa_small");
    let app = spawn_app_with(Db::Sqlite, &[("ECAPA_MODEL_DIR", model.to_str().unwrap())]).await;
    let pair = app.signup(&unique_email("v")).await;
    let speech = speech_wav(4.0);
    let res = app
        .http
        .put(app.url("/v1/users/me/voiceprint"))
        .bearer_auth(token(&pair))
        .header("content-type", "audio/wav")
        .body(speech)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enrolled"], true);
    assert!(body["seconds"].as_f64().unwrap() >= 3.0);
    assert!(body["quality"].as_f64().unwrap() > 0.2, "{body}");
    let (s, st) = app.get("/v1/users/me/voiceprint", Some(token(&pair))).await;
    assert_eq!((s, &st["enrolled"]), (200, &json!(true)));
    assert!(st["updated_at"].is_string());
    // too short, and not audio at all
    let tone = std::fs::read(common::audio::fixture("audio/tone.ogg")).unwrap();
    let res = app
        .http
        .put(app.url("/v1/users/me/voiceprint"))
        .bearer_auth(token(&pair))
        .header("content-type", "audio/ogg")
        .body(tone)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let res = app
        .http
        .put(app.url("/v1/users/me/voiceprint"))
        .bearer_auth(token(&pair))
        .header("content-type", "audio/wav")
        .body(vec![7u8; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let (s, _) = app
        .delete("/v1/users/me/voiceprint", Some(token(&pair)))
        .await;
    assert_eq!(s, 204);
    let (_, st) = app.get("/v1/users/me/voiceprint", Some(token(&pair))).await;
    assert_eq!(st["enrolled"], false);
}

/// The espeak-ng fixture, looped to `seconds`, as 16 kHz 16-bit mono WAV bytes.
fn speech_wav(seconds: f64) -> Vec<u8> {
    common::audio::wav(&common::audio::voice(0, seconds))
}
