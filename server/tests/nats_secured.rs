//! Gateways and a worker on a nats-server running the shipped configuration
//! (`deploy/nats/nats-server.conf`): two `gateway` processes connect as `gateway`, the worker as
//! `worker`, and a whole session works (enrolment through the uploads bucket, presence, frames
//! to nudges, audio to speaker events, a poke across gateways, finalize, the JetStream report)
//! without the server refusing anything either of them does: the permissions cover the code.
//! And the read-only `researcher` sees a session only when every member agreed to research use.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::audio::{load_model, pcm, voice, wav};
use common::process::GatewayProcess;
use common::worker::start_worker;
use common::ws::Ws;
use common::*;
use inside_testkit::nats_server::{NatsServer, GATEWAY, RESEARCHER, WORKER};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(10);
const REDIS: &str = "redis://127.0.0.1:6379";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_processes_and_a_worker_run_a_session_on_the_shipped_nats_configuration() {
    let nats = NatsServer::shipped();
    let mut extra: Vec<(&str, String)> = nats.env(GATEWAY);
    extra.push(("REDIS_URL", REDIS.into()));
    extra.push(("SPEAKER_MATCH_THRESHOLD", "-1".into()));
    extra.push(("NUDGE_RATE_LIMIT_SECONDS", "0".into()));
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // an in-process gateway (also as `gateway`) prepares database, users and session
    let setup = spawn_app_with(Db::Postgres, &extra).await;
    let (a, b, rid) = setup.couple().await;
    let sid = setup.start_session(&a, &rid).await;
    let (env, _data) = setup.stop().await;
    let g1 = GatewayProcess::start(&env).await;
    let g2 = GatewayProcess::start(&env).await;
    let mut worker_env = env.clone();
    worker_env.extend(
        nats.env(WORKER)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v)),
    );
    let stop = CancellationToken::new();
    let w = start_worker(
        &worker_env,
        1,
        Some(std::sync::Arc::new(load_model())),
        stop.clone(),
    )
    .await;

    // Enrolment: a request on `embed`, answered on an inbox; 40 s of WAV (1.3 MB) is over
    // max_payload and travels through the uploads bucket.
    for (pair, which, seconds) in [(&a, 0, 4.0), (&b, 1, 40.0)] {
        let res = g1.put_voiceprint(pair, wav(&voice(which, seconds))).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 200, "{body}\n{}", nats.log());
    }

    // presence across gateways (state), a frame to a nudge (frames → worker → nudges)
    let mut wa = Ws::connect(g1.addr, &sid, token(&a)).await;
    let mut wb = Ws::connect(g2.addr, &sid, token(&b)).await;
    wa.expect_participants(&[uid(&a), uid(&b)], T).await;
    wb.expect_participants(&[uid(&a), uid(&b)], T).await;
    wa.frame(6.0, 1).await;
    let nudge = wa.expect("server.nudge", T).await;
    assert_eq!(nudge["payload"]["frame_seq"], 1, "{nudge}");

    // audio to a speaker event on both phones (audio → worker → speakers)
    wa.send(
        "client.audio_start",
        json!({"codec": "pcm_s16le", "sample_rate": 16000, "channels": 1}),
    )
    .await;
    for chunk in pcm(&voice(0, 3.0)).chunks(3200) {
        wa.send_binary(chunk).await;
    }
    wa.send("client.audio_stop", json!({})).await;
    for ws in [&mut wa, &mut wb] {
        let ev = ws.expect("server.speaker", Duration::from_secs(20)).await;
        assert_eq!(ev["payload"]["user_id"], uid(&a), "{ev}");
    }

    // a poke through gateway 1 reaches b on gateway 2 (pokes)
    let (s, poke) = g1
        .post(
            "/v1/pokes",
            Some(token(&a)),
            json!({"relationship_id": rid, "kind": "hug"}),
        )
        .await;
    assert_eq!(s, 201, "{poke}");
    assert_eq!(
        wb.expect("server.poke", T).await["payload"]["id"],
        poke["id"]
    );

    // finalize: `finalized` closes both gateways' sockets, the JetStream job writes the report
    let (s, _) = g2.finalize(&sid, Some(token(&b))).await;
    assert_eq!(s, 202);
    assert_eq!(wa.close_code(T).await, Some(4409));
    assert_eq!(wb.close_code(T).await, Some(4409));
    let report = g1.wait_report(&sid, token(&a)).await;
    assert!(report["frames"].as_u64().unwrap() >= 1, "{report}");

    stop.cancel();
    w.stopped().await;
    let refused = nats.violations();
    assert!(
        refused.is_empty(),
        "the shipped permissions refused what gateway and worker do:\n{}\n\ngateway 1:\n{}",
        refused.join("\n"),
        g1.log()
    );
}

/// The next research copy's (subject, frame seq), if one comes within `within`.
async fn next_copy(sub: &mut async_nats::Subscriber, within: Duration) -> Option<(String, i64)> {
    use futures::StreamExt;
    let msg = tokio::time::timeout(within, sub.next()).await.ok()??;
    let frame: Value = serde_json::from_slice(&msg.payload).unwrap();
    Some((msg.subject.to_string(), frame["seq"].as_i64().unwrap_or(-1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_researcher_reads_only_sessions_whose_members_all_agreed_and_publishes_nothing() {
    let nats = NatsServer::shipped();
    let mut extra: Vec<(&str, String)> = nats.env(GATEWAY);
    extra.push(("REDIS_URL", REDIS.into()));
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app_with(Db::Postgres, &extra).await;
    let prefix = app.env["NATS_SUBJECT_PREFIX"].clone();
    let (a, b, agreed_rid) = app.couple().await;
    let (c, _d, partial_rid) = app.couple().await;
    app.set_research(&agreed_rid, &a, "granted").await;
    app.set_research(&agreed_rid, &b, "granted").await;
    app.set_research(&partial_rid, &c, "granted").await; // d never agrees
    let agreed = app.start_session(&a, &agreed_rid).await;
    let partial = app.start_session(&c, &partial_rid).await;

    let researcher = nats.connect(RESEARCHER).await;
    let mut copies = researcher
        .subscribe(format!("{prefix}.v1.research.>"))
        .await
        .unwrap();
    let mut wa = Ws::connect(app.addr, &agreed, token(&a)).await;
    let mut wc = Ws::connect(app.addr, &partial, token(&c)).await;
    wc.expect("server.session_state", T).await;

    // The researcher may not publish, so it cannot confirm its subscription: frames of the
    // agreed session until one arrives prove it live.
    let want = format!("{prefix}.v1.research.frames.{agreed}.{}", uid(&a));
    let mut live = false;
    for seq in 1..=50 {
        wa.frame(1.0, seq).await;
        if let Some((subject, _)) = next_copy(&mut copies, Duration::from_millis(200)).await {
            assert_eq!(subject, want);
            live = true;
            break;
        }
    }
    assert!(
        live,
        "no research copy of the agreed session reached the researcher"
    );
    while next_copy(&mut copies, Duration::from_millis(300))
        .await
        .is_some()
    {}

    // The partial session streams, then the agreed one once more. One gateway connection
    // publishes both in that order, so a copy of the partial session would arrive first.
    for seq in 1..=20 {
        wc.frame(1.0, seq).await;
    }
    wc.send("client.ping", json!({})).await;
    wc.expect("server.pong", T).await;
    wa.frame(1.0, 1000).await;
    loop {
        let (subject, seq) = next_copy(&mut copies, T)
            .await
            .expect("the agreed session's frame 1000 never reached the researcher");
        assert!(
            !subject.contains(&partial),
            "a frame of a session whose member did not agree reached the researcher: {subject}"
        );
        if seq == 1000 {
            break;
        }
    }

    // Nor may it forge what a phone shows: a nudge for c is refused by the server.
    researcher
        .publish(
            format!("{prefix}.v1.nudges.{partial}.{}", uid(&c)),
            r#"{"type":"SLOW_DOWN","message":"forged","intensity":3}"#.into(),
        )
        .await
        .unwrap();
    researcher.flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + T;
    while !nats
        .violations()
        .iter()
        .any(|v| v.contains("Publish Violation") && v.contains("nudges"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never refused the researcher's nudge:\n{}",
            nats.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(wc
        .collect("server.nudge", Duration::from_millis(500))
        .await
        .is_empty());
}
