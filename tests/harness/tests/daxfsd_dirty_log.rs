//! Dirty-page logging for live migration: daxfsd offers VHOST_F_LOG_ALL and LOG_SHMFD,
//! takes the dirty log with SET_LOG_BASE, and sets the bit of every guest page it writes
//! (reply headers, READ data read straight into guest buffers, the used ring) and of no
//! other.
//!
//! Every request is laid out in pages of its own (request, then each writable
//! descriptor), so the pages the daemon may write are exactly those holding the first
//! `used_len` bytes of each chain's writable descriptors, plus the request queue's used
//! ring: the log must hold exactly those.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt as _;

use common::{daxfsd_bin, requests, Session, HIPRIO_QUEUE, LINUX_INIT_FLAGS, REQUEST_QUEUE};
use daxfsd_harness::dirty_log::{pages_of, LOG_PAGE, VHOST_F_LOG_ALL};
use daxfsd_harness::guest_memory::memfd_region;
use daxfsd_harness::{
    error_chain, BackendCommand, Completion, DeviceConfig, DirtyLog, FuseReply, RawDesc,
};
use daxfsd_protocol::abi::{EntryOut, OpenOut};
use vhost::vhost_user::{VhostUserFrontend as _, VhostUserProtocolFeatures};
use vhost::VhostBackend as _;

/// The shared file: two and a half pages, so a READ of four stops in the third.
const FILE_LEN: usize = 2 * LOG_PAGE as usize + LOG_PAGE as usize / 2;
/// Size of the out header: the READ's first writable descriptor, as Linux lays it out.
const OUT_HEADER: u32 = 16;

fn file_data() -> Vec<u8> {
    (0..FILE_LEN).map(|i| (i % 251) as u8).collect()
}

/// A daxfsd started with `args` and a device negotiating LOG_SHMFD and EVENT_IDX, as
/// QEMU does, and what `configure` adds.
fn start(args: &[&str], configure: impl FnOnce(&mut DeviceConfig)) -> Session {
    let backend = BackendCommand::daxfsd(daxfsd_bin())
        .args(["--tag", "dirty"])
        .args(args.iter().copied())
        .spawn()
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let mut config = DeviceConfig {
        log_shmfd: true,
        event_idx: true,
        ..DeviceConfig::default()
    };
    configure(&mut config);
    let s = Session::connect_with(backend, config);
    let negotiated = s.dev.negotiated();
    assert_ne!(
        negotiated.offered_features & VHOST_F_LOG_ALL,
        0,
        "daxfsd does not offer VHOST_F_LOG_ALL: QEMU would refuse to migrate"
    );
    assert!(
        negotiated
            .protocol_features
            .contains(VhostUserProtocolFeatures::LOG_SHMFD),
        "LOG_SHMFD not negotiated (offered: {:?})",
        negotiated.offered_protocol_features
    );
    std::fs::write(s.path("data"), file_data()).expect("writing the shared file");
    s
}

/// Sends requests laid out page by page and keeps the pages the daemon wrote.
struct Paged<'a> {
    s: &'a Session,
    /// Pages holding bytes the daemon says it wrote (a chain's first `used_len` bytes).
    written: BTreeSet<u64>,
    /// Pages of request buffers, which the daemon only reads.
    read_only: BTreeSet<u64>,
}

/// One answered request: its reply and where its writable descriptors were.
struct Sent {
    reply: FuseReply,
    writable: Vec<u64>,
}

impl<'a> Paged<'a> {
    fn new(s: &'a Session) -> Self {
        Paged {
            s,
            written: BTreeSet::new(),
            read_only: BTreeSet::new(),
        }
    }

    /// Whole pages of guest memory for `len` bytes (never freed: no page serves twice).
    fn pages(&self, len: usize) -> u64 {
        let len = (len.max(1) as u64).next_multiple_of(LOG_PAGE);
        self.s.check(self.s.dev.alloc_aligned(len, LOG_PAGE)).addr
    }

    /// Sends `request` (in pages of its own) with the writable descriptors
    /// `writable` (address, length); returns the completion.
    fn submit(&mut self, request: &[u8], writable: &[(u64, u32)]) -> Completion {
        let at = self.pages(request.len());
        self.s.check(self.s.dev.memory().write(at, request));
        self.read_only.extend(pages_of(at, request.len() as u64));
        let mut chain = vec![RawDesc::readable(at, request.len() as u32)];
        chain.extend(writable.iter().map(|&(at, len)| RawDesc::writable(at, len)));
        let token = self
            .s
            .check(self.s.dev.submit_raw_chain(REQUEST_QUEUE, &chain));
        let done = self.s.check(self.s.dev.wait(token));
        let mut left = u64::from(done.used_len);
        for &(at, len) in writable {
            let took = left.min(u64::from(len));
            self.written.extend(pages_of(at, took));
            left -= took;
        }
        done
    }

    /// Sends `request` with one writable descriptor per entry of `writable` (its
    /// length), each starting a page; checks the reply's framing and unique.
    fn send(&mut self, request: &[u8], writable: &[u32]) -> Sent {
        let placed: Vec<_> = writable
            .iter()
            .map(|&len| (self.pages(len as usize), len))
            .collect();
        let done = self.submit(request, &placed);
        let addrs = placed.iter().map(|&(at, _)| at).collect();
        let reply = self.s.check(FuseReply::parse(&done.data));
        assert_eq!(
            reply.header.unique,
            u64::from_le_bytes(request[8..16].try_into().unwrap())
        );
        Sent {
            reply,
            writable: addrs,
        }
    }

    /// Sends a request whose reply fits a page; fails on an error reply.
    fn ok(&mut self, request: &[u8]) -> FuseReply {
        let reply = self.send(request, &[LOG_PAGE as u32]).reply;
        assert_eq!(reply.errno(), 0, "{}", self.s.backend.diagnostics());
        reply
    }

    /// INIT, LOOKUP and OPEN of the shared file: its nodeid and handle.
    fn open_file(&mut self) -> (u64, u64) {
        let init = requests::init(self.s.unique(), LINUX_INIT_FLAGS).finish();
        self.ok(&init);
        let lookup = requests::lookup(self.s.unique(), 1, b"data").finish();
        let entry: EntryOut = self.s.check(self.ok(&lookup).body_as());
        let open = requests::open(self.s.unique(), entry.nodeid, libc::O_RDONLY as u32).finish();
        let open: OpenOut = self.s.check(self.ok(&open).body_as());
        (entry.nodeid, open.fh)
    }

    /// READ of `pages` pages at `offset` into Linux's layout (the out header's
    /// descriptor, then one per page); checks the data against the file and returns
    /// the data descriptors' addresses.
    fn read(&mut self, (nodeid, fh): (u64, u64), offset: u64, pages: usize) -> Vec<u64> {
        let size = pages as u32 * LOG_PAGE as u32;
        let request = requests::read(self.s.unique(), nodeid, fh, offset, size).finish();
        let mut writable = vec![OUT_HEADER];
        writable.resize(pages + 1, LOG_PAGE as u32);
        let sent = self.send(&request, &writable);
        let data = file_data();
        let want = &data[(offset as usize).min(FILE_LEN)..];
        let want = &want[..want.len().min(size as usize)];
        assert!(
            sent.reply.body == want,
            "READ at {offset} returned other bytes"
        );
        sent.writable[1..].to_vec()
    }

    /// The pages the log must hold: those written, and the request queue's used ring.
    fn expected(&self) -> BTreeSet<u64> {
        let (_, _, used) = self.s.check(self.s.dev.ring_addresses(REQUEST_QUEUE));
        let mut pages = self.written.clone();
        // Queue size 128: flags, idx, 128 entries and avail_event fit its one page.
        pages.insert(used / LOG_PAGE);
        pages
    }

    /// Forgets what was written so far (the VMM synced and cleared the log).
    fn synced(&mut self, log: &DirtyLog) {
        self.written.clear();
        self.s.check(log.clear());
    }
}

fn dirty(s: &Session, log: &DirtyLog) -> BTreeSet<u64> {
    s.check(log.dirty_pages()).into_iter().collect()
}

/// Checks that the log holds exactly the pages the daemon wrote; `data` are the READ
/// data pages and how many of them the file filled.
fn assert_logged(paged: &Paged<'_>, log: &DirtyLog, data: &[u64], filled: usize) {
    let dirty = dirty(paged.s, log);
    for (i, &at) in data.iter().enumerate() {
        let page = at / LOG_PAGE;
        if i < filled {
            assert!(
                dirty.contains(&page),
                "READ data page {i} ({at:#x}) not logged"
            );
        } else {
            assert!(
                !dirty.contains(&page),
                "READ page {i} ({at:#x}) logged but never written"
            );
        }
    }
    let (_, _, used) = paged.s.check(paged.s.dev.ring_addresses(REQUEST_QUEUE));
    assert!(
        dirty.contains(&(used / LOG_PAGE)),
        "used ring page not logged"
    );
    let read_only: Vec<_> = paged.read_only.intersection(&dirty).collect();
    assert!(read_only.is_empty(), "request pages logged: {read_only:?}");
    // The hiprio queue's worker may write its used ring's avail_event (re-arming
    // notifications) whenever it wakes: a write the log must hold, but not one this
    // test causes.
    let (_, _, hiprio_used) = paged.s.check(paged.s.dev.ring_addresses(HIPRIO_QUEUE));
    let mut dirty = dirty;
    dirty.remove(&(hiprio_used / LOG_PAGE));
    let expected = paged.expected();
    assert_eq!(
        dirty,
        expected,
        "logged but not written: {:?}; written but not logged: {:?}",
        dirty.difference(&expected).collect::<Vec<_>>(),
        expected.difference(&dirty).collect::<Vec<_>>()
    );
}

/// A device started while a migration runs (QEMU's `vhost_dev_start` with logging on):
/// LOG_ALL in SET_FEATURES, SET_LOG_BASE once the rings are set up; then every request.
fn logged_from_the_start(args: &[&str]) {
    let s = start(args, |c| c.extra_features = VHOST_F_LOG_ALL);
    let log = s.check(DirtyLog::for_memory(s.dev.memory()));
    s.check(log.install(&s.dev));
    let mut paged = Paged::new(&s);
    let file = paged.open_file();
    let data = paged.read(file, 0, 4);
    assert_logged(&paged, &log, &data, 3);
}

#[test]
fn every_page_written_is_logged_and_no_other() {
    logged_from_the_start(&[]);
}

#[test]
fn pool_threads_log_what_they_write() {
    logged_from_the_start(&["--thread-pool-size", "2"]);
}

/// A running device whose migration starts (SET_LOG_BASE, SET_FEATURES with LOG_ALL,
/// SET_VRING_ADDR with the log flag): what it wrote before is not in the log, what it
/// writes after is, and it keeps serving; after the VMM synced and cleared the log, the
/// next writes are logged again.
#[test]
fn logging_started_on_a_running_device_logs_the_writes_after_it() {
    let s = start(&[], |_| {});
    let log = s.check(DirtyLog::for_memory(s.dev.memory()));
    let mut paged = Paged::new(&s);
    let file = paged.open_file();
    paged.read(file, 0, 4);
    paged.written.clear();

    s.check(log.start_logging(&s.dev));
    // Nothing new was asked; only the workers may still be re-arming notifications
    // (avail_event, in the used rings' pages).
    let used_pages =
        [REQUEST_QUEUE, HIPRIO_QUEUE].map(|q| s.check(s.dev.ring_addresses(q)).2 / LOG_PAGE);
    let early: Vec<_> = dirty(&s, &log)
        .into_iter()
        .filter(|p| !used_pages.contains(p))
        .collect();
    assert!(early.is_empty(), "pages logged before any write: {early:?}");
    // Pages 1 and 2 of the file: a page and a half.
    let data = paged.read(file, LOG_PAGE, 2);
    assert_logged(&paged, &log, &data, 2);

    paged.synced(&log);
    let data = paged.read(file, 2 * LOG_PAGE, 2);
    assert_logged(&paged, &log, &data, 1);
}

/// A running device, initialised and with the shared file open, whose migration starts
/// with a log covering `[0, log_end)` (the end of guest RAM by default): `body` gets the
/// session, the log, the tracker (nothing written since the log started) and the file.
fn while_logging(
    configure: impl FnOnce(&mut DeviceConfig), log_end: Option<u64>,
    body: impl FnOnce(&Session, &DirtyLog, &mut Paged<'_>, (u64, u64)),
) {
    let s = start(&[], configure);
    let log = match log_end {
        Some(end) => DirtyLog::covering(end),
        None => DirtyLog::for_memory(s.dev.memory()),
    };
    let log = s.check(log);
    let mut paged = Paged::new(&s);
    let file = paged.open_file();
    paged.written.clear();
    s.check(log.start_logging(&s.dev));
    body(&s, &log, &mut paged, file);
}

/// A migration that ends or is cancelled (SET_FEATURES without LOG_ALL, SET_VRING_ADDR
/// without the log flag): the daemon stops writing into the log, which the VMM frees.
#[test]
fn logging_stops_when_log_all_is_dropped() {
    while_logging(
        |_| {},
        None,
        |s, log, paged, file| {
            let data = paged.read(file, 0, 1);
            assert_logged(paged, log, &data, 1);

            s.check(log.stop_logging(&s.dev));
            paged.synced(log);
            paged.read(file, 0, 4);
            paged.ok(&requests::getattr(s.unique(), 1, None).finish());
            let after = dirty(s, log);
            assert!(
                after.is_empty(),
                "pages logged after LOG_ALL was dropped: {after:?}"
            );
        },
    );
}

/// A region added to the memory table while logging (ADD_MEM_REG; QEMU sends
/// SET_LOG_BASE again only when the log must grow): READ data the daemon puts there is
/// logged, in the same log.
#[test]
fn a_region_added_while_logging_is_logged() {
    const REGION_GPA: u64 = 96 << 20;
    let configure = |c: &mut DeviceConfig| c.configure_mem_slots = true;
    while_logging(configure, Some(128 << 20), |s, log, paged, (nodeid, fh)| {
        let (region, info) = s.check(memfd_region(REGION_GPA, 1 << 20));
        s.check(
            s.dev
                .vhost_call("ADD_MEM_REG", |fe| fe.add_mem_region(&info)),
        );
        // READ of 2 pages: the out header in guest RAM, the data in the region's pages 1
        // and 3.
        let request = requests::read(s.unique(), nodeid, fh, 0, 2 * LOG_PAGE as u32).finish();
        let data = [REGION_GPA + LOG_PAGE, REGION_GPA + 3 * LOG_PAGE];
        let writable = [
            (paged.pages(OUT_HEADER as usize), OUT_HEADER),
            (data[0], LOG_PAGE as u32),
            (data[1], LOG_PAGE as u32),
        ];
        let done = paged.submit(&request, &writable);
        assert_eq!(
            done.used_len,
            OUT_HEADER + 2 * LOG_PAGE as u32,
            "{}",
            s.backend.diagnostics()
        );
        let mut got = vec![0u8; LOG_PAGE as usize];
        region.read_exact_at(&mut got, 3 * LOG_PAGE).unwrap();
        assert!(
            got == file_data()[LOG_PAGE as usize..2 * LOG_PAGE as usize],
            "READ data not in the region"
        );
        // Exactly the pages written: the region's pages 0, 2 and 4 on stay clean.
        assert_logged(paged, log, &data, 2);
    });
}

/// The whole memory table sent again while logging (SET_MEM_TABLE: every region mapped
/// anew, none from SET_LOG_BASE): the daemon's writes still land in the log.
#[test]
fn a_memory_table_sent_again_while_logging_stays_logged() {
    while_logging(
        |_| {},
        None,
        |s, log, paged, file| {
            let regions = s.check(s.dev.memory().region_infos());
            s.check(
                s.dev
                    .vhost_call("SET_MEM_TABLE", |fe| fe.set_mem_table(&regions)),
            );
            let data = paged.read(file, 0, 4);
            assert_logged(paged, log, &data, 3);
        },
    );
}

/// A log too small for guest memory (8 bytes: 64 pages, 256 KiB) is not installed: the
/// daemon never writes past it. vhost 0.18 has no error reply for SET_LOG_BASE, so the
/// daemon ends the connection as for any frontend message it cannot handle (and, without
/// `--persist`, exits with an error), rather than let the frontend think it logs.
#[test]
fn a_log_smaller_than_guest_memory_is_refused() {
    let s = start(&[], |_| {});
    let log = s.check(DirtyLog::covering(256 << 10));
    assert_eq!(log.len(), 8);
    assert!(
        log.install(&s.dev).is_err(),
        "SET_LOG_BASE of a log too small was accepted"
    );
    let status = s.check(s.backend.wait_exit(s.dev.timeout()));
    let stderr = s.backend.stderr();
    assert!(
        !status.success()
            && stderr.contains("failed to handle request")
            && !stderr.contains("panicked"),
        "{status}: {stderr}"
    );
    assert!(s.check(log.dirty_pages()).is_empty());
}
