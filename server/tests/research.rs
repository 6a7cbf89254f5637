//! Research use and what the bus is trusted with: the per-member research flag, research copies
//! published only while every member agreed (on NATS and on the in-process bus), forged bus
//! messages refused by workers and gateways, and a write batch that keeps the good events when
//! one names an unknown session.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::worker::start_worker;
use common::ws::Ws;
use common::*;
use futures::StreamExt;
use inside_schemas::{EventBody, FeatureFrame};
use inside_store::events::SessionEvent;
use inside_workers::pipeline::EventWriter;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const T: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does not arrive.
const QUIET: Duration = Duration::from_millis(700);
const NATS: &str = "nats://127.0.0.1:4222";
const REDIS: &str = "redis://127.0.0.1:6379";

both_databases!(
    research_use_is_changed_only_by_the_member_themself,
    a_write_batch_with_an_unknown_session_keeps_the_good_events,
    research_copies_on_the_in_process_bus_need_every_member,
    a_finalize_reaches_researchers_only_where_every_member_agreed,
    forged_frames_on_the_in_process_bus_are_refused,
);

async fn research_use_is_changed_only_by_the_member_themself(db: Db) {
    let app = spawn_app(db).await;
    let (a, b, rid) = app.couple().await;
    let stranger = app.signup(&unique_email("s")).await;
    // off until the member decides
    let (_, list) = app.get("/v1/relationships", Some(token(&a))).await;
    for m in list[0]["members"].as_array().unwrap() {
        assert_eq!(m["research_consent"], "pending", "{m}");
    }
    let rel = app.set_research(&rid, &b, "granted").await;
    assert_eq!(rel["members"][1]["research_consent"], "granted");
    assert_eq!(rel["members"][0]["research_consent"], "pending");
    assert_eq!(rel["members"][1]["consent"], "granted", "consent untouched");
    // another member may not decide for b
    let path = format!("/v1/relationships/{rid}/research/{}", uid(&b));
    let (s, body) = app
        .put(&path, Some(token(&a)), json!({"status": "revoked"}))
        .await;
    assert_eq!(s, 403, "{body}");
    assert_error(&body, "forbidden");
    // a non-member does not learn the relationship exists
    let (s, _) = app
        .put(&path, Some(token(&stranger)), json!({"status": "revoked"}))
        .await;
    assert_eq!(s, 404);
    let (s, _) = app
        .put(
            &format!("/v1/relationships/{}/research/{}", Uuid::new_v4(), uid(&b)),
            Some(token(&b)),
            json!({"status": "granted"}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = app
        .put(&path, Some(token(&b)), json!({"status": "pending"}))
        .await;
    assert_eq!(s, 422, "pending is not a choice");
    let (s, _) = app.put(&path, None, json!({"status": "granted"})).await;
    assert_eq!(s, 401);
    let rel = app.set_research(&rid, &b, "revoked").await;
    assert_eq!(rel["members"][1]["research_consent"], "revoked");
    let (_, list) = app.get("/v1/relationships", Some(token(&b))).await;
    assert_eq!(list[0]["members"][1]["research_consent"], "revoked");
    // documented
    let (_, doc) = app.get("/openapi.json", None).await;
    assert!(doc["paths"]["/v1/relationships/{rid}/research/{uid}"]["put"].is_object());
}

fn frame_event(sid: Uuid, user: Uuid, seq: i64) -> SessionEvent {
    SessionEvent {
        session_id: sid,
        user_id: Some(user),
        body: EventBody::Frame(FeatureFrame {
            timestamp_ms: seq * 100,
            speaking_rate: 1.0,
            overlap_ratio: 0.0,
            seq: Some(seq),
            received_ms: None,
        }),
    }
}

async fn a_write_batch_with_an_unknown_session_keeps_the_good_events(db: Db) {
    let app = spawn_app(db).await;
    let (a, b, rid) = app.couple().await;
    let sid: Uuid = app.start_session(&a, &rid).await.parse().unwrap();
    let (ua, ub): (Uuid, Uuid) = (uid(&a).parse().unwrap(), uid(&b).parse().unwrap());
    let batch = vec![
        frame_event(sid, ua, 1),
        frame_event(Uuid::new_v4(), ua, 2),
        frame_event(sid, ub, 3),
    ];
    // through the pipeline's writer: one batch, one flush
    let (writer, task) = EventWriter::start(app.state.store.clone());
    for e in batch.clone() {
        writer.record(e).await;
    }
    drop(writer);
    task.await.unwrap();
    let stored = app.state.store.session_events(sid).await.unwrap();
    assert_eq!(stored, vec![batch[0].clone(), batch[2].clone()]);
    // and the store says what it did
    let done = app.state.store.append_events(&batch).await.unwrap();
    assert_eq!((done.stored, done.dropped), (2, 1));
    assert_eq!(app.state.store.session_events(sid).await.unwrap().len(), 4);
}

/// A couple in a session, on `app`, with research use granted by the members in `granting`
/// (0: a, 1: b): (a, b, rid, sid).
async fn session_with_research(app: &Api, granting: &[usize]) -> (Value, Value, String, String) {
    let (a, b, rid) = app.couple().await;
    for &i in granting {
        app.set_research(&rid, [&a, &b][i], "granted").await;
    }
    let sid = app.start_session(&a, &rid).await;
    (a, b, rid, sid)
}

async fn research_copies_on_the_in_process_bus_need_every_member(db: Db) {
    let app = spawn_app(db).await;
    let bus = &app.state.bus;
    let mut research = bus.subscribe(bus.subjects().all_research()).await.unwrap();
    let (a, _b, _, both) = session_with_research(&app, &[0, 1]).await;
    let (c, _d, _, one) = session_with_research(&app, &[0]).await;
    let mut wc = Ws::connect(app.addr, &one, token(&c)).await;
    let mut wa = Ws::connect(app.addr, &both, token(&a)).await;
    wc.frame(1.0, 1).await;
    wc.expect("server.session_state", T).await;
    wa.frame(1.0, 2).await;
    let copy = tokio::time::timeout(T, research.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        copy.subject,
        bus.subjects()
            .research_frames(both.parse().unwrap(), uid(&a).parse().unwrap())
    );
    let frame: Value = serde_json::from_slice(&copy.payload).unwrap();
    assert_eq!(frame["seq"], 2);
    // c's session (d never agreed) published nothing there
    assert!(tokio::time::timeout(QUIET, research.next()).await.is_err());
}

async fn a_finalize_reaches_researchers_only_where_every_member_agreed(db: Db) {
    let app = spawn_app(db).await;
    let bus = &app.state.bus;
    let mut research = bus.subscribe(bus.subjects().all_research()).await.unwrap();
    let (a, _b, _, both) = session_with_research(&app, &[0, 1]).await;
    let (c, _d, _, one) = session_with_research(&app, &[0]).await;
    let (s, _) = app.finalize(&one, Some(token(&c))).await;
    assert_eq!(s, 202);
    let (s, _) = app.finalize(&both, Some(token(&a))).await;
    assert_eq!(s, 202);
    let end = tokio::time::timeout(T, research.next())
        .await
        .unwrap()
        .unwrap();
    // the first and only announcement is the agreed session's: `worker tap` ends on it
    assert_eq!(
        end.subject,
        bus.subjects().research_state(both.parse().unwrap())
    );
    let event: Value = serde_json::from_slice(&end.payload).unwrap();
    assert_eq!(event, json!({"event": "finalized"}));
    assert!(tokio::time::timeout(QUIET, research.next()).await.is_err());
}

async fn forged_frames_on_the_in_process_bus_are_refused(db: Db) {
    let app = spawn_app(db).await;
    let bus = &app.state.bus;
    let (a, b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let stranger = app.signup(&unique_email("s")).await;
    let mut nudges = bus
        .subscribe(format!("{}.v1.nudges.>", bus.subjects().prefix()))
        .await
        .unwrap();
    let loud = json!({"timestamp_ms": 1, "speaking_rate": 9.0, "overlap_ratio": 0.0});
    let subjects = bus.subjects();
    let (sid_u, a_u): (Uuid, Uuid) = (sid.parse().unwrap(), uid(&a).parse().unwrap());
    for (subject, payload) in [
        (subjects.frames(Uuid::new_v4(), a_u), loud.to_string()),
        (
            subjects.frames(sid_u, uid(&stranger).parse().unwrap()),
            loud.to_string(),
        ),
        (subjects.frames(sid_u, a_u), "garbage".to_string()),
    ] {
        bus.publish(subject, payload.into()).await.unwrap();
    }
    assert!(
        tokio::time::timeout(QUIET, nudges.next()).await.is_err(),
        "a forged frame produced a nudge"
    );
    // a genuine frame still counts, and only it is in the report
    let mut wa = Ws::connect(app.addr, &sid, token(&a)).await;
    wa.frame(6.0, 1).await;
    assert_eq!(
        wa.expect("server.nudge", T).await["payload"]["frame_seq"],
        1
    );
    tokio::time::sleep(Duration::from_millis(200)).await; // the writer's batch
    let (s, _) = app.finalize(&sid, Some(token(&b))).await;
    assert_eq!(s, 202);
    let report = app.wait_report(&sid, token(&b)).await;
    assert_eq!(report["frames"], 1, "{report}");
}

/// The messages received within `QUIET`.
async fn drain(sub: &mut async_nats::Subscriber) -> Vec<async_nats::Message> {
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(QUIET, sub.next()).await {
        out.push(m);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn research_copies_on_nats_need_every_member_and_stop_on_revoke() {
    let app = spawn_app_with(Db::Postgres, &[("NATS_URL", NATS), ("REDIS_URL", REDIS)]).await;
    let prefix = app.env["NATS_SUBJECT_PREFIX"].clone();
    let researcher = async_nats::connect(NATS).await.unwrap();
    let mut research = researcher
        .subscribe(format!("{prefix}.v1.research.>"))
        .await
        .unwrap();
    researcher.flush().await.unwrap();

    let (a, b, rid, both) = session_with_research(&app, &[0, 1]).await;
    let (c, _d, _, one) = session_with_research(&app, &[0]).await;
    let mut wa = Ws::connect(app.addr, &both, token(&a)).await;
    let mut wc = Ws::connect(app.addr, &one, token(&c)).await;
    for seq in 1..=3 {
        wa.frame(1.0, seq).await;
        wc.frame(1.0, 100 + seq).await;
    }
    let got = drain(&mut research).await;
    let want = format!("{prefix}.v1.research.frames.{both}.{}", uid(&a));
    let seqs: Vec<i64> = got
        .iter()
        .map(|m| {
            assert_eq!(m.subject.as_str(), want, "only the agreed session's frames");
            serde_json::from_slice::<Value>(&m.payload).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);

    // b changes their mind: the copies stop at once on this gateway
    app.set_research(&rid, &b, "revoked").await;
    wa.frame(1.0, 4).await;
    assert!(drain(&mut research).await.is_empty());
    // and the internal path still works for the coaching itself
    wa.frame(6.0, 5).await;
    let stop = CancellationToken::new();
    let w = start_worker(&app.env, 1, None, stop.clone()).await;
    wa.frame(6.0, 6).await;
    let nudge = wa.expect("server.nudge", T).await;
    assert_eq!(nudge["payload"]["frame_seq"], 6, "{nudge}");
    stop.cancel();
    w.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_bus_messages_are_refused_by_workers_and_gateways() {
    let app = spawn_app_with(Db::Postgres, &[("NATS_URL", NATS), ("REDIS_URL", REDIS)]).await;
    let prefix = app.env["NATS_SUBJECT_PREFIX"].clone();
    let stop = CancellationToken::new();
    let w = start_worker(&app.env, 1, None, stop.clone()).await;
    let (a, b, rid) = app.couple().await;
    let sid = app.start_session(&a, &rid).await;
    let stranger = app.signup(&unique_email("s")).await;
    let mut wa = Ws::connect(app.addr, &sid, token(&a)).await;
    wa.expect("server.session_state", T).await;

    let forger = async_nats::connect(NATS).await.unwrap();
    let mut nudges = forger
        .subscribe(format!("{prefix}.v1.nudges.>"))
        .await
        .unwrap();
    forger.flush().await.unwrap();
    let loud = json!({"timestamp_ms": 1, "speaking_rate": 9.0, "overlap_ratio": 0.0, "seq": 66});
    let unknown = Uuid::new_v4();
    for (subject, payload) in [
        // a session that does not exist
        (
            format!("{prefix}.v1.frames.{unknown}.{}", uid(&a)),
            loud.to_string(),
        ),
        // a real session, a user who is not its member
        (
            format!("{prefix}.v1.frames.{sid}.{}", uid(&stranger)),
            loud.to_string(),
        ),
        // a member, but garbage and out-of-range payloads
        (
            format!("{prefix}.v1.frames.{sid}.{}", uid(&a)),
            "{\"speaking_rate\": \"fast\"".to_string(),
        ),
        (
            format!("{prefix}.v1.frames.{sid}.{}", uid(&a)),
            json!({"timestamp_ms": 1, "speaking_rate": 9.0, "overlap_ratio": 7.0}).to_string(),
        ),
        (
            format!("{prefix}.v1.frames.{sid}.{}", uid(&a)),
            format!(
                r#"{{"timestamp_ms":1,"speaking_rate":9.0,"overlap_ratio":0.0,"pad":"{}"}}"#,
                "x".repeat(70_000)
            ),
        ),
        // not even ids in the subject
        (format!("{prefix}.v1.frames.x.y"), loud.to_string()),
    ] {
        forger.publish(subject, payload.into()).await.unwrap();
    }
    forger.flush().await.unwrap();
    assert!(
        drain(&mut nudges).await.is_empty(),
        "a forged frame produced a nudge"
    );
    // forged nudges straight at a's phone: unparseable, out of range, unknown type
    for payload in [
        "<script>".to_string(),
        json!({"nudge_type": "SLOW_DOWN", "intensity": 9, "message": "pay now", "frame_seq": null, "frame_timestamp_ms": null}).to_string(),
        json!({"nudge_type": "SEND_MONEY", "intensity": 1, "message": "pay now", "frame_seq": null, "frame_timestamp_ms": null}).to_string(),
    ] {
        forger
            .publish(
                format!("{prefix}.v1.nudges.{sid}.{}", uid(&a)),
                payload.into(),
            )
            .await
            .unwrap();
    }
    // a fake "finalized" that is not even JSON of a state event
    forger
        .publish(
            format!("{prefix}.v1.state.{sid}"),
            "{\"event\":\"finalized\"".into(),
        )
        .await
        .unwrap();
    // report jobs for an unknown session and for a session that is still active
    let js = async_nats::jetstream::new(forger.clone());
    for job in [unknown.to_string(), sid.clone()] {
        js.publish(format!("{prefix}.v1.jobs.report"), job.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    forger.flush().await.unwrap();

    // nothing reached the phone, and the socket is still open
    assert!(wa.collect("server.nudge", QUIET).await.is_empty());
    // the real path still works, and the report holds only the real frame
    wa.frame(6.0, 1).await;
    let nudge = wa.expect("server.nudge", T).await;
    assert_eq!(nudge["payload"]["frame_seq"], 1, "{nudge}");
    let (s, _) = app
        .get(&format!("/v1/sessions/{sid}/report"), Some(token(&b)))
        .await;
    assert_eq!(s, 202, "a forged job wrote no report for an active session");
    tokio::time::sleep(Duration::from_millis(200)).await; // the writer's batch
    let (s, fin) = app.finalize(&sid, Some(token(&a))).await;
    assert_eq!(s, 202, "{fin}");
    let report = app.wait_report(&sid, token(&b)).await;
    assert_eq!(report["frames"], 1, "{report}");
    assert_eq!(report["nudges"]["total"], 1, "{report}");

    // counted by kind and reason (the worker runs in this process, so /metrics shows it)
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (kind, reason) in [
        ("frames", "unknown_session"),
        ("frames", "not_a_consenting_member"),
        ("frames", "malformed"),
        ("frames", "out_of_range"),
        ("frames", "too_large"),
        ("frames", "subject"),
        ("nudges", "malformed"),
        ("nudges", "out_of_range"),
        ("state", "malformed"),
        ("jobs", "unknown_session"),
        ("jobs", "session_not_finalizing"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("inside_bus_rejected_total")
                    && l.contains(&format!("subject_kind=\"{kind}\""))
                    && l.contains(&format!("reason=\"{reason}\""))),
            "{kind}/{reason} not counted"
        );
    }
    stop.cancel();
    w.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_on_another_gateway_stops_the_copies_within_the_refresh_bound() {
    let g1 = spawn_app_with(Db::Postgres, &[("NATS_URL", NATS), ("REDIS_URL", REDIS)]).await;
    let g2 = g1.another_gateway().await;
    let prefix = g1.env["NATS_SUBJECT_PREFIX"].clone();
    let researcher = async_nats::connect(NATS).await.unwrap();
    let mut research = researcher
        .subscribe(format!("{prefix}.v1.research.>"))
        .await
        .unwrap();
    researcher.flush().await.unwrap();
    let (a, b, rid, sid) = session_with_research(&g1, &[0, 1]).await;
    // a streams on gateway 2, b revokes through gateway 1: gateway 2 learns it from its cache
    let mut wa = Ws::connect(g2.addr, &sid, token(&a)).await;
    wa.frame(1.0, 0).await;
    assert_eq!(drain(&mut research).await.len(), 1);
    g1.set_research(&rid, &b, "revoked").await;
    let revoked = tokio::time::Instant::now();
    // a frame every 100 ms for 3.5 s: seq k leaves about k × 100 ms after the revoke
    for seq in 1..=35 {
        tokio::time::sleep_until(revoked + Duration::from_millis(100 * seq as u64)).await;
        wa.frame(1.0, seq).await;
    }
    let copied: Vec<i64> = drain(&mut research)
        .await
        .iter()
        .map(|m| {
            serde_json::from_slice::<Value>(&m.payload).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    eprintln!("frames copied after the revoke on the other gateway: {copied:?}");
    // FRESH_FOR is 2 s, and the entry was read before the revoke: nothing after 2.5 s
    assert!(
        copied.iter().all(|&seq| seq < 25),
        "copied after the bound: {copied:?}"
    );
}
