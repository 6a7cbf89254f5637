//! What a gateway or worker does with a bus message it will not trust: drop it, count it in
//! `inside_bus_rejected_total{subject_kind,reason}` and log it at warn, with the subject kind
//! and the reason but never the payload (it may be a forger's text, or a member's data).
//! Also the size caps every subscriber applies before parsing anything.

use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

/// Largest JSON payload accepted from the bus (a frame, nudge, speaker event, poke or state
/// event). The gateway forwards a client's frame verbatim and a WebSocket message is at most
/// 64 KiB, so no genuine message is larger.
pub const MAX_JSON_PAYLOAD: usize = 64 * 1024;

/// Largest audio segment accepted from the bus: 10 s of 16 kHz mono f32 (segments are cut at
/// about 1.5 s).
pub const MAX_AUDIO_PAYLOAD: usize = 10 * 16_000 * 4;

/// Rejections logged per second at most: a forger's flood must not become a log flood (the
/// counter still counts every one).
const LOGGED_PER_SECOND: u64 = 20;

/// The second of the last logged rejection (high bits) and how many were logged in it.
static LOG_WINDOW: AtomicU64 = AtomicU64::new(0);

/// Drops a message: counts it and logs why, without its payload.
pub fn reject(subject_kind: &'static str, reason: &'static str, sid: Option<Uuid>) {
    metrics::counter!("inside_bus_rejected_total", "subject_kind" => subject_kind, "reason" => reason)
        .increment(1);
    if !may_log() {
        return;
    }
    match sid {
        Some(sid) => {
            tracing::warn!(subject_kind, reason, %sid, "bus message rejected")
        }
        None => tracing::warn!(subject_kind, reason, "bus message rejected"),
    }
}

/// Whether this second's rejection log budget has room; the window is one atomic word
/// (second << 16 | count), so the check takes no lock on the message path.
fn may_log() -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut seen = LOG_WINDOW.load(Ordering::Relaxed);
    loop {
        let (second, count) = (seen >> 16, seen & 0xffff);
        let next = if second == now {
            if count >= LOGGED_PER_SECOND {
                return false;
            }
            seen + 1
        } else {
            (now << 16) | 1
        };
        match LOG_WINDOW.compare_exchange_weak(seen, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(actual) => seen = actual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_rejections_logs_a_bounded_number_per_second() {
        let logged = (0..1_000).filter(|_| may_log()).count() as u64;
        // a second boundary may fall inside the loop: two windows at most
        assert!(
            (LOGGED_PER_SECOND..=2 * LOGGED_PER_SECOND).contains(&logged),
            "{logged}"
        );
    }
}
