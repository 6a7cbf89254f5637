//! Feature-frame mode of the load generator: open-loop frames over N WebSocket clients, timed
//! frame → nudge from each frame's *scheduled* send time.
//!
//! The generator must not be what is measured: tokio's timer rounds to the millisecond, which
//! alone put 0.5–1 ms into every figure. One pacer thread (timer slack 1 ns) sleeps until the
//! next frame is due and writes the pre-encoded WebSocket frames of every client that is due
//! straight to its socket. Nudges are read by a thread per client, each blocked on its socket
//! (the quickest to hear of one nudge), or when nudges are due at 10,000 a second or more by one
//! thread waiting on every socket (epoll): a thread per client costs a wake-up per nudge, and at 100,000 nudges a
//! second that was more than half a core of a machine the generator shares with the servers
//! it measures. A frame's schedule is arithmetic (global frame `k` is due at `start + k / rate`, goes to
//! client `k % n` as its `seq = k / n + 1`), so the reader finds the send time of a nudge's
//! `frame_seq` without sharing anything with the pacer.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use serde::Deserialize;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use super::rx_stamp::RxStamped;
use super::Client;

/// What to send.
pub struct Plan {
    pub rate: f64,
    pub duration: f64,
    pub drain: f64,
    /// Every `probe_every`-th frame is over the threshold (a probe that must come back as a
    /// nudge); the rest are calm frames that only load the path. 1: every frame is a probe.
    pub probe_every: u64,
    /// Keep each probe's (send µs from the start, latency µs) for `--latency-log`.
    pub latency_log: bool,
    pub readers: Readers,
    /// The server's nudge limit window, when on: client `c` of `n` sends only calm frames for
    /// its first `window × (c + 1) / n`, so the clients' windows open and close spread over
    /// the window (phones do not start in lockstep) and the first frames that reach the worker
    /// are calm ones (its session cache is warm when the first probe comes).
    pub stagger: Option<Duration>,
}

/// Who reads the nudges.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum Readers {
    /// One thread waits on every socket (epoll) and reads each ready one dry.
    One,
    /// A thread per client, blocked on its socket.
    PerClient,
}

impl Readers {
    /// One reader when nudges are due at 10,000 a second or more, a thread per client below.
    pub fn for_nudges_per_s(nudges_per_s: f64) -> Readers {
        if nudges_per_s >= 10_000.0 {
            Readers::One
        } else {
            Readers::PerClient
        }
    }
}

/// (scheduled send µs from the start of sending, latency µs) of each probe.
pub type Timeline = Vec<(u64, u64)>;

/// What came back.
pub struct Outcome {
    pub sent: u64,
    pub probes: u64,
    pub nudged: u64,
    pub hist: Histogram<u64>,
    /// The same latencies ending when the client's kernel received the nudge, before its
    /// reader thread woke.
    pub rx_hist: Histogram<u64>,
    /// Each probe's latency by send time, sorted, when asked for.
    pub timeline: Timeline,
    /// Seconds the pacer took to send everything (> duration: the generator fell behind).
    pub send_s: f64,
    /// Lateness of each write behind its schedule, µs (the generator's own share of a latency).
    pub pacer_lag: Histogram<u64>,
    /// Seconds from the start of sending to the last nudge read: `nudged / last_nudge_s` is
    /// the rate nudges were delivered at, when the server fell behind the frames.
    pub last_nudge_s: f64,
    /// `server.resync` messages read, every client together: the gateway telling phones that
    /// events meant for them are gone (a lost nudge a phone was told of, rather than not).
    pub resyncs: u64,
}

/// When global message `k` is due: `start + k / rate`, spread over `clients` in turn.
#[derive(Clone, Copy)]
pub(crate) struct Schedule {
    pub start: Instant,
    pub period_ns: f64,
    pub clients: u64,
}

impl Schedule {
    pub(crate) fn due(&self, k: u64) -> Instant {
        self.start + Duration::from_nanos((k as f64 * self.period_ns) as u64)
    }
}

#[derive(Deserialize)]
struct ServerMsg<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    payload: Option<NudgePayload>,
}

#[derive(Deserialize)]
struct NudgePayload {
    frame_seq: Option<u64>,
}

pub fn run(ws_base: &str, clients: &[Client], plan: &Plan) -> anyhow::Result<Outcome> {
    let n = clients.len() as u64;
    if n == 0 {
        bail!("no clients");
    }
    let mut writers = Vec::with_capacity(clients.len());
    let mut sockets = Vec::with_capacity(clients.len());
    for c in clients {
        let url = format!("{ws_base}/v1/sessions/{}/ws?token={}", c.sid, c.token);
        let (ws, writer) = connect(&url)?;
        writers.push(writer);
        sockets.push(ws);
    }
    let total = (plan.rate * plan.duration).round() as u64;
    let schedule = Arc::new(Schedule {
        start: Instant::now() + Duration::from_millis(500),
        period_ns: 1e9 / plan.rate,
        clients: n,
    });
    // each client's own frames take turns at being a probe, staggered across clients
    let every = plan.probe_every.max(1);
    let period_ns = schedule.period_ns;
    let stagger_ns = plan.stagger.map_or(0.0, |w| w.as_nanos() as f64);
    let probe = move |k: u64| {
        let calm_until_ns = stagger_ns * ((k % n) + 1) as f64 / n as f64;
        (k / n + k % n).is_multiple_of(every) && k as f64 * period_ns >= calm_until_ns
    };
    // per client: how many probes it is sent, known before sending starts
    let expected: Vec<u64> = (0..n)
        .map(|c| (c..total).step_by(n as usize).filter(|k| probe(*k)).count() as u64)
        .collect();
    // set when the pacer is done (readers then stop once they have their nudges) …
    let paced_all = Arc::new(AtomicBool::new(false));
    // … or failed (readers stop at once)
    let stop = Arc::new(AtomicBool::new(false));
    let nudged = Arc::new(AtomicU64::new(0));
    let deadline = schedule.due(total) + Duration::from_secs_f64(plan.drain);
    let inboxes: Vec<Inbox> = sockets
        .into_iter()
        .enumerate()
        .map(|(c, ws)| Inbox {
            ws,
            client: c as u64,
            want: expected[c],
            got: 0,
            closed: false,
        })
        .collect();
    let until = Arc::new(Until {
        deadline,
        paced_all: paced_all.clone(),
        stop: stop.clone(),
    });
    let keep = plan.latency_log;
    let spawn = |inboxes: Vec<Inbox>| {
        let (schedule, until, nudged) = (schedule.clone(), until.clone(), nudged.clone());
        std::thread::spawn(move || read_nudges(inboxes, &until, &schedule, &nudged, keep))
    };
    let readers: Vec<_> = match plan.readers {
        Readers::One => vec![spawn(inboxes)],
        Readers::PerClient => inboxes.into_iter().map(|i| spawn(vec![i])).collect(),
    };
    let paced = pace(&schedule, total, &mut writers, clients, &probe);
    let send_s = schedule.start.elapsed().as_secs_f64();
    paced_all.store(true, Ordering::Relaxed);
    if paced.is_err() {
        // the reader knows why the gateway closed: report that first
        stop.store(true, Ordering::Relaxed);
    }
    let mut read = Read::new()?;
    for r in readers {
        match r.join() {
            Ok(one) => read.add(one?)?,
            Err(_) => bail!("a reader thread panicked"),
        }
    }
    let mut timeline = read.timeline;
    timeline.sort_unstable();
    stop.store(true, Ordering::Relaxed);
    let (sent, pacer_lag) = paced?;
    Ok(Outcome {
        sent,
        probes: expected.iter().sum(),
        nudged: nudged.load(Ordering::Relaxed),
        hist: read.hist,
        rx_hist: read.rx_hist,
        timeline,
        send_s,
        pacer_lag,
        last_nudge_s: read.last_s,
        resyncs: read.resyncs,
    })
}

fn connect(url: &str) -> anyhow::Result<(WebSocket<RxStamped>, TcpStream)> {
    let addr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .context("no host in the URL")?;
    let tcp = TcpStream::connect(addr).with_context(|| format!("connecting {addr}"))?;
    tcp.set_nodelay(true)?;
    let config = WebSocketConfig::default();
    let tcp = RxStamped::new(tcp).context("asking for kernel receive timestamps")?;
    let (ws, _) = tungstenite::client::client_with_config(url, tcp, Some(config))
        .map_err(|e| anyhow::anyhow!("WebSocket handshake: {e}"))?;
    // written by the pacer, frame by frame; the reader owns `ws` (and any bytes it read
    // past the handshake)
    let writer = ws.get_ref().get_ref().try_clone()?;
    // a reader of its own socket waits at most this long, to look at the clock
    ws.get_ref()
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok((ws, writer))
}

/// Sends every frame at its time; returns (frames sent, each write's lateness in µs).
fn pace(
    schedule: &Schedule,
    total: u64,
    writers: &mut [TcpStream],
    clients: &[Client],
    probe: &dyn Fn(u64) -> bool,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    // without this a sleep may end up to 50 µs late, on top of the wakeup itself
    let _ = std::fs::write("/proc/thread-self/timerslack_ns", "1");
    let n = schedule.clients;
    let mut buffers: Vec<Vec<u8>> = vec![Vec::with_capacity(4096); writers.len()];
    let mut k = 0u64;
    let mut lag = super::latency_histogram()?;
    let mut clock = WakeClock::default();
    while k < total {
        let due = schedule.due(k);
        clock.wait_until(due);
        let now = Instant::now();
        lag.record((now.saturating_duration_since(due).as_micros() as u64).max(1))?;
        // everything due by now, one write per client
        while k < total && schedule.due(k) <= now {
            let c = (k % n) as usize;
            let seq = k / n + 1;
            let rate = if probe(k) { 6.0 } else { 1.0 };
            let text = format!(
                r#"{{"type":"client.feature_frame","sid":"{}","payload":{{"timestamp_ms":{seq},"speaking_rate":{rate:.1},"overlap_ratio":0.0,"seq":{seq}}}}}"#,
                clients[c].sid
            );
            let mut frame = Frame::message(text.into_bytes(), OpCode::Data(Data::Text), true);
            frame.header_mut().mask = Some((k as u32).to_le_bytes());
            frame.format(&mut buffers[c])?;
            k += 1;
        }
        for (c, buf) in buffers.iter_mut().enumerate() {
            if !buf.is_empty() {
                writers[c]
                    .write_all(buf)
                    .with_context(|| format!("client {c}: the gateway closed the socket"))?;
                buf.clear();
            }
        }
    }
    Ok((k, lag))
}

/// Waits for a frame's due time without adding the kernel's wakeup lateness to every figure.
///
/// A sleep here ends 60–90 µs after the time asked for (a VM's timer interrupt and wakeup), a
/// third of the whole frame → nudge latency at 2,000 frames/s. So it sleeps until the due time
/// less the lateness it has been seeing, then spins the rest: never early, rarely late, and
/// the spin is a few tens of µs. When frames are closer together than that (high rates), it
/// plainly sleeps, sends what is due in one write per client and lets the lateness count: a
/// pacer spinning all the time would take a core from the servers it measures.
#[derive(Default)]
pub(crate) struct WakeClock {
    /// Running estimate of how late a sleep ends, ns.
    overshoot_ns: f64,
}

impl WakeClock {
    /// Spun on top of the estimate, for the wakeups that are later than usual.
    const MARGIN: Duration = Duration::from_micros(25);
    /// Below this gap a sleep is not worth its wakeup.
    const MIN_SLEEP: Duration = Duration::from_micros(20);

    pub(crate) fn wait_until(&mut self, due: Instant) {
        let now = Instant::now();
        if due <= now {
            return;
        }
        let early = Duration::from_nanos(self.overshoot_ns as u64) + Self::MARGIN;
        let gap = due - now;
        if gap < early + Self::MIN_SLEEP {
            std::thread::sleep(gap);
            return;
        }
        let target = due - early;
        std::thread::sleep(target - now);
        let woke = Instant::now();
        let overshoot = woke.saturating_duration_since(target).as_nanos() as f64;
        // a slow average, so one long stall does not make every later wait a long spin
        self.overshoot_ns += (overshoot.min(500_000.0) - self.overshoot_ns) / 16.0;
        while Instant::now() < due {
            std::hint::spin_loop();
        }
    }
}

/// When a reader stops.
struct Until {
    deadline: Instant,
    /// Set once every frame is sent: a client with all its nudges is then done.
    paced_all: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Until {
    /// Neither the deadline nor a stop has come.
    fn running(&self) -> bool {
        Instant::now() < self.deadline && !self.stop.load(Ordering::Relaxed)
    }

    /// Every frame was sent and `inbox` has every nudge it was due.
    fn done(&self, inbox: &Inbox) -> bool {
        self.paced_all.load(Ordering::Relaxed) && inbox.got >= inbox.want
    }
}

/// One client's socket, as the reader sees it.
struct Inbox {
    ws: WebSocket<RxStamped>,
    client: u64,
    /// Nudges it expects, and has had.
    want: u64,
    got: u64,
    /// It had every nudge it was due and was closed.
    closed: bool,
}

/// What a reader measured.
struct Read {
    hist: Histogram<u64>,
    rx_hist: Histogram<u64>,
    timeline: Timeline,
    /// Seconds from the start of sending to the last nudge.
    last_s: f64,
    resyncs: u64,
}

impl Read {
    fn new() -> anyhow::Result<Read> {
        Ok(Read {
            hist: super::latency_histogram()?,
            rx_hist: super::latency_histogram()?,
            timeline: Vec::new(),
            last_s: 0.0,
            resyncs: 0,
        })
    }

    fn add(&mut self, other: Read) -> anyhow::Result<()> {
        self.hist.add(other.hist)?;
        self.rx_hist.add(other.rx_hist)?;
        self.timeline.extend(other.timeline);
        self.last_s = self.last_s.max(other.last_s);
        self.resyncs += other.resyncs;
        Ok(())
    }
}

/// Reads `inboxes` until each has its nudges (once all were sent), the deadline, or a stop.
/// One socket: blocking reads (each returns within the socket's read timeout). More: waits
/// for any of them to have something (epoll), then reads each ready one dry.
fn read_nudges(
    mut inboxes: Vec<Inbox>,
    until: &Until,
    schedule: &Schedule,
    nudged: &AtomicU64,
    keep_timeline: bool,
) -> anyhow::Result<Read> {
    let mut read = Read::new()?;
    if let [inbox] = inboxes.as_mut_slice() {
        while !until.done(inbox) && until.running() {
            inbox.read_ready(&mut read, schedule, nudged, keep_timeline)?;
        }
        let _ = inbox.ws.close(None);
        return Ok(read);
    }
    for i in &mut inboxes {
        i.ws.get_mut().read_without_waiting();
    }
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    for (n, i) in inboxes.iter().enumerate() {
        let event = EpollEvent::new(EpollFlags::EPOLLIN, n as u64);
        epoll.add(i.ws.get_ref().get_ref().as_fd(), event)?;
    }
    let mut events = vec![EpollEvent::empty(); inboxes.len()];
    while inboxes.iter().any(|i| !i.closed) && until.running() {
        // a timeout, so the clock and the flags are looked at while nothing arrives
        let ready = match epoll.wait(&mut events, 50u16) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => bail!("waiting for the sockets: {e}"),
        };
        for event in &events[..ready] {
            let inbox = inboxes.get_mut(event.data() as usize);
            if let Some(inbox) = inbox.filter(|i| !i.closed) {
                inbox.read_ready(&mut read, schedule, nudged, keep_timeline)?;
            }
        }
        for i in inboxes.iter_mut().filter(|i| !i.closed) {
            if until.done(i) {
                // no longer waited on
                epoll.delete(i.ws.get_ref().get_ref().as_fd())?;
                let _ = i.ws.close(None);
                i.closed = true;
            }
        }
    }
    for i in inboxes.iter_mut().filter(|i| !i.closed) {
        let _ = i.ws.close(None);
    }
    Ok(read)
}

impl Inbox {
    /// Reads every message the socket holds now (a blocking socket: until its read timeout
    /// passes with nothing, or its client has every nudge it was due).
    fn read_ready(
        &mut self,
        read: &mut Read,
        schedule: &Schedule,
        nudged: &AtomicU64,
        keep_timeline: bool,
    ) -> anyhow::Result<()> {
        let client = self.client;
        loop {
            let msg = match self.ws.read() {
                Ok(m) => m,
                // nothing now, or (a blocking socket) nothing within its read timeout
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return Ok(())
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => bail!("client {client}: reading: {e}"),
            };
            let text = match msg {
                Message::Text(text) => text,
                Message::Close(frame) => bail!(
                    "client {client}: the gateway closed {:.1} s into the run, with {} of its {} nudges read: {frame:?}",
                    schedule.start.elapsed().as_secs_f64(),
                    self.got,
                    self.want
                ),
                _ => continue,
            };
            let Ok(m) = serde_json::from_str::<ServerMsg<'_>>(text.as_str()) else {
                continue;
            };
            if m.kind == "server.error" {
                bail!("client {client}: {text}");
            }
            if m.kind == "server.resync" {
                read.resyncs += 1;
                continue;
            }
            let Some(seq) = m
                .payload
                .and_then(|p| p.frame_seq)
                .filter(|_| m.kind == "server.nudge")
            else {
                continue;
            };
            let k = (seq.saturating_sub(1)) * schedule.clients + client;
            let due = schedule.due(k);
            let now = Instant::now();
            read.last_s = now.saturating_duration_since(schedule.start).as_secs_f64();
            let us = now.saturating_duration_since(due).as_micros() as u64;
            read.hist.record(us.max(1))?;
            let rx = self.ws.get_ref().last_rx().unwrap_or(now);
            read.rx_hist
                .record((rx.saturating_duration_since(due).as_micros() as u64).max(1))?;
            if keep_timeline {
                read.timeline
                    .push(((due - schedule.start).as_micros() as u64, us));
            }
            self.got += 1;
            nudged.fetch_add(1, Ordering::Relaxed);
            if self.got >= self.want {
                return Ok(());
            }
        }
    }
}
