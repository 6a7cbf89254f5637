//! The history in Redis, shared by every gateway and worker: per session a counter
//! (`{prefix}:evseq:{sid}`, `INCR`), a stream (`{prefix}:evlog:{sid}`, entry ids `0-<id>`,
//! `XADD MAXLEN ~`) and a hash of each user's highest accepted frame seq
//! (`{prefix}:frameseq:{sid}`). A batch of appends is one script run (each nudge's limit
//! `SET NX PX` before its entry), so ids, entries and limits cannot disagree and the nudges
//! raised while one round trip is out share the next; a snapshot is one `MULTI`.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{ErrorKind, FromRedisValue, RedisResult};
use sha1::{Digest, Sha1};
use uuid::Uuid;

use bytes::Bytes;
use inside_schemas::HistoryKind;

use super::{decide, now_ms, Held, LoggedEvent, Snapshot, Window, KEEP_COUNTERS};
use crate::{Result, StoreError};

/// Appends a batch, in order, atomically. KEYS: per append its counter, stream and limit key
/// (the counter again when it has no limit); ARGV: maxlen, stream ttl ms, counter ttl ms,
/// append time ms, then per append its kind, recipient ('' for everyone), payload and limit
/// window ms ('' for none). Answers per append its id or, when its limit key was taken,
/// -1 - the key's TTL in ms, so the caller learns until when it stays taken. One script for
/// the batch, and each touched session's keys refreshed once: Redis runs no script call per
/// append, as a pipeline of one call per append did.
const APPEND: &str = r"
local out = {}
local touched = {}
for i = 0, #KEYS / 3 - 1 do
  local seq, log, limit = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local a = 4 + 4 * i
  local window = ARGV[a + 4]
  if window ~= '' and not redis.call('SET', limit, '1', 'NX', 'PX', window) then
    out[i + 1] = -1 - math.max(redis.call('PTTL', limit), 0)
  else
    local id = redis.call('INCR', seq)
    redis.call('XADD', log, 'MAXLEN', '~', ARGV[1], '0-' .. id,
      'k', ARGV[a + 1], 'to', ARGV[a + 2], 't', ARGV[4], 'p', ARGV[a + 3])
    touched[seq] = log
    out[i + 1] = id
  end
end
for seq, log in pairs(touched) do
  redis.call('PEXPIRE', seq, ARGV[3])
  redis.call('PEXPIRE', log, ARGV[2])
end
return out
";

/// KEYS: frame seq hash; ARGV: user, seq, ttl ms. Only ever raises the stored seq.
const FRAME_SEQ: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur or tonumber(ARGV[2]) > tonumber(cur) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// A Lua script run by its SHA1 (`EVALSHA`), sent whole only when Redis lacks it.
pub(crate) struct Script {
    body: &'static str,
    sha: String,
}

impl Script {
    pub(crate) fn new(body: &'static str) -> Self {
        let sha = Sha1::digest(body.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self { body, sha }
    }

    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        conn: &ConnectionManager,
        keys: &[&str],
        args: &[&[u8]],
    ) -> RedisResult<T> {
        self.run_command(conn, &self.command(keys, args)).await
    }

    /// `EVALSHA` of this script with `keys` and `args`.
    pub(crate) fn command(&self, keys: &[&str], args: &[&[u8]]) -> redis::Cmd {
        let mut cmd = self.invocation(keys);
        for a in args {
            cmd.arg(*a);
        }
        cmd
    }

    /// `EVALSHA` of this script with `keys`, for the caller to add the arguments.
    pub(crate) fn invocation<K: AsRef<str>>(&self, keys: &[K]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(keys.len());
        for k in keys {
            cmd.arg(k.as_ref());
        }
        cmd
    }

    /// Runs a [`command`](Self::command) of this script, loading the script first if Redis
    /// lacks it.
    pub(crate) async fn run_command<T: FromRedisValue>(
        &self,
        conn: &ConnectionManager,
        cmd: &redis::Cmd,
    ) -> RedisResult<T> {
        self.reloading(conn, || {
            let mut conn = conn.clone();
            async move { cmd.query_async(&mut conn).await }
        })
        .await
    }

    /// Sends what `send` sends (commands of this script); when a restarted or flushed Redis
    /// has forgotten the script, `SCRIPT LOAD`s it and sends it again.
    async fn reloading<T, F, Fut>(&self, conn: &ConnectionManager, send: F) -> RedisResult<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        match send().await {
            Err(e) if e.kind() == ErrorKind::NoScriptError => {
                let _: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(self.body)
                    .query_async(&mut conn.clone())
                    .await?;
                send().await
            }
            other => other,
        }
    }
}

/// The script's answer: an id, or `-1 - ttl` when the limit key was taken.
fn outcome(id: i64) -> AppendOutcome {
    match u64::try_from(id) {
        Ok(id) => AppendOutcome::Id(id),
        Err(_) => AppendOutcome::Limited(Duration::from_millis(id.unsigned_abs() - 1)),
    }
}

/// One append of a batch ([`RedisLog::append_many`]).
pub struct Append<'a> {
    pub sid: Uuid,
    pub to: Option<Uuid>,
    pub kind: HistoryKind,
    pub payload: &'a [u8],
    /// The limit key (full) and its window, as [`RedisLog::append`] takes it.
    pub limit: Option<(&'a str, Duration)>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    Id(u64),
    /// The limit key was taken, for this much longer.
    Limited(Duration),
}

pub struct RedisLog {
    conn: ConnectionManager,
    prefix: String,
    window: Window,
    append: Script,
    frame_seq: Script,
}

/// One stream entry as XRANGE returns it: its id and its flat field/value list.
type RawEntry = (String, Vec<Vec<u8>>);

impl RedisLog {
    pub fn new(conn: ConnectionManager, prefix: String, window: Window) -> Self {
        Self {
            conn,
            prefix,
            window,
            append: Script::new(APPEND),
            frame_seq: Script::new(FRAME_SEQ),
        }
    }

    fn keys(&self, sid: Uuid) -> (String, String) {
        (
            format!("{}:evseq:{sid}", self.prefix),
            format!("{}:evlog:{sid}", self.prefix),
        )
    }

    /// The counter outlives the stream, so ids never go back while entries remain.
    fn ttls(&self) -> (u64, u64) {
        let log = self.window.max_age.as_millis().max(1) as u64;
        (log, (KEEP_COUNTERS.as_millis() as u64).max(2 * log))
    }

    /// Appends and returns the id, or, when `limit` (a full key and its window) was already
    /// taken, how long it stays taken.
    pub async fn append(
        &self,
        sid: Uuid,
        to: Option<Uuid>,
        kind: HistoryKind,
        payload: &[u8],
        limit: Option<(&str, Duration)>,
    ) -> Result<AppendOutcome> {
        let one = Append {
            sid,
            to,
            kind,
            payload,
            limit,
        };
        self.append_many(std::slice::from_ref(&one))
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("the history script answered no id".into()))
    }

    /// Several appends in one round trip and one script run, outcomes in the order given.
    /// Under load this is what keeps Redis and the caller from paying a request, a reply and
    /// their wake-ups per event.
    pub async fn append_many(&self, items: &[Append<'_>]) -> Result<Vec<AppendOutcome>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = items
            .iter()
            .flat_map(|item| {
                let (seq_key, log_key) = self.keys(item.sid);
                let limit_key = item
                    .limit
                    .map_or_else(|| seq_key.clone(), |(k, _)| k.to_string());
                [seq_key, log_key, limit_key]
            })
            .collect();
        let (log_ttl, seq_ttl) = self.ttls();
        let mut cmd = self.append.invocation(&keys);
        cmd.arg(self.window.events)
            .arg(log_ttl)
            .arg(seq_ttl)
            .arg(now_ms());
        for item in items {
            cmd.arg(item.kind.as_str())
                .arg(item.to.map(|u| u.to_string()).unwrap_or_default())
                .arg(item.payload)
                .arg(
                    item.limit
                        .map(|(_, window)| (window.as_millis().max(1) as u64).to_string())
                        .unwrap_or_default(),
                );
        }
        let ids: Vec<i64> = self.append.run_command(&self.conn, &cmd).await?;
        if ids.len() != items.len() {
            return Err(StoreError::Corrupt(format!(
                "the history script answered {} ids for {} appends",
                ids.len(),
                items.len()
            )));
        }
        Ok(ids.into_iter().map(outcome).collect())
    }

    pub async fn snapshot(&self, sid: Uuid, uid: Uuid, since: Option<u64>) -> Result<Snapshot> {
        let (seq_key, log_key) = self.keys(sid);
        let seqs_key = self.frame_seqs_key(sid);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("GET")
            .arg(&seq_key)
            .cmd("HGET")
            .arg(&seqs_key)
            .arg(uid.to_string());
        let Some(since) = since else {
            let (head, last_frame_seq): (Option<u64>, Option<i64>) =
                pipe.query_async(&mut self.conn.clone()).await?;
            return Ok(Snapshot {
                head: Some(head.unwrap_or(0)),
                last_frame_seq,
                replay: None,
            });
        };
        pipe.cmd("XRANGE")
            .arg(&log_key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("XRANGE")
            .arg(&log_key)
            .arg(format!("0-{}", since.saturating_add(1)))
            .arg("+");
        let (head, last_frame_seq, first, after): (
            Option<u64>,
            Option<i64>,
            Vec<RawEntry>,
            Vec<RawEntry>,
        ) = pipe.query_async(&mut self.conn.clone()).await?;
        let head = head.unwrap_or(0);
        let fresh_from_ms = now_ms().saturating_sub(self.window.max_age.as_millis() as u64);
        let first = first.into_iter().map(entry).collect::<Result<Vec<_>>>()?;
        let after = after.into_iter().map(entry).collect::<Result<Vec<_>>>()?;
        let oldest_fresh = first
            .iter()
            .chain(after.iter())
            .find(|(_, at)| *at >= fresh_from_ms)
            .map(|(e, _)| e.id);
        Ok(Snapshot {
            head: Some(head),
            last_frame_seq,
            replay: Some(decide(head, since, oldest_fresh, after, fresh_from_ms, uid)),
        })
    }

    /// `uid`'s highest accepted frame seq in `sid`.
    pub async fn last_frame_seq(&self, sid: Uuid, uid: Uuid) -> Result<Option<i64>> {
        let seq: Option<i64> = redis::cmd("HGET")
            .arg(self.frame_seqs_key(sid))
            .arg(uid.to_string())
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(seq)
    }

    pub async fn note_frame_seq(&self, sid: Uuid, uid: Uuid, seq: i64) -> Result<()> {
        let key = self.frame_seqs_key(sid);
        let (uid, seq) = (uid.to_string(), seq.to_string());
        let ttl = self.ttls().1.to_string();
        let _: i64 = self
            .frame_seq
            .run(
                &self.conn,
                &[key.as_str()],
                &[uid.as_bytes(), seq.as_bytes(), ttl.as_bytes()],
            )
            .await?;
        Ok(())
    }

    fn frame_seqs_key(&self, sid: Uuid) -> String {
        format!("{}:frameseq:{sid}", self.prefix)
    }
}

/// A stream entry back to an event and its append time.
fn entry((id, fields): RawEntry) -> Result<Held> {
    let corrupt = || StoreError::Corrupt(format!("event log entry {id}"));
    let n: u64 = id
        .strip_prefix("0-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(corrupt)?;
    let (mut kind, mut to, mut at, mut payload) = (None, None, None, None);
    for pair in fields.chunks_exact(2) {
        let value = &pair[1];
        match pair[0].as_slice() {
            b"k" => kind = std::str::from_utf8(value).ok().and_then(HistoryKind::parse),
            b"to" => {
                to = Some(if value.is_empty() {
                    None
                } else {
                    Some(
                        std::str::from_utf8(value)
                            .ok()
                            .and_then(|s| s.parse::<Uuid>().ok())
                            .ok_or_else(corrupt)?,
                    )
                })
            }
            b"t" => at = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()),
            b"p" => payload = Some(Bytes::copy_from_slice(value)),
            _ => {}
        }
    }
    match (kind, to, at, payload) {
        (Some(kind), Some(to), Some(at), Some(payload)) => Ok((
            LoggedEvent {
                id: n,
                kind,
                to,
                payload,
            },
            at,
        )),
        _ => Err(corrupt()),
    }
}
