//! The realtime WebSocket on the embedded default (in-process bus and
//! pipeline): auth before the upgrade, ping/pong, bad frames, nudges to the
//! sender only, session state, live pokes, finalize closing with 4409.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::ws::{try_connect, ws_url, Ws};
use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);

both_databases!(
    sockets_are_refused_before_the_upgrade,
    ping_pong_and_bad_frames_keep_the_socket_open,
    nudges_go_to_the_sender_only_and_state_lists_both,
    pokes_arrive_live_and_finalize_closes_with_4409,
);

/// A couple with an active session: (a, b, sid).
pub async fn session(app: &TestApp) -> (Value, Value, String) {
    let (a, b, rid) = app.couple().await;
    let (s, body) = app
        .post(
            "/v1/sessions",
            Some(token(&a)),
            json!({"relationship_id": rid}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    (a, b, body["id"].as_str().unwrap().to_string())
}

async fn sockets_are_refused_before_the_upgrade(db: Db) {
    let app = spawn_app(db).await;
    let (a, _b, sid) = session(&app).await;
    let stranger = app.signup(&unique_email("s")).await;
    let bad = try_connect(&ws_url(app.addr, &sid, "not-a-token"), None).await;
    assert_eq!(bad.err(), Some(401));
    let missing = try_connect(&format!("ws://{}/v1/sessions/{sid}/ws", app.addr), None).await;
    assert_eq!(missing.err(), Some(401));
    let unknown = try_connect(
        &ws_url(app.addr, &uuid::Uuid::new_v4().to_string(), token(&a)),
        None,
    )
    .await;
    assert_eq!(unknown.err(), Some(404));
    let outsider = try_connect(&ws_url(app.addr, &sid, token(&stranger)), None).await;
    assert_eq!(outsider.err(), Some(403));
    let foreign = try_connect(
        &ws_url(app.addr, &sid, token(&a)),
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(foreign.err(), Some(403));
    let local = try_connect(
        &ws_url(app.addr, &sid, token(&a)),
        Some("http://localhost:3000"),
    )
    .await;
    assert!(local.is_ok());
}

async fn ping_pong_and_bad_frames_keep_the_socket_open(db: Db) {
    let app = spawn_app(db).await;
    let (a, _b, sid) = session(&app).await;
    let mut ws = Ws::connect(app.addr, &sid, token(&a)).await;
    ws.send("client.ping", json!({})).await;
    let pong = ws.expect("server.pong", T).await;
    assert_eq!(pong["sid"], sid);
    ws.send(
        "client.feature_frame",
        json!({"timestamp_ms": 1, "speaking_rate": -1.0, "overlap_ratio": 0.1}),
    )
    .await;
    let err = ws.expect("server.error", T).await;
    assert_eq!(err["payload"]["code"], "invalid_frame", "{err}");
    ws.send(
        "client.feature_frame",
        json!({"timestamp_ms": 1, "speaking_rate": 1.0, "overlap_ratio": 2.0}),
    )
    .await;
    assert_eq!(
        ws.expect("server.error", T).await["payload"]["code"],
        "invalid_frame"
    );
    ws.send_text("{nope").await;
    assert_eq!(
        ws.expect("server.error", T).await["payload"]["code"],
        "malformed_message"
    );
    ws.send("client.ping", json!({})).await;
    ws.expect("server.pong", T).await;
    // A stream of bad messages is closed with 1008.
    for _ in 0..30 {
        if !ws.try_send_text("{nope").await {
            break;
        }
    }
    assert_eq!(ws.close_code(T).await, Some(1008));
}

async fn nudges_go_to_the_sender_only_and_state_lists_both(db: Db) {
    let app = spawn_app(db).await;
    let (a, b, sid) = session(&app).await;
    let mut wa = Ws::connect(app.addr, &sid, token(&a)).await;
    wa.expect_participants(&[uid(&a)], T).await;
    let mut wb = Ws::connect(app.addr, &sid, token(&b)).await;
    wa.expect_participants(&[uid(&a), uid(&b)], T).await;
    wb.expect_participants(&[uid(&a), uid(&b)], T).await;
    wa.frame(1.0, 1).await; // calm: no nudge
    wa.frame(6.0, 42).await;
    let nudge = wa.expect("server.nudge", T).await;
    assert_eq!(nudge["payload"]["nudge_type"], "SLOW_DOWN", "{nudge}");
    assert_eq!(nudge["payload"]["frame_seq"], 42);
    assert_eq!(nudge["payload"]["frame_timestamp_ms"], 1042);
    assert!(wb
        .collect("server.nudge", Duration::from_millis(300))
        .await
        .is_empty());
    // Within the window a second over-threshold frame is not nudged.
    wa.frame(6.0, 43).await;
    assert!(wa
        .collect("server.nudge", Duration::from_millis(300))
        .await
        .is_empty());
    drop(wb);
    wa.expect_participants(&[uid(&a)], T).await;
}

async fn pokes_arrive_live_and_finalize_closes_with_4409(db: Db) {
    let app = spawn_app(db).await;
    let (a, b, sid) = session(&app).await;
    let rid = app
        .get(&format!("/v1/sessions/{sid}"), Some(token(&a)))
        .await
        .1["relationship_id"]
        .clone();
    let mut wb = Ws::connect(app.addr, &sid, token(&b)).await;
    wb.expect_participants(&[uid(&b)], T).await;
    let (s, poke) = app
        .post(
            "/v1/pokes",
            Some(token(&a)),
            json!({"relationship_id": rid, "kind": "hug"}),
        )
        .await;
    assert_eq!(s, 201, "{poke}");
    let got = wb.expect("server.poke", T).await;
    assert_eq!(got["payload"]["id"], poke["id"]);
    let (s, _) = app.finalize(&sid, Some(token(&a))).await;
    assert_eq!(s, 202);
    assert_eq!(wb.close_code(T).await, Some(4409));
    let mut again = Ws::connect(app.addr, &sid, token(&b)).await;
    assert_eq!(again.close_code(T).await, Some(4409));
}
