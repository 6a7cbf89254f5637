//! Load generator for the realtime path: N WebSocket clients in sessions of
//! two, sending feature frames open loop at a total rate (a precise pacer
//! thread, see `frames.rs`), and timing frame → nudge from each frame's
//! *scheduled* send time (so a stall is not hidden). Every `--probe-every`-th
//! frame of a client is over the threshold and must come back as a nudge; run
//! the gateway with `NUDGE_RATE_LIMIT_SECONDS=0` so that every probe does, and
//! loss is `probes - nudged`. The gateway's and workers' `/metrics` counters
//! are read before and after, so frames are counted at every hop. With
//! `--nats-url` it also measures a raw NATS request/reply round trip as a
//! baseline. Before anything it times a loopback round trip on one CPU and across two
//! (`machine.rs`), the machine's price of a wakeup at that hour, and reads how much CPU time the
//! host stole during the floor and the frames.
//!
//! With `--idle-sockets N` it holds N quiet connections for `--duration` s
//! (the gateway's memory per idle socket is read meanwhile), `--session-sockets` of them in
//! each session (20 by default; 2 is one socket per member, the most sessions for the count).
//!
//! With `--audio-streams N` it measures the live speaker path instead: N
//! sessions, one phone each streaming `pcm_s16le` speech in real time (100 ms
//! chunks, starts staggered over one segment), timing each `server.speaker`
//! from the moment the last chunk of its 1.5 s segment was due to be sent.
//! The gateway (or worker) needs `ECAPA_MODEL_DIR`; `--bin random_model`
//! writes a full-size random-weight model.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

mod audio;
mod frames;
mod hops;
mod idle;
mod machine;
mod relay;
mod rx_stamp;

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
    /// Every Nth frame is a probe over the threshold that must come back as a nudge; the
    /// others only load the path (1: every frame is a probe).
    #[arg(long, default_value_t = 1)]
    probe_every: u64,
    /// The server's `NUDGE_RATE_LIMIT_SECONDS` when it is not 0: a probe then gets a nudge only
    /// once per window per client, so loss is counted as frames the worker did not process
    /// (`worker_processed`, needs `--worker-metrics` on NATS) and the latency figures are of
    /// the nudges that went out. Each client's first probe waits for its turn in the window
    /// (client `c` of `n` after `window × (c + 1) / n`), so the windows do not all end at once.
    #[arg(long, default_value_t = 0.0)]
    nudge_window: f64,
    /// Also write each probe's `send_ms latency_us` (send time from the start of sending) to
    /// this file, to see when the slow ones happened.
    #[arg(long)]
    latency_log: Option<std::path::PathBuf>,
    /// How nudges are read: `one` thread waiting on every socket (epoll), or a thread
    /// `per-client`; by default one when nudges are due at 10,000 a second or more (frames
    /// over the probe share, or with the limit on a nudge per client per window), a thread
    /// per client below.
    #[arg(long, value_enum)]
    readers: Option<frames::Readers>,
    /// A worker's metrics URL (e.g. http://127.0.0.1:18101/metrics), to count frames at its hop.
    #[arg(long)]
    worker_metrics: Vec<String>,
    /// Also time raw NATS request/reply round trips (the baseline).
    #[arg(long)]
    nats_url: Option<String>,
    /// With `--nats-url`: before the frames, run the same rate, duration and probe share on
    /// raw NATS (an echo in the worker's place, no Inside code) and print its latency as the
    /// machine's floor.
    #[arg(long)]
    nats_floor: bool,
    /// Live audio mode: this many concurrent speech streams instead of frames.
    #[arg(long)]
    audio_streams: Option<usize>,
    /// Idle mode: hold this many authenticated, quiet WebSocket connections for `--duration`.
    #[arg(long)]
    idle_sockets: Option<usize>,
    /// Idle mode: sockets per session, spread evenly over its two members (an even number
    /// ≥ 2). 20 measures the sockets; 2 (one per member) the most sessions, what each session
    /// costs the gateway and the worker (subscriptions, presence, session caches).
    #[arg(long, default_value_t = 20)]
    session_sockets: usize,
    /// Speech to stream (looped), any format the server decodes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../engine/tests/fixtures/audio/speech.flac"))]
    audio_file: std::path::PathBuf,
}

struct Client {
    sid: String,
    token: String,
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
    // measured while the machine is still quiet
    let wakeups = machine::measure(5_000)?;
    let baseline = match &args.nats_url {
        Some(url) => Some(nats_baseline(url, 5_000).await?),
        None => None,
    };
    let floor = match (&args.nats_url, args.nats_floor) {
        (Some(url), true) => {
            let ticks = machine::CpuTicks::now();
            let f = relay::run(url, args.rate, args.duration, args.probe_every).await?;
            let share = machine::CpuTicks::steal_since(ticks)
                .map(|s| format!(" {s}"))
                .unwrap_or_default();
            let q = |q: f64| f.hist.value_at_quantile(q);
            Some(format!(
                " floor_p50_us={} floor_p99_us={} floor_p999_us={} floor_lost={}{share}",
                q(0.5),
                q(0.99),
                q(0.999),
                f.expected.saturating_sub(f.hist.len())
            ))
        }
        (None, true) => bail!("--nats-floor needs --nats-url"),
        _ => None,
    };
    let clients = setup(&args).await?;
    let ws_base = args.url.replacen("http", "ws", 1);
    let plan = frames::Plan {
        rate: args.rate,
        duration: args.duration,
        drain: args.drain,
        probe_every: args.probe_every,
        latency_log: args.latency_log.is_some(),
        readers: args.readers.unwrap_or_else(|| {
            frames::Readers::for_nudges_per_s(if args.nudge_window > 0.0 {
                args.clients as f64 / args.nudge_window
            } else {
                args.rate / args.probe_every.max(1) as f64
            })
        }),
        stagger: (args.nudge_window > 0.0).then(|| Duration::from_secs_f64(args.nudge_window)),
    };
    let http = reqwest::Client::new();
    let metrics_urls: Vec<String> = std::iter::once(format!("{}/metrics", args.url))
        .chain(args.worker_metrics.iter().cloned())
        .collect();
    let before = hops::snapshot(&http, &metrics_urls).await?;
    let ticks_before = machine::CpuTicks::now();
    let cpu_before = machine::own_cpu_s();
    let out = tokio::task::spawn_blocking(move || frames::run(&ws_base, &clients, &plan)).await??;
    let share = machine::CpuTicks::steal_since(ticks_before);
    let generator_cpu = machine::own_cpu_s().zip(cpu_before).map_or_else(
        || " generator_cpu_s=?".to_string(),
        |(a, b)| format!(" generator_cpu_s={:.2}", a - b),
    );
    // let the last recorded events reach the database before counting
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = hops::snapshot(&http, &metrics_urls).await?;
    if let Some(path) = &args.latency_log {
        use std::fmt::Write as _;
        let mut lines = String::with_capacity(out.timeline.len() * 16);
        for (send_us, us) in &out.timeline {
            let _ = writeln!(lines, "{:.3} {us}", *send_us as f64 / 1000.0);
        }
        std::fs::write(path, lines)?;
    }
    let h = &out.hist;
    let us = |q: f64| h.value_at_quantile(q);
    let lost = if args.nudge_window > 0.0 {
        let processed = if args.worker_metrics.is_empty() && args.nats_url.is_some() {
            0
        } else {
            hops::grew(&before, &after, "worker_processed")
        };
        out.sent.saturating_sub(processed)
    } else {
        out.probes.saturating_sub(out.nudged)
    };
    let base = baseline
        .map(|b| {
            format!(
                " nats_rr_p50_us={b} ratio_p50={:.2}",
                us(0.5) as f64 / b as f64
            )
        })
        .unwrap_or_default()
        + &(if args.nudge_window > 0.0 {
            format!(" nudge_window_s={}", args.nudge_window)
        } else {
            String::new()
        });
    println!(
        "clients={} rate={} duration_s={} sent={} probes={} nudged={} lost={} resyncs={} send_s={:.2} throughput_fps={:.0} last_nudge_s={:.2} nudges_per_s={:.0} pacer_lag_p50_us={} pacer_lag_p99_us={} pacer_lag_max_us={} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} rx_p50_us={} rx_p99_us={} rx_p999_us={}{}",
        args.clients, args.rate, args.duration, out.sent, out.probes, out.nudged, lost, out.resyncs, out.send_s,
        out.sent as f64 / out.send_s.max(args.duration), out.last_nudge_s,
        out.nudged as f64 / out.last_nudge_s.max(args.duration), out.pacer_lag.value_at_quantile(0.5), out.pacer_lag.value_at_quantile(0.99), out.pacer_lag.max(),
        us(0.5), us(0.9), us(0.99), us(0.999), h.max(),
        out.rx_hist.value_at_quantile(0.5), out.rx_hist.value_at_quantile(0.99), out.rx_hist.value_at_quantile(0.999), base
    );
    if let Some(floor) = floor {
        println!("nats floor at the same rate:{floor}");
    }
    println!("hops {}", hops::delta(&before, &after, out.sent));
    let (same, cross) = wakeups;
    let cross = cross
        .map(|c| {
            format!(
                " cross_cpu_p50_us={:.1} cross_cpu_p99_us={:.1}",
                c.p50_us, c.p99_us
            )
        })
        .unwrap_or_else(|| " cross_cpu=(one CPU allowed)".into());
    println!(
        "machine: loopback round trip before the run same_cpu_p50_us={:.1} same_cpu_p99_us={:.1}{cross}; while sending frames {}{generator_cpu}",
        same.p50_us,
        same.p99_us,
        share.map_or_else(|| "(no /proc/stat)".to_string(), |s| s.to_string())
    );
    Ok(())
}

/// Signs up pairs of users, relates them, grants consent, starts sessions.
async fn setup(args: &Args) -> anyhow::Result<Vec<Client>> {
    setup_clients(args, args.clients).await
}

/// Sessions set up at once (sign-ups, relationship, consents, session: six requests each).
const SETUP_CONCURRENCY: usize = 16;

async fn setup_clients(args: &Args, count: usize) -> anyhow::Result<Vec<Client>> {
    let http = reqwest::Client::new();
    let base = args.url.trim_end_matches('/').to_string();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let sessions: Vec<[Client; 2]> = futures::stream::iter(0..count.div_ceil(2))
        .map(|s| setup_session(&http, &base, &run, s))
        .buffered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    Ok(sessions.into_iter().flatten().take(count).collect())
}

/// Two users who relate and consent, and the session they start: one client each.
async fn setup_session(
    http: &reqwest::Client,
    base: &str,
    run: &str,
    s: usize,
) -> anyhow::Result<[Client; 2]> {
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
    Ok([0, 1].map(|i| Client {
        sid: sid.clone(),
        token: tok(i),
    }))
}

/// A histogram of latencies in µs, 1 µs to 60 s, three significant digits (every mode's).
fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
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
    let mut hist = latency_histogram()?;
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
