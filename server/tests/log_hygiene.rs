//! What the gateway's logs must never hold: access tokens (under any spelling
//! of the query key) and user text (addresses, names). Every line the gateway
//! logs in this test binary is captured, at debug, into one buffer; each test
//! looks for its own unique secrets in it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::ws::try_connect;
use common::*;
use inside_testkit::log_capture::CapturedLog;
use serde_json::json;

/// The process-wide capture, installed before any gateway starts (their own
/// `try_init` then finds a subscriber and leaves it).
fn logs() -> &'static CapturedLog {
    static LOGS: OnceLock<CapturedLog> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = CapturedLog::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,hyper=info,hyper_util=info,h2=info,reqwest=info,tungstenite=info,tokio_tungstenite=info,sqlx=warn,async_nats=info",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        captured
    })
}

fn logged() -> String {
    logs().text()
}

/// Waits until the logs hold one of `needles` (lines are written as requests end).
async fn wait_logged_any(needles: &[&str]) {
    for _ in 0..100 {
        let logs = logged();
        if needles.iter().any(|n| logs.contains(n)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("none of {needles:?} logged");
}

async fn wait_logged(needle: &str) {
    wait_logged_any(&[needle]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_under_a_percent_encoded_key_never_reaches_the_logs() {
    logs();
    let app = spawn_app(Db::Sqlite).await;
    let secret = format!("SECRET{}", uuid::Uuid::new_v4().simple());
    for key in ["%74oken", "%54OKEN", "access%5Ftoken", "token"] {
        let (_, _) = app
            .get(&format!("/v1/users/me?{key}={secret}&probe={key}"), None)
            .await;
        wait_logged(&format!("probe={key}")).await;
    }
    // A real socket authenticated by the encoded key: its token must not be logged either.
    let (a, _b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let t = token(&a);
    let ws = try_connect(
        &format!(
            "ws://{}/v1/sessions/{sid}/ws?%74oken={t}&probe=ws",
            app.addr
        ),
        None,
    )
    .await;
    assert!(ws.is_ok(), "the encoded key authenticates: {:?}", ws.err());
    wait_logged("probe=ws").await;
    let logs = logged();
    assert!(!logs.contains(&secret), "token logged:\n{logs}");
    assert!(!logs.contains(t), "access token logged");
    assert!(logs.contains("%74oken=REDACTED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_log_the_relationship_not_the_address_or_name() {
    logs();
    let app = spawn_app(Db::Sqlite).await;
    let name = format!("Zed{}", uuid::Uuid::new_v4().simple());
    let email = unique_email("inviter");
    let (s, a) = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": email, "password": "correct horse", "name": name}),
        )
        .await;
    assert_eq!(s, 201);
    let partner = unique_email("partner");
    let (s, rel) = app
        .post(
            "/v1/relationships",
            Some(token(&a)),
            json!({"partner_email": partner, "kind": "friends"}),
        )
        .await;
    assert_eq!(s, 201);
    let rid = rel["id"].as_str().unwrap();
    // The mail is sent after the answer: wait for its line, however it names things.
    wait_logged_any(&[rid, &partner]).await;
    let logs = logged();
    for text in [&name, &email, &partner] {
        assert!(!logs.contains(text.as_str()), "{text} logged");
    }
    assert!(
        logs.contains(rid),
        "the invitation is logged by relationship id"
    );
}
