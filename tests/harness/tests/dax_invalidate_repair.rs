//! Issue 5, through the daemon: a mapped file that the guest shrinks (SETATTR size,
//! OPEN or CREATE with O_TRUNC, FALLOCATE COLLAPSE_RANGE) never leaves the VMM a
//! mapping that raises SIGBUS. The harness maps the file, shrinks it, then reads and
//! writes every page of the old range straight through the window memory, as a vCPU
//! would: pages before the new end still show the file (the head of a mapping cut by
//! the truncation stays mapped), pages past it read as zeros, and the process survives.
//! With the repair switched off the same sequence kills it with SIGBUS (run in a
//! child process). A hole punch keeps the size and needs no repair.

mod dax_common;
mod dax_invalidate_common;

use dax_common::{FH_BY_NODEID, MIB, PAGE, READ_WRITE, SLOT};
use dax_invalidate_common::*;

const FILE: u64 = 4 * MIB;

/// Maps the two 2 MiB halves of a 4 MiB file writable at window offsets 0 and 2 MiB.
fn map_both_halves(s: &dax_common::Session<'_>, nodeid: u64) {
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, 0, SLOT, 0, READ_WRITE), 0);
    assert_eq!(
        s.setup(nodeid, FH_BY_NODEID, SLOT, SLOT, SLOT, READ_WRITE),
        0
    );
}

#[test]
fn setattr_truncation_mid_range_keeps_the_head_and_zeroes_the_rest() {
    let (daemon, path) = start_with_data(true, FILE);
    let s = daemon.connect();
    let nodeid = s.lookup("data");
    map_both_halves(&s, nodeid);

    // Cut 5 pages and 100 bytes into the second half: 6 of its pages stay file pages.
    let size = SLOT + 5 * PAGE + 100;
    assert_eq!(setattr_size(&s, nodeid, size), 0);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    assert!(is_file(&s, 0, &path) && is_file(&s, SLOT + 5 * PAGE, &path));
    assert!(is_placeholder(&s, SLOT + 6 * PAGE));
    // The first half is untouched; the second became its head and a placeholder.
    assert_eq!(s.window().mapping_at(0).unwrap().len, SLOT);
    assert_eq!(s.window().mapping_at(SLOT).unwrap().len, 6 * PAGE);

    touch_every_page(&s, &path, 0, 2 * SLOT, 0);

    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_invalidated_mappings_total"), 1);
    assert_eq!(m.get("daxfsd_dax_invalidated_bytes_total"), SLOT - 6 * PAGE);
    assert_eq!(m.get("daxfsd_dax_live_mappings"), 2);
    assert_eq!(m.get("daxfsd_dax_zapped_mappings"), 1);
    assert_eq!(m.get("daxfsd_dax_repair_failures_total"), 0);

    // The guest removes its two original extents: every VMM mapping there goes.
    assert_eq!(s.remove(&[(0, SLOT), (SLOT, SLOT)]), 0);
    assert!(
        s.window().mappings().is_empty(),
        "{:?}",
        s.window().mappings()
    );
    assert_eq!(s.channel().stats().failed, 0, "{:?}", s.channel().log());
}

#[test]
fn open_with_o_trunc_zeroes_the_mapped_range() {
    let (daemon, path) = start_with_data(true, FILE);
    let s = daemon.connect();
    let nodeid = s.lookup("data");
    map_both_halves(&s, nodeid);
    open(&s, nodeid, libc::O_RDWR | libc::O_TRUNC);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    assert!(is_placeholder(&s, 0) && is_placeholder(&s, SLOT));
    touch_every_page(&s, &path, 0, 2 * SLOT, 0);
    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_invalidated_mappings_total"), 2);
    assert_eq!(m.get("daxfsd_dax_invalidated_bytes_total"), 2 * SLOT);
}

#[test]
fn create_with_o_trunc_of_a_mapped_file_zeroes_the_mapped_range() {
    let (daemon, path) = start_with_data(true, FILE);
    let s = daemon.connect();
    let nodeid = s.lookup("data");
    map_both_halves(&s, nodeid);
    assert_eq!(create(&s, "data", libc::O_RDWR | libc::O_TRUNC), nodeid);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    touch_every_page(&s, &path, 0, 2 * SLOT, 0);
}

#[test]
fn collapse_range_shrinks_and_the_window_shows_the_moved_data() {
    let (daemon, path) = start_with_data(true, FILE);
    let s = daemon.connect();
    let nodeid = s.lookup("data");
    map_both_halves(&s, nodeid);
    let fh = open(&s, nodeid, libc::O_RDWR);
    let errno = fallocate(&s, nodeid, fh, MIB, MIB, libc::FALLOC_FL_COLLAPSE_RANGE);
    if errno == libc::EOPNOTSUPP {
        daxfsd_harness::skip("the shared directory's filesystem has no COLLAPSE_RANGE");
        return;
    }
    assert_eq!(errno, 0);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * MIB);
    // The window maps the file, so offsets below the new end show what the file
    // holds there now (data moved down by 1 MiB); past the end it is a placeholder.
    assert!(is_file(&s, SLOT + MIB - PAGE, &path));
    assert!(is_placeholder(&s, SLOT + MIB));
    touch_every_page(&s, &path, 0, 2 * SLOT, 0);
}

#[test]
fn a_rewrite_after_o_trunc_shows_through_the_old_mapping() {
    // The Linux guest's truncate-and-rewrite: its mapping of the range stays, the
    // extending writes go through FUSE WRITE, and its later DAX reads use the old
    // mapping — which must show the new bytes, not the placeholder.
    let (daemon, path) = start_with_data(true, FILE);
    let s = daemon.connect();
    let nodeid = s.lookup("data");
    map_both_halves(&s, nodeid);
    let fh = open(&s, nodeid, libc::O_RDWR | libc::O_TRUNC);
    let fresh: Vec<u8> = (0..3 * PAGE + 10).map(|i| (i % 7) as u8 + 1).collect();
    write(&s, nodeid, fh, 0, &fresh);
    assert!(is_file(&s, 0, &path) && is_file(&s, 3 * PAGE, &path));
    assert!(is_placeholder(&s, 4 * PAGE));
    let shown = s.window().read(0, fresh.len()).unwrap();
    assert!(
        shown == fresh,
        "the window does not show the rewritten bytes"
    );
    touch_every_page(&s, &path, 0, 2 * SLOT, 0);
    let m = daemon.fresh_metrics();
    // Every page is restored once. Usually in one piece, by the WRITE's
    // repair; but the host watcher, woken by the same write, may see the
    // file part-grown (the host kernel raises the size page by page) and
    // restore the first pages itself: then two or more pieces.
    let pieces = m.get("daxfsd_dax_restored_mappings_total");
    assert!((1..=4).contains(&pieces), "{pieces} restored pieces");
    assert_eq!(m.get("daxfsd_dax_restored_bytes_total"), 4 * PAGE);
}

#[test]
fn a_hole_punch_keeps_the_size_and_the_mapping_reads_zeros() {
    let (daemon, path) = start_with_data(true, FILE);
    let s = daemon.connect();
    let nodeid = s.lookup("data");
    map_both_halves(&s, nodeid);
    let sent = s.channel().log().len();
    let fh = open(&s, nodeid, libc::O_RDWR);
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    assert_eq!(fallocate(&s, nodeid, fh, MIB, 64 * 1024, mode), 0);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), FILE);
    // Nothing was sent to the VMM: the mappings stay, and the hole reads as zeros.
    assert!(
        s.requests_since(sent).is_empty(),
        "{:?}",
        s.requests_since(sent)
    );
    assert_eq!(s.window().mappings().len(), 2);
    let hole = s.window().read(MIB, 64 * 1024).unwrap();
    assert!(hole.iter().all(|&b| b == 0));
    touch_every_page(&s, &path, 0, 2 * SLOT, 0);
    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_invalidated_mappings_total"), 0);
}

/// The SETATTR truncation with the repair on (survives) and off (SIGBUS): the test
/// can fail.
#[test]
fn without_the_repair_the_same_truncation_kills_the_harness_with_sigbus() {
    const TEST: &str = "without_the_repair_the_same_truncation_kills_the_harness_with_sigbus";
    let Some(repair) = child_role_or_run_children(TEST) else {
        return;
    };
    let (daemon, path) = start_with_data(repair, FILE);
    let s = daemon.connect();
    let nodeid = s.lookup("data");
    map_both_halves(&s, nodeid);
    assert_eq!(setattr_size(&s, nodeid, SLOT + 5 * PAGE + 100), 0);
    touch_every_page(&s, &path, 0, 2 * SLOT, 0);
    println!("touched every page and survived");
}
