//! Failures of the distributed mode that used to pass silently, on real NATS, Redis and
//! PostgreSQL: a gateway with NATS and no Redis refuses to start (each process would keep its
//! own limits); live audio with no worker able to attribute it is refused with
//! `audio_unavailable`; `/livez` and `/readyz` follow the gateway's dependencies; and the
//! members of a gateway process killed with SIGKILL leave the others' presence within the
//! documented bound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::audio::{load_model, pcm, voice};
use common::process::GatewayProcess;
use common::worker::start_worker;
use common::ws::Ws;
use common::*;
use inside_testkit::nats_server::NatsServer;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(10);
const NATS: &str = "nats://127.0.0.1:4222";
const REDIS: &str = "redis://127.0.0.1:6379";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_nats_and_no_redis_refuses_to_start_naming_both_settings() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        (
            "DATABASE_URL",
            format!("sqlite://{}/inside.db", dir.path().display()),
        ),
        ("DATA_DIR", dir.path().display().to_string()),
        ("NATS_URL", NATS.to_string()),
        ("BIND_ADDR", "127.0.0.1:0".to_string()),
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .current_dir(dir.path())
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the gateway binary runs");
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway started with NATS_URL and no REDIS_URL");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    for name in ["NATS_URL", "REDIS_URL", "ALLOW_PROCESS_LOCAL_LIMITS"] {
        assert!(stderr.contains(name), "{name} not named: {stderr}");
    }

    // per-process limits, asked for: it serves
    let mut env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    env.insert("ALLOW_PROCESS_LOCAL_LIMITS".into(), "true".into());
    let prefix = inside_bus::Subjects::new(format!("t{}", uuid::Uuid::new_v4().simple()));
    env.insert("NATS_SUBJECT_PREFIX".into(), prefix.prefix().to_string());
    // the streams it creates go when the test ends
    let _streams = inside_testkit::scratch::Leftovers::default()
        .with_stream(NATS, prefix.jobs_stream())
        .with_stream(NATS, prefix.events_stream());
    let g = GatewayProcess::start(&env).await;
    let (s, health) = g.get("/readyz", None).await;
    assert_eq!(s, 200, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_start_is_refused_while_no_worker_can_attribute_it() {
    let g = spawn_app_with(Db::Postgres, &[("NATS_URL", NATS), ("REDIS_URL", REDIS)]).await;
    let (a, _b, rid) = g.couple().await;
    let sid = g.start_session(&a, &rid).await;
    let (s, health) = g.get("/health", None).await;
    assert_eq!(
        (s, &health["speaker_available"]),
        (200, &json!(false)),
        "{health}"
    );

    let mut wa = Ws::connect(g.addr, &sid, token(&a)).await;
    let pcm_start = json!({"codec": "pcm_s16le", "sample_rate": 16000, "channels": 1});
    wa.send("client.audio_start", pcm_start.clone()).await;
    let err = wa.expect("server.error", T).await;
    assert_eq!(err["payload"]["code"], "audio_unavailable", "{err}");
    // nothing was started: audio bytes are refused as such
    wa.send_binary(&pcm(&voice(0, 0.2))).await;
    let err = wa.expect("server.error", T).await;
    assert_eq!(err["payload"]["code"], "unexpected_binary", "{err}");

    // a worker with a model comes: found within the half second a "no" is kept
    let stop = CancellationToken::new();
    let w = start_worker(
        &g.env,
        1,
        Some(std::sync::Arc::new(load_model())),
        stop.clone(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, health) = g.get("/health", None).await;
    assert_eq!(health["speaker_available"], true, "{health}");
    wa.send("client.audio_start", pcm_start.clone()).await;
    for chunk in pcm(&voice(0, 3.0)).chunks(3200) {
        wa.send_binary(chunk).await;
    }
    wa.send("client.audio_stop", json!({})).await;
    let ev = wa.expect("server.speaker", Duration::from_secs(20)).await;
    assert_eq!(ev["payload"]["start_ms"], 0, "{ev}");

    // and goes: noticed within the two seconds a "yes" is kept
    stop.cancel();
    w.stopped().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    wa.send("client.audio_start", pcm_start).await;
    let err = wa.expect("server.error", T).await;
    assert_eq!(err["payload"]["code"], "audio_unavailable", "{err}");
    let (s, health) = g.get("/health", None).await;
    assert_eq!(
        (s, &health["speaker_available"]),
        (200, &json!(false)),
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_naming_the_bus_while_livez_stays_up() {
    let nats = NatsServer::with_jetstream();
    let url = nats.url();
    let g = spawn_app_with(Db::Sqlite, &[("NATS_URL", &url), ("REDIS_URL", REDIS)]).await;
    let (s, ready) = g.get("/readyz", None).await;
    assert_eq!(s, 200, "{ready}");
    for dep in ["database", "limiter", "bus", "jetstream"] {
        assert_eq!(ready["checks"][dep], "ok", "{dep}: {ready}");
    }
    assert_eq!(g.get("/livez", None).await.0, 200);

    drop(nats);
    let deadline = Instant::now() + T;
    loop {
        let (s, ready) = g.get("/readyz", None).await;
        if s == 503 {
            assert!(
                ready["checks"]["bus"]
                    .as_str()
                    .unwrap()
                    .starts_with("error"),
                "{ready}"
            );
            assert_eq!(ready["checks"]["database"], "ok", "{ready}");
            break;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {s}: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(g.get("/health", None).await.0, 503);
    assert_eq!(g.get("/livez", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_a_killed_gateway_process_leaves_the_others_presence_within_the_ttl() {
    // heartbeat 0.5 s, TTL 2 s: the bound is TTL + one sweep (0.2 s) = 2.2 s
    let (heartbeat, ttl) = (0.5, 2.0);
    let bound = Duration::from_secs_f64(ttl + 0.2);
    let setup = spawn_app_with(
        Db::Postgres,
        &[
            ("NATS_URL", NATS),
            ("REDIS_URL", REDIS),
            ("PRESENCE_HEARTBEAT_SECONDS", &heartbeat.to_string()),
            ("PRESENCE_TTL_SECONDS", &ttl.to_string()),
        ],
    )
    .await;
    let (a, b, rid) = setup.couple().await;
    let sid = setup.start_session(&a, &rid).await;
    let (env, _data) = setup.stop().await;
    let g1 = GatewayProcess::start(&env).await;
    let mut g2 = GatewayProcess::start(&env).await;
    let mut wa = Ws::connect(g1.addr, &sid, token(&a)).await;
    let _wb = Ws::connect(g2.addr, &sid, token(&b)).await;
    wa.expect_participants(&[uid(&a), uid(&b)], T).await;

    // alive, b stays listed however long: heartbeats refresh it (three TTLs here)
    for state in wa
        .collect("server.session_state", Duration::from_secs_f64(3.0 * ttl))
        .await
    {
        let listed = state["payload"]["participants"].as_array().unwrap();
        assert_eq!(listed.len(), 2, "a live member was dropped: {state}");
    }

    // SIGKILL: g2 says nothing more; a sees b leave within the bound
    g2.kill();
    let killed = Instant::now();
    wa.expect_participants(&[uid(&a)], bound + Duration::from_secs(3))
        .await;
    let took = killed.elapsed();
    assert!(
        took <= bound + Duration::from_millis(500),
        "b left after {took:?}, over the documented {bound:?}:\n{}",
        g1.log()
    );
}
