//! The events stream on a real nats-server (127.0.0.1:4222, JetStream on; `scripts/test`
//! starts it): ids from the stream, the live feed in order, and what a resume reads back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use inside_bus::history::{EventStream, Logged, Missed, Retention};
use inside_bus::{Bus, Subjects};
use uuid::Uuid;

const NATS: &str = "nats://127.0.0.1:4222";

async fn setup(per_subject: u64) -> (Bus, EventStream) {
    let prefix = format!("t{}", Uuid::new_v4().simple());
    let bus = Bus::connect_nats(NATS, "event-stream-test", Subjects::new(prefix))
        .await
        .expect("nats-server with JetStream on 127.0.0.1:4222 (scripts/test starts it)");
    let client = bus.nats().expect("a NATS bus").clone();
    let stream = EventStream::ensure(
        &client,
        bus.subjects(),
        Retention {
            per_subject,
            max_age: Duration::from_secs(60),
        },
    )
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
    let (head, feed) = stream.follow().await.expect("follow");
    let mut feed = Box::pin(feed);
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
    let (head, feed) = stream.follow().await.expect("follow");
    let mut feed = Box::pin(feed);
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
