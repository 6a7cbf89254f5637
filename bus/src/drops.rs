//! Messages a full subscription buffer dropped, on either bus: each counted, the log told at
//! the 1st, 2nd, 4th, 8th… drop so a consumer falling behind by thousands stays readable.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts a message a full subscription buffer dropped (`bus`: "nats" or "local"), and logs the
/// 1st, 2nd, 4th, 8th… drop of `count`: visible, without a line per message when a consumer
/// falls behind by thousands.
pub(crate) fn count_dropped(bus: &'static str, subscription: u64, count: &AtomicU64) {
    metrics::counter!("inside_bus_slow_consumer_total", "bus" => bus).increment(1);
    let dropped = count.fetch_add(1, Ordering::Relaxed) + 1;
    if dropped.is_power_of_two() {
        tracing::warn!(
            bus,
            subscription,
            dropped,
            "slow consumer: messages dropped (inside_bus_slow_consumer_total counts each)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_dropping_thousands_logs_a_line_per_doubling_not_per_message() {
        let log = inside_testkit::log_capture::CapturedLog::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let count = AtomicU64::new(0);
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..5000 {
                count_dropped("nats", 6, &count);
            }
        });
        let logged = log.text();
        let dropped: Vec<&str> = logged
            .lines()
            .filter_map(|l| l.split("dropped=").nth(1))
            .map(|rest| rest.split_whitespace().next().unwrap_or(""))
            .collect();
        assert_eq!(
            dropped,
            ["1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "1024", "2048", "4096"]
        );
        assert_eq!(count.load(Ordering::Relaxed), 5000);
    }
}
