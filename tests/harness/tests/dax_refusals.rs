//! Bad DAX requests and refused maps against daxfsd: EINVAL (or the VMM's EIO) with the
//! index exactly as it was — nothing sent to the frontend for a bad request, nothing left
//! behind by a failed map — and the daemon keeps serving.

mod dax_common;

use dax_common::{summary, DaxDaemon, Session, FH_BY_NODEID, MIB, PAGE, READ, READ_WRITE, SLOT};
use daxfsd_harness::MappingInfo;

const WINDOW: u64 = 8 * MIB;

/// What must not change across a refused request.
struct Before {
    log_len: usize,
    mappings: Vec<MappingInfo>,
}

fn before(s: &Session<'_>) -> Before {
    Before {
        log_len: s.channel().log().len(),
        mappings: s.window().mappings(),
    }
}

fn assert_unchanged(s: &Session<'_>, b: &Before, what: &str) {
    let sent = s.requests_since(b.log_len);
    assert!(
        sent.is_empty(),
        "{what}: backend requests were sent: {sent:?}"
    );
    assert_eq!(
        s.window().mappings(),
        b.mappings,
        "{what}: the window changed"
    );
    assert!(
        s.daemon.is_running(),
        "{what}: {}",
        s.backend().diagnostics()
    );
}

#[test]
fn bad_setupmapping_gets_einval_and_changes_nothing() {
    let daemon = DaxDaemon::start(WINDOW, 1, &[]);
    daemon.patterned_file("data", 4 * MIB);
    let s = daemon.connect();
    let nodeid = s.lookup("data");
    // Something mapped, so "unchanged" has content to compare.
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, 0, SLOT, SLOT, READ), 0);

    let cases: &[(&str, u64, u64, u64)] = &[
        // (what, foffset, len, moffset)
        ("zero length", 0, 0, 0),
        ("zero length on a mapped slot", 0, 0, SLOT),
        ("at the window's end", 0, SLOT, WINDOW),
        ("straddling the window's end", 0, 2 * PAGE, WINDOW - PAGE),
        ("far past the window", 0, PAGE, 1 << 40),
        ("window end overflows", 0, 2 * PAGE, u64::MAX - PAGE + 1),
        ("longer than the window", 0, WINDOW + SLOT, 0),
        ("huge length", 0, !(PAGE - 1), 0),
        ("misaligned moffset", 0, PAGE, 2 * SLOT + 512),
        ("misaligned length", 0, PAGE + 1, 2 * SLOT),
        ("misaligned foffset", 100, PAGE, 2 * SLOT),
        (
            "file end overflows",
            u64::MAX - PAGE + 1,
            2 * PAGE,
            2 * SLOT,
        ),
        // The same on the mapped slot: nothing may be unmapped to make room first.
        ("misaligned foffset on a mapped slot", 100, SLOT, SLOT),
        (
            "file end overflows on a mapped slot",
            u64::MAX - PAGE + 1,
            SLOT,
            SLOT,
        ),
        // Pages inside the 2 MiB mapping: a standard frontend cannot map over part of a
        // mapping, and the guest never asks for it.
        ("pages inside a mapping", 0, PAGE, SLOT + PAGE),
        (
            "half a mapping and half the next slot",
            0,
            SLOT,
            SLOT + SLOT / 2,
        ),
        // Beyond off_t: mmap in the VMM would refuse it, after the unmap.
        (
            "file offset past off_t on a mapped slot",
            1 << 63,
            SLOT,
            SLOT,
        ),
    ];
    let mut refused = 0;
    for &(what, foffset, len, moffset) in cases {
        for flags in [READ, READ_WRITE] {
            let b = before(&s);
            let errno = s.setup(nodeid, FH_BY_NODEID, foffset, len, moffset, flags);
            assert_eq!(errno, libc::EINVAL, "{what} (flags {flags})");
            assert_unchanged(&s, &b, what);
            refused += 1;
        }
    }
    // The same refusals with a real handle.
    let fh = s.open(nodeid, libc::O_RDWR);
    let b = before(&s);
    assert_eq!(s.setup(nodeid, fh, 0, SLOT, WINDOW, READ), libc::EINVAL);
    assert_eq!(s.setup(nodeid, fh, 0, 0, 0, READ), libc::EINVAL);
    assert_unchanged(&s, &b, "with a handle");
    refused += 2;

    // Still serving: a good request on the same queue works, and the index agrees.
    assert_eq!(s.setup(nodeid, fh, SLOT, SLOT, 3 * SLOT, READ_WRITE), 0);
    assert_eq!(s.window().mappings().len(), 2);
    assert_eq!(s.channel().stats().failed, 0, "{:?}", s.channel().log());
    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_refusals_total"), refused);
    assert_eq!(m.get("daxfsd_dax_live_mappings"), 2);
    assert_eq!(m.get("daxfsd_dax_window_mapped_bytes"), 2 * SLOT);
}

#[test]
fn bad_removemapping_gets_einval_and_changes_nothing() {
    let daemon = DaxDaemon::start(WINDOW, 1, &[]);
    daemon.patterned_file("data", 4 * MIB);
    let s = daemon.connect();
    let nodeid = s.lookup("data");
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, 0, SLOT, 0, READ), 0);
    assert_eq!(
        s.setup(nodeid, FH_BY_NODEID, SLOT, SLOT, SLOT, READ_WRITE),
        0
    );

    let cases: &[(&str, &[(u64, u64)])] = &[
        ("zero length", &[(0, 0)]),
        ("at the window's end", &[(WINDOW, SLOT)]),
        ("straddling the window's end", &[(WINDOW - PAGE, 2 * PAGE)]),
        ("window end overflows", &[(u64::MAX - PAGE + 1, 2 * PAGE)]),
        ("misaligned moffset", &[(SLOT + 1, PAGE)]),
        ("misaligned length", &[(SLOT, PAGE + 1)]),
        // Part of a mapping: a standard frontend can only unmap whole mappings.
        ("part of a mapping", &[(SLOT, PAGE)]),
        ("the tail of a mapping", &[(SLOT + PAGE, SLOT - PAGE)]),
        // A valid, mapped range before a bad one: the batch is refused as a whole.
        ("a good range then a bad one", &[(0, SLOT), (WINDOW, SLOT)]),
        (
            "a good range then a zero-length one",
            &[(SLOT, SLOT), (0, 0)],
        ),
    ];
    let mut refused = 0;
    for &(what, ranges) in cases {
        let b = before(&s);
        assert_eq!(s.remove(ranges), libc::EINVAL, "{what}");
        assert_unchanged(&s, &b, what);
        refused += 1;
    }

    // count larger than the payload, zero entries behind a non-zero count, and more
    // than the 256 entries a request may carry: malformed, refused before the index.
    let b = before(&s);
    for (what, count, ranges) in [
        ("count 3, one entry", 3u32, vec![(0, SLOT)]),
        ("count 1, no entry", 1, vec![]),
        ("count u32::MAX", u32::MAX, vec![(0, SLOT)]),
        ("257 entries", 257, vec![(2 * SLOT, PAGE); 257]),
    ] {
        let req = s.remove_request(count, &ranges);
        assert_eq!(s.fuse(1, &req).errno(), libc::EINVAL, "{what}");
    }
    // The payload cut inside an entry.
    let mut req = s.remove_request(1, &[(0, SLOT)]);
    req.truncate(req.len() - 4);
    let len = u32::try_from(req.len()).unwrap();
    req[0..4].copy_from_slice(&len.to_le_bytes());
    assert_eq!(s.fuse(1, &req).errno(), libc::EINVAL, "truncated entry");
    assert_unchanged(&s, &b, "malformed REMOVEMAPPING");

    // Still serving, and the mappings are still whole: remove both exactly.
    assert_eq!(s.remove(&[(0, SLOT), (SLOT, SLOT)]), 0);
    assert!(s.window().mappings().is_empty());
    assert_eq!(s.channel().stats().failed, 0, "{:?}", s.channel().log());
    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_refusals_total"), refused);
    assert_eq!(m.get("daxfsd_dax_live_mappings"), 0);
    assert_eq!(m.get("daxfsd_malformed_requests_total"), 5);
}

#[test]
fn a_refused_map_leaves_the_index_as_it_was() {
    let daemon = DaxDaemon::start(WINDOW, 1, &[]);
    daemon.patterned_file("data", 4 * MIB);
    let s = daemon.connect();
    let nodeid = s.lookup("data");

    // A fresh map the frontend refuses.
    s.channel().fail_next_maps(1);
    assert_eq!(
        s.setup(nodeid, FH_BY_NODEID, 0, SLOT, SLOT, READ),
        libc::EIO
    );
    assert!(s.window().mappings().is_empty());
    // The index did not keep a record of it: the same range maps again with a MAP only
    // (a phantom record would first be unmapped, which the frontend refuses).
    let b = s.channel().log().len();
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, 0, SLOT, SLOT, READ), 0);
    let sent: Vec<_> = s.requests_since(b).iter().map(summary).collect();
    assert_eq!(sent, vec![("MAP", SLOT, SLOT, 0, false)]);
    assert!(s.window().read(SLOT, 16).is_ok());

    // The map half of a read→write upgrade refused: the read mapping is already gone
    // in the frontend, so the index must forget it too.
    s.channel().fail_next_maps(1);
    assert_eq!(
        s.setup(nodeid, FH_BY_NODEID, 0, SLOT, SLOT, READ_WRITE),
        libc::EIO
    );
    assert!(
        s.window().mappings().is_empty(),
        "{:?}",
        s.window().mappings()
    );
    let b = s.channel().log().len();
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, 0, SLOT, SLOT, READ_WRITE), 0);
    let sent: Vec<_> = s.requests_since(b).iter().map(summary).collect();
    assert_eq!(sent, vec![("MAP", SLOT, SLOT, 0, true)]);

    // A replacing map (another file range on a mapped slot) whose map is refused.
    s.channel().fail_next_maps(1);
    assert_eq!(
        s.setup(nodeid, FH_BY_NODEID, SLOT, SLOT, SLOT, READ),
        libc::EIO
    );
    assert!(s.window().mappings().is_empty());
    let b = s.channel().log().len();
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, SLOT, SLOT, SLOT, READ), 0);
    let sent: Vec<_> = s.requests_since(b).iter().map(summary).collect();
    assert_eq!(sent, vec![("MAP", SLOT, SLOT, SLOT, false)]);

    // Only the injected failures failed.
    assert_eq!(s.channel().stats().failed, 3, "{:?}", s.channel().log());
    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_live_mappings"), 1);
    assert_eq!(m.get("daxfsd_dax_window_mapped_bytes"), SLOT);
    assert_eq!(m.get("daxfsd_dax_vmm_map_failures_total"), 3);
    assert_eq!(m.get("daxfsd_dax_refusals_total"), 3);
}

#[test]
fn mappings_of_what_cannot_be_mapped_are_refused_before_the_vmm() {
    let daemon = DaxDaemon::start(WINDOW, 1, &["--readonly"]);
    daemon.patterned_file("data", SLOT);
    std::fs::create_dir(daemon.backend.shared_dir().join("dir")).unwrap();
    let s = daemon.connect();
    let nodeid = s.lookup("data");
    let dir = s.lookup("dir");
    let b = before(&s);
    // Writable mappings of a read-only share.
    assert_eq!(
        s.setup(nodeid, FH_BY_NODEID, 0, SLOT, 0, READ_WRITE),
        libc::EROFS
    );
    // A directory, the root, a nodeid the guest never looked up.
    assert_eq!(s.setup(dir, FH_BY_NODEID, 0, SLOT, 0, READ), libc::EISDIR);
    assert_eq!(s.setup(1, FH_BY_NODEID, 0, SLOT, 0, READ), libc::EISDIR);
    let errno = s.setup(nodeid + 1000, FH_BY_NODEID, 0, SLOT, 0, READ);
    assert!(
        errno != 0 && errno != libc::EIO,
        "unknown nodeid: errno {errno}"
    );
    assert_unchanged(&s, &b, "unmappable files");
    // Read-only mappings of the read-only share work.
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, 0, SLOT, 0, READ), 0);
    assert!(s.window().read(0, 16).is_ok());
}
