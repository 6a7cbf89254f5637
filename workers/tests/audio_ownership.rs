//! Session affinity for live audio (`pipeline/affinity.rs`) on real Redis and a nats-server
//! running the shipped configuration, the workers connected as `worker`: the first worker to
//! take a session's segment owns the session, a second worker forwards the session's segments
//! to it unchanged, a forwarded segment whose subject header names anything but an audio
//! subject is refused, and once the owner is gone the next segment is taken over, not lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use inside_bus::{header_map, Bus, BusMessage, Subjects};
use inside_schemas::audio::headers::FORWARDED_AUDIO_SUBJECT;
use inside_schemas::AudioSegmentMeta;
use inside_store::limiter::Limiter;
use inside_store::ownership::Claims;
use inside_testkit::nats_server::{NatsServer, WORKER};
use inside_workers::pipeline::affinity::{run_inbox, AudioOwnership};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const REDIS: &str = "redis://127.0.0.1:6379";
const T: Duration = Duration::from_secs(10);

/// A worker's side of the affinity, its inbox running.
struct Worker {
    ownership: AudioOwnership,
    inbox: mpsc::Receiver<BusMessage>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

async fn worker(nats: &NatsServer, prefix: &str) -> Worker {
    let bus = Bus::Nats {
        client: nats.connect(WORKER).await,
        subjects: Subjects::new(prefix),
    };
    let limiter = Limiter::redis(REDIS, prefix).await.expect("Redis");
    let ownership = AudioOwnership::new(bus.clone(), &limiter, Uuid::new_v4())
        .expect("NATS with Redis: affinity");
    let (queue, inbox) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let sub = ownership.subscribe().await.unwrap();
    bus.flush().await.unwrap();
    let task = tokio::spawn(run_inbox(bus, sub, queue, stop.clone()));
    Worker {
        ownership,
        inbox,
        stop,
        task,
    }
}

fn segment(subjects: &Subjects, sid: Uuid, uid: Uuid, seq: u64) -> BusMessage {
    let meta = AudioSegmentMeta {
        seq,
        start_ms: seq * 1500,
        end_ms: seq * 1500 + 1500,
        codec: "pcm_s16le".into(),
        cut_at_us: 1,
        stream_started_ms: Some(1_000),
    };
    BusMessage {
        subject: subjects.audio(sid, uid),
        payload: Bytes::from(vec![seq as u8; 64]),
        headers: Some(header_map(meta.to_headers())),
        reply: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_audio_goes_to_its_owner_and_is_taken_over_when_the_owner_is_gone() {
    let nats = NatsServer::shipped();
    let prefix = format!("t{}", Uuid::new_v4().simple());
    let subjects = Subjects::new(prefix.as_str());
    let (sid, uid) = (Uuid::new_v4(), Uuid::new_v4());
    let mut a = worker(&nats, &prefix).await;
    let mut b = worker(&nats, &prefix).await;

    // a takes the session's first segment: it claims the session and handles it itself
    let first = segment(&subjects, sid, uid, 0);
    assert!(a.ownership.route(first).await.is_some());

    // b takes the next: a owns the session, so b forwards it, unchanged
    let second = segment(&subjects, sid, uid, 1);
    assert!(b.ownership.route(second.clone()).await.is_none());
    let got = tokio::time::timeout(T, a.inbox.recv())
        .await
        .expect("forwarded within the timeout")
        .unwrap();
    assert_eq!(got.subject, second.subject);
    assert_eq!(got.payload, second.payload);
    assert_eq!(got.header("Inside-Seq"), Some("1"));
    assert_eq!(got.header("Inside-Stream-Started-Ms"), Some("1000"));
    assert!(b.inbox.try_recv().is_err(), "b handled nothing itself");

    // a forwarded segment must name an audio subject of this deployment: a frames subject (or
    // none) is answered, refused and not handled
    let bus = Bus::Nats {
        client: nats.connect(WORKER).await,
        subjects: subjects.clone(),
    };
    let inbox = subjects.worker_audio(a.ownership.worker());
    for forged in [Some(subjects.frames(sid, uid)), None] {
        let mut headers = header_map([("Inside-Seq", "9".to_string())]);
        if let Some(subject) = forged {
            headers.insert(FORWARDED_AUDIO_SUBJECT, subject.as_str());
        }
        bus.request(inbox.clone(), headers, Bytes::from_static(b"x"), T)
            .await
            .expect("answered");
    }
    assert!(b
        .ownership
        .route(segment(&subjects, sid, uid, 2))
        .await
        .is_none());
    let next = tokio::time::timeout(T, a.inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next.header("Inside-Seq"),
        Some("2"),
        "the forged ones were refused"
    );

    // a stops (its inbox drains and unsubscribes): b's next segment finds no owner to take
    // it, so b takes the session over and handles the segment itself
    a.stop.cancel();
    a.task.await.unwrap();
    let third = segment(&subjects, sid, uid, 3);
    let kept = b.ownership.route(third.clone()).await;
    assert_eq!(kept.map(|m| m.payload), Some(third.payload));
    let limiter = Limiter::redis(REDIS, &prefix).await.unwrap();
    let claims = Claims::from_limiter(&limiter).unwrap();
    let owner = claims
        .claim(&format!("audio-owner:{sid}"), "someone-else", T)
        .await
        .unwrap()
        .owner;
    assert_eq!(owner, b.ownership.worker().to_string(), "b owns it now");
    assert!(nats.violations().is_empty(), "{:?}", nats.violations());
    b.stop.cancel();
    b.task.await.unwrap();
}
