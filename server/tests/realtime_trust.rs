//! Consent and connections while a session runs, through real HTTP, WebSocket and TCP:
//! withdrawing consent closes the member's sockets (4403, on every gateway), drops the
//! rest of their audio stream and keeps them out of the report; joining needs every
//! member's consent; an expiring token closes its socket (4401); socket caps per user
//! and per address (429); oversized messages (1009) and floods (1008) get a close frame;
//! presence costs the session's members, not its sockets; slow-header, stalled and
//! over-cap TCP connections are cut.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::ws::{try_connect, ws_url, Ws};
use common::*;
use futures::SinkExt;
use inside_schemas::{EventBody, FeatureFrame, Nudge, NudgeType};
use inside_store::events::SessionEvent;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const T: Duration = Duration::from_secs(5);
const NATS: &str = "nats://127.0.0.1:4222";
const REDIS: &str = "redis://127.0.0.1:6379";
const SECRET: &str = "test-secret-key-0123456789abcdef0123";

both_databases!(
    withdrawing_consent_closes_the_members_sockets_with_4403,
    a_member_without_consent_is_left_out_of_the_report,
);

/// A couple with an active session: (a, b, rid, sid).
async fn session(app: &TestApp) -> (Value, Value, String, String) {
    let (a, b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    (a, b, rid, sid)
}

async fn withdrawing_consent_closes_the_members_sockets_with_4403(db: Db) {
    let app = spawn_app(db).await;
    let (a, b, rid, sid) = session(&app).await;
    let mut wa = Ws::connect(app.addr, &sid, token(&a)).await;
    let mut wb = Ws::connect(app.addr, &sid, token(&b)).await;
    wa.expect_participants(&[uid(&a), uid(&b)], T).await;
    app.set_consent(&rid, &b, "revoked").await;
    assert_eq!(wb.close_code(T).await, Some(4403));
    // the other member stays, and sees b leave
    wa.expect_participants(&[uid(&a)], T).await;
    wa.send("client.ping", json!({})).await;
    wa.expect("server.pong", T).await;
    // joining needs every member's consent: neither b nor a may open a new socket
    for who in [&b, &a] {
        let refused = try_connect(&ws_url(app.addr, &sid, token(who)), None).await;
        assert_eq!(refused.err(), Some(403));
        let (s, body) = app
            .get(&format!("/v1/sessions/{sid}/ws"), Some(token(who)))
            .await;
        assert_eq!(s, 403);
        assert_error(&body, "consent_required");
    }
    // granted again, b may join again
    app.set_consent(&rid, &b, "granted").await;
    let mut again = Ws::connect(app.addr, &sid, token(&b)).await;
    again.send("client.ping", json!({})).await;
    again.expect("server.pong", T).await;
}

fn frame(ts: i64, rate: f64) -> EventBody {
    EventBody::Frame(FeatureFrame {
        timestamp_ms: ts,
        speaking_rate: rate,
        overlap_ratio: 0.0,
        seq: None,
        received_ms: None,
    })
}

async fn a_member_without_consent_is_left_out_of_the_report(db: Db) {
    let app = spawn_app(db).await;
    let (a, b, rid, sid) = session(&app).await;
    let (ua, ub): (Uuid, Uuid) = (uid(&a).parse().unwrap(), uid(&b).parse().unwrap());
    let sid_u: Uuid = sid.parse().unwrap();
    let mut events: Vec<SessionEvent> = Vec::new();
    for (user, n) in [(ua, 10), (ub, 30)] {
        events.extend((0..n).map(|i| SessionEvent {
            session_id: sid_u,
            user_id: Some(user),
            body: frame(i * 500, 4.0),
        }));
        events.push(SessionEvent {
            session_id: sid_u,
            user_id: Some(user),
            body: EventBody::Nudge(Nudge {
                nudge_type: NudgeType::SlowDown,
                intensity: 2,
                message: "m".into(),
                frame_seq: None,
                frame_timestamp_ms: Some(500),
            }),
        });
    }
    app.state.store.append_events(&events).await.unwrap();
    app.set_consent(&rid, &b, "revoked").await;
    let (s, fin) = app.finalize(&sid, Some(token(&a))).await;
    assert_eq!(s, 202, "{fin}");
    let report = app.wait_report(&sid, token(&a)).await;
    let speakers = report["speakers"].as_array().unwrap();
    assert_eq!(speakers.len(), 1, "{report}");
    assert_eq!(speakers[0]["user_id"], ua.to_string());
    assert_eq!(speakers[0]["talk_share"], 1.0);
    assert_eq!(report["frames"], 10, "{report}");
    assert_eq!(report["nudges"]["total"], 1, "{report}");
    assert!(!report.to_string().contains(&ub.to_string()), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawing_consent_closes_sockets_on_every_gateway() {
    let one = spawn_app_with(Db::Postgres, &[("NATS_URL", NATS), ("REDIS_URL", REDIS)]).await;
    let two = one.another_gateway().await;
    let (a, b, rid, sid) = session(&one).await;
    let mut wa = Ws::connect(one.addr, &sid, token(&a)).await;
    let mut wb = Ws::connect(two.addr, &sid, token(&b)).await;
    wb.expect_participants(&[uid(&a), uid(&b)], T).await;
    // withdrawn through the gateway that does not hold b's socket
    one.set_consent(&rid, &b, "revoked").await;
    assert_eq!(wb.close_code(T).await, Some(4403));
    wa.expect_participants(&[uid(&a)], T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_members_audio_stops_with_the_withdrawal() {
    use futures::StreamExt;
    let app = spawn_app_with(Db::Postgres, &[("NATS_URL", NATS), ("REDIS_URL", REDIS)]).await;
    let (_a, b, rid, sid) = session(&app).await;
    let nc = async_nats::connect(NATS).await.unwrap();
    let prefix = &app.env["NATS_SUBJECT_PREFIX"];
    // a worker with a model is there (the gateway asks before taking audio); it answers only
    // the probe, so the test's own subscription is the one that sees the segments
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_on_drop = stop.clone().drop_guard();
    let bus = inside_bus::Bus::connect_nats(
        NATS,
        "test-prober",
        inside_bus::Subjects::new(prefix.clone()),
    )
    .await
    .unwrap();
    let probes = bus
        .queue_subscribe(bus.subjects().capabilities(), inside_bus::WORKERS)
        .await
        .unwrap();
    bus.flush().await.unwrap();
    tokio::spawn(inside_workers::pipeline::run_capabilities(
        bus, probes, stop,
    ));
    let mut audio = nc
        .subscribe(format!("{prefix}.v1.audio.{sid}.{}", uid(&b)))
        .await
        .unwrap();
    nc.flush().await.unwrap();
    let mut wb = Ws::connect(app.addr, &sid, token(&b)).await;
    wb.send(
        "client.audio_start",
        json!({"codec": "pcm_s16le", "sample_rate": 16000, "channels": 1}),
    )
    .await;
    // 1.2 s: under one 1.5 s segment, so nothing is published until the stream ends
    let tone: Vec<f32> = (0..19_200).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
    for chunk in common::audio::pcm(&tone).chunks(3200) {
        wb.send_binary(chunk).await;
    }
    wb.send("client.ping", json!({})).await;
    wb.expect("server.pong", T).await;
    app.set_consent(&rid, &b, "revoked").await;
    assert_eq!(wb.close_code(T).await, Some(4403));
    // ending the stream would publish its last partial segment: not after a withdrawal
    let late = tokio::time::timeout(Duration::from_secs(2), audio.next()).await;
    assert!(late.is_err(), "audio published after the withdrawal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_closes_its_socket_with_4401() {
    let app = spawn_app_with(Db::Sqlite, &[("SECRET_KEY", SECRET)]).await;
    let (a, _b, _rid, sid) = session(&app).await;
    let keys = inside_gateway::auth::TokenKeys::new(
        SECRET.as_bytes(),
        Duration::from_secs(3),
        Duration::from_secs(60),
    );
    let short = keys.issue(uid(&a).parse().unwrap()).unwrap();
    let opened = tokio::time::Instant::now();
    let mut ws = Ws::connect(app.addr, &sid, &short).await;
    ws.send("client.ping", json!({})).await;
    ws.expect("server.pong", T).await;
    assert_eq!(ws.close_code(T).await, Some(4401));
    // at the expiry (whole seconds), not at once
    assert!(
        opened.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        opened.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_over_the_per_user_cap_are_refused_with_429() {
    let app = spawn_app_with(Db::Sqlite, &[("WEBSOCKET_MAX_SOCKETS_PER_USER", "2")]).await;
    let (a, b, _rid, sid) = session(&app).await;
    let first = Ws::connect(app.addr, &sid, token(&a)).await;
    let _second = Ws::connect(app.addr, &sid, token(&a)).await;
    let over = try_connect(&ws_url(app.addr, &sid, token(&a)), None).await;
    assert_eq!(over.err(), Some(429));
    let (s, body) = app
        .get(&format!("/v1/sessions/{sid}/ws"), Some(token(&a)))
        .await;
    assert_eq!(s, 429);
    assert_error(&body, "too_many_sockets");
    // another user is not affected
    Ws::connect(app.addr, &sid, token(&b)).await;
    // a closed socket frees its place
    drop(first);
    let mut freed = false;
    for _ in 0..50 {
        if try_connect(&ws_url(app.addr, &sid, token(&a)), None)
            .await
            .is_ok()
        {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the closed socket's place was never freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_over_the_per_client_cap_are_refused_with_429() {
    let app = spawn_app_with(
        Db::Sqlite,
        &[
            ("WEBSOCKET_MAX_SOCKETS_PER_CLIENT", "2"),
            ("HTTP_MAX_CONNECTIONS_PER_CLIENT", "50"),
        ],
    )
    .await;
    let (a, b, _rid, sid) = session(&app).await;
    let _one = Ws::connect(app.addr, &sid, token(&a)).await;
    let _two = Ws::connect(app.addr, &sid, token(&b)).await;
    // a third user from the same address
    let (c, _d, _rid2, sid2) = session(&app).await;
    let over = try_connect(&ws_url(app.addr, &sid2, token(&c)), None).await;
    assert_eq!(over.err(), Some(429));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_closed_with_1009() {
    let app = spawn_app(Db::Sqlite).await;
    let (a, _b, _rid, sid) = session(&app).await;
    let mut ws = Ws::connect(app.addr, &sid, token(&a)).await;
    let big = "x".repeat(70 * 1024);
    let _ = ws.stream.send(Message::Text(big.into())).await;
    assert_eq!(ws.close_code(T).await, Some(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_closed_with_1008() {
    let app = spawn_app(Db::Sqlite).await;
    let (a, _b, _rid, sid) = session(&app).await;
    let mut ws = Ws::connect(app.addr, &sid, token(&a)).await;
    let frame = json!({"type": "client.feature_frame", "sid": sid,
        "payload": {"timestamp_ms": 1, "speaking_rate": 1.0, "overlap_ratio": 0.0}})
    .to_string();
    for _ in 0..6_000 {
        if ws
            .stream
            .feed(Message::Text(frame.clone().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = ws.stream.flush().await;
    assert_eq!(ws.close_code(T).await, Some(1008));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_further_sockets_do_not_broadcast_presence() {
    let app = spawn_app_with(Db::Sqlite, &[("WEBSOCKET_MAX_SOCKETS_PER_USER", "0")]).await;
    let (a, b, _rid, sid) = session(&app).await;
    let mut wb = Ws::connect(app.addr, &sid, token(&b)).await;
    wb.expect_participants(&[uid(&b)], T).await;
    let mut sockets = Vec::new();
    for _ in 0..50 {
        sockets.push(Ws::connect(app.addr, &sid, token(&a)).await);
    }
    // each further socket still learns who is there
    let last = sockets.last_mut().unwrap();
    last.expect_participants(&[uid(&a), uid(&b)], T).await;
    // b heard of a once: a's first socket changed the list, the 49 others did not
    let states = wb
        .collect("server.session_state", Duration::from_millis(500))
        .await;
    assert_eq!(states.len(), 1, "{states:?}");
    // nor does closing all but one of them
    sockets.truncate(1);
    let states = wb
        .collect("server.session_state", Duration::from_millis(500))
        .await;
    assert!(states.is_empty(), "{states:?}");
    drop(sockets);
    wb.expect_participants(&[uid(&b)], T).await;
}

/// Reads until the server closes the connection; false if it is still open after `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_is_cut_at_the_header_read_timeout() {
    let app = spawn_app_with(Db::Sqlite, &[("HTTP_HEADER_READ_TIMEOUT", "0.5")]).await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHo").await.unwrap();
    assert!(closed_within(&mut tcp, Duration::from_secs(3)).await);
    // nothing sent at all
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
    // a kept-alive connection is closed when it sends no next request
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut kept, Duration::from_secs(3)).await);
    // a prompt client is served
    let (s, _) = app.get("/health", None).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_cut_at_the_idle_timeout() {
    let app = spawn_app_with(Db::Sqlite, &[("HTTP_IDLE_TIMEOUT", "0.5")]).await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(
        b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\"",
    )
    .await
    .unwrap();
    assert!(closed_within(&mut tcp, Duration::from_secs(3)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_client_cap_are_closed_at_once() {
    let app = spawn_app_with(
        Db::Sqlite,
        &[
            ("HTTP_MAX_CONNECTIONS_PER_CLIENT", "3"),
            ("WEBSOCKET_MAX_SOCKETS_PER_CLIENT", "1"),
        ],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    let mut over = TcpStream::connect(app.addr).await.unwrap();
    assert!(closed_within(&mut over, Duration::from_secs(1)).await);
    // the held ones still work
    held[0]
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    held[0].read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // and a freed place is taken again
    held.truncate(1);
    let mut served = false;
    for _ in 0..50 {
        let mut tcp = TcpStream::connect(app.addr).await.unwrap();
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        let _ = tcp.read_to_string(&mut reply).await;
        if reply.starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served);
}
