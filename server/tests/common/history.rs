//! A socket's history events (nudges, speaker events, pokes) as a resume test reads them:
//! type, `event_id` and payload, in the order they arrived.

use std::time::Duration;

use serde_json::Value;

use super::ws::Ws;

/// How long a test waits for an awaited message.
pub const T: Duration = Duration::from_secs(5);

/// A history event as a socket saw it: type, event id, payload.
pub type Seen = (String, u64, Value);

pub fn seen(m: &Value) -> Seen {
    let id = m["event_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("a history event without an event_id: {m}"));
    (
        m["type"].as_str().unwrap().to_string(),
        id,
        m["payload"].clone(),
    )
}

pub fn is_history(m: &Value) -> bool {
    ["server.nudge", "server.poke", "server.speaker"].contains(&m["type"].as_str().unwrap_or(""))
}

/// The first message of every socket.
pub async fn joined(ws: &mut Ws) -> Value {
    let m = ws.next_json(T).await.expect("server.joined");
    assert_eq!(m["type"], "server.joined", "{m}");
    m["payload"].clone()
}

/// Every history event on `ws` until it is quiet for `quiet`.
pub async fn drain(ws: &mut Ws, quiet: Duration) -> Vec<Seen> {
    let mut out = Vec::new();
    while let Some(m) = ws.next_json(quiet).await {
        if is_history(&m) {
            out.push(seen(&m));
        }
    }
    out
}

/// Every history event on `ws` until those with the ids of `want` have arrived (or `T` has
/// passed), then until it is quiet: a loaded machine can stall a socket for longer than any
/// quiet period, and what comes after the wanted events (a duplicate) must still be seen.
pub async fn drain_until(ws: &mut Ws, want: &[u64]) -> Vec<Seen> {
    let deadline = tokio::time::Instant::now() + T;
    let mut missing: std::collections::HashSet<u64> = want.iter().copied().collect();
    let mut out: Vec<Seen> = Vec::new();
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.next_json(left).await {
            Some(m) if is_history(&m) => {
                let e = seen(&m);
                missing.remove(&e.1);
                out.push(e);
            }
            Some(_) => {}
            None => break,
        }
    }
    out.extend(drain(ws, Duration::from_millis(200)).await);
    out
}

pub fn ids(events: &[Seen]) -> Vec<u64> {
    events.iter().map(|e| e.1).collect()
}

/// A socket of the resuming user that stays up: every history event it gets, in order, is
/// what the resumed socket must end up with.
pub struct Reference {
    pub ws: Ws,
    pub seen: Vec<Seen>,
}

impl Reference {
    /// Waits for the next history event matching `want`, recording everything on the way.
    pub async fn until(&mut self, want: impl Fn(&Seen) -> bool) -> Seen {
        loop {
            let m = self.ws.next_json(T).await.expect("the awaited event");
            if is_history(&m) {
                let e = seen(&m);
                self.seen.push(e.clone());
                if want(&e) {
                    return e;
                }
            }
        }
    }

    /// An over-threshold frame from this socket, and the nudge it causes.
    pub async fn nudge(&mut self, seq: i64, pace: Duration) -> Seen {
        tokio::time::sleep(pace).await;
        self.ws.frame(6.0, seq).await;
        self.until(|e| e.0 == "server.nudge" && e.2["frame_seq"] == seq)
            .await
    }
}
