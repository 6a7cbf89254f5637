//! A small WebSocket client for the realtime tests (tokio-tungstenite).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Ws {
    pub stream: Stream,
    pub sid: String,
}

/// What came back instead of a socket, or how the socket ended.
#[derive(Debug, PartialEq)]
pub enum Refused {
    Status(u16),
}

pub fn ws_url(addr: std::net::SocketAddr, sid: &str, token: &str) -> String {
    format!("ws://{addr}/v1/sessions/{sid}/ws?token={token}")
}

/// Connects; `Err(status)` when refused before the upgrade.
pub async fn try_connect(url: &str, origin: Option<&str>) -> Result<Stream, u16> {
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((s, _)) => Ok(s),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

impl Ws {
    pub async fn connect(addr: std::net::SocketAddr, sid: &str, token: &str) -> Ws {
        let stream = try_connect(&ws_url(addr, sid, token), None)
            .await
            .expect("upgrade");
        Ws {
            stream,
            sid: sid.to_string(),
        }
    }

    /// Reconnects after a drop: `?since=<event_id>`.
    pub async fn resume(addr: std::net::SocketAddr, sid: &str, token: &str, since: u64) -> Ws {
        let url = format!("{}&since={since}", ws_url(addr, sid, token));
        let stream = try_connect(&url, None).await.expect("upgrade");
        Ws {
            stream,
            sid: sid.to_string(),
        }
    }

    /// Drops the TCP connection as a phone losing the network would: no close frame, and a
    /// reset rather than an orderly shutdown.
    pub fn kill(self) {
        if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = self.stream.get_ref() {
            let _ = tcp.set_zero_linger();
        }
        drop(self);
    }

    pub async fn send(&mut self, kind: &str, payload: Value) {
        let msg = json!({"type": kind, "sid": self.sid, "payload": payload}).to_string();
        self.stream.send(Message::Text(msg.into())).await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn frame(&mut self, speaking_rate: f64, seq: i64) {
        self.send(
            "client.feature_frame",
            json!({"timestamp_ms": 1000 + seq, "speaking_rate": speaking_rate, "overlap_ratio": 0.0, "seq": seq}),
        )
        .await;
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.stream
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .unwrap();
    }

    /// Sends, tolerating a socket the server already closed.
    pub async fn try_send_text(&mut self, text: &str) -> bool {
        self.stream
            .send(Message::Text(text.to_string().into()))
            .await
            .is_ok()
    }

    /// The next JSON message, skipping pings; `None` on timeout or close.
    pub async fn next_json(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??
                .ok()?;
            match msg {
                Message::Text(t) => return Some(serde_json::from_str(t.as_str()).unwrap()),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// The next message of `kind`, skipping others.
    pub async fn expect(&mut self, kind: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_json(left).await {
                Some(m) if m["type"] == kind => return m,
                Some(_) => continue,
                None => panic!("no {kind} within {within:?}"),
            }
        }
    }

    /// Every message of `kind` within `window`.
    pub async fn collect(&mut self, kind: &str, window: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + window;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return out;
            }
            match self.next_json(left).await {
                Some(m) if m["type"] == kind => out.push(m),
                Some(_) => continue,
                None => return out,
            }
        }
    }

    /// Waits for a `server.session_state` listing exactly `users`.
    pub async fn expect_participants(&mut self, users: &[&str], within: Duration) {
        let mut want: Vec<String> = users.iter().map(|s| s.to_string()).collect();
        want.sort();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.expect("server.session_state", left).await;
            let mut got: Vec<String> = m["payload"]["participants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            got.sort();
            if got == want {
                return;
            }
        }
    }

    /// The close code the server ends with, skipping messages before it.
    pub async fn close_code(&mut self, within: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??;
            match msg {
                Ok(Message::Close(Some(f))) => return Some(u16::from(f.code)),
                Ok(Message::Close(None)) => return None,
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}
