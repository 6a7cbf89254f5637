//! Login latency under a signup flood: `--flood-clients` clients sign up back to
//! back, each from its own loopback address (127.0.1.x, so the per-address
//! signup limit does not stop them and every signup reaches bcrypt), while one
//! client logs in with a correct password every `--login-every-ms` and times it.
//! Logins are timed first on an idle gateway, then during the flood. Run the
//! gateway at its default `BCRYPT_COST` (12); `benches/http/run.sh signup-flood`
//! starts one on PostgreSQL and runs this.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Login latency p50/p99 while many clients flood signups")]
struct Args {
    /// Gateway base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Concurrent signup clients, each from its own 127.0.1.x address.
    #[arg(long, default_value_t = 32)]
    flood_clients: usize,
    /// Seconds of flood.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Pause between two timed logins.
    #[arg(long, default_value_t = 200)]
    login_every_ms: u64,
    /// Logins timed on the idle gateway first.
    #[arg(long, default_value_t = 10)]
    idle_logins: usize,
}

#[derive(Default)]
struct Statuses(std::collections::BTreeMap<u16, u64>);

impl Statuses {
    fn add(&mut self, s: u16) {
        *self.0.entry(s).or_default() += 1;
    }
    fn show(&self) -> String {
        self.0
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::new();
    let email = format!("owner-{}@bench.example", uuid::Uuid::new_v4().simple());
    let password = "bench-password";
    let res = http
        .post(format!("{}/v1/auth/signup", args.url))
        .json(&json!({"email": email, "password": password, "name": "Owner"}))
        .send()
        .await
        .context("reaching the gateway")?;
    if res.status().as_u16() != 201 {
        bail!(
            "signing up the owner: {} {}",
            res.status(),
            res.text().await?
        );
    }

    let idle = time_logins(
        &http,
        &args,
        &email,
        password,
        LoginsUntil::Count(args.idle_logins),
    )
    .await?;
    report("idle", &idle.0, &idle.1);

    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..args.flood_clients {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, (i % 250 + 1) as u8));
        let client = reqwest::Client::builder().local_address(ip).build()?;
        let (url, stop) = (format!("{}/v1/auth/signup", args.url), stop.clone());
        flood.spawn(async move {
            let mut statuses = Statuses::default();
            while !stop.load(Ordering::Relaxed) {
                let email = format!("flood-{}@bench.example", uuid::Uuid::new_v4().simple());
                let res = client
                    .post(&url)
                    .json(&json!({"email": email, "password": "bench-password", "name": "Flood"}))
                    .send()
                    .await;
                match res {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        statuses.add(s);
                        if let Some(wait) = r
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok())
                        {
                            // A polite client honours Retry-After; a hostile one would not,
                            // and is answered at once either way.
                            if s == 429 {
                                tokio::time::sleep(Duration::from_secs(wait.min(1))).await;
                            }
                        }
                    }
                    Err(_) => statuses.add(0),
                }
            }
            statuses
        });
    }
    // Let the flood fill the queues before timing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let during = time_logins(
        &http,
        &args,
        &email,
        password,
        LoginsUntil::Elapsed(Duration::from_secs_f64(args.duration)),
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    let mut signups = Statuses::default();
    while let Some(s) = flood.join_next().await {
        for (k, v) in s?.0 {
            *signups.0.entry(k).or_default() += v;
        }
    }
    let secs = started.elapsed().as_secs_f64() + 2.0;
    report("during the flood", &during.0, &during.1);
    println!(
        "signups from {} clients over {secs:.1} s: {} ({:.1} created/s)",
        args.flood_clients,
        signups.show(),
        signups.0.get(&201).copied().unwrap_or(0) as f64 / secs
    );
    Ok(())
}

enum LoginsUntil {
    Count(usize),
    Elapsed(Duration),
}

async fn time_logins(
    http: &reqwest::Client,
    args: &Args,
    email: &str,
    password: &str,
    until: LoginsUntil,
) -> anyhow::Result<(Histogram<u64>, Statuses)> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut statuses = Statuses::default();
    let start = Instant::now();
    let mut n = 0;
    loop {
        match until {
            LoginsUntil::Count(c) if n >= c => break,
            LoginsUntil::Elapsed(d) if start.elapsed() >= d => break,
            _ => {}
        }
        let t = Instant::now();
        let res = http
            .post(format!("{}/v1/auth/login", args.url))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await?;
        let status = res.status().as_u16();
        let _ = res.bytes().await?;
        hist.record(t.elapsed().as_micros().max(1) as u64)?;
        statuses.add(status);
        n += 1;
        tokio::time::sleep(Duration::from_millis(args.login_every_ms)).await;
    }
    Ok((hist, statuses))
}

fn report(phase: &str, h: &Histogram<u64>, statuses: &Statuses) {
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "login {phase}: n={} p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; statuses {}",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        statuses.show()
    );
}
