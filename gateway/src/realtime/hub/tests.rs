//! The hub's indexes: many sockets of one user cost their own joins, not a broadcast to
//! every socket already there.

use std::time::Duration;

use inside_bus::{Bus, Subjects};

use super::*;
use crate::realtime::caps::SocketLimits;

fn hub() -> SessionHub {
    SessionHub::new(
        Bus::local(Subjects::new("t")),
        SocketLimits {
            per_user: 0,
            per_client: 0,
        },
        None,
    )
}

#[tokio::test]
async fn two_thousand_sockets_of_one_user_each_get_one_state_and_none_is_dropped() {
    let hub = hub();
    let (sid, uid) = (Uuid::new_v4(), Uuid::new_v4());
    let mut members = Vec::new();
    for _ in 0..2_000 {
        members.push(hub.join(sid, uid).await.unwrap());
    }
    // let the first join's presence echo arrive
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hub.sockets(), 2_000);
    for m in &members {
        // a broadcast per join would have queued up to 2,000 states on the early sockets
        // and dropped them as slow readers (256 queued)
        assert!(!m.kill.is_cancelled());
        // its own state, and the first join's broadcast if it was already there
        assert!((1..=2).contains(&m.queue.len()), "{} queued", m.queue.len());
    }
    members.truncate(1);
    assert_eq!(hub.sockets(), 1);
    drop(members);
    assert_eq!(hub.sockets(), 0);
    let st = lock(&hub.0);
    assert!(st.sessions.is_empty() && st.users.is_empty());
}

#[tokio::test]
async fn revoking_a_member_revokes_only_their_sockets_of_that_session() {
    let hub = hub();
    let (sid, other_sid, a, b) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let ma = hub.join(sid, a).await.unwrap();
    let ma_elsewhere = hub.join(other_sid, a).await.unwrap();
    let mb = hub.join(sid, b).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    hub.revoke_member(sid, a);
    assert!(ma.revoked.is_cancelled());
    assert!(!ma_elsewhere.revoked.is_cancelled());
    assert!(!mb.revoked.is_cancelled());
}
