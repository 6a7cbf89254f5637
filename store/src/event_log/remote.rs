//! The history in Redis, shared by every gateway and worker: per session a counter
//! (`{prefix}:evseq:{sid}`, `INCR`), a stream (`{prefix}:evlog:{sid}`, entry ids `0-<id>`,
//! `XADD MAXLEN ~`) and a hash of each user's highest accepted frame seq
//! (`{prefix}:frameseq:{sid}`). An append is one script (the nudge limit's `SET NX PX` first
//! when there is one), so the id, the entry and the limit cannot disagree and a nudge costs one
//! round trip; a snapshot is one `MULTI`.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{ErrorKind, FromRedisValue, RedisResult};
use sha1::{Digest, Sha1};
use uuid::Uuid;

use bytes::Bytes;
use inside_schemas::HistoryKind;

use super::{decide, now_ms, Held, LoggedEvent, Snapshot, Window, KEEP_COUNTERS};
use crate::{Result, StoreError};

/// KEYS: counter, stream[, limit key]; ARGV: maxlen, stream ttl ms, counter ttl ms, kind,
/// recipient ('' for everyone), append time ms, payload[, limit window ms]. When limited,
/// -1 - the limit key's TTL in ms, so the caller learns until when it stays taken.
const APPEND: &str = r"
if #KEYS > 2 and not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[8]) then
  return -1 - math.max(redis.call('PTTL', KEYS[3]), 0)
end
local id = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '0-' .. id,
  'k', ARGV[4], 'to', ARGV[5], 't', ARGV[6], 'p', ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return id
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
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(keys.len()).arg(keys);
        for a in args {
            cmd.arg(*a);
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
        let cmd = self.append_command(sid, to, kind, payload, limit);
        let id: i64 = self.append.run_command(&self.conn, &cmd).await?;
        Ok(outcome(id))
    }

    /// Several appends in one round trip (a pipeline of the same script, each still atomic
    /// on its own), outcomes in the order given. Under load this is what keeps Redis and the
    /// caller from paying a request, a reply and their wake-ups per event.
    pub async fn append_many(&self, items: &[Append<'_>]) -> Result<Vec<AppendOutcome>> {
        let mut pipe = redis::pipe();
        for item in items {
            pipe.add_command(self.append_command(
                item.sid,
                item.to,
                item.kind,
                item.payload,
                item.limit,
            ));
        }
        // without the script every command of the pipeline fails alike, so sending them all
        // again once it is loaded appends each once
        let ids: Vec<i64> = self
            .append
            .reloading(&self.conn, || {
                let mut conn = self.conn.clone();
                let pipe = &pipe;
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        Ok(ids.into_iter().map(outcome).collect())
    }

    fn append_command(
        &self,
        sid: Uuid,
        to: Option<Uuid>,
        kind: HistoryKind,
        payload: &[u8],
        limit: Option<(&str, Duration)>,
    ) -> redis::Cmd {
        let (seq_key, log_key) = self.keys(sid);
        let (log_ttl, seq_ttl) = self.ttls();
        let (maxlen, log_ttl, seq_ttl) = (
            self.window.events.to_string(),
            log_ttl.to_string(),
            seq_ttl.to_string(),
        );
        let to = to.map(|u| u.to_string()).unwrap_or_default();
        let at = now_ms().to_string();
        let mut keys = vec![seq_key.as_str(), log_key.as_str()];
        let mut args: Vec<&[u8]> = vec![
            maxlen.as_bytes(),
            log_ttl.as_bytes(),
            seq_ttl.as_bytes(),
            kind.as_str().as_bytes(),
            to.as_bytes(),
            at.as_bytes(),
            payload,
        ];
        let limit_ms;
        if let Some((key, window)) = limit {
            limit_ms = (window.as_millis().max(1) as u64).to_string();
            keys.push(key);
            args.push(limit_ms.as_bytes());
        }
        self.append.command(&keys, &args)
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
