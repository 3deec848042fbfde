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
    s: &Session,
    blocked: usize,
    other: usize,
    patience: Duration,
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
