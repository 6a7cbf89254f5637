//! What the machine was like during a frames run, printed beside its figures: its wakeup cost
//! (a one-byte loopback TCP round trip between two threads pinned to the same CPU, then to two
//! different CPUs) and the share of its CPU time the host stole while the frames were sent (time
//! a vCPU wanted to run and the hypervisor ran something else). Busy time is not printed: on
//! this VM `/proc/stat`'s busy ticks disagreed with the processes' own from run to run.
//!
//! Every hop of frame → nudge (generator → gateway → NATS → worker → NATS → gateway →
//! generator) is a thread woken by a socket, so the pipeline's latency is mostly this cost
//! times the hops. On this VM (nested virtualization) a wakeup on another CPU goes through the
//! hypervisor and its price moves with the host's load, several times over in a day, while the
//! same-CPU figure stays put; the pair tells a slow hour from a regression.

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use anyhow::Context;
use core_affinity::CoreId;

/// p50 and p99 of one placement's round trips, µs.
pub struct Rtt {
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Round trips with both threads on the first CPU this process may use, then with the echo
/// on the second (`None` there when only one CPU is allowed).
pub fn measure(rounds: usize) -> anyhow::Result<(Rtt, Option<Rtt>)> {
    let cores = core_affinity::get_core_ids().context("reading the CPUs this process may use")?;
    let first = *cores
        .first()
        .context("no CPU in this process's affinity mask")?;
    let same = round_trips(first, first, rounds)?;
    let cross = match cores.get(1) {
        Some(&second) => Some(round_trips(first, second, rounds)?),
        None => None,
    };
    Ok((same, cross))
}

fn round_trips(client_cpu: CoreId, echo_cpu: CoreId, rounds: usize) -> anyhow::Result<Rtt> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        core_affinity::set_for_current(echo_cpu);
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        while s.read(&mut b)? == 1 {
            s.write_all(&b)?;
        }
        Ok(())
    });
    let client = std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
        core_affinity::set_for_current(client_cpu);
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        let mut took = Vec::with_capacity(rounds);
        // the first few pay for warming caches and the scheduler's placement
        for i in 0..rounds + 100 {
            let t = Instant::now();
            s.write_all(b"x")?;
            s.read_exact(&mut b)?;
            if i >= 100 {
                took.push(t.elapsed().as_nanos() as f64 / 1000.0);
            }
        }
        Ok(took)
    });
    let mut took = client
        .join()
        .map_err(|_| anyhow::anyhow!("the round-trip thread panicked"))??;
    echo.join()
        .map_err(|_| anyhow::anyhow!("the echo thread panicked"))??;
    anyhow::ensure!(!took.is_empty(), "no round trips timed");
    took.sort_by(f64::total_cmp);
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
    Ok(Rtt {
        p50_us: at(0.5),
        p99_us: at(0.99),
    })
}

/// The machine's CPU time so far, in clock ticks summed over CPUs (`/proc/stat`'s first line).
#[derive(Clone, Copy)]
pub struct CpuTicks {
    /// user nice system idle iowait irq softirq steal (guest time is inside user)
    all: u64,
    steal: u64,
}

impl CpuTicks {
    /// `None` where `/proc/stat` cannot be read (not Linux).
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .take(8)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        Some(Self {
            all: v.iter().sum(),
            steal: v.get(7).copied().unwrap_or(0),
        })
    }

    /// The share of the machine's CPU time from this reading until now that the host stole.
    pub fn steal_since(before: Option<Self>) -> Option<StealShare> {
        let (a, b) = before.zip(Self::now())?;
        let all = b.all.saturating_sub(a.all).max(1) as f64;
        Some(StealShare(
            100.0 * b.steal.saturating_sub(a.steal) as f64 / all,
        ))
    }
}

/// Per cent of the machine's CPU time the host stole over a stretch.
pub struct StealShare(f64);

impl fmt::Display for StealShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "steal_pct={:.1}", self.0)
    }
}

/// CPU seconds (user + system) this process has used: the generator shares the machine with
/// the servers it measures, so what it takes is printed beside the figures.
pub fn own_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // the fields after the command name, which is in parentheses and may hold spaces
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ').skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // USER_HZ, 100 on Linux whatever the kernel's own tick
    Some((utime + stime) / 100.0)
}
