//! Live audio mode of the load generator: N concurrent real-time speech
//! streams, one per session, and the latency from the end of each 1.5 s
//! segment (the moment its last chunk was due) to its `server.speaker`.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use inside_engine::speech::decode;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{setup_clients, Args};

/// The gateway cuts segments of this length (stream-relative `start_ms` multiples).
const SEGMENT_MS: u64 = 1500;
/// One WebSocket binary frame of audio.
const CHUNK_MS: u64 = 100;

#[derive(Default)]
struct StreamTally {
    segments: u64,
    attributed: u64,
    hist: Option<Histogram<u64>>,
}

pub async fn run(args: &Args, streams: usize) -> anyhow::Result<()> {
    let file = std::fs::read(&args.audio_file)
        .with_context(|| format!("reading {}", args.audio_file.display()))?;
    let speech = decode(file, None, &Default::default())
        .with_context(|| format!("decoding {}", args.audio_file.display()))?
        .samples;
    if speech.is_empty() {
        bail!("{} holds no audio", args.audio_file.display());
    }
    // whole segments only, so every segment sent can be answered
    let seconds = (args.duration * 1000.0 / SEGMENT_MS as f64)
        .floor()
        .max(1.0)
        * SEGMENT_MS as f64
        / 1000.0;
    let pcm: Vec<u8> = speech
        .iter()
        .cycle()
        .take((seconds * 16_000.0) as usize)
        .flat_map(|x| ((x.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect();
    let pcm = std::sync::Arc::new(pcm);
    // one phone per session: user a streams, b stays away (events are per session)
    let clients = setup_clients(args, streams * 2).await?;
    let ws_base = args.url.replacen("http", "ws", 1);
    let start = Instant::now() + Duration::from_millis(500);
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().step_by(2).enumerate() {
        let url = format!("{ws_base}/v1/sessions/{}/ws?token={}", c.sid, c.token);
        let first = start + Duration::from_millis(SEGMENT_MS).mul_f64(i as f64 / streams as f64);
        let pcm = pcm.clone();
        let drain = Duration::from_secs_f64(args.drain);
        tasks.push(tokio::spawn(async move {
            stream(url, c.sid, first, pcm, drain).await
        }));
    }
    let mut total = StreamTally {
        hist: Some(super::latency_histogram()?),
        ..StreamTally::default()
    };
    for t in tasks {
        let one = t.await??;
        total.segments += one.segments;
        total.attributed += one.attributed;
        if let (Some(all), Some(h)) = (total.hist.as_mut(), one.hist.as_ref()) {
            all.add(h)?;
        }
    }
    let Some(h) = total.hist.as_ref() else {
        bail!("no histogram")
    };
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "audio_streams={streams} seconds={seconds} segments={} speaker_events={} attributed={} silent_or_lost={} p50_ms={:.1} p90_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        total.segments,
        h.len(),
        total.attributed,
        total.segments.saturating_sub(h.len()),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        h.max() as f64 / 1000.0,
    );
    Ok(())
}

/// Streams `pcm` in real time from `first`, collecting speaker events until `drain` after.
async fn stream(
    url: String,
    sid: String,
    first: Instant,
    pcm: std::sync::Arc<Vec<u8>>,
    drain: Duration,
) -> anyhow::Result<StreamTally> {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(&url, None, true)
        .await
        .context("connect")?;
    let (mut tx, mut rx) = ws.split();
    let start = json!({"type": "client.audio_start", "sid": sid,
        "payload": {"codec": "pcm_s16le", "sample_rate": 16000, "channels": 1}});
    tx.send(Message::Text(start.to_string().into())).await?;
    let chunk_bytes = (16 * CHUNK_MS * 2) as usize;
    let chunks: Vec<&[u8]> = pcm.chunks(chunk_bytes).collect();
    let segments = (pcm.len() / 2) as u64 / (16 * SEGMENT_MS);
    let mut hist = super::latency_histogram()?;
    // due time of each segment's last chunk, by start_ms
    let mut due: HashMap<i64, Instant> = HashMap::new();
    let mut attributed = 0;
    let mut next = 0usize;
    let end = first + Duration::from_millis(CHUNK_MS * chunks.len() as u64);
    loop {
        let sending = next < chunks.len();
        let deadline = if sending {
            first + Duration::from_millis(CHUNK_MS * next as u64)
        } else {
            end + drain
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                if !sending { break; }
                tx.send(Message::Binary(chunks[next].to_vec().into())).await?;
                let sent_ms = CHUNK_MS * (next as u64 + 1);
                if sent_ms.is_multiple_of(SEGMENT_MS) {
                    due.insert((sent_ms - SEGMENT_MS) as i64, deadline);
                }
                next += 1;
                if next == chunks.len() {
                    let stop = json!({"type": "client.audio_stop", "sid": sid, "payload": {}});
                    tx.send(Message::Text(stop.to_string().into())).await?;
                }
            }
            msg = rx.next() => {
                let Some(msg) = msg else { break };
                if let Message::Text(t) = msg? {
                    let v: Value = serde_json::from_str(t.as_str())?;
                    if v["type"] == "server.error" {
                        bail!("server.error: {v}");
                    }
                    if v["type"] == "server.speaker" {
                        let at = v["payload"]["start_ms"].as_i64().and_then(|s| due.remove(&s));
                        if let Some(at) = at {
                            hist.record((at.elapsed().as_micros() as u64).max(1))?;
                            if !v["payload"]["user_id"].is_null() {
                                attributed += 1;
                            }
                        }
                    }
                }
                if !sending && due.is_empty() { break; }
            }
        }
    }
    Ok(StreamTally {
        segments,
        attributed,
        hist: Some(hist),
    })
}
