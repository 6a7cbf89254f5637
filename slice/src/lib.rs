//! A short scheduler slice for the threads on the frame → nudge path.
//!
//! Linux's EEVDF scheduler (6.6 and later) lets a woken thread preempt the one running only
//! when its own slice is shorter (`PREEMPT_SHORT`, 6.12 and later); otherwise it waits until
//! the running thread's slice (0.7 ms × (1 + log2 CPUs), 1.4 ms on two cores) is used up. On a
//! small machine the thread running is often a database backend storing a batch, so every hop
//! of a frame that lands on its CPU waits. Since 6.12 a SCHED_OTHER thread may ask for its own
//! slice (`sched_attr.sched_runtime`, 0.1–100 ms) without privileges; earlier kernels ignore
//! the request. Fairness is unchanged: a short slice is preempted sooner too.

use std::io;
use std::time::Duration;

/// The range the kernel accepts for a SCHED_OTHER thread's own slice.
pub const MIN: Duration = Duration::from_micros(100);
pub const MAX: Duration = Duration::from_millis(100);

/// `struct sched_attr` of `sched_setattr(2)` (the first version, 48 bytes).
#[repr(C)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

/// Asks for `slice` on every thread the process has now (an async runtime's workers
/// included); threads they create afterwards inherit it. Returns how many threads took it.
pub fn request_for_process(slice: Duration) -> io::Result<usize> {
    let mut done = 0;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let tid = entry?.file_name().to_string_lossy().parse::<i32>();
        // a thread that ended since the listing is not an error
        match tid.map(|tid| set(tid, slice)) {
            Ok(Ok(())) => done += 1,
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {}
        }
    }
    Ok(done)
}

/// Asks for `slice` on the calling thread (threads it creates afterwards inherit it), keeping
/// SCHED_OTHER and nice 0. The kernel clamps a slice outside `MIN..=MAX` into it.
pub fn request(slice: Duration) -> io::Result<()> {
    set(0, slice)
}

#[cfg(target_os = "linux")]
fn set(tid: i32, slice: Duration) -> io::Result<()> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: 0,
        sched_priority: 0,
        sched_runtime: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: `attr` is a valid `struct sched_attr` whose `size` field says how much the
    // kernel may read; `tid` is a thread id (0: the calling thread); flags 0. The kernel
    // only reads `attr`.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            tid,
            &attr as *const SchedAttr,
            0u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set(_tid: i32, _slice: Duration) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// The calling thread's slice as the kernel reports it (`se.slice` in
/// `/proc/thread-self/sched`), when it does.
pub fn current() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
    let line = text.lines().find(|l| l.starts_with("se.slice"))?;
    let ns = line.split(':').nth(1)?.trim().parse::<u64>().ok()?;
    Some(Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_slice_is_what_the_kernel_reports_on_a_thread_and_its_children() {
        // On a thread of its own: the test harness's threads are shared.
        let seen = std::thread::spawn(|| {
            let asked = request(Duration::from_micros(150));
            let child = std::thread::spawn(current).join().ok().flatten();
            (asked.is_ok(), current(), child)
        })
        .join()
        .unwrap();
        match seen {
            // A kernel with EEVDF custom slices (6.12+): the thread and its child have it.
            (true, Some(own), child) if own == Duration::from_micros(150) => {
                assert_eq!(child, Some(own));
            }
            // An older kernel accepts and ignores the request, or reports no `se.slice`.
            (true, own, _) => assert_ne!(own, Some(Duration::from_micros(150))),
            (false, _, _) => panic!("sched_setattr refused a SCHED_OTHER slice of 150 µs"),
        }
    }

    #[test]
    fn a_process_wide_request_reaches_threads_that_already_run() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (back, seen) = std::sync::mpsc::channel();
        let running = std::thread::spawn(move || {
            let _ = back.send(current());
            let _ = rx.recv();
            let _ = back.send(current());
        });
        let before = seen.recv().unwrap();
        let changed = request_for_process(Duration::from_micros(200));
        let _ = tx.send(());
        let after = seen.recv().unwrap();
        running.join().unwrap();
        assert!(changed.unwrap() >= 2, "this thread and the running one");
        assert_ne!(before, Some(Duration::from_micros(200)));
        if custom_slices() {
            assert_eq!(after, Some(Duration::from_micros(200)));
        } else {
            assert_eq!(after, before);
        }
    }

    /// Whether this kernel keeps a thread's own slice (6.12+).
    fn custom_slices() -> bool {
        std::thread::spawn(|| {
            request(Duration::from_micros(300)).is_ok()
                && current() == Some(Duration::from_micros(300))
        })
        .join()
        .unwrap()
    }

    #[test]
    fn slice_outside_the_kernels_range_is_clamped_into_it() {
        let (asked, own) = std::thread::spawn(|| (request(Duration::from_micros(10)), current()))
            .join()
            .unwrap();
        assert!(asked.is_ok(), "{asked:?}");
        if let Some(own) = own {
            // on kernels before custom slices, `se.slice` is the default one
            assert!(own >= MIN, "{own:?}");
        }
    }
}
