//! A TCP stream that remembers when the kernel received the bytes of its last read
//! (`SO_TIMESTAMPNS`), so a nudge's latency can end where the network path ends: at the
//! client's socket, before the reader thread has been woken and scheduled. With few nudges
//! a second each reader thread sleeps for seconds and its wake-up is the generator's cost,
//! not the server's; both figures are printed.

use std::io::{self, IoSliceMut, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;

pub struct RxStamped {
    tcp: TcpStream,
    /// Room for one timestamp control message, reused by every read.
    control: Vec<u8>,
    last_rx: Option<Instant>,
    /// Reads answer `WouldBlock` rather than wait (`MSG_DONTWAIT`): the writes on the
    /// same socket, from another thread, still block.
    nonblocking: bool,
}

impl RxStamped {
    /// Asks the kernel to stamp what `tcp` receives from now on.
    pub fn new(tcp: TcpStream) -> io::Result<RxStamped> {
        setsockopt(&tcp, sockopt::ReceiveTimestampns, &true)?;
        Ok(RxStamped {
            tcp,
            control: nix::cmsg_space!(TimeSpec),
            last_rx: None,
            nonblocking: false,
        })
    }

    /// From now on a read with nothing to read answers `WouldBlock` (after the handshake,
    /// for a reader that polls many sockets).
    pub fn read_without_waiting(&mut self) {
        self.nonblocking = true;
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.tcp
    }

    /// When the kernel received the data of the last read that returned bytes, on the
    /// monotonic clock.
    pub fn last_rx(&self) -> Option<Instant> {
        self.last_rx
    }
}

impl Read for RxStamped {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<()>(
            self.tcp.as_raw_fd(),
            &mut iov,
            Some(&mut self.control),
            if self.nonblocking {
                MsgFlags::MSG_DONTWAIT
            } else {
                MsgFlags::empty()
            },
        )?;
        let stamp = msg.cmsgs().ok().and_then(|mut c| {
            c.find_map(|m| match m {
                ControlMessageOwned::ScmTimestampns(ts) => {
                    Some(Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32))
                }
                _ => None,
            })
        });
        if msg.bytes > 0 {
            if let Some(at) = stamp {
                // the stamp is wall-clock time: its age now, taken back from the monotonic now
                let now_wall = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let now = Instant::now();
                let age = now_wall.saturating_sub(at);
                self.last_rx = Some(now.checked_sub(age).unwrap_or(now));
            }
        }
        Ok(msg.bytes)
    }
}

impl Write for RxStamped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}
