//! The shipped NATS configuration (`deploy/nats/nats-server.conf`) against the attacks it is
//! there for, on a real nats-server running it: no credentials, no connection; the read-only
//! researcher identity can neither forge a nudge, a poke, a frame or `finalized` state nor
//! enqueue a report job, and reads only the research subjects; the gateway and worker
//! identities publish only their own side.
//!
//! A refused publish or subscription is asserted by the server's answer (`-ERR Permissions
//! Violation`, async-nats' `Event::ServerError`), which the server sends when it has decided
//! not to route; a subscription that must not deliver is checked against a marker the same
//! publisher sends after the forbidden message on a subject the subscriber may read, so
//! "nothing arrived" is an ordering fact, not a timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_nats::{Client, Event};
use futures::{FutureExt, StreamExt};
use inside_bus::Subjects;
use tokio::sync::mpsc;
use uuid::Uuid;

use inside_testkit::nats_server;

use nats_server::{Identity, NatsServer, GATEWAY, RESEARCHER, WORKER};

const T: Duration = Duration::from_secs(10);

/// A client as `who`, and the server errors it is sent.
async fn connect_watching(
    nats: &NatsServer,
    who: Identity,
) -> (Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(
        who.user.to_string(),
        who.password.to_string(),
    )
    .event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let Event::ServerError(e) = event {
                let _ = tx.send(e.to_string());
            }
        }
    })
    .connect(nats.url())
    .await
    .unwrap();
    (client, rx)
}

/// Waits for the server to refuse `what` on `subject` ("publish" or "subscription").
async fn refused(errors: &mut mpsc::UnboundedReceiver<String>, what: &str, subject: &str) {
    let want = format!("permissions violation for {what} to \"{subject}\"").to_lowercase();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match tokio::time::timeout_at(deadline, errors.recv()).await {
            Ok(Some(e)) if e.to_lowercase().contains(&want) => return,
            Ok(Some(_other)) => continue,
            _ => panic!("the server did not refuse {what} to {subject}"),
        }
    }
}

fn ids() -> (Subjects, Uuid, Uuid) {
    (
        Subjects::new(format!("t{}", Uuid::new_v4().simple())),
        Uuid::new_v4(),
        Uuid::new_v4(),
    )
}

#[tokio::test]
async fn a_connection_without_credentials_or_with_a_wrong_password_is_refused() {
    let nats = NatsServer::shipped();
    let anonymous = async_nats::connect(nats.url()).await;
    assert!(anonymous.is_err(), "connected without credentials");
    let wrong = async_nats::ConnectOptions::with_user_and_password(
        "gateway".into(),
        "not-the-password".into(),
    )
    .connect(nats.url())
    .await;
    assert!(wrong.is_err(), "connected with a wrong password");
    // the right one connects: the refusals above are about the credentials
    nats.connect(GATEWAY).await;
}

#[tokio::test]
async fn the_researcher_cannot_forge_nudges_pokes_frames_or_finalized_state() {
    let nats = NatsServer::shipped();
    let (s, sid, uid) = ids();
    let gateway = nats.connect(GATEWAY).await;
    let mut nudges = gateway.subscribe(s.nudges(sid, uid)).await.unwrap();
    let mut pokes = gateway.subscribe(s.pokes(uid)).await.unwrap();
    let mut state = gateway.subscribe(s.state(sid)).await.unwrap();
    gateway.flush().await.unwrap();
    let (researcher, mut errors) = connect_watching(&nats, RESEARCHER).await;
    let forged = [
        s.nudges(sid, uid),
        s.pokes(uid),
        s.state(sid),
        s.frames(sid, uid),
        s.audio(sid, uid),
        s.speakers(sid),
        s.embed(),
        s.capabilities(),
    ];
    for subject in &forged {
        researcher
            .publish(subject.clone(), r#"{"finalized":true}"#.into())
            .await
            .unwrap();
        refused(&mut errors, "publish", subject).await;
    }
    // refused means not routed: the gateway's subscriptions hold nothing
    for sub in [&mut nudges, &mut pokes, &mut state] {
        assert!(
            sub.next().now_or_never().is_none(),
            "a forged message arrived"
        );
    }
    // and the server logs each refusal, which is what fleet.rs and nats_secured.rs check for
    let nudge = s.nudges(sid, uid);
    let deadline = tokio::time::Instant::now() + T;
    while !nats.violations().iter().any(|l| l.contains(&nudge)) {
        assert!(tokio::time::Instant::now() < deadline, "{}", nats.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_researcher_cannot_enqueue_a_report_job_or_call_jetstream() {
    let nats = NatsServer::shipped();
    let (s, sid, _) = ids();
    // the stream as the gateway and workers create it
    let worker = nats.connect(WORKER).await;
    let mut stream = inside_bus::jobs::ensure_stream(&worker, &s).await.unwrap();
    let (researcher, mut errors) = connect_watching(&nats, RESEARCHER).await;

    researcher
        .publish(s.report_jobs(), sid.to_string().into())
        .await
        .unwrap();
    refused(&mut errors, "publish", &s.report_jobs()).await;
    // nor through the JetStream API: add a stream of its own, purge the jobs, delete them
    for api in [
        format!("$JS.API.STREAM.CREATE.{}", s.jobs_stream()),
        format!("$JS.API.STREAM.PURGE.{}", s.jobs_stream()),
        format!("$JS.API.STREAM.DELETE.{}", s.jobs_stream()),
        format!("$JS.API.STREAM.INFO.{}", s.jobs_stream()),
    ] {
        researcher.publish(api.clone(), "{}".into()).await.unwrap();
        refused(&mut errors, "publish", &api).await;
    }
    // and async-nats' own JetStream publish (a request: its reply inbox is refused too)
    let js = async_nats::jetstream::new(researcher.clone());
    let ack = tokio::time::timeout(T, async {
        js.publish(s.report_jobs(), sid.to_string().into())
            .await?
            .await
    })
    .await
    .expect("the JetStream publish ends");
    assert!(ack.is_err(), "JetStream acked a researcher's job: {ack:?}");

    assert_eq!(
        stream.info().await.unwrap().state.messages,
        0,
        "no job was stored"
    );
}

#[tokio::test]
async fn the_researcher_reads_research_subjects_and_nothing_internal() {
    let nats = NatsServer::shipped();
    let (s, sid, uid) = ids();
    let prefix = s.prefix().to_string();
    let (researcher, mut errors) = connect_watching(&nats, RESEARCHER).await;
    let mut forbidden = Vec::new();
    for subject in [
        s.all_frames(),
        s.all_audio(),
        s.session_nudges(sid),
        s.speakers(sid),
        s.state(sid),
        s.pokes(uid),
        s.embed(),
        s.capabilities(),
        format!("{prefix}.v1.>"),
        ">".to_string(),
        "_INBOX.>".to_string(),
    ] {
        forbidden.push((
            subject.clone(),
            researcher.subscribe(subject.clone()).await.unwrap(),
        ));
        refused(&mut errors, "subscription", &subject).await;
    }
    let mut research = researcher
        .subscribe(format!("{prefix}.v1.research.>"))
        .await
        .unwrap();

    let gateway = nats.connect(GATEWAY).await;
    let worker = nats.connect(WORKER).await;
    let research_frames = format!("{prefix}.v1.research.frames.{sid}.{uid}");
    let research_speakers = format!("{prefix}.v1.research.speakers.{sid}");
    // Each identity publishes its internal messages, then a research marker; a publisher's
    // messages reach a subscriber in order, so a marker received means the internal ones
    // before it were not delivered. Repeated until the research subscription is in place.
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + T;
    while seen.len() < 2 {
        for subject in [
            s.frames(sid, uid),
            s.audio(sid, uid),
            s.state(sid),
            s.pokes(uid),
        ] {
            gateway.publish(subject, "internal".into()).await.unwrap();
        }
        gateway
            .publish(research_frames.clone(), "research".into())
            .await
            .unwrap();
        for subject in [s.nudges(sid, uid), s.speakers(sid)] {
            worker.publish(subject, "internal".into()).await.unwrap();
        }
        worker
            .publish(research_speakers.clone(), "research".into())
            .await
            .unwrap();
        gateway.flush().await.unwrap();
        worker.flush().await.unwrap();
        while let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_millis(100), research.next()).await
        {
            assert_eq!(msg.payload, "research");
            seen.insert(msg.subject.to_string());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "research messages never arrived: {seen:?}"
        );
    }
    assert!(seen.contains(&research_frames) && seen.contains(&research_speakers));
    for (subject, sub) in &mut forbidden {
        assert!(
            sub.next().now_or_never().flatten().is_none(),
            "the researcher read {subject}"
        );
    }
}

#[tokio::test]
async fn gateway_and_worker_publish_only_their_own_side() {
    let nats = NatsServer::shipped();
    let (s, sid, uid) = ids();
    let (gateway, mut gateway_errors) = connect_watching(&nats, GATEWAY).await;
    let (worker, mut worker_errors) = connect_watching(&nats, WORKER).await;
    // a gateway does not make nudges or speaker events
    for subject in [s.nudges(sid, uid), s.speakers(sid)] {
        gateway.publish(subject.clone(), "x".into()).await.unwrap();
        refused(&mut gateway_errors, "publish", &subject).await;
    }
    // a worker does not make frames, audio, state (`finalized`), pokes or jobs
    for subject in [
        s.frames(sid, uid),
        s.audio(sid, uid),
        s.state(sid),
        s.pokes(uid),
        s.report_jobs(),
    ] {
        worker.publish(subject.clone(), "x".into()).await.unwrap();
        refused(&mut worker_errors, "publish", &subject).await;
    }
    // a worker reads frames only as a member of the queue group, never on the side
    let subject = s.all_frames();
    let _plain = worker.subscribe(subject.clone()).await.unwrap();
    refused(&mut worker_errors, "subscription", &subject).await;
    let _other_group = worker
        .queue_subscribe(subject.clone(), "eavesdroppers".into())
        .await
        .unwrap();
    refused(&mut worker_errors, "subscription", &subject).await;
    // a gateway does not read frames at all
    let _frames = gateway.subscribe(subject.clone()).await.unwrap();
    refused(&mut gateway_errors, "subscription", &subject).await;
}
