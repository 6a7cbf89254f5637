//! Counting frames at every hop: the gateway's and workers' Prometheus counters, read before and
//! after a run, so a loss shows where it happened (published by the gateway, received and
//! processed by a worker, dropped by a full subscription, events recorded or lost).

use std::collections::BTreeMap;

use anyhow::Context;

/// The counters each hop keeps, summed over labels and processes.
const COUNTERS: [(&str, &str); 8] = [
    ("inside_frames_published_total", "gateway_published"),
    ("inside_frames_received_total", "worker_received"),
    ("inside_frames_processed_total", "worker_processed"),
    ("inside_nudges_delivered_total", "gateway_nudges_delivered"),
    ("inside_nudges_limited_total", "worker_nudges_limited"),
    ("inside_bus_slow_consumer_total", "slow_consumer_drops"),
    ("inside_events_recorded_total", "events_recorded"),
    ("inside_events_lost_total", "events_lost"),
];

pub type Snapshot = BTreeMap<&'static str, f64>;

pub async fn snapshot(http: &reqwest::Client, urls: &[String]) -> anyhow::Result<Snapshot> {
    let mut out: Snapshot = COUNTERS.iter().map(|(_, k)| (*k, 0.0)).collect();
    for url in urls {
        let text = http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("reading {url}"))?
            .text()
            .await?;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let metric = name.split('{').next().unwrap_or(name);
            if let Some((_, key)) = COUNTERS.iter().find(|(m, _)| *m == metric) {
                if let (Some(slot), Ok(v)) = (out.get_mut(key), value.parse::<f64>()) {
                    *slot += v;
                }
            }
        }
    }
    Ok(out)
}

/// How much counter `key` grew between two snapshots.
pub fn grew(before: &Snapshot, after: &Snapshot, key: &str) -> u64 {
    let d = after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0);
    d.max(0.0) as u64
}

/// `generator_sent=… gateway_published=… …` for the run between two snapshots.
pub fn delta(before: &Snapshot, after: &Snapshot, sent: u64) -> String {
    let mut line = format!("generator_sent={sent}");
    for (_, key) in COUNTERS {
        line.push_str(&format!(" {key}={}", grew(before, after, key)));
    }
    line
}
