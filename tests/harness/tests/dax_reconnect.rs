//! Sessions and the DAX window: a reconnecting frontend (daxfsd --persist) starts with an
//! empty index, and FUSE_DESTROY empties the window through the frontend that is still
//! there. The metrics count setups and removals.

mod dax_common;

use dax_common::{pattern, summary, DaxDaemon, FH_BY_NODEID, MIB, READ, READ_WRITE, SLOT};
use daxfsd_harness::fuse::DEFAULT_REPLY_CAPACITY;
use daxfsd_protocol::abi::ROOT_ID;
use daxfsd_protocol::encode::RequestEncoder;
use daxfsd_protocol::Opcode;

#[test]
fn a_reconnected_frontend_starts_with_an_empty_index() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &["--persist"]);
    daemon.patterned_file("data", 8 * MIB);

    let first = daemon.connect();
    let nodeid = first.lookup("data");
    assert_eq!(
        first.setup(nodeid, FH_BY_NODEID, 0, SLOT, SLOT, READ_WRITE),
        0
    );
    assert_eq!(
        first.setup(nodeid, FH_BY_NODEID, SLOT, SLOT, 2 * SLOT, READ),
        0
    );
    assert_eq!(first.window().mappings().len(), 2);
    // The VMM goes away without anyone unmapping (a QEMU restart).
    first.dev.disconnect();

    let second = daemon.connect();
    assert!(second.window().mappings().is_empty());
    let nodeid = second.lookup("data");
    // The same window offset, another file range: it must map, not collide with or
    // "upgrade" the old session's record.
    assert_eq!(
        second.setup(nodeid, FH_BY_NODEID, 3 * SLOT, SLOT, SLOT, READ),
        0
    );
    let maps = second.window().mappings();
    assert_eq!(maps.len(), 1, "{maps:?}");
    assert_eq!((maps[0].offset, maps[0].fd_offset), (SLOT, 3 * SLOT));
    assert!(second.window().read(SLOT, SLOT as usize).unwrap() == pattern(3 * SLOT, SLOT));

    // What the daemon sent the new frontend: at most unmaps of the old session's records
    // (which this frontend never had, so it refuses them), then the one map.
    let log = second.channel().log();
    let (last, stale) = log.split_last().expect("a MAP was sent");
    assert_eq!(summary(last), ("MAP", SLOT, SLOT, 3 * SLOT, false));
    assert_eq!(last.errno, 0);
    for record in stale {
        let (kind, offset, len, _, _) = summary(record);
        assert!(
            kind == "UNMAP" && [(SLOT, SLOT), (2 * SLOT, SLOT)].contains(&(offset, len)),
            "unexpected request before the map: {record:?}"
        );
    }

    // Setup and remove counts: one more mapping made and removed.
    assert_eq!(
        second.setup(nodeid, FH_BY_NODEID, 0, SLOT, 3 * SLOT, READ_WRITE),
        0
    );
    assert_eq!(second.remove(&[(3 * SLOT, SLOT)]), 0);
    assert_eq!(second.window().mappings().len(), 1);

    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_live_mappings"), 1, "{m:?}");
    assert_eq!(m.get("daxfsd_dax_window_mapped_bytes"), SLOT);
    assert_eq!(m.get("daxfsd_dax_setupmapping_total"), 4);
    assert!(m.get("daxfsd_dax_removed_mappings_total") >= 1, "{m:?}");
    assert!(m.get("daxfsd_dax_vmm_unmaps_total") >= 1, "{m:?}");
    assert!(daemon.is_running());
}

#[test]
fn destroy_unmaps_the_whole_window_through_the_frontend() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    daemon.patterned_file("data", 8 * MIB);
    let s = daemon.connect();
    let nodeid = s.lookup("data");
    for slot in 0..3 {
        assert_eq!(
            s.setup(nodeid, FH_BY_NODEID, slot * SLOT, SLOT, slot * SLOT, READ),
            0
        );
    }
    let destroy = RequestEncoder::new(Opcode::Destroy, s.uniques.next(), ROOT_ID).finish();
    let reply = dax_common::check(s.backend(), s.dev.fuse(1, &destroy, DEFAULT_REPLY_CAPACITY));
    assert_eq!(reply.errno(), 0);
    assert!(
        s.window().mappings().is_empty(),
        "DESTROY left mappings in the VMM: {:?}",
        s.window().mappings()
    );
    assert_eq!(s.channel().stats().shmem_unmap, 3);
    assert_eq!(s.channel().stats().failed, 0, "{:?}", s.channel().log());

    // A new session on the same connection maps from an empty index.
    let init = dax_common::check(
        s.backend(),
        s.dev
            .fuse_init(1, s.uniques.next(), daxfsd_protocol::abi::MAP_ALIGNMENT),
    );
    assert_eq!(init.map_alignment, 12);
    let nodeid = s.lookup("data");
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, 0, SLOT, SLOT, READ), 0);
    assert_eq!(s.window().mappings().len(), 1);
    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_live_mappings"), 1);
}

/// A guest that resets without unmounting (a crash, a hard reset) sends INIT again on
/// the same connection, with no DESTROY; the VMM keeps the window's mappings. The index
/// must still describe them: new maps replace them, an identical one is already there.
#[test]
fn init_again_without_destroy_keeps_the_index_consistent_with_the_vmm() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    daemon.patterned_file("a", 4 * MIB);
    std::fs::write(
        daemon.backend.shared_dir().join("b"),
        pattern(3 * 4096 + 1, 4 * MIB),
    )
    .unwrap();
    let s = daemon.connect();
    let a = s.lookup("a");
    assert_eq!(s.setup(a, FH_BY_NODEID, 0, SLOT, 0, READ_WRITE), 0);
    assert_eq!(s.setup(a, FH_BY_NODEID, SLOT, SLOT, SLOT, READ), 0);

    let init = dax_common::check(
        s.backend(),
        s.dev
            .fuse_init(1, s.uniques.next(), daxfsd_protocol::abi::MAP_ALIGNMENT),
    );
    assert_eq!(init.map_alignment, 12);
    // A second INIT starts a new session: the old guest's mappings are
    // unmapped at once (INIT arrives on a queue worker, which may use the
    // backend channel), so the window is empty before the new guest maps.
    assert!(
        s.window().mappings().is_empty(),
        "old session's mappings survived a new INIT: {:?}",
        s.window().mappings()
    );
    // The new guest knows nothing of slots 0 and 1 and maps another file there.
    let b = s.lookup("b");
    assert_eq!(s.setup(b, FH_BY_NODEID, 0, SLOT, 0, READ), 0);
    assert!(s.window().read(0, SLOT as usize).unwrap() == pattern(3 * 4096 + 1, SLOT));
    // ... and the same range of the same file it mapped before.
    let a = s.lookup("a");
    assert_eq!(s.setup(a, FH_BY_NODEID, SLOT, SLOT, SLOT, READ), 0);
    assert!(s.window().read(SLOT, SLOT as usize).unwrap() == pattern(SLOT, SLOT));
    assert_eq!(s.window().mappings().len(), 2);
    assert_eq!(s.channel().stats().failed, 0, "{:?}", s.channel().log());
    assert_eq!(s.remove(&[(0, SLOT), (SLOT, SLOT)]), 0);
    assert!(s.window().mappings().is_empty());
    assert_eq!(s.channel().stats().failed, 0, "{:?}", s.channel().log());
}

/// The frontend goes away while the daemon waits for its answer to a SHMEM_MAP (the
/// answer still comes, late). The next session starts empty and the daemon serves on.
#[test]
fn a_disconnect_during_a_map_round_trip_leaves_the_next_session_empty() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &["--persist"]);
    daemon.patterned_file("data", 8 * MIB);
    let first = daemon.connect();
    let nodeid = first.lookup("data");
    first
        .channel()
        .set_reply_delay(std::time::Duration::from_millis(300));
    let req = first.setup_request(
        nodeid,
        daxfsd_protocol::abi::SetupMappingIn {
            fh: FH_BY_NODEID,
            foffset: 0,
            len: SLOT,
            flags: READ,
            moffset: 2 * SLOT,
        },
    );
    dax_common::check(
        first.backend(),
        first.dev.fuse_submit(1, &req, DEFAULT_REPLY_CAPACITY),
    );
    // Wait until the SHMEM_MAP reached the frontend, then leave mid-round-trip.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while first.channel().log().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no SHMEM_MAP arrived");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    first.dev.disconnect();

    let second = daemon.connect();
    let nodeid = second.lookup("data");
    assert_eq!(
        second.setup(nodeid, FH_BY_NODEID, SLOT, SLOT, 2 * SLOT, READ),
        0
    );
    assert_eq!(second.window().mappings().len(), 1);
    assert!(second.window().read(2 * SLOT, SLOT as usize).unwrap() == pattern(SLOT, SLOT));
    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_live_mappings"), 1, "{m:?}");
    assert!(daemon.is_running());
}
