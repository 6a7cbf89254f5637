//! `DELETE /v1/users/me`: what it erases, what it leaves, and the old access
//! token refused (401) on every authenticated endpoint and the WebSocket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::ws::try_connect;
use common::*;
use inside_schemas::{EventBody, FeatureFrame};
use inside_store::events::SessionEvent;
use serde_json::{json, Value};
use uuid::Uuid;

both_databases!(
    deleting_the_account_erases_it_and_ends_its_relationships,
    a_deleted_users_access_token_is_401_everywhere,
);

fn uid(pair: &Value) -> Uuid {
    pair["user"]["id"].as_str().unwrap().parse().unwrap()
}

/// Rows of `table` where `column` is `value`, straight from the database.
async fn rows(app: &TestApp, table: &str, column: &str, value: &str) -> i64 {
    use sqlx::Row;
    sqlx::query(&format!(
        "SELECT COUNT(*) AS n FROM {table} WHERE {column} = $1"
    ))
    .bind(value.to_string())
    .fetch_one(app.state.store.pool())
    .await
    .unwrap()
    .try_get::<i64, _>("n")
    .unwrap()
}

async fn deleting_the_account_erases_it_and_ends_its_relationships(db: Db) {
    let app = spawn_app(db).await;
    let (a, b, rid) = app.couple().await;
    // A second relationship of b's with someone else must not be touched.
    let c = app.signup(&unique_email("c")).await;
    let (_, other) = app
        .post(
            "/v1/relationships",
            Some(token(&b)),
            json!({"partner_email": c["user"]["email"], "kind": "work"}),
        )
        .await;
    let other_rid = other["id"].as_str().unwrap().to_string();
    let sid = app.start_session(&a, &rid).await;
    let s: Uuid = sid.parse().unwrap();
    app.state
        .store
        .append_events(&[
            SessionEvent {
                session_id: s,
                user_id: Some(uid(&a)),
                body: EventBody::Frame(FeatureFrame {
                    timestamp_ms: 1,
                    speaking_rate: 2.0,
                    overlap_ratio: 0.0,
                    seq: None,
                    received_ms: None,
                }),
            },
            SessionEvent {
                session_id: s,
                user_id: Some(uid(&b)),
                body: EventBody::Frame(FeatureFrame {
                    timestamp_ms: 2,
                    speaking_rate: 2.0,
                    overlap_ratio: 0.0,
                    seq: None,
                    received_ms: None,
                }),
            },
        ])
        .await
        .unwrap();
    let (st, _) = app.finalize(&sid, Some(token(&a))).await;
    assert_eq!(st, 202);
    app.wait_report(&sid, token(&b)).await;
    let (st, _) = app
        .post(
            "/v1/pokes",
            Some(token(&a)),
            json!({"relationship_id": rid, "kind": "hug"}),
        )
        .await;
    assert_eq!(st, 201);
    app.state
        .store
        .put_voiceprint(uid(&a), &[0.5; 192], 5.0, 0.9)
        .await
        .unwrap();
    let a_id = uid(&a).to_string();
    assert_eq!(rows(&app, "token_families", "user_id", &a_id).await, 1);

    let (st, body) = app.delete("/v1/users/me", Some(token(&a))).await;
    assert_eq!(st, 204, "{body}");

    // The account, its voiceprint and refresh tokens are gone.
    assert_eq!(rows(&app, "users", "id", &a_id).await, 0);
    assert_eq!(rows(&app, "voiceprints", "user_id", &a_id).await, 0);
    assert_eq!(rows(&app, "token_families", "user_id", &a_id).await, 0);
    let (st, _) = app
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": a["refresh_token"]}),
        )
        .await;
    assert_eq!(st, 401);
    let (st, _) = app
        .post(
            "/v1/auth/login",
            None,
            json!({"email": a["user"]["email"], "password": "correct horse"}),
        )
        .await;
    assert_eq!(st, 401);
    // The shared relationship ended for both: sessions, events, reports, pokes erased.
    for (table, column, value) in [
        ("relationships", "id", rid.as_str()),
        ("relationship_members", "relationship_id", &rid),
        ("invitations", "relationship_id", &rid),
        ("pokes", "relationship_id", &rid),
        ("sessions", "id", &sid),
        ("session_events", "session_id", &sid),
        ("reports", "session_id", &sid),
        ("jobs", "session_id", &sid),
        ("relationship_members", "user_id", &a_id),
    ] {
        assert_eq!(rows(&app, table, column, value).await, 0, "{table}");
    }
    let (st, list) = app.get("/v1/relationships", Some(token(&b))).await;
    assert_eq!(st, 200);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [other_rid.as_str()],
        "b keeps only the other relationship"
    );
    let (st, _) = app
        .get(&format!("/v1/sessions/{sid}"), Some(token(&b)))
        .await;
    assert_eq!(st, 404);
    let (st, history) = app.get("/v1/history/sessions", Some(token(&b))).await;
    assert_eq!((st, history["items"].as_array().unwrap().len()), (200, 0));
    // The partner's account is untouched.
    let (st, me) = app.get("/v1/users/me", Some(token(&b))).await;
    assert_eq!((st, &me["id"]), (200, &b["user"]["id"]));
    // The address is free again; a new account starts empty.
    let again = app.signup(a["user"]["email"].as_str().unwrap()).await;
    assert_ne!(again["user"]["id"], a["user"]["id"]);
    let (_, list) = app.get("/v1/relationships", Some(token(&again))).await;
    assert_eq!(list, json!([]));
}

async fn a_deleted_users_access_token_is_401_everywhere(db: Db) {
    let app = spawn_app(db).await;
    let (a, _b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    // Another couple's live session: the deleted user's socket must be 401, not 403.
    let (x, _y, other_rid) = app.couple().await;
    let other_sid = app.start_session(&x, &other_rid).await;
    let t = token(&a).to_string();
    let me = uid(&a);
    // Warm the cache: the account was seen alive just before.
    assert_eq!(app.get("/v1/users/me", Some(&t)).await.0, 200);
    let (st, _) = app.delete("/v1/users/me", Some(&t)).await;
    assert_eq!(st, 204);

    let rnd = Uuid::new_v4();
    let requests: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/v1/users/me".into(), None),
        ("DELETE", "/v1/users/me".into(), None),
        ("GET", "/v1/users/me/voiceprint".into(), None),
        ("DELETE", "/v1/users/me/voiceprint".into(), None),
        ("GET", "/v1/relationships".into(), None),
        (
            "POST",
            "/v1/relationships".into(),
            Some(json!({"partner_email": unique_email("z"), "kind": "work"})),
        ),
        (
            "PUT",
            format!("/v1/relationships/{other_rid}/consent/{me}"),
            Some(json!({"status": "granted"})),
        ),
        (
            "PUT",
            format!("/v1/relationships/{other_rid}/research/{me}"),
            Some(json!({"status": "granted"})),
        ),
        (
            "POST",
            "/v1/sessions".into(),
            Some(json!({"relationship_id": other_rid})),
        ),
        ("GET", format!("/v1/sessions/{other_sid}"), None),
        (
            "POST",
            format!("/v1/sessions/{other_sid}/finalize"),
            Some(json!({})),
        ),
        ("GET", format!("/v1/sessions/{other_sid}/report"), None),
        ("GET", "/v1/history/sessions".into(), None),
        ("GET", format!("/v1/activities/suggestions?rid={rnd}"), None),
        ("GET", format!("/v1/pokes?rid={other_rid}"), None),
        (
            "POST",
            "/v1/pokes".into(),
            Some(json!({"relationship_id": other_rid, "kind": "hug"})),
        ),
    ];
    for (method, path, body) in &requests {
        let mut req = app
            .http
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(&t);
        if let Some(b) = body {
            req = req.json(b);
        }
        let (st, res) = send(req).await;
        assert_eq!(st, 401, "{method} {path}: {res}");
        assert_error(&res, "unauthorized");
    }
    let put = app
        .http
        .put(app.url("/v1/users/me/voiceprint"))
        .bearer_auth(&t)
        .header("content-type", "audio/wav")
        .body(vec![0u8; 64])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 401, "PUT /v1/users/me/voiceprint");
    for s in [&sid, &other_sid] {
        let ws = try_connect(
            &format!("ws://{}/v1/sessions/{s}/ws?token={t}", app.addr),
            None,
        )
        .await;
        assert_eq!(ws.err(), Some(401), "WebSocket upgrade to {s}");
    }
    // The documented routes above are every authenticated route of the API.
    let (_, doc) = app.get("/openapi.json", None).await;
    let mut documented: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op.get("security").is_some() {
                documented.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    for d in &documented {
        let (method, path) = d.split_once(' ').unwrap();
        let covered = requests
            .iter()
            .any(|(m, p, _)| *m == method && same_route(path, p.split('?').next().unwrap()))
            || d == "PUT /v1/users/me/voiceprint";
        assert!(covered, "{d} is authenticated but not tested here");
    }
}

/// Whether the concrete `path` matches the documented `template` (`{x}` segments).
fn same_route(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}')) || t == p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_gateway_refuses_a_deleted_users_token_within_its_cache_bound() {
    let app = spawn_app(Db::Sqlite).await;
    let other = app.another_gateway().await;
    let a = app.signup(&unique_email("a")).await;
    let t = token(&a).to_string();
    assert_eq!(other.get("/v1/users/me", Some(&t)).await.0, 200);
    let deleted_at = std::time::Instant::now();
    assert_eq!(app.delete("/v1/users/me", Some(&t)).await.0, 204);
    assert_eq!(
        app.get("/v1/relationships", Some(&t)).await.0,
        401,
        "at once here"
    );
    let bound = inside_gateway::auth::ALIVE_FOR + std::time::Duration::from_millis(500);
    loop {
        let (st, _) = other.get("/v1/relationships", Some(&t)).await;
        if st == 401 {
            break;
        }
        assert_eq!(st, 200);
        assert!(
            deleted_at.elapsed() < bound,
            "still accepted after {bound:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
