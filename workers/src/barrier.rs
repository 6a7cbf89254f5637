//! The report's barrier: before a report is written, wait until everything the gateways
//! published for the session is recorded. Every socket has a row (`session_sockets`) that its
//! gateway closes with the frames and audio segments it published; every recorded event row
//! counts the frames and segment marks it holds. The report waits, for a bounded time, until
//! every socket of the session is closed and each consenting member's recorded counts reach
//! the published ones; past the bound it is written anyway, marked incomplete with the reason.

use std::collections::HashMap;
use std::time::Duration;

use inside_store::sockets::{Counts, Published};
use inside_store::{Store, StoreError};
use uuid::Uuid;

/// How often the counts are read again while waiting.
const POLL: Duration = Duration::from_millis(40);

/// Waits up to `wait` for session `sid`'s published frames and segments of `members` to be
/// recorded; `None` when they all are, else why the report will be incomplete.
pub async fn await_recorded(
    store: &Store,
    sid: Uuid,
    members: &[Uuid],
    wait: Duration,
) -> Result<Option<String>, StoreError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let published = store.published_counts(sid).await?;
        let recorded = store.recorded_counts(sid).await?;
        let gap = Gap::of(&published, &recorded, members);
        if gap.is_none() {
            return Ok(None);
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(%sid, open_sockets = gap.open_sockets, frames = gap.frames, segments = gap.segments, gateways = ?published.open.keys().collect::<Vec<_>>(), "writing an incomplete report");
            metrics::counter!("inside_reports_incomplete_total").increment(1);
            return Ok(Some(gap.reason()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What is still missing.
#[derive(Debug, Default, PartialEq, Eq)]
struct Gap {
    open_sockets: u64,
    frames: u64,
    segments: u64,
}

impl Gap {
    fn of(published: &Published, recorded: &HashMap<Uuid, Counts>, members: &[Uuid]) -> Self {
        let mut gap = Gap {
            open_sockets: published.open.values().sum(),
            ..Gap::default()
        };
        for m in members {
            let sent = published.per_member.get(m).copied().unwrap_or_default();
            let got = recorded.get(m).copied().unwrap_or_default();
            gap.frames += sent.frames.saturating_sub(got.frames);
            gap.segments += sent.segments.saturating_sub(got.segments);
        }
        gap
    }

    fn is_none(&self) -> bool {
        *self == Gap::default()
    }

    fn reason(&self) -> String {
        let mut parts = Vec::new();
        if self.open_sockets > 0 {
            parts.push(format!(
                "a gateway holding {} of the session's sockets stopped reporting, so what it \
                 published for them may be missing",
                self.open_sockets
            ));
        }
        if self.frames > 0 || self.segments > 0 {
            parts.push(format!(
                "{} frame(s) and {} audio segment(s) published were not recorded",
                self.frames, self.segments
            ));
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_counts_open_sockets_and_what_consenting_members_miss() {
        let (a, b, gone) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let counts = |frames, segments| Counts { frames, segments };
        let published = Published {
            per_member: HashMap::from([
                (a, counts(300, 4)),
                (b, counts(10, 0)),
                (gone, counts(50, 0)),
            ]),
            open: HashMap::new(),
        };
        let recorded = HashMap::from([(a, counts(298, 3)), (b, counts(12, 0))]);
        let gap = Gap::of(&published, &recorded, &[a, b]);
        assert_eq!(
            gap,
            Gap {
                open_sockets: 0,
                frames: 2,
                segments: 1
            }
        );
        assert_eq!(
            gap.reason(),
            "2 frame(s) and 1 audio segment(s) published were not recorded"
        );
        let all_in = HashMap::from([(a, counts(300, 4)), (b, counts(10, 0))]);
        assert!(Gap::of(&published, &all_in, &[a, b]).is_none());
        let open = Published {
            open: HashMap::from([(Uuid::from_u128(9), 2)]),
            ..published
        };
        let gap = Gap::of(&open, &all_in, &[a, b]);
        assert!(
            gap.reason().contains("stopped reporting"),
            "{}",
            gap.reason()
        );
    }
}
