//! Talk time per (session, speaker), summed across every worker through the
//! limiter's backend (Redis `INCRBY` when shared, its memory map in the
//! embedded default): live speaker segments land on whichever worker is free,
//! and the `BALANCE_TALK_TIME` rule needs the whole session's tally.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::limiter::Limiter;
use crate::Result;

/// A session's tally outlives any conversation.
const KEEP: Duration = Duration::from_secs(24 * 3600);

impl Limiter {
    /// Adds `ms` of speech to `uid` in `sid` and returns the tally of each of `members`
    /// (milliseconds, in the order given).
    pub async fn add_talk_time(
        &self,
        sid: Uuid,
        uid: Uuid,
        ms: u64,
        members: &[Uuid],
    ) -> Result<Vec<(Uuid, u64)>> {
        let key = |u: &Uuid| format!("talk:{sid}:{u}");
        match self {
            Limiter::Memory(map) => {
                let now = Instant::now();
                {
                    let mut entry = map.entry(key(&uid)).or_insert((0, now + KEEP));
                    entry.0 += ms;
                    entry.1 = now + KEEP;
                }
                Ok(members
                    .iter()
                    .map(|m| (*m, map.get(&key(m)).map_or(0, |e| e.0)))
                    .collect())
            }
            Limiter::Redis { conn, prefix, .. } => {
                let own = format!("{prefix}:{}", key(&uid));
                let keys: Vec<String> = members
                    .iter()
                    .map(|m| format!("{prefix}:{}", key(m)))
                    .collect();
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .cmd("INCRBY")
                    .arg(&own)
                    .arg(ms)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&own)
                    .arg(KEEP.as_millis() as u64)
                    .ignore();
                if keys.is_empty() {
                    pipe.query_async::<()>(&mut conn.clone()).await?;
                    return Ok(Vec::new());
                }
                pipe.cmd("MGET").arg(&keys);
                let (values,): (Vec<Option<u64>>,) = pipe.query_async(&mut conn.clone()).await?;
                Ok(members
                    .iter()
                    .zip(values)
                    .map(|(m, v)| (*m, v.unwrap_or(0)))
                    .collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn talk_time_sums_per_speaker_within_a_session() {
        let limiter = Limiter::memory();
        let (sid, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        limiter.add_talk_time(sid, a, 1500, &[a, b]).await.unwrap();
        let tally = limiter.add_talk_time(sid, a, 1500, &[a, b]).await.unwrap();
        assert_eq!(tally, vec![(a, 3000), (b, 0)]);
        let tally = limiter.add_talk_time(sid, b, 700, &[a, b]).await.unwrap();
        assert_eq!(tally, vec![(a, 3000), (b, 700)]);
        let other = limiter
            .add_talk_time(Uuid::new_v4(), a, 10, &[a])
            .await
            .unwrap();
        assert_eq!(other, vec![(a, 10)]);
    }
}
