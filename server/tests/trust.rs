//! Abuse between users: what inviting an address reveals, invitation and poke
//! limits, pokes only between members who both accepted, control characters
//! and NUL in user text, and what an invitation email carries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{json, Value};

both_databases!(
    inviting_an_address_reveals_nothing_until_they_answer,
    invitations_are_limited_per_sender_and_per_address,
    pokes_need_every_member_to_have_accepted,
    poke_limit_counts_per_recipient_across_relationships,
    control_characters_in_names_and_messages_are_422,
    nul_in_any_json_string_is_422,
);

async fn invite(app: &TestApp, from: &Value, email: &str) -> (u16, Value) {
    app.post(
        "/v1/relationships",
        Some(token(from)),
        json!({"partner_email": email, "kind": "friends"}),
    )
    .await
}

/// The response with what differs between any two creations (ids, times,
/// the typed address) blanked out.
fn shape(rel: &Value) -> Value {
    let mut rel = rel.clone();
    rel["id"] = json!("ID");
    rel["created_at"] = json!("T");
    rel["members"][1]["email"] = json!("E");
    rel
}

async fn inviting_an_address_reveals_nothing_until_they_answer(db: Db) {
    let app = spawn_app(db).await;
    let a = app.signup(&unique_email("a")).await;
    let registered = app.signup(&unique_email("registered")).await;
    let (s, to_registered) = invite(&app, &a, registered["user"]["email"].as_str().unwrap()).await;
    assert_eq!(s, 201, "{to_registered}");
    let (s, to_nobody) = invite(&app, &a, &unique_email("nobody")).await;
    assert_eq!(s, 201, "{to_nobody}");
    let partner = &to_registered["members"][1];
    assert_eq!(partner["user_id"], Value::Null, "{to_registered}");
    assert_eq!(partner["name"], Value::Null, "{to_registered}");
    assert_eq!(partner["consent"], "pending");
    assert_eq!(
        shape(&to_registered),
        shape(&to_nobody),
        "a registered and an unregistered address must answer alike"
    );
    let (_, list) = app.get("/v1/relationships", Some(token(&a))).await;
    for rel in list.as_array().unwrap() {
        assert_eq!(rel["members"][1]["user_id"], Value::Null, "{rel}");
        assert_eq!(rel["members"][1]["name"], Value::Null, "{rel}");
    }
    // The invited member sees the inviter (the email already named them) and themself.
    let rid = to_registered["id"].as_str().unwrap();
    let (_, theirs) = app.get("/v1/relationships", Some(token(&registered))).await;
    assert_eq!(theirs[0]["members"][0]["user_id"], a["user"]["id"]);
    assert_eq!(theirs[0]["members"][1]["user_id"], registered["user"]["id"]);
    // Once they answer, the inviter sees who they are.
    let (s, _) = app
        .put(
            &format!("/v1/relationships/{rid}/consent/{}", uid(&registered)),
            Some(token(&registered)),
            json!({"status": "granted"}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, list) = app.get("/v1/relationships", Some(token(&a))).await;
    let rel = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == rid)
        .unwrap();
    assert_eq!(rel["members"][1]["user_id"], registered["user"]["id"]);
    assert_eq!(rel["members"][1]["name"], registered["user"]["name"]);
}

async fn invitations_are_limited_per_sender_and_per_address(db: Db) {
    let app = spawn_app_with(
        db,
        &[
            ("INVITATION_SENDER_LIMIT", "3"),
            ("INVITATION_ADDRESS_LIMIT", "2"),
        ],
    )
    .await;
    let a = app.signup(&unique_email("a")).await;
    let c = app.signup(&unique_email("c")).await;
    let d = app.signup(&unique_email("d")).await;
    let target = unique_email("target");
    assert_eq!(invite(&app, &a, &target).await.0, 201);
    assert_eq!(invite(&app, &c, &target).await.0, 201);
    // A third invitation to the same address, from anyone, is refused.
    let res = app
        .http
        .post(app.url("/v1/relationships"))
        .bearer_auth(token(&d))
        .json(&json!({"partner_email": target.to_uppercase(), "kind": "work"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("retry-after").is_some());
    assert_error(&res.json().await.unwrap(), "rate_limited");
    // A sender is limited across addresses.
    assert_eq!(invite(&app, &a, &unique_email("y")).await.0, 201);
    assert_eq!(invite(&app, &a, &unique_email("y")).await.0, 201);
    let (s, body) = invite(&app, &a, &unique_email("y")).await;
    assert_eq!(s, 429, "{body}");
    assert_error(&body, "rate_limited");
    let (_, list) = app.get("/v1/relationships", Some(token(&a))).await;
    assert_eq!(
        list.as_array().unwrap().len(),
        3,
        "refused ones not created"
    );
}

async fn poke(app: &TestApp, from: &Value, rid: &str) -> (u16, Value) {
    app.post(
        "/v1/pokes",
        Some(token(from)),
        json!({"relationship_id": rid, "kind": "hug"}),
    )
    .await
}

async fn pokes_need_every_member_to_have_accepted(db: Db) {
    let app = spawn_app(db).await;
    let a = app.signup(&unique_email("a")).await;
    let b = app.signup(&unique_email("b")).await;
    let (_, rel) = invite(&app, &a, b["user"]["email"].as_str().unwrap()).await;
    let rid = rel["id"].as_str().unwrap();
    let (s, body) = poke(&app, &a, rid).await;
    assert_eq!(s, 403, "nobody accepted yet: {body}");
    assert_error(&body, "consent_required");
    app.set_consent(rid, &a, "granted").await;
    let (s, body) = poke(&app, &a, rid).await;
    assert_eq!(s, 403, "the partner never accepted: {body}");
    assert_error(&body, "consent_required");
    app.set_consent(rid, &b, "granted").await;
    assert_eq!(poke(&app, &a, rid).await.0, 201);
    assert_eq!(poke(&app, &b, rid).await.0, 201);
    app.set_consent(rid, &b, "revoked").await;
    let (s, body) = poke(&app, &a, rid).await;
    assert_eq!(s, 403, "consent withdrawn: {body}");
    // An invitation to an address without an account cannot be poked either.
    let (_, rel) = invite(&app, &a, &unique_email("nobody")).await;
    let rid = rel["id"].as_str().unwrap();
    app.set_consent(rid, &a, "granted").await;
    assert_eq!(poke(&app, &a, rid).await.0, 403);
}

async fn poke_limit_counts_per_recipient_across_relationships(db: Db) {
    let app = spawn_app_with(db, &[("POKE_LIMIT", "2")]).await;
    let (a, b, first) = app.couple().await;
    assert_eq!(poke(&app, &a, &first).await.0, 201);
    assert_eq!(poke(&app, &a, &first).await.0, 201);
    assert_eq!(poke(&app, &a, &first).await.0, 429);
    // A new relationship with the same person does not reset the count.
    let (_, rel) = invite(&app, &a, b["user"]["email"].as_str().unwrap()).await;
    let second = rel["id"].as_str().unwrap();
    app.set_consent(second, &a, "granted").await;
    app.set_consent(second, &b, "granted").await;
    let (s, body) = poke(&app, &a, second).await;
    assert_eq!(s, 429, "{body}");
    assert_error(&body, "rate_limited");
    // The recipient's own pokes back are counted separately.
    assert_eq!(poke(&app, &b, second).await.0, 201);
}

async fn control_characters_in_names_and_messages_are_422(db: Db) {
    let app = spawn_app(db).await;
    for name in [
        "Eve\r\nBcc: victim@example.com",
        "Eve\nX",
        "Eve\u{1b}[2J",
        "Eve\u{7f}",
        "Eve\u{0}",
        "Eve\u{85}",
    ] {
        let (s, body) = app
            .post(
                "/v1/auth/signup",
                None,
                json!({"email": unique_email("e"), "password": "correct horse", "name": name}),
            )
            .await;
        assert_eq!(s, 422, "{name:?}: {body}");
        assert_error(&body, "validation_error");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("name"),
            "{body}"
        );
    }
    let (s, body) = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": unique_email("t"), "password": "correct horse", "name": "Ada\tLovelace <ada>"}),
        )
        .await;
    assert_eq!(s, 201, "a tab and markup are plain text: {body}");
    let (a, _b, rid) = app.couple().await;
    for message in ["dinner?\r\nat 8", "\u{1b}]0;pwned\u{7}", "a\u{0}b"] {
        let (s, body) = app
            .post(
                "/v1/pokes",
                Some(token(&a)),
                json!({"relationship_id": rid, "kind": "custom", "message": message}),
            )
            .await;
        assert_eq!(s, 422, "{message:?}: {body}");
        assert_error(&body, "validation_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("message"),
            "{body}"
        );
    }
    let (s, _) = app
        .post(
            "/v1/pokes",
            Some(token(&a)),
            json!({"relationship_id": rid, "kind": "custom", "message": "dinner?\tat 8"}),
        )
        .await;
    assert_eq!(s, 201);
}

/// Sends `body` as raw JSON text (so that `\u0000` reaches the server as written).
async fn post_raw(app: &TestApp, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = app
        .http
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    send(req).await
}

async fn nul_in_any_json_string_is_422(db: Db) {
    let app = spawn_app(db).await;
    let (a, _b, rid) = app.couple().await;
    let t = token(&a);
    let email = a["user"]["email"].as_str().unwrap();
    let cases: Vec<(&str, Option<&str>, String)> = vec![
        (
            "/v1/auth/login",
            None,
            format!(r#"{{"email": "{email}\u0000", "password": "correct horse"}}"#),
        ),
        (
            "/v1/auth/login",
            None,
            format!(r#"{{"email": "{email}", "password": "correct\u0000horse"}}"#),
        ),
        (
            "/v1/auth/signup",
            None,
            r#"{"email": "n\u0000@example.com", "password": "correct horse", "name": "N"}"#.into(),
        ),
        (
            "/v1/auth/refresh",
            None,
            r#"{"refresh_token": "abc\u0000"}"#.into(),
        ),
        (
            "/v1/auth/logout",
            None,
            r#"{"refresh_token": "\u0000"}"#.into(),
        ),
        (
            "/v1/relationships",
            Some(t),
            r#"{"partner_email": "x\u0000@example.com", "kind": "work"}"#.into(),
        ),
        (
            "/v1/pokes",
            Some(t),
            format!(r#"{{"relationship_id": "{rid}", "kind": "custom", "message": "hi\u0000"}}"#),
        ),
        (
            "/v1/sessions",
            Some(t),
            format!(r#"{{"relationship_id": "{rid}", "extra\u0000": 1}}"#),
        ),
    ];
    for (path, tok, body) in &cases {
        let (s, res) = post_raw(&app, path, *tok, body).await;
        assert_eq!(s, 422, "{path} {body}: {res}");
        assert_error(&res, "validation_error");
    }
    // An escaped backslash followed by the letters is ordinary text.
    let (s, res) = post_raw(
        &app,
        "/v1/auth/login",
        None,
        &format!(r#"{{"email": "{email}", "password": "correct horse\\u0000"}}"#),
    )
    .await;
    assert_eq!(s, 401, "{res}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitation_email_escapes_the_name_and_keeps_the_subject_one_line() {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let stub = {
        let seen = seen.clone();
        axum::Router::new().route(
            "/v3/mail/send",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(body);
                    axum::http::StatusCode::ACCEPTED
                }
            }),
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
        ],
    )
    .await;
    let (s, a) = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": unique_email("eve"), "password": "correct horse",
                   "name": "<a href=\"https://evil.example\">Eve</a> & co"}),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    let (s, _) = invite(&app, &a, &unique_email("partner")).await;
    assert_eq!(s, 201);
    for _ in 0..100 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mail = seen.lock().unwrap()[0].clone();
    let subject = mail["subject"].as_str().unwrap();
    assert!(!subject.contains('\r') && !subject.contains('\n'));
    let html = mail["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "text/html")
        .expect("an HTML part")["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!html.contains("<a href"), "{html}");
    assert!(
        html.contains("&lt;a href=&quot;https://evil.example&quot;&gt;Eve&lt;/a&gt; &amp; co"),
        "{html}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitation_limits_hold_across_gateways_on_redis() {
    let app = spawn_app_with(
        Db::Postgres,
        &[
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("INVITATION_ADDRESS_LIMIT", "1"),
        ],
    )
    .await;
    let other = app.another_gateway().await;
    let a = app.signup(&unique_email("a")).await;
    let b = app.signup(&unique_email("b")).await;
    let target = unique_email("target");
    assert_eq!(invite(&app, &a, &target).await.0, 201);
    let (s, body) = invite(&other, &b, &target).await;
    assert_eq!(s, 429, "the second gateway shares the count: {body}");
    assert_error(&body, "rate_limited");
}
