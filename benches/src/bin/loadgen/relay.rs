//! The machine's own floor at a given rate: the pipeline's message pattern on raw NATS, with
//! none of Inside's code in it. Open loop, like the frames: messages at `rate` to a subject,
//! an echo on its own connection (the worker's place) sends every `probe_every`-th back on a
//! second subject, and the sender's connection (the gateway's place) times each one from its
//! scheduled send time. Its p99 next to the pipeline's says how much of a tail is the
//! machine's (six busy processes on two cores) and how much is Inside's.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use hdrhistogram::Histogram;

use super::frames::{Schedule, WakeClock};

/// What came back: latencies of the echoed messages, and how many were expected.
pub struct Floor {
    pub hist: Histogram<u64>,
    pub expected: u64,
}

pub async fn run(url: &str, rate: f64, duration: f64, probe_every: u64) -> anyhow::Result<Floor> {
    let sender = async_nats::connect(url).await.context("relay: NATS")?;
    let echo = async_nats::connect(url).await.context("relay: NATS")?;
    let id = uuid::Uuid::new_v4().simple();
    let to_echo = async_nats::Subject::from(format!("loadgen.relay.{id}.in"));
    let back = async_nats::Subject::from(format!("loadgen.relay.{id}.out"));
    let every = probe_every.max(1);
    let mut incoming = echo.queue_subscribe(to_echo.clone(), "echo".into()).await?;
    let echo_task = {
        let (echo, back) = (echo.clone(), back.clone());
        tokio::spawn(async move {
            while let Some(m) = incoming.next().await {
                if index(&m.payload).is_some_and(|k| k % every == 0) {
                    let _ = echo.publish(back.clone(), m.payload).await;
                }
            }
        })
    };
    let mut returned = sender.subscribe(back).await?;
    echo.flush().await?;
    sender.flush().await?;

    let total = (rate * duration).round() as u64;
    // messages 0, every, 2 × every, … come back
    let expected = total.div_ceil(every);
    let schedule = Schedule {
        start: Instant::now() + Duration::from_millis(200),
        period_ns: 1e9 / rate,
        clients: 1,
    };
    let reader = tokio::spawn(async move {
        let mut hist = super::latency_histogram()?;
        let mut got = 0;
        let deadline = schedule.due(total) + Duration::from_secs(2);
        while got < expected {
            let next = tokio::time::timeout_at(deadline.into(), returned.next()).await;
            let Ok(Some(m)) = next else { break };
            if let Some(k) = index(&m.payload) {
                let us = Instant::now()
                    .saturating_duration_since(schedule.due(k))
                    .as_micros() as u64;
                hist.record(us.max(1))?;
                got += 1;
            }
        }
        anyhow::Ok(hist)
    });
    // the pacer is a plain thread, as in the frames mode: tokio's timer rounds to the millisecond
    let handle = tokio::runtime::Handle::current();
    let pacer = {
        let sender = sender.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut clock = WakeClock::default();
            let mut payload = [b' '; 72];
            for k in 0..total {
                clock.wait_until(schedule.due(k));
                payload[..8].copy_from_slice(&k.to_le_bytes());
                handle.block_on(sender.publish(to_echo.clone(), payload.to_vec().into()))?;
            }
            Ok(())
        })
    };
    tokio::task::spawn_blocking(move || pacer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the relay pacer panicked"))??;
    let hist = reader.await??;
    echo_task.abort();
    Ok(Floor { hist, expected })
}

fn index(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?))
}
