//! The history's semantics in memory (the embedded default), and what is kept beside the bus's
//! stream on NATS: frame seqs in Redis, nothing else.

use std::time::Duration;

use bytes::Bytes;
use inside_schemas::HistoryKind;
use uuid::Uuid;

use super::*;

const REDIS: &str = "redis://127.0.0.1:6379";

async fn redis() -> Limiter {
    let prefix = format!("t{}", Uuid::new_v4().simple());
    Limiter::redis(REDIS, &prefix)
        .await
        .expect("Redis on 127.0.0.1:6379 (scripts/services starts it)")
}

/// The embedded default's history, with a limiter of each kind beside it.
async fn backends(window: Window) -> Vec<(EventLog, Limiter)> {
    let log = EventLog::for_deployment(&Limiter::memory(), true, Some(window));
    vec![(log.clone(), Limiter::memory()), (log, redis().await)]
}

fn window(events: usize) -> Window {
    Window {
        events,
        max_age: Duration::from_secs(120),
    }
}

fn payload(n: u64) -> Bytes {
    Bytes::from(format!(r#"{{"n":{n}}}"#))
}

fn ids(replay: &Replay) -> Vec<u64> {
    match replay {
        Replay::Complete(events) => events.iter().map(|e| e.id).collect(),
        Replay::Gone { .. } => panic!("expected a complete replay, got {replay:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_user_gets_what_was_meant_for_them_after_since_in_order() {
    for (log, _) in backends(window(1_000)).await {
        let (sid, other_sid, a, b) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        let mut appended = Vec::new();
        for (n, to, kind) in [
            (1, Some(a), HistoryKind::Nudge),
            (2, Some(b), HistoryKind::Nudge),
            (3, None, HistoryKind::Speaker),
            (4, Some(a), HistoryKind::Poke),
            (5, Some(b), HistoryKind::Poke),
        ] {
            appended.push(log.append(sid, to, kind, &payload(n)).await.unwrap());
        }
        assert_eq!(appended, [1, 2, 3, 4, 5].map(Some));
        // another session counts on its own
        assert_eq!(
            log.append(other_sid, Some(a), HistoryKind::Nudge, &payload(9))
                .await
                .unwrap(),
            Some(1)
        );

        let snap = log.snapshot(sid, a, Some(1)).await.unwrap();
        assert_eq!(snap.head, Some(5));
        let replay = snap.replay.unwrap();
        assert_eq!(ids(&replay), [3, 4]);
        let Replay::Complete(events) = replay else {
            unreachable!()
        };
        assert_eq!(events[0].kind, HistoryKind::Speaker);
        assert_eq!(events[0].to, None);
        assert_eq!(events[1].kind, HistoryKind::Poke);
        assert_eq!(events[1].payload, payload(4));
        assert_eq!(
            ids(&log.snapshot(sid, b, Some(0)).await.unwrap().replay.unwrap()),
            [2, 3, 5]
        );
        // nothing missed, and a fresh join asks for nothing
        assert_eq!(
            ids(&log.snapshot(sid, a, Some(5)).await.unwrap().replay.unwrap()),
            Vec::<u64>::new()
        );
        let fresh = log.snapshot(sid, a, None).await.unwrap();
        assert_eq!((fresh.head, fresh.replay), (Some(5), None));
        // an unknown session has seen nothing yet
        let empty = log.snapshot(Uuid::new_v4(), a, Some(0)).await.unwrap();
        assert_eq!(
            (empty.head, empty.replay),
            (Some(0), Some(Replay::Complete(vec![])))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_before_the_window_or_after_the_newest_id_is_gone() {
    for (log, _) in backends(window(5)).await {
        let (sid, a) = (Uuid::new_v4(), Uuid::new_v4());
        // Redis trims `MAXLEN ~` by whole nodes of 100 entries: go well past that
        for n in 0..400 {
            log.append(sid, Some(a), HistoryKind::Nudge, &payload(n))
                .await
                .unwrap();
        }
        let snap = log.snapshot(sid, a, Some(1)).await.unwrap();
        match snap.replay.unwrap() {
            Replay::Gone {
                oldest: Some(oldest),
            } => {
                assert!((2..=396).contains(&oldest), "{oldest}")
            }
            other => panic!("{other:?}"),
        }
        // the last five are always held, each with its own payload (of varying lengths)
        let last = log
            .snapshot(sid, a, Some(395))
            .await
            .unwrap()
            .replay
            .unwrap();
        assert_eq!(ids(&last), [396, 397, 398, 399, 400]);
        let Replay::Complete(events) = last else {
            unreachable!()
        };
        let payloads: Vec<Bytes> = events.into_iter().map(|e| e.payload).collect();
        assert_eq!(payloads, (395..400).map(payload).collect::<Vec<_>>());
        // a since this session never reached (its history was lost, or a bogus one)
        assert!(matches!(
            log.snapshot(sid, a, Some(401)).await.unwrap().replay,
            Some(Replay::Gone { .. })
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_older_than_the_window_are_gone() {
    let short = Window {
        events: 1_000,
        max_age: Duration::from_millis(300),
    };
    for (log, _) in backends(short).await {
        let (sid, a) = (Uuid::new_v4(), Uuid::new_v4());
        log.append(sid, Some(a), HistoryKind::Nudge, &payload(1))
            .await
            .unwrap();
        assert_eq!(
            ids(&log.snapshot(sid, a, Some(0)).await.unwrap().replay.unwrap()),
            [1]
        );
        tokio::time::sleep(Duration::from_millis(450)).await;
        let snap = log.snapshot(sid, a, Some(0)).await.unwrap();
        assert_eq!(snap.replay, Some(Replay::Gone { oldest: None }));
        // the counter goes on: ids never go back
        assert_eq!(
            log.append(sid, Some(a), HistoryKind::Nudge, &payload(2))
                .await
                .unwrap(),
            Some(2)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_append_takes_no_id_and_the_limit_is_the_limiters() {
    for (log, limiter) in backends(window(1_000)).await {
        let (sid, a) = (Uuid::new_v4(), Uuid::new_v4());
        let key = format!("nudge:{sid}:{a}");
        let w = Duration::from_secs(30);
        let append = || {
            log.append_once(
                &limiter,
                &key,
                w,
                sid,
                Some(a),
                HistoryKind::Nudge,
                payload(1),
            )
        };
        assert_eq!(append().await.unwrap(), Once::Sent(Some(1)));
        assert_eq!(append().await.unwrap(), Once::Limited);
        assert_eq!(log.snapshot(sid, a, None).await.unwrap().head, Some(1));
        // the same key the limiter itself checks
        assert!(!limiter.once_per(&key, w).await.unwrap());
        let other = format!("nudge:{sid}:{}", Uuid::new_v4());
        assert!(limiter.once_per(&other, w).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_appends_in_order_and_its_limits_hold_within_it() {
    for (log, limiter) in backends(window(1_000)).await {
        let (sid, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let w = Duration::from_secs(30);
        let once = |to: Uuid| Some((format!("nudge:{sid}:{to}"), w));
        let event = |n, to: Uuid, once| Pending {
            sid,
            to: Some(to),
            kind: HistoryKind::Nudge,
            payload: payload(n),
            once,
        };
        // a's second nudge in the same batch meets the limit its first one took
        let batch = [
            event(1, a, once(a)),
            event(2, a, once(a)),
            event(3, b, once(b)),
            event(4, b, None),
        ];
        let outcomes = log.append_many(&limiter, &batch).await.unwrap();
        assert_eq!(
            outcomes,
            [
                Once::Sent(Some(1)),
                Once::Limited,
                Once::Sent(Some(2)),
                Once::Sent(Some(3))
            ]
        );
        // the next batch knows a's window is taken without asking, and the ids go on
        let outcomes = log
            .append_many(&limiter, &[event(5, a, once(a)), event(6, a, None)])
            .await
            .unwrap();
        assert_eq!(outcomes, [Once::Limited, Once::Sent(Some(4))]);
        let snap = log.snapshot(sid, a, Some(0)).await.unwrap();
        assert_eq!(snap.head, Some(4));
        assert_eq!(ids(snap.replay.as_ref().unwrap()), [1, 4]);
        assert!(log.append_many(&limiter, &[]).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_frame_seq_only_rises() {
    let limiter = redis().await;
    // two gateways sharing one Redis, each with its own writing task
    let on_nats = EventLog::for_deployment(&limiter, false, Some(window(10)));
    let other_gateway = EventLog::for_deployment(&limiter, false, Some(window(10)));
    assert!(on_nats.writes_frame_seqs_later());
    let embedded = EventLog::for_deployment(&Limiter::memory(), true, Some(window(10)));
    for (log, elsewhere) in [(embedded.clone(), embedded), (on_nats, other_gateway)] {
        let (sid, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            log.snapshot(sid, a, None).await.unwrap().last_frame_seq,
            None
        );
        log.note_frame_seq_soon(sid, a, 7);
        log.note_frame_seq_soon(sid, a, 5);
        log.note_frame_seq_soon(sid, b, 2);
        log.write_frame_seqs_now().await;
        elsewhere.note_frame_seq_soon(sid, a, 6);
        elsewhere.write_frame_seqs_now().await;
        assert_eq!(
            elsewhere
                .snapshot(sid, a, None)
                .await
                .unwrap()
                .last_frame_seq,
            Some(7)
        );
        assert_eq!(
            elsewhere
                .snapshot(sid, b, Some(0))
                .await
                .unwrap()
                .last_frame_seq,
            Some(2)
        );
    }
}

/// Polls `log` until `uid`'s stored frame seq is `want`; how long that took, at most 3 s.
async fn stored_within(log: &EventLog, sid: Uuid, uid: Uuid, want: i64) -> Duration {
    let start = std::time::Instant::now();
    while log.snapshot(sid, uid, None).await.unwrap().last_frame_seq != Some(want) {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "seq {want} was not stored"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noted_frame_seqs_are_stored_by_the_writing_task_while_they_come_in() {
    let limiter = redis().await;
    let gateway = EventLog::for_deployment(&limiter, false, Some(window(10)));
    let elsewhere = EventLog::for_deployment(&limiter, false, Some(window(10)));
    let (sid, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    gateway.note_frame_seq_soon(sid, a, 3);
    gateway.note_frame_seq_soon(sid, b, 4);
    stored_within(&elsewhere, sid, a, 3).await;
    stored_within(&elsewhere, sid, b, 4).await;
    // the task ends once nothing more comes in, and starts again with the next seq
    tokio::time::sleep(super::remote::FLUSH_EVERY * 3).await;
    gateway.note_frame_seq_soon(sid, a, 9);
    stored_within(&elsewhere, sid, a, 9).await;
}

#[tokio::test]
async fn on_nats_producers_append_nothing_and_the_bus_keeps_the_events() {
    // with Redis or without: the stream numbers the events, the log only the frame seqs
    for limiter in [Limiter::memory(), redis().await] {
        let log = EventLog::for_deployment(&limiter, false, Some(window(10)));
        assert!(log.is_on_bus() && !log.is_on());
        let (sid, a) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            log.append(sid, Some(a), HistoryKind::Nudge, &payload(1))
                .await
                .unwrap(),
            None
        );
        let snap = log.snapshot(sid, a, Some(3)).await.unwrap();
        assert_eq!(
            (snap.head, snap.replay),
            (None, None),
            "the gateway reads them"
        );
    }
    let off = EventLog::for_deployment(&Limiter::memory(), false, None);
    assert!(!off.is_on() && !off.is_on_bus());
    let snap = off
        .snapshot(Uuid::new_v4(), Uuid::new_v4(), Some(3))
        .await
        .unwrap();
    assert_eq!(snap.replay, Some(Replay::Gone { oldest: None }));
}

#[test]
fn sweeping_drops_aged_entries_but_keeps_counters() {
    let log = MemoryLog::new(Window {
        events: 10,
        max_age: Duration::from_millis(1),
    });
    let (s1, a) = (Uuid::new_v4(), Uuid::new_v4());
    log.append(s1, None, HistoryKind::Speaker, &payload(1));
    std::thread::sleep(Duration::from_millis(1_100));
    // the next append sweeps (once per max_age, at least a second)
    log.append(Uuid::new_v4(), None, HistoryKind::Speaker, &payload(2));
    assert_eq!(log.sessions(), 2);
    let snap = log.snapshot(s1, a, Some(0));
    assert_eq!(
        (snap.head, snap.replay),
        (Some(1), Some(Replay::Gone { oldest: None }))
    );
    assert_eq!(log.append(s1, None, HistoryKind::Speaker, &payload(3)), 2);
}
