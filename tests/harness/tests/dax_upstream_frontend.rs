//! daxfsd against the two frontends the harness plays: the patched QEMU (maps partial
//! last pages and read-only descriptors, keeps mappings at a device reset) and upstream
//! QEMU 11.1 (refuses both, maps everything writable, drops its mappings at a reset).
//!
//! The daemon probes the frontend at INIT and then: refuses dax=always at INIT when the
//! frontend cannot map partial last pages, maps read mappings from a writable descriptor
//! only for a caller who may write the file (EACCES otherwise), marks with ATTR_DAX under
//! dax=inode only files the frontend can map, refuses the SETUPMAPPING of a partial last
//! page itself, and forgets quietly what the frontend dropped at a reset.

mod dax_common;

use dax_common::{DaxDaemon, Session, FH_BY_NODEID, MIB, PAGE, READ, READ_WRITE, SLOT};
use std::time::{Duration, Instant};

use daxfsd_harness::client::requests;
use daxfsd_harness::fuse::DEFAULT_REPLY_CAPACITY;
use daxfsd_harness::{BackendRequest, FrontendBehaviour};
use daxfsd_protocol::abi::{
    EntryOut, ASYNC_READ, ATTR_DAX, BIG_WRITES, HAS_INODE_DAX, MAP_ALIGNMENT, MAX_PAGES, ROOT_ID,
};

const PATCHED: FrontendBehaviour = FrontendBehaviour::Patched;
const UPSTREAM: FrontendBehaviour = FrontendBehaviour::Upstream11_1;
/// What a Linux guest mounting with dax=always offers in INIT.
const DAX_ALWAYS: u64 = ASYNC_READ | BIG_WRITES | MAX_PAGES | MAP_ALIGNMENT;
/// ... and with dax=inode (or no dax option).
const DAX_INODE: u64 = DAX_ALWAYS | HAS_INODE_DAX;
/// A guest user who owns nothing in the shared directory.
const USER: u32 = 1000;

/// Connects as `frontend`, INIT with `flags`, the probe's requests kept in the log.
fn connect(daemon: &DaxDaemon, frontend: FrontendBehaviour, flags: u64) -> Session<'_> {
    daemon.connect_keeping_probe(|c| c.frontend = frontend, flags)
}

/// Connects as `frontend`, INIT as a dax=inode guest (which QEMU 11.1 can serve), the
/// probe's requests cleared from the log.
fn session(daemon: &DaxDaemon, frontend: FrontendBehaviour) -> Session<'_> {
    let s = connect(daemon, frontend, DAX_INODE);
    s.channel().clear_history();
    s
}

/// LOOKUP of `name` in the root as `uid`.
fn lookup_as(s: &Session<'_>, uid: u32, name: &str) -> EntryOut {
    let req = requests::lookup(s.uniques.next(), ROOT_ID, name.as_bytes())
        .caller(uid, uid, 1)
        .finish();
    let reply = s.fuse(1, &req);
    dax_common::check(s.backend(), reply.ok().and_then(|r| r.body_as()))
}

/// SETUPMAPPING of `[foffset, foffset + len)` at `moffset` as `uid`; the errno.
fn setup_as(
    s: &Session<'_>, uid: u32, nodeid: u64, foffset: u64, len: u64, moffset: u64, flags: u64,
) -> i32 {
    let unique = s.uniques.next();
    let req = requests::setup_mapping(unique, nodeid, FH_BY_NODEID, foffset, len, moffset, flags)
        .caller(uid, uid, 1)
        .finish();
    s.fuse(1, &req).errno()
}

/// (kind, errno) of each backend request in the log.
fn requests(s: &Session<'_>) -> Vec<(&'static str, i32)> {
    s.channel()
        .log()
        .iter()
        .map(|r| match r.request {
            BackendRequest::ShmemMap { .. } => ("MAP", r.errno),
            BackendRequest::ShmemUnmap { .. } => ("UNMAP", r.errno),
            _ => ("OTHER", r.errno),
        })
        .collect()
}

#[test]
fn the_probe_at_init_finds_what_each_frontend_maps() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    // The patched frontend takes the control page, the partial page and the read-only
    // descriptor; each is unmapped again.
    let s = connect(&daemon, PATCHED, DAX_INODE);
    assert_eq!(
        requests(&s),
        [
            ("MAP", 0),
            ("UNMAP", 0),
            ("MAP", 0),
            ("UNMAP", 0),
            ("MAP", 0),
            ("UNMAP", 0)
        ]
    );
    let log = s.channel().log();
    let access: Vec<Option<i32>> = log.iter().map(|r| r.fd_access).collect();
    assert_eq!(
        access,
        [
            Some(libc::O_RDWR),
            None,
            Some(libc::O_RDWR),
            None,
            Some(libc::O_RDONLY),
            None
        ]
    );
    assert!(s.window().mappings().is_empty());
    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_frontend_probed"), 1);
    assert_eq!(m.get("daxfsd_dax_frontend_maps_partial_tail"), 1);
    assert_eq!(m.get("daxfsd_dax_frontend_maps_read_only"), 1);
    // The probe is no DAX event: no mapping counted, nothing refused.
    assert_eq!(m.get("daxfsd_dax_vmm_maps_total"), 0);
    assert_eq!(m.get("daxfsd_dax_refusals_total"), 0);
    s.dev.disconnect();
    drop(daemon);

    // QEMU 11.1 takes the control page only.
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    let s = connect(&daemon, UPSTREAM, DAX_INODE);
    assert_eq!(
        requests(&s),
        [
            ("MAP", 0),
            ("UNMAP", 0),
            ("MAP", libc::EINVAL),
            ("MAP", libc::EACCES)
        ]
    );
    assert!(s.window().mappings().is_empty());
    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_frontend_probed"), 1);
    assert_eq!(m.get("daxfsd_dax_frontend_maps_partial_tail"), 0);
    assert_eq!(m.get("daxfsd_dax_frontend_maps_read_only"), 0);
    assert_eq!(m.get("daxfsd_dax_refusals_total"), 0);
    let log = daemon.backend.stderr();
    assert_eq!(
        log.matches("frontend maps partial last pages: no; read-only descriptors: no")
            .count(),
        1,
        "{log}"
    );
}

#[test]
fn the_legacy_protocol_is_not_probed() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &["--dax-protocol", "legacy"]);
    let s = daemon.connect_keeping_probe(|c| c.offer_shmem = false, DAX_ALWAYS);
    assert!(s.channel().log().is_empty(), "{:?}", s.channel().log());
    assert_eq!(s.init.map_alignment, 12);
    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_frontend_probed"), 0);
    assert_eq!(m.get("daxfsd_dax_frontend_maps_partial_tail"), 1);
    assert_eq!(m.get("daxfsd_dax_frontend_maps_read_only"), 1);
}

/// On either frontend, a read mapping never carries a descriptor open for writing to a
/// caller who may not write the file: the patched frontend gets `O_RDONLY`; QEMU 11.1,
/// which maps only read-write descriptors, gets one only for a caller who may write,
/// and the others get EACCES without any request to the frontend.
#[test]
fn a_read_mapping_gets_a_writable_descriptor_only_for_a_caller_who_may_write() {
    for frontend in [PATCHED, UPSTREAM] {
        let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
        daemon.patterned_file("roots", 4 * MIB);
        let users = daemon.patterned_file("users", 4 * MIB);
        std::os::unix::fs::chown(&users, Some(USER), Some(USER)).unwrap();
        let s = session(&daemon, frontend);
        let roots = lookup_as(&s, USER, "roots").nodeid;
        let users = lookup_as(&s, USER, "users").nodeid;

        // USER may not write "roots" (root's, 0644).
        let errno = setup_as(&s, USER, roots, 0, SLOT, 0, READ);
        // USER owns "users".
        assert_eq!(
            setup_as(&s, USER, users, 0, SLOT, SLOT, READ),
            0,
            "{frontend:?}"
        );
        // Root may write anything.
        assert_eq!(setup_as(&s, 0, roots, SLOT, SLOT, 2 * SLOT, READ), 0);
        let log = s.channel().log();
        let maps: Vec<(u64, Option<i32>)> = log
            .iter()
            .filter_map(|r| match r.request {
                BackendRequest::ShmemMap { shm_offset, .. } => Some((shm_offset, r.fd_access)),
                _ => None,
            })
            .collect();
        match frontend {
            PATCHED => {
                assert_eq!(errno, 0);
                assert_eq!(
                    maps,
                    [
                        (0, Some(libc::O_RDONLY)),
                        (SLOT, Some(libc::O_RDONLY)),
                        (2 * SLOT, Some(libc::O_RDONLY))
                    ]
                );
            }
            UPSTREAM => {
                assert_eq!(errno, libc::EACCES);
                assert_eq!(
                    maps,
                    [(SLOT, Some(libc::O_RDWR)), (2 * SLOT, Some(libc::O_RDWR))],
                    "no request for the refused mapping"
                );
                assert!(s.window().read(SLOT, 16).is_ok());
                let m = daemon.fresh_metrics();
                assert_eq!(m.get("daxfsd_dax_refusals_total"), 1);
            }
        }
        assert!(log.iter().all(|r| r.errno == 0), "{log:?}");
    }

    // --readonly: nobody may write, so QEMU 11.1 gets no read mapping at all.
    let daemon = DaxDaemon::start(8 * MIB, 1, &["--readonly"]);
    daemon.patterned_file("data", 4 * MIB);
    let s = session(&daemon, UPSTREAM);
    let data = lookup_as(&s, 0, "data").nodeid;
    assert_eq!(setup_as(&s, 0, data, 0, SLOT, 0, READ), libc::EACCES);
    assert!(s.channel().log().is_empty());
}

/// The files of `dax_inode_marks_only_files_the_frontend_can_map`: sizes
/// around a page, and one owned by `USER`.
fn write_inode_dax_files(daemon: &DaxDaemon) {
    let dir = daemon.backend.shared_dir();
    for (name, size) in [
        ("empty", 0usize),
        ("tail", 20),
        ("page", 4096),
        ("big", 8193),
    ] {
        std::fs::write(dir.join(name), vec![1u8; size]).unwrap();
    }
    let users = dir.join("users");
    std::fs::write(&users, vec![1u8; 8192]).unwrap();
    std::os::unix::fs::chown(&users, Some(USER), Some(USER)).unwrap();
}

#[test]
fn dax_inode_marks_only_files_the_frontend_can_map() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    write_inode_dax_files(&daemon);
    let flagged =
        |s: &Session<'_>, uid: u32, name: &str| lookup_as(s, uid, name).attr.flags & ATTR_DAX != 0;

    let s = connect(&daemon, PATCHED, DAX_INODE);
    for name in ["empty", "tail", "page", "big", "users"] {
        assert!(flagged(&s, 0, name), "{name} on the patched frontend");
        assert!(flagged(&s, USER, name), "{name} for {USER}");
    }
    s.dev.disconnect();
    drop(daemon);

    let daemon = DaxDaemon::start(8 * MIB, 1, &["--persist"]);
    write_inode_dax_files(&daemon);
    let dir = daemon.backend.shared_dir().to_owned();
    let s = connect(&daemon, UPSTREAM, DAX_INODE);
    assert_eq!(s.init.map_alignment, 12, "dax=inode is served");
    assert!(!flagged(&s, 0, "empty"), "empty: ends partway once written");
    assert!(!flagged(&s, 0, "tail"), "20 bytes");
    assert!(flagged(&s, 0, "page"));
    assert!(!flagged(&s, 0, "big"), "8193 bytes");
    assert!(flagged(&s, 0, "users"), "root may write it");
    assert!(flagged(&s, USER, "users"), "its owner may write it");
    assert!(
        !flagged(&s, USER, "page"),
        "{USER} may not write root's 0644 file"
    );

    // Re-evaluated on every attribute reply: a size change turns it off, and on.
    let page = lookup_as(&s, 0, "page").nodeid;
    let getattr = |s: &Session<'_>| {
        let req = requests::getattr(s.uniques.next(), page, None).finish();
        let reply = s.fuse(1, &req);
        let out: daxfsd_protocol::abi::AttrOut =
            dax_common::check(s.backend(), reply.ok().and_then(|r| r.body_as()));
        out.attr.flags & ATTR_DAX != 0
    };
    std::fs::write(dir.join("page"), vec![1u8; 5000]).unwrap();
    assert!(!getattr(&s));
    std::fs::write(dir.join("page"), vec![1u8; 3 * 4096]).unwrap();
    assert!(getattr(&s));
}

/// QEMU 11.1 would refuse a map of a file's partial last page; the daemon refuses the
/// SETUPMAPPING first (EIO, counted), sending the frontend nothing. Ranges below the
/// partial page map.
#[test]
fn a_setup_of_a_partial_last_page_is_refused_without_asking_the_frontend() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    std::fs::write(
        daemon.backend.shared_dir().join("odd"),
        dax_common::pattern(0, 2 * PAGE + 8),
    )
    .unwrap();
    let s = session(&daemon, UPSTREAM);
    let odd = s.lookup("odd");
    assert_eq!(s.setup(odd, FH_BY_NODEID, 0, SLOT, 0, READ), libc::EIO);
    assert_eq!(
        s.setup(odd, FH_BY_NODEID, 0, SLOT, 0, READ_WRITE),
        libc::EIO
    );
    assert!(s.channel().log().is_empty(), "{:?}", s.channel().log());
    // The two whole pages map.
    assert_eq!(s.setup(odd, FH_BY_NODEID, 0, 2 * PAGE, 0, READ_WRITE), 0);
    assert_eq!(
        s.window().read(0, (2 * PAGE) as usize).unwrap(),
        dax_common::pattern(0, 2 * PAGE)
    );
    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_refusals_total"), 2);
    assert_eq!(m.get("daxfsd_dax_vmm_map_failures_total"), 0);
    assert_eq!(s.channel().stats().failed, 0);
}

/// A file that ends partway through a page after a repair (the host truncates it) keeps
/// its whole pages mapped on QEMU 11.1, and the partial page becomes a placeholder rather
/// than a map the frontend would refuse.
#[test]
fn a_repair_on_a_frontend_without_partial_pages_maps_whole_pages_only() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    let path = daemon.patterned_file("data", 4 * MIB);
    let s = session(&daemon, UPSTREAM);
    let data = s.lookup("data");
    assert_eq!(s.setup(data, FH_BY_NODEID, 0, SLOT, 0, READ_WRITE), 0);
    // A SETATTR truncation through the daemon: repaired before the reply.
    let fh = s.open(data, libc::O_RDWR);
    let arg = daxfsd_protocol::abi::SetattrIn {
        valid: daxfsd_protocol::abi::FATTR_SIZE | daxfsd_protocol::abi::FATTR_FH,
        fh,
        size: 3 * PAGE + 100,
        ..Default::default()
    };
    let req = requests::setattr(s.uniques.next(), data, &arg).finish();
    assert_eq!(s.fuse(1, &req).errno(), 0);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * PAGE + 100);
    assert_eq!(s.channel().stats().failed, 0, "{:?}", s.channel().log());
    let file_part = s.window().mapping_at(0).unwrap();
    assert_eq!((file_part.offset, file_part.len), (0, 3 * PAGE));
    let placeholder = s.window().mapping_at(3 * PAGE).unwrap();
    assert_ne!(placeholder.ino, file_part.ino);
    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_repair_failures_total"), 0);
}

#[test]
fn dax_always_is_refused_at_init_on_a_frontend_without_partial_pages() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &["--persist"]);
    let s = connect(&daemon, UPSTREAM, DAX_ALWAYS);
    // Linux fails the connection for a map_alignment above its 2 MiB ranges (log2 21).
    assert_ne!(u64::from(s.init.flags) & MAP_ALIGNMENT, 0);
    assert!(s.init.map_alignment > 21, "{}", s.init.map_alignment);
    // No session started: the next request is EIO, as before any INIT.
    let req = requests::lookup(s.uniques.next(), ROOT_ID, b"x").finish();
    assert_eq!(s.fuse(1, &req).errno(), libc::EIO);
    let log = daemon.backend.stderr();
    assert!(
        log.contains(
            "this frontend (QEMU 11.1?) cannot map partial last pages: mount with -o dax=inode, \
             or use a frontend that can"
        ),
        "{log}"
    );
    assert_eq!(
        daemon.fresh_metrics().get("daxfsd_dax_init_refusals_total"),
        1
    );
    s.dev.disconnect();

    // dax=inode on the same frontend is served; dax=always on the patched one too.
    let s = connect(&daemon, UPSTREAM, DAX_INODE);
    assert_eq!(s.init.map_alignment, 12);
    s.dev.disconnect();
    let s = connect(&daemon, PATCHED, DAX_ALWAYS);
    assert_eq!(s.init.map_alignment, 12);
    assert_eq!(
        daemon.fresh_metrics().get("daxfsd_dax_init_refusals_total"),
        1
    );
}

/// The guest reboots: QEMU 11.1 and the patched QEMU drop every mapping at the device
/// reset, and the daemon learns of the new session from the next INIT. Its unmaps of the
/// old records stop at the first refusal and the records are forgotten, quietly (debug
/// level), with no unmap failure counted.
#[test]
fn mappings_a_frontend_dropped_at_a_reset_are_forgotten_quietly() {
    for frontend in [UPSTREAM, PATCHED] {
        let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
        daemon.patterned_file("data", 8 * MIB);
        let s = session(&daemon, frontend);
        let data = s.lookup("data");
        for slot in 0..3 {
            assert_eq!(
                s.setup(
                    data,
                    FH_BY_NODEID,
                    slot * SLOT,
                    SLOT,
                    slot * SLOT,
                    READ_WRITE
                ),
                0
            );
        }
        dax_common::check(s.backend(), s.dev.device_reset_window());
        s.channel().clear_history();
        let init = dax_common::check(s.backend(), s.dev.fuse_init(1, s.uniques.next(), DAX_INODE));
        assert_eq!(init.map_alignment, 12);
        let unmaps: Vec<i32> = s
            .channel()
            .log()
            .iter()
            // The old session's records are whole slots; the probe's are single pages.
            .filter(|r| matches!(r.request, BackendRequest::ShmemUnmap { len, .. } if len == SLOT))
            .map(|r| r.errno)
            .collect();
        let m = daemon.fresh_metrics();
        // One refused unmap tells the daemon; nothing more is sent for the others.
        assert_eq!(unmaps.len(), 1, "{frontend:?}: {unmaps:?}");
        assert_ne!(unmaps[0], 0, "{frontend:?}: {unmaps:?}");
        assert_eq!(
            m.get("daxfsd_dax_forgotten_mappings_total"),
            3,
            "{frontend:?}"
        );
        assert_eq!(
            m.get("daxfsd_dax_vmm_unmap_failures_total"),
            0,
            "{frontend:?}"
        );
        assert_eq!(m.get("daxfsd_dax_live_mappings"), 0);
        let log = daemon.backend.stderr();
        assert!(
            !log.contains("WARN") && !log.contains("ERROR"),
            "{frontend:?}: {log}"
        );
        // The new session maps from an empty window.
        let data = s.lookup("data");
        assert_eq!(s.setup(data, FH_BY_NODEID, 0, SLOT, 0, READ_WRITE), 0);
        assert_eq!(s.window().mappings().len(), 1);
    }
}

/// A device reset that catches a REMOVEMAPPING in flight: QEMU stops the queues and
/// drops the window's mappings while the daemon's unmap waits to be read, then refuses
/// it (the mapping is gone). The guest that reset the device never sees the reply; the
/// daemon counts no refusal, logs no warning, and the next session maps the slot again.
/// (CI's Debian guest powered off during its DAX reclaim this way: one refusal.)
#[test]
fn an_unmap_refused_because_a_reset_dropped_the_mapping_is_no_refusal() {
    for frontend in [UPSTREAM, PATCHED] {
        let daemon = DaxDaemon::start(8 * MIB, 1, &["--persist"]);
        daemon.patterned_file("data", 8 * MIB);
        let s = session(&daemon, frontend);
        let data = s.lookup("data");
        assert_eq!(
            s.setup(data, FH_BY_NODEID, 0, SLOT, 0, READ_WRITE),
            0,
            "{frontend:?}"
        );
        s.channel().clear_history();
        s.channel().hold_requests();
        let remove = s.remove_request(1, &[(0, SLOT)]);
        // Its reply never comes: the queue is stopped while it is served.
        let _dropped = dax_common::check(
            s.backend(),
            s.dev.fuse_submit(1, &remove, DEFAULT_REPLY_CAPACITY),
        );
        assert!(
            s.channel().wait_for_held_request(s.dev.timeout()),
            "{frontend:?}: the daemon sent no unmap"
        );
        dax_common::check(s.backend(), s.dev.stop_queue(1));
        dax_common::check(s.backend(), s.dev.device_reset_window());
        s.channel().release_requests();
        let deadline = Instant::now() + s.dev.timeout();
        let unmap = loop {
            let log = s.channel().log();
            if let Some(r) = log
                .iter()
                .find(|r| matches!(r.request, BackendRequest::ShmemUnmap { .. }))
            {
                break r.errno;
            }
            assert!(Instant::now() < deadline, "{frontend:?}: {log:?}");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_ne!(
            unmap, 0,
            "{frontend:?}: the frontend had dropped the mapping"
        );
        // Two metrics rewrites after the refusal was answered.
        let m = daemon.fresh_metrics();
        assert_eq!(m.get("daxfsd_dax_refusals_total"), 0, "{frontend:?}");
        let log = daemon.backend.stderr();
        assert!(
            !log.contains("WARN") && !log.contains("ERROR"),
            "{frontend:?}: {log}"
        );
        drop(s);
        // The next session (the guest's driver starting again) maps the slot.
        let s = session(&daemon, frontend);
        let data = s.lookup("data");
        assert_eq!(
            s.setup(data, FH_BY_NODEID, 0, SLOT, 0, READ_WRITE),
            0,
            "{frontend:?}"
        );
        assert_eq!(s.window().mappings().len(), 1, "{frontend:?}");
        assert_eq!(
            daemon.fresh_metrics().get("daxfsd_dax_refusals_total"),
            0,
            "{frontend:?}"
        );
    }
}
