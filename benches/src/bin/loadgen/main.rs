//! Load generator for the realtime path: N WebSocket clients in sessions of
//! two, sending over-threshold feature frames open loop at a total rate, and
//! timing frame → nudge from each frame's *scheduled* send time (so a stall
//! is not hidden). Run the gateway with `NUDGE_RATE_LIMIT_SECONDS=0` so every
//! frame yields a nudge; loss is then `sent - nudged`. With `--nats-url` it
//! also measures a raw NATS request/reply round trip as a baseline.
//!
//! With `--idle-sockets N` it holds N quiet connections for `--duration` s
//! (the gateway's memory per idle socket is read meanwhile).
//!
//! With `--audio-streams N` it measures the live speaker path instead: N
//! sessions, one phone each streaming `pcm_s16le` speech in real time (100 ms
//! chunks, starts staggered over one segment), timing each `server.speaker`
//! from the moment the last chunk of its 1.5 s segment was due to be sent.
//! The gateway (or worker) needs `ECAPA_MODEL_DIR`; `--bin random_model`
//! writes a full-size random-weight model.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

mod audio;
mod idle;

#[derive(Parser, Debug)]
#[command(about = "Inside realtime load generator (frame → nudge latency and throughput)")]
struct Args {
    /// Gateway base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// WebSocket clients (two per session, one per user).
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// Frames per second over all clients.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to wait for the last nudges.
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
    /// Also time raw NATS request/reply round trips (the baseline).
    #[arg(long)]
    nats_url: Option<String>,
    /// Live audio mode: this many concurrent speech streams instead of frames.
    #[arg(long)]
    audio_streams: Option<usize>,
    /// Idle mode: hold this many authenticated, quiet WebSocket connections for `--duration`.
    #[arg(long)]
    idle_sockets: Option<usize>,
    /// Speech to stream (looped), any format the server decodes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../engine/tests/fixtures/audio/speech.flac"))]
    audio_file: std::path::PathBuf,
}

struct Client {
    sid: String,
    token: String,
}

#[derive(Default)]
struct Tally {
    sent: u64,
    nudged: u64,
    hist: Option<Histogram<u64>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(sockets) = args.idle_sockets {
        return idle::run(&args, sockets).await;
    }
    if let Some(streams) = args.audio_streams {
        return audio::run(&args, streams).await;
    }
    let baseline = match &args.nats_url {
        Some(url) => Some(nats_baseline(url, 5_000).await?),
        None => None,
    };
    let clients = setup(&args).await?;
    let ws_base = args.url.replacen("http", "ws", 1);
    let per_client = args.rate / clients.len() as f64;
    let interval = Duration::from_secs_f64(1.0 / per_client);
    let total = Arc::new(Mutex::new(Tally {
        hist: Some(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        ..Tally::default()
    }));
    let start = tokio::time::Instant::now() + Duration::from_millis(500);
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let url = format!("{ws_base}/v1/sessions/{}/ws?token={}", c.sid, c.token);
        let total = total.clone();
        // Stagger clients across one interval so sends do not align.
        let first = start + interval.mul_f64(i as f64 / (args.rate / per_client));
        let send_for = Duration::from_secs_f64(args.duration);
        let drain = Duration::from_secs_f64(args.drain);
        tasks.push(tokio::spawn(async move {
            run_client(url, c.sid, first, interval, send_for, drain, total).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let tally = total.lock().await;
    let Some(h) = tally.hist.as_ref() else {
        bail!("no histogram")
    };
    let us = |q: f64| h.value_at_quantile(q);
    let lost = tally.sent.saturating_sub(tally.nudged);
    let base = baseline
        .map(|b| {
            format!(
                " nats_rr_p50_us={b} ratio_p50={:.2}",
                us(0.5) as f64 / b as f64
            )
        })
        .unwrap_or_default();
    println!(
        "clients={} rate={} duration_s={} sent={} nudged={} lost={} throughput_fps={:.0} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}{}",
        args.clients, args.rate, args.duration, tally.sent, tally.nudged, lost,
        tally.nudged as f64 / args.duration, us(0.5), us(0.9), us(0.99), us(0.999), h.max(), base
    );
    Ok(())
}

async fn run_client(
    url: String,
    sid: String,
    first: tokio::time::Instant,
    interval: Duration,
    send_for: Duration,
    drain: Duration,
    total: Arc<Mutex<Tally>>,
) -> anyhow::Result<()> {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(&url, None, true)
        .await
        .context("connect")?;
    let (mut tx, mut rx) = ws.split();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut scheduled: HashMap<i64, tokio::time::Instant> = HashMap::new();
    let (mut sent, mut nudged) = (0u64, 0u64);
    let end = first + send_for;
    let mut next = first;
    let mut seq = 0i64;
    loop {
        let sending = next < end;
        let deadline = if sending { next } else { end + drain };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                if !sending { break; }
                seq += 1;
                let frame = json!({"type":"client.feature_frame","sid":sid,"payload":{"timestamp_ms":seq,"speaking_rate":6.0,"overlap_ratio":0.0,"seq":seq}});
                scheduled.insert(seq, next);
                tx.send(Message::Text(frame.to_string().into())).await?;
                sent += 1;
                next += interval;
            }
            msg = rx.next() => {
                let Some(msg) = msg else { break };
                if let Message::Text(t) = msg? {
                    let v: Value = serde_json::from_str(t.as_str())?;
                    if v["type"] == "server.nudge" {
                        if let Some(at) = v["payload"]["frame_seq"].as_i64().and_then(|s| scheduled.remove(&s)) {
                            hist.record((at.elapsed().as_micros() as u64).max(1))?;
                            nudged += 1;
                        }
                    }
                }
                if !sending && scheduled.is_empty() { break; }
            }
        }
    }
    let mut t = total.lock().await;
    t.sent += sent;
    t.nudged += nudged;
    if let Some(h) = t.hist.as_mut() {
        h.add(&hist)?;
    }
    Ok(())
}

/// Signs up pairs of users, relates them, grants consent, starts sessions.
async fn setup(args: &Args) -> anyhow::Result<Vec<Client>> {
    setup_clients(args, args.clients).await
}

async fn setup_clients(args: &Args, count: usize) -> anyhow::Result<Vec<Client>> {
    let http = reqwest::Client::new();
    let base = args.url.trim_end_matches('/');
    let post = |path: String, token: Option<String>, body: Value| {
        let mut req = http.post(format!("{base}{path}")).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let res = req.send().await?;
            let status = res.status();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("{status}: {body}");
            }
            anyhow::Ok(body)
        }
    };
    let mut clients = Vec::new();
    let run = uuid::Uuid::new_v4().simple().to_string();
    for s in 0..count.div_ceil(2) {
        let mut pair = Vec::new();
        for who in ["a", "b"] {
            let email = format!("load-{run}-{s}-{who}@example.com");
            let tp = post(
                "/v1/auth/signup".into(),
                None,
                json!({"email": email, "password": "load test password", "name": who}),
            )
            .await?;
            pair.push(tp);
        }
        let tok = |i: usize| {
            pair[i]["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let rel = post(
            "/v1/relationships".into(),
            Some(tok(0)),
            json!({"partner_email": pair[1]["user"]["email"], "kind": "friends"}),
        )
        .await?;
        let rid = rel["id"].as_str().unwrap_or_default().to_string();
        for (i, member) in pair.iter().enumerate() {
            let uid = member["user"]["id"].as_str().unwrap_or_default();
            let res = http
                .put(format!("{base}/v1/relationships/{rid}/consent/{uid}"))
                .bearer_auth(tok(i))
                .json(&json!({"status": "granted"}))
                .send()
                .await?;
            if !res.status().is_success() {
                bail!("consent: {}", res.status());
            }
        }
        let session = post(
            "/v1/sessions".into(),
            Some(tok(0)),
            json!({"relationship_id": rid}),
        )
        .await?;
        let sid = session["id"].as_str().unwrap_or_default().to_string();
        for i in 0..2 {
            if clients.len() < count {
                clients.push(Client {
                    sid: sid.clone(),
                    token: tok(i),
                });
            }
        }
    }
    Ok(clients)
}

/// p50 of `n` sequential NATS request/reply round trips, in µs.
async fn nats_baseline(url: &str, n: usize) -> anyhow::Result<u64> {
    let client = async_nats::connect(url).await?;
    let subject = format!("loadgen.echo.{}", uuid::Uuid::new_v4().simple());
    let mut sub = client.subscribe(subject.clone()).await?;
    let responder = client.clone();
    let echo = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(reply) = m.reply {
                let _ = responder.publish(reply, m.payload).await;
            }
        }
    });
    client.flush().await?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let payload = bytes_payload();
    for _ in 0..n {
        let t = Instant::now();
        client
            .request(subject.clone(), payload.clone().into())
            .await?;
        hist.record((t.elapsed().as_micros() as u64).max(1))?;
    }
    echo.abort();
    Ok(hist.value_at_quantile(0.5))
}

fn bytes_payload() -> Vec<u8> {
    br#"{"timestamp_ms":1,"speaking_rate":6.0,"overlap_ratio":0.0,"seq":1}"#.to_vec()
}
