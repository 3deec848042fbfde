//! daxfsd over its socket: a request that blocks on the host holds only what
//! serves it. The block is real: the file is under a write lease, so the
//! daemon's open(2) waits for the lease holder (this test) to give it up.
//!
//! - Each request queue has its own worker: another queue is answered.
//! - With `--thread-pool-size`, a queue's requests are served by a pool:
//!   another request of the same queue is answered, out of order.
//! - Without a pool, the same queue waits (what the pool is for).

mod common;

use std::os::fd::AsRawFd as _;
use std::time::Duration;

use common::*;
use daxfsd_harness::{Completion, FuseReply, Token};
use daxfsd_protocol::abi::*;
use daxfsd_protocol::Opcode;

/// A file of the share under a write lease held by this process: the
/// daemon's open(2) of it blocks until [`Leased::release`].
struct Leased {
    holder: std::fs::File,
    nodeid: u64,
}

impl Leased {
    fn new(s: &Session, name: &str) -> Leased {
        std::fs::write(s.path(name), name.as_bytes()).unwrap();
        let entry = s.lookup(ROOT_ID, name.as_bytes()).expect("lookup");
        // SAFETY: SIGIO's disposition is process-wide state that nothing else in this
        // test binary uses; ignoring it keeps the lease-break signal from ending the
        // process.
        unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
        let holder = std::fs::File::open(s.path(name)).unwrap();
        // SAFETY: F_SETLEASE on a descriptor this function owns; no memory is passed.
        let leased = unsafe { libc::fcntl(holder.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) };
        assert_eq!(leased, 0, "F_SETLEASE: {}", std::io::Error::last_os_error());
        Leased {
            holder,
            nodeid: entry.nodeid,
        }
    }

    /// Submits an OPEN of the file on `queue`; it blocks in the daemon.
    fn open_on(&self, s: &Session, queue: usize) -> Token {
        let open = s
            .req(Opcode::Open, self.nodeid)
            .push(&OpenIn {
                flags: libc::O_RDONLY as u32,
                ..OpenIn::default()
            })
            .finish();
        let opening = s.check(s.dev.submit(queue, &[&open], &[4096]));
        // Time for the daemon to reach open(2).
        std::thread::sleep(Duration::from_millis(300));
        opening
    }

    /// Gives the lease up: the daemon's open(2) finishes.
    fn release(&self) {
        // SAFETY: as in `new`; F_UNLCK gives the lease up.
        let released =
            unsafe { libc::fcntl(self.holder.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
        assert_eq!(
            released,
            0,
            "F_SETLEASE F_UNLCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// While an OPEN of a leased file blocks on queue `blocked`, a GETATTR on
/// queue `other` within `patience`: its completion (or the harness error),
/// and whether the OPEN was still pending after it. The lease is then given
/// up and the OPEN must succeed.
fn getattr_beside_a_blocked_open(
    s: &Session, blocked: usize, other: usize, patience: Duration,
) -> (Result<Completion, String>, bool) {
    s.init(LINUX_INIT_FLAGS).expect("INIT");
    let leased = Leased::new(s, "leased");
    let opening = leased.open_on(s, blocked);
    let getattr = getattr_request(s.unique(), ROOT_ID);
    let asked = s.check(s.dev.submit(other, &[&getattr], &[4096]));
    let answered = s
        .dev
        .wait_timeout(asked, patience)
        .map_err(|e| s.backend.report(&e));
    let open_pending = s.check(s.dev.try_take(opening)).is_none();
    leased.release();
    assert!(
        open_pending,
        "the OPEN of a leased file did not block: the test proves nothing"
    );
    let opened = s.check(s.dev.wait(opening));
    let reply = s.check(FuseReply::parse(&opened.data));
    assert!(
        exact::<OpenOut>(reply).is_ok(),
        "the OPEN failed once the lease was gone"
    );
    if answered.is_err() {
        // The GETATTR is answered once the OPEN is: take it off the ring.
        let _ = s.dev.wait_timeout(asked, Duration::from_secs(5));
    }
    (answered, open_pending)
}

fn assert_getattr_answered(s: &Session, answered: Result<Completion, String>, what: &str) {
    let answered = answered.unwrap_or_else(|e| panic!("{what}: {e}"));
    let reply = s.check(FuseReply::parse(&answered.data));
    assert!(
        exact::<AttrOut>(reply).is_ok(),
        "GETATTR of the root failed"
    );
}

/// Each request queue is served by its own worker. (The workers once shared one
/// queue's reply buffers and lock, so every queue waited for the blocked one.)
#[test]
fn a_request_blocked_on_the_host_holds_only_its_own_queue() {
    let s = Session::start_queues(&[], 2);
    let (answered, _) = getattr_beside_a_blocked_open(&s, 1, 2, Duration::from_secs(5));
    assert_getattr_answered(
        &s,
        answered,
        "a GETATTR on queue 2 waited for queue 1's OPEN",
    );
    s.assert_serving();
}

/// With a pool, a request of the same queue is answered while the OPEN
/// blocks, and completes first: replies go back as each request finishes.
#[test]
fn with_a_thread_pool_a_blocked_request_holds_only_its_own_thread() {
    let s = Session::start_queues(&["--thread-pool-size", "4"], 1);
    let (answered, _) = getattr_beside_a_blocked_open(&s, 1, 1, Duration::from_secs(5));
    assert_getattr_answered(
        &s,
        answered,
        "with --thread-pool-size 4, a GETATTR waited for the OPEN before it on its queue",
    );
    // Many requests in flight on the one queue still all complete, each once.
    let tokens: Vec<Token> = (0..64)
        .map(|_| {
            let getattr = getattr_request(s.unique(), ROOT_ID);
            s.check(s.dev.submit(1, &[&getattr], &[4096]))
        })
        .collect();
    for token in tokens {
        let done = s.check(s.dev.wait(token));
        let reply = s.check(FuseReply::parse(&done.data));
        assert!(exact::<AttrOut>(reply).is_ok(), "a GETATTR failed");
    }
    s.assert_serving();
}

/// Without a pool (`--thread-pool-size 0`, the default) a queue serves one
/// request at a time: the GETATTR behind the blocked OPEN waits for it.
#[test]
fn without_a_thread_pool_a_blocked_request_holds_its_queue() {
    let s = Session::start_queues(&["--thread-pool-size", "0"], 1);
    let (answered, _) = getattr_beside_a_blocked_open(&s, 1, 1, Duration::from_secs(1));
    assert!(
        answered.is_err(),
        "without a pool, a GETATTR was answered while the OPEN before it blocked its queue"
    );
    s.assert_serving();
}

/// CPU time (user + system) of every thread of `pid` so far, from /proc.
fn cpu_time(pid: u32) -> Duration {
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // After the command name's closing parenthesis: field 3 onwards.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    let (utime, stime): (u64, u64) = (fields[11].parse().unwrap(), fields[12].parse().unwrap());
    Duration::from_millis((utime + stime) * 1000 / ticks)
}

/// The frontend stops a queue (GET_VRING_BASE) while its worker serves a
/// request, with another request queued behind: when the request finishes,
/// the worker leaves the stopped queue alone (no reply into the ring the
/// frontend took back, no more chains taken) and goes back to waiting. It
/// once spun on such a queue, popping nothing while its available index
/// differed from the next one to take, logging at full speed and never
/// returning to its event loop, so the daemon no longer stopped on SIGTERM
/// (seen when QEMU crashed under a busy guest).
#[test]
fn a_queue_stopped_while_its_worker_serves_is_left_alone() {
    let backend = daxfsd_harness::BackendCommand::daxfsd(daxfsd_bin())
        .args(["--sandbox", "none", "--thread-pool-size", "0"])
        .spawn()
        .unwrap_or_else(|e| panic!("{}", daxfsd_harness::error_chain(&e)));
    // EVENT_IDX: the daemon re-arms notifications after each batch, where it spun.
    let config = daxfsd_harness::DeviceConfig {
        event_idx: true,
        ..daxfsd_harness::DeviceConfig::default()
    };
    let s = Session::connect_with(backend, config);
    s.init(LINUX_INIT_FLAGS).expect("INIT");
    let leased = Leased::new(&s, "leased");
    let opening = leased.open_on(&s, 1);
    let getattr = getattr_request(s.unique(), ROOT_ID);
    let behind = s.check(s.dev.submit(1, &[&getattr], &[4096]));
    s.check(s.dev.stop_queue(1));
    leased.release();
    std::thread::sleep(Duration::from_millis(500));
    let pid = s.backend.pid();
    let before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_time(pid) - before;
    assert!(
        spent < Duration::from_millis(300),
        "the daemon spent {spent:?} of CPU in 1 s after its queue was stopped\n{}",
        s.backend.diagnostics()
    );
    assert!(
        s.check(s.dev.try_take(opening)).is_none() && s.check(s.dev.try_take(behind)).is_none(),
        "a reply was put on the ring of a stopped queue"
    );
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let status = s.check(s.backend.wait_exit(Duration::from_secs(5)));
    assert!(status.success(), "{}", s.backend.diagnostics());
}
