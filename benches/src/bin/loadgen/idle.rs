//! Idle-connection mode of the load generator: holds N authenticated
//! WebSocket connections open and quiet (answering pings), so the gateway's
//! resident memory per idle socket can be read off while they are held.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;

use super::{setup_clients, Args};

/// Connections opened at once.
const CONNECT_CONCURRENCY: usize = 200;

pub async fn run(args: &Args, sockets: usize) -> anyhow::Result<()> {
    // the client holds as many sockets as the gateway: lift its own open-files limit too
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raising the open-files limit")?;
    if (limit as usize) < sockets + 100 {
        anyhow::bail!(
            "open-files limit {limit} is too low for {sockets} sockets (raise the hard limit)"
        );
    }
    // 500 sessions of 20 sockets: every join sends the session's presence to each of its
    // sockets, so fewer, fuller sessions would measure that fan-out instead of idling
    let clients = setup_clients(args, 1000.min(sockets)).await?;
    let ws_base = args.url.replacen("http", "ws", 1);
    let urls: Vec<String> = clients
        .iter()
        .map(|c| format!("{ws_base}/v1/sessions/{}/ws?token={}", c.sid, c.token))
        .collect();
    let open = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    let hold = Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::with_capacity(sockets);
    for i in 0..sockets {
        let url = urls[i % urls.len()].clone();
        let (open, failed, gate) = (open.clone(), failed.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let ws = match tokio_tungstenite::connect_async(&url).await {
                Ok((ws, _)) => ws,
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("first failed connection: {e}");
                    }
                    return;
                }
            };
            drop(permit);
            open.fetch_add(1, Ordering::Relaxed);
            // reading answers the server's pings; nothing is sent
            let (_tx, mut rx) = ws.split();
            let _ = tokio::time::timeout(hold, async { while rx.next().await.is_some() {} }).await;
        }));
    }
    while open.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < sockets {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "idle_sockets={} open={} failed={} connect_s={:.1} holding_s={}",
        sockets,
        open.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        args.duration
    );
    // signal readiness to a script that measures the gateway now
    eprintln!("READY");
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}
