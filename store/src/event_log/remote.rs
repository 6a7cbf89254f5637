//! What the history keeps in Redis on NATS (the events themselves are in the bus's stream,
//! `inside_bus::history`): per session a hash of each user's highest accepted frame seq
//! (`{prefix}:frameseq:{sid}`), shared by every gateway so that a phone that reconnects
//! anywhere learns which of its frames to send again. Also the `EVALSHA` runner the store's
//! other scripts use.
//!
//! The seqs the frame path notes are written by one task per process, every `FLUSH_EVERY`,
//! all in one round trip: a frame costs a map update, not a task, a timer and a round trip of
//! its own (at 10 frames/s a socket, that was one of each per frame).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{ErrorKind, FromRedisValue, RedisResult};
use sha1::{Digest, Sha1};
use uuid::Uuid;

use super::KEEP_COUNTERS;
use crate::Result;

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

/// How stale the shared seqs may be while frames flow.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Raises the seq held for `key` to `seq` (the seqs only ever rise).
fn raise(seqs: &mut HashMap<(Uuid, Uuid), i64>, key: (Uuid, Uuid), seq: i64) {
    let held = seqs.entry(key).or_insert(seq);
    *held = (*held).max(seq);
}

/// The frame seqs of every session, in Redis.
pub struct RedisFrameSeqs {
    conn: ConnectionManager,
    prefix: String,
    frame_seq: Script,
    /// Noted and not yet written: the highest seq of each (sid, uid).
    unwritten: Mutex<HashMap<(Uuid, Uuid), i64>>,
    /// The writing task is running.
    writing: AtomicBool,
    /// The last write failed: said once, not every `FLUSH_EVERY` while Redis is away.
    failing: AtomicBool,
}

impl RedisFrameSeqs {
    pub fn new(conn: ConnectionManager, prefix: String) -> Self {
        Self {
            conn,
            prefix,
            frame_seq: Script::new(FRAME_SEQ),
            unwritten: Mutex::new(HashMap::new()),
            writing: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        }
    }

    /// Notes `seq` for the writing task, which stores it within [`FLUSH_EVERY`] (started here
    /// on the current runtime when it is not running: it runs only while seqs come in).
    pub fn note_frame_seq_soon(self: &Arc<Self>, sid: Uuid, uid: Uuid, seq: i64) {
        raise(&mut self.unwritten(), (sid, uid), seq);
        if !self.writing.swap(true, Ordering::AcqRel) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(self.clone().write_noted());
            } else {
                self.writing.store(false, Ordering::Release);
            }
        }
    }

    /// Writes what was noted every [`FLUSH_EVERY`] until nothing more comes in.
    async fn write_noted(self: Arc<Self>) {
        loop {
            tokio::time::sleep(FLUSH_EVERY).await;
            if self.write_now().await == 0 {
                self.writing.store(false, Ordering::Release);
                // a seq noted between the write and the store above found the task running
                if self.is_clean() || self.writing.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
        }
    }

    fn is_clean(&self) -> bool {
        self.unwritten().is_empty()
    }

    fn unwritten(&self) -> MutexGuard<'_, HashMap<(Uuid, Uuid), i64>> {
        self.unwritten
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes every seq noted so far in one round trip (a graceful stop calls it last); how
    /// many. One that fails is noted again for the next try, unless a newer one was.
    pub async fn write_now(&self) -> usize {
        let noted = std::mem::take(&mut *self.unwritten());
        if noted.is_empty() {
            return 0;
        }
        let ttl = (KEEP_COUNTERS.as_millis() as u64).to_string();
        let mut pipe = redis::pipe();
        for ((sid, uid), seq) in &noted {
            let key = self.frame_seqs_key(*sid);
            let (uid, seq) = (uid.to_string(), seq.to_string());
            pipe.add_command(self.frame_seq.command(
                &[key.as_str()],
                &[uid.as_bytes(), seq.as_bytes(), ttl.as_bytes()],
            ));
        }
        let written: RedisResult<Vec<i64>> = self
            .frame_seq
            .reloading(&self.conn, || {
                let (mut conn, pipe) = (self.conn.clone(), &pipe);
                async move { pipe.query_async(&mut conn).await }
            })
            .await;
        if written.is_ok() && self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(
                seqs = noted.len(),
                "the last accepted frame seqs are stored again"
            );
        }
        if let Err(e) = written {
            if !self.failing.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, seqs = noted.len(), "storing the last accepted frame seqs failed; trying again every 100 ms");
            }
            let mut unwritten = self.unwritten();
            for (k, seq) in &noted {
                raise(&mut unwritten, *k, *seq);
            }
        }
        noted.len()
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

    fn frame_seqs_key(&self, sid: Uuid) -> String {
        format!("{}:frameseq:{sid}", self.prefix)
    }
}
