//! Routing on the gateways' feeds: each gateway reads every session's nudges, speaker events,
//! state and every user's pokes through one wildcard subscription per kind and hands each
//! message only to the sockets it holds. Two gateways, one worker, several sessions on real
//! NATS, Redis and PostgreSQL: every nudge, speaker event and poke reaches exactly the sockets
//! it is for, on whichever gateway they are, and no other socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::worker::start_worker;
use common::ws::Ws;
use common::*;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(5);
const NATS: &str = "nats://127.0.0.1:4222";
const REDIS: &str = "redis://127.0.0.1:6379";
/// Sessions in the test: the even ones split over both gateways, the odd ones on the first.
const SESSIONS: usize = 6;
/// Long enough for anything in flight to land in the sockets' buffers.
const SETTLE: Duration = Duration::from_millis(1500);
/// Reading what already landed.
const DRAIN: Duration = Duration::from_millis(150);

fn uid(pair: &Value) -> String {
    pair["user"]["id"].as_str().unwrap().to_string()
}

struct Session {
    sid: String,
    rid: String,
    members: [Value; 2],
}

/// One socket and whose it is.
struct Phone {
    session: usize,
    member: usize,
    ws: Ws,
}

/// The frame seq member `member` of session `session` sends: its nudge carries it back.
fn seq(session: usize, member: usize) -> i64 {
    (1_000 * session + 10 * member + 1) as i64
}

/// What each phone got of `kind`, read after everything settled; any other message but a
/// `server.session_state` fails the test (nothing is delivered where it does not belong).
async fn received(phones: &mut [Phone], kind: &str) -> Vec<Vec<Value>> {
    tokio::time::sleep(SETTLE).await;
    let mut out = Vec::with_capacity(phones.len());
    for p in phones.iter_mut() {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + DRAIN;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(m) = p.ws.next_json(left).await else {
                break;
            };
            if m["type"] == kind {
                got.push(m);
            } else {
                assert_eq!(m["type"], "server.session_state", "unexpected {m}");
            }
        }
        out.push(got);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_many_sessions_each_event_reaches_exactly_its_sockets() {
    let g1 = spawn_app_with(
        Db::Postgres,
        &[
            ("NATS_URL", NATS),
            ("REDIS_URL", REDIS),
            ("NUDGE_RATE_LIMIT_SECONDS", "0"),
        ],
    )
    .await;
    let g2 = g1.another_gateway().await;
    let stop = CancellationToken::new();
    let worker = start_worker(&g1.env, 2, None, stop.clone()).await;
    let prefix = g1.env["NATS_SUBJECT_PREFIX"].clone();
    let nats = async_nats::connect(NATS).await.unwrap();

    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        let (a, b, rid) = g1.couple().await;
        let sid = g1.start_session(&a, &rid).await;
        sessions.push(Session {
            sid,
            rid,
            members: [a, b],
        });
    }
    // a on gateway 1; b on gateway 2 in even sessions, on gateway 1 in odd ones; session 0's
    // b also holds a second socket on gateway 1
    let mut phones = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        let b_gateway = if i % 2 == 0 { g2.addr } else { g1.addr };
        let mut placed = vec![(0, g1.addr), (1, b_gateway)];
        if i == 0 {
            placed.push((1, g1.addr));
        }
        for (member, addr) in placed {
            let ws = Ws::connect(addr, &s.sid, token(&s.members[member])).await;
            phones.push(Phone {
                session: i,
                member,
                ws,
            });
        }
    }
    for p in phones.iter_mut() {
        let s = &sessions[p.session];
        let (a, b) = (uid(&s.members[0]), uid(&s.members[1]));
        p.ws.expect_participants(&[&a, &b], T).await;
    }

    // Nudges: one over-threshold frame per member, from their first socket; each comes back
    // to that member's sockets (both of session 0's b), nobody else's.
    let mut first = std::collections::HashSet::new();
    for p in phones.iter_mut() {
        if first.insert((p.session, p.member)) {
            p.ws.frame(6.0, seq(p.session, p.member)).await;
        }
    }
    let nudges = received(&mut phones, "server.nudge").await;
    for (p, got) in phones.iter().zip(&nudges) {
        let seqs: Vec<&Value> = got.iter().map(|n| &n["payload"]["frame_seq"]).collect();
        assert_eq!(
            seqs,
            [&json!(seq(p.session, p.member))],
            "session {} member {}",
            p.session,
            p.member
        );
        assert_eq!(got[0]["sid"], sessions[p.session].sid.as_str());
    }

    // Speaker events published as a worker would, for sessions 0 and 3: every socket of those
    // sessions gets its own session's, the others none. Also a nudge for someone no gateway
    // holds a socket of, in a held session: nobody shows it.
    for i in [0, 3] {
        let segment = json!({"user_id": null, "score": 0.5, "start_ms": i, "end_ms": i + 1500});
        nats.publish(
            format!("{prefix}.v1.speakers.{}", sessions[i].sid),
            serde_json::to_vec(&segment).unwrap().into(),
        )
        .await
        .unwrap();
    }
    let stranger = uuid::Uuid::new_v4();
    let nudge = json!({"nudge_type": "SLOW_DOWN", "intensity": 1, "message": "Try slowing down",
        "frame_seq": 9, "frame_timestamp_ms": 9});
    nats.publish(
        format!("{prefix}.v1.nudges.{}.{stranger}", sessions[0].sid),
        serde_json::to_vec(&nudge).unwrap().into(),
    )
    .await
    .unwrap();
    nats.flush().await.unwrap();
    // (the stranger's nudge, shown anywhere, would fail `received`)
    let speakers = received(&mut phones, "server.speaker").await;
    for (p, got) in phones.iter().zip(&speakers) {
        if p.session == 0 || p.session == 3 {
            assert_eq!(got.len(), 1, "session {} member {}", p.session, p.member);
            assert_eq!(got[0]["sid"], sessions[p.session].sid.as_str());
            assert_eq!(got[0]["payload"]["start_ms"], p.session);
        } else {
            assert!(got.is_empty(), "session {}: {got:?}", p.session);
        }
    }

    // Pokes: session 2's a pokes b through gateway 1, session 1's b pokes a through gateway
    // 2; each arrives on the recipient's sockets only, wherever they are.
    for (i, from, through) in [(2, 0, &g1), (1, 1, &g2)] {
        let s = &sessions[i];
        let (status, body) = through
            .post(
                "/v1/pokes",
                Some(token(&s.members[from])),
                json!({"relationship_id": s.rid, "kind": "hug"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let pokes = received(&mut phones, "server.poke").await;
    for (p, got) in phones.iter().zip(&pokes) {
        let expected = matches!((p.session, p.member), (2, 1) | (1, 0));
        assert_eq!(
            got.len(),
            usize::from(expected),
            "session {} member {}: {got:?}",
            p.session,
            p.member
        );
        if expected {
            assert_eq!(got[0]["sid"], sessions[p.session].sid.as_str());
            assert!(got[0]["event_id"].is_u64(), "{}", got[0]);
        }
    }

    // A member who left: session 4's b closes; a nudge for them reaches nobody, and a's
    // socket still gets a's own.
    let b4 = phones
        .iter()
        .position(|p| p.session == 4 && p.member == 1)
        .unwrap();
    phones.remove(b4).ws.kill();
    let a4 = phones
        .iter_mut()
        .find(|p| p.session == 4 && p.member == 0)
        .unwrap();
    a4.ws
        .expect_participants(&[&uid(&sessions[4].members[0])], T)
        .await;
    nats.publish(
        format!(
            "{prefix}.v1.nudges.{}.{}",
            sessions[4].sid,
            uid(&sessions[4].members[1])
        ),
        serde_json::to_vec(&nudge).unwrap().into(),
    )
    .await
    .unwrap();
    a4.ws.frame(6.0, 4_242).await;
    let after = received(&mut phones, "server.nudge").await;
    for (p, got) in phones.iter().zip(&after) {
        let want: Vec<Value> = if p.session == 4 {
            vec![json!(4_242)]
        } else {
            Vec::new()
        };
        let seqs: Vec<Value> = got
            .iter()
            .map(|n| n["payload"]["frame_seq"].clone())
            .collect();
        assert_eq!(seqs, want, "session {} member {}", p.session, p.member);
    }

    stop.cancel();
    worker.stopped().await;
}
