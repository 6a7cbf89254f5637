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
    // measured while the machine is still quiet, printed with the figures like a frames run's
    let (same, cross) = super::machine::measure(5_000)?;
    // the client holds as many sockets as the gateway: lift its own open-files limit too
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raising the open-files limit")?;
    if (limit as usize) < sockets + 100 {
        anyhow::bail!(
            "open-files limit {limit} is too low for {sockets} sockets (raise the hard limit)"
        );
    }
    // by default 500 sessions of 20 sockets: every join sends the session's presence to each
    // of its sockets, so fewer, fuller sessions would measure that fan-out instead of idling;
    // `--session-sockets 2` gives every member one socket and every two sockets a session
    let per_session = args.session_sockets;
    if per_session < 2 || !per_session.is_multiple_of(2) {
        anyhow::bail!("--session-sockets must be an even number >= 2, not {per_session}");
    }
    // one client per member; socket i goes to client i mod clients, so each member holds
    // `per_session / 2` of them
    let started = std::time::Instant::now();
    let members = (sockets.div_ceil(per_session) * 2).min(sockets);
    let clients = setup_clients(args, members).await?;
    let ws_base = args.url.replacen("http", "ws", 1);
    let urls: Vec<String> = clients
        .iter()
        .map(|c| format!("{ws_base}/v1/sessions/{}/ws?token={}", c.sid, c.token))
        .collect();
    let setup_s = started.elapsed().as_secs_f64();
    // the users and sessions exist, no socket yet: a script reads the baseline memory now
    eprintln!("SET-UP");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let open = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    // every socket is held until `--duration` after the last one opened, so the first ones
    // are still there when the gateway's memory is read, however long connecting took
    let (release, released) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::with_capacity(sockets);
    for i in 0..sockets {
        let url = urls[i % urls.len()].clone();
        let (open, failed, gate) = (open.clone(), failed.clone(), gate.clone());
        let mut released = released.clone();
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
            tokio::select! {
                _ = async { while rx.next().await.is_some() {} } => {}
                _ = released.wait_for(|r| *r) => {}
            }
        }));
    }
    while open.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < sockets {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "idle_sockets={} sessions={} open={} failed={} setup_s={:.1} connect_s={:.1} holding_s={}",
        sockets,
        members.div_ceil(2),
        open.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        setup_s,
        started.elapsed().as_secs_f64() - setup_s,
        args.duration
    );
    let cross = cross
        .map(|c| format!(" cross_cpu_p50_us={:.1}", c.p50_us))
        .unwrap_or_else(|| " cross_cpu=(one CPU allowed)".into());
    println!(
        "machine: loopback round trip before the run same_cpu_p50_us={:.1}{cross}",
        same.p50_us
    );
    // signal readiness to a script that measures the gateway now
    eprintln!("READY");
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let _ = release.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}
