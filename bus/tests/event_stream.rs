//! The events stream on a real nats-server (127.0.0.1:4222, JetStream on; `scripts/test`
//! starts it): ids from the stream, the live feed in order, and what a resume reads back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use inside_bus::history::{EventStream, Logged, Missed, Retention, Stored, RESTART_GAP};
use inside_bus::{Bus, Subjects};
use uuid::Uuid;

const NATS: &str = "nats://127.0.0.1:4222";

/// The last `per_subject` events of each subject for a minute, on disk.
fn on_disk(per_subject: u64) -> Retention {
    Retention {
        per_subject,
        max_age: Duration::from_secs(60),
        in_memory: false,
    }
}

async fn setup(per_subject: u64) -> (Bus, EventStream) {
    let prefix = format!("t{}", Uuid::new_v4().simple());
    let bus = Bus::connect_nats(NATS, "event-stream-test", Subjects::new(prefix))
        .await
        .expect("nats-server with JetStream on 127.0.0.1:4222 (scripts/test starts it)");
    let client = bus.nats().expect("a NATS bus").clone();
    let stream = EventStream::ensure(&client, bus.subjects(), on_disk(per_subject))
        .await
        .expect("the events stream");
    (bus, stream)
}

async fn drop_stream(bus: &Bus) {
    let js = async_nats::jetstream::new(bus.nats().expect("NATS").clone());
    let _ = js.delete_stream(bus.subjects().events_stream()).await;
}

async fn next(feed: &mut (impl futures::Stream<Item = Logged> + Unpin)) -> Logged {
    tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .expect("an event within 5 s")
        .expect("the feed goes on")
}

#[tokio::test]
async fn the_feed_numbers_events_in_order_and_a_resume_reads_back_only_its_own() {
    let (bus, stream) = setup(3).await;
    let s = bus.subjects().clone();
    let (sid, uid, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let following = stream.follow().await.expect("follow");
    let (head, mut feed) = (following.head, following.events);
    let published = [
        s.nudges(sid, uid),
        s.nudges(sid, other),
        s.speakers(sid),
        s.pokes(other),
        s.pokes(uid),
    ];
    for (n, subject) in published.iter().enumerate() {
        bus.publish(subject.clone(), format!("{{\"n\":{n}}}").into())
            .await
            .expect("publish");
    }
    let mut live = Vec::new();
    for _ in 0..published.len() {
        live.push(next(&mut feed).await);
    }
    let ids: Vec<u64> = live.iter().map(|l| l.id).collect();
    assert_eq!(
        ids,
        (head + 1..=head + 5).collect::<Vec<_>>(),
        "one id each, in order"
    );
    let subjects: Vec<&str> = live.iter().map(|l| l.msg.subject.as_str()).collect();
    assert_eq!(
        subjects,
        published.iter().map(String::as_str).collect::<Vec<_>>()
    );

    let mine = [s.nudges(sid, uid), s.speakers(sid), s.pokes(uid)];
    let Missed::Events(missed) = stream.missed(&mine, head, head + 5).await.expect("read") else {
        panic!("nothing is gone yet");
    };
    let got: Vec<(u64, &str, &[u8])> = missed
        .iter()
        .map(|l| (l.id, l.msg.subject.as_str(), &l.msg.payload[..]))
        .collect();
    assert_eq!(
        got,
        vec![
            (head + 1, mine[0].as_str(), &b"{\"n\":0}"[..]),
            (head + 3, mine[1].as_str(), &b"{\"n\":2}"[..]),
            (head + 5, mine[2].as_str(), &b"{\"n\":4}"[..]),
        ]
    );
    // after the first: the rest; up to an id the feed has handled: no later one
    let Missed::Events(rest) = stream
        .missed(&mine, head + 1, head + 3)
        .await
        .expect("read")
    else {
        panic!("nothing is gone yet");
    };
    assert_eq!(rest.iter().map(|l| l.id).collect::<Vec<_>>(), [head + 3]);
    drop_stream(&bus).await;
}

#[tokio::test]
async fn events_pushed_out_of_their_subject_or_never_reached_are_gone() {
    let (bus, stream) = setup(3).await;
    let s = bus.subjects().clone();
    let (sid, uid) = (Uuid::new_v4(), Uuid::new_v4());
    let following = stream.follow().await.expect("follow");
    let (head, mut feed) = (following.head, following.events);
    // one at a time, each delivered before the next pushes the oldest out
    let mut last = head;
    for n in 0..5 {
        bus.publish(s.nudges(sid, uid), format!("{n}").into())
            .await
            .expect("publish");
        last = next(&mut feed).await.id;
    }
    let mine = [s.nudges(sid, uid)];
    // five after `head`, three kept: two are gone
    assert!(matches!(
        stream.missed(&mine, head, last).await.expect("read"),
        Missed::Gone { .. }
    ));
    // the last two are still there
    let Missed::Events(kept) = stream.missed(&mine, last - 2, last).await.expect("read") else {
        panic!("the last two are held");
    };
    assert_eq!(
        kept.iter().map(|l| l.id).collect::<Vec<_>>(),
        [last - 1, last]
    );
    // nothing after the newest; an id never reached is gone
    assert!(matches!(
        stream.missed(&mine, last, last).await.expect("read"),
        Missed::Events(e) if e.is_empty()
    ));
    assert!(matches!(
        stream.missed(&mine, last + 10, last).await.expect("read"),
        Missed::Gone { .. }
    ));
    drop_stream(&bus).await;
}

#[tokio::test]
async fn a_stream_made_anew_tells_its_followers_by_when_it_was_made() {
    let (bus, stream) = setup(3).await;
    let following = stream.follow().await.expect("follow");
    assert_eq!(stream.made_at().await.expect("made_at"), following.made);
    drop_stream(&bus).await;
    // gone: made again, and so made later
    let again = stream.made_at().await.expect("made again");
    assert_ne!(again, following.made);
    assert_eq!(stream.made_at().await.expect("made_at"), again);
    // its ids go on past those a follower knew, once
    stream.continue_after(7).await.expect("continue_after");
    stream.continue_after(7).await.expect("continue_after");
    let following = stream.follow().await.expect("follow");
    let mut feed = following.events;
    assert_eq!(following.head, 7 + RESTART_GAP);
    bus.publish(bus.subjects().pokes(Uuid::new_v4()), "{}".into())
        .await
        .expect("publish");
    assert_eq!(next(&mut feed).await.id, 8 + RESTART_GAP);
    drop_stream(&bus).await;
}

#[tokio::test]
async fn a_restarted_server_keeps_the_ids_and_the_feed_goes_on_after_them() {
    let mut nats = inside_testkit::nats_server::NatsServer::with_jetstream();
    let bus = Bus::connect_nats(&nats.url(), "event-stream-test", Subjects::new("restart"))
        .await
        .expect("the test's own nats-server");
    let client = bus.nats().expect("a NATS bus").clone();
    let stream = EventStream::ensure(&client, bus.subjects(), on_disk(100))
        .await
        .expect("the events stream");
    let following = stream.follow().await.expect("follow");
    let (head, mut feed) = (following.head, following.events);
    let (sid, uid) = (Uuid::new_v4(), Uuid::new_v4());
    let subject = bus.subjects().nudges(sid, uid);
    let mut ids = Vec::new();
    for n in 0..2 {
        bus.publish(subject.clone(), format!("{n}").into())
            .await
            .expect("publish");
        ids.push(next(&mut feed).await.id);
    }

    nats.restart();
    // a publish into the connection the kill broke is lost (core NATS): wait for an answer
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let made = loop {
        match stream.made_at().await {
            Ok(made) => break made,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("waiting for the restarted server: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the restarted server did not answer within 30 s: {e}"),
        }
    };
    assert_eq!(made, following.made, "the same stream, kept on disk");
    // published once the client is back: the same stream numbers them after the others
    for n in 2..4 {
        bus.publish(subject.clone(), format!("{n}").into())
            .await
            .expect("publish");
        let logged = tokio::time::timeout(Duration::from_secs(30), feed.next())
            .await
            .expect("the feed goes on within 30 s of the restart")
            .expect("the feed goes on");
        ids.push(logged.id);
    }
    assert_eq!(ids, (head + 1..=head + 4).collect::<Vec<_>>());
    let Missed::Events(missed) = stream
        .missed(std::slice::from_ref(&subject), head, head + 4)
        .await
        .expect("read")
    else {
        panic!("all four are held");
    };
    let payloads: Vec<&[u8]> = missed.iter().map(|l| &l.msg.payload[..]).collect();
    assert_eq!(payloads, [b"0", b"1", b"2", b"3"]);
}

#[tokio::test]
async fn a_stream_kept_elsewhere_than_configured_is_followed_as_it_is() {
    let (bus, _on_disk) = setup(3).await;
    drop_stream(&bus).await;
    let client = bus.nats().expect("NATS").clone();
    let keep = on_disk(3);
    let in_memory = Retention {
        in_memory: true,
        ..keep
    };
    let in_memory = EventStream::ensure(&client, bus.subjects(), in_memory)
        .await
        .expect("made in memory");
    let made = in_memory.made_at().await.expect("made_at");
    // a gateway configured for disk: no error, the same stream
    let followed = EventStream::ensure(&client, bus.subjects(), keep)
        .await
        .expect("the stream as it is");
    assert_eq!(followed.made_at().await.expect("made_at"), made);
    let js = async_nats::jetstream::new(client);
    let mut held = js
        .get_stream(bus.subjects().events_stream())
        .await
        .expect("the stream");
    assert_eq!(
        held.info().await.expect("info").config.storage,
        async_nats::jetstream::stream::StorageType::Memory
    );
    drop_stream(&bus).await;
}

#[tokio::test]
async fn the_shipped_gateway_identity_may_make_follow_read_and_move_the_stream() {
    use inside_testkit::nats_server::{NatsServer, GATEWAY};
    let nats = NatsServer::shipped();
    let client = nats.connect(GATEWAY).await;
    let subjects = Subjects::new("inside");
    let stream = EventStream::ensure(&client, &subjects, on_disk(10))
        .await
        .expect("made by the gateway identity");
    stream.made_at().await.expect("checked");
    stream.continue_after(5).await.expect("ids moved");
    let following = stream.follow().await.expect("followed");
    assert_eq!(following.head, 5 + RESTART_GAP);
    // a poke: what the gateway itself publishes there
    let (sid, uid) = (Uuid::new_v4(), Uuid::new_v4());
    let subject = subjects.pokes(uid);
    client
        .publish(subject.clone(), "{}".into())
        .await
        .expect("publish");
    let mut feed = following.events;
    assert_eq!(next(&mut feed).await.id, 6 + RESTART_GAP);
    let Missed::Events(read) = stream
        .missed(
            &[subject, subjects.nudges(sid, uid)],
            5 + RESTART_GAP,
            6 + RESTART_GAP,
        )
        .await
        .expect("read back")
    else {
        panic!("held");
    };
    assert_eq!(read.len(), 1);
    assert_eq!(nats.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn an_event_published_after_a_named_one_is_stored_only_while_that_is_the_newest() {
    let (bus, stream) = setup(100).await;
    let sid = Uuid::new_v4();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let subject = bus.subjects().nudges(sid, a);
    let headers = inside_bus::nudge_headers(None, Some(42));
    let publish = |after: u64, body: &'static str| {
        let (stream, subject, headers) = (stream.clone(), subject.clone(), headers.clone());
        async move {
            let storing = stream
                .publish_after(subject, &headers, body.into(), after)
                .await
                .unwrap();
            storing.outcome().await
        }
    };
    assert_eq!(stream.last_of(&subject).await.unwrap(), None, "none yet");
    let Stored::Id(first) = publish(0, "one").await else {
        panic!("the first event of an empty subject is stored")
    };
    // two producers that both saw none: only the first is stored
    assert!(matches!(publish(0, "two").await, Stored::NotAfter));
    let last = stream.last_of(&subject).await.unwrap().expect("held");
    assert_eq!((last.id, &last.payload[..]), (first, &b"one"[..]));
    assert!(last.age < Duration::from_secs(5), "{:?}", last.age);
    let Stored::Id(second) = publish(first, "three").await else {
        panic!("stored after the newest")
    };
    assert!(second > first);
    assert!(matches!(publish(first, "four").await, Stored::NotAfter));
    // another member's subject is judged on its own
    let other = bus.subjects().nudges(sid, b);
    let storing = stream
        .publish_after(other.clone(), &headers, "five".into(), 0)
        .await
        .unwrap();
    assert!(matches!(storing.outcome().await, Stored::Id(_)));
    assert_eq!(
        stream.last_of(&subject).await.unwrap().map(|l| l.id),
        Some(second)
    );
    // what was refused went nowhere: the follower of the stream sees the stored three
    let held = stream
        .missed(&[subject, other], 0, second + 1)
        .await
        .unwrap();
    let Missed::Events(held) = held else {
        panic!("all held")
    };
    let bodies: Vec<_> = held.iter().map(|l| l.msg.payload.clone()).collect();
    assert_eq!(
        bodies,
        [&b"one"[..], b"three", b"five"].map(bytes::Bytes::from_static)
    );
    drop_stream(&bus).await;
}
