//! SETUPMAPPING / REMOVEMAPPING against daxfsd with the harness as a standard SHMEM
//! frontend: the bytes a mapping shows, writes through it, the read→write upgrade, and the
//! window going back to PROT_NONE.

mod dax_common;

use dax_common::{pattern, summary, DaxDaemon, FH_BY_NODEID, MIB, PAGE, READ, READ_WRITE, SLOT};
use daxfsd_harness::WindowError;

#[test]
fn bytes_of_a_host_file_show_at_the_window_offset_by_nodeid() {
    let daemon = DaxDaemon::start(16 * MIB, 1, &[]);
    daemon.patterned_file("data", 8 * MIB);
    let s = daemon.connect();
    let nodeid = s.lookup("data");

    // File range [2 MiB, 4 MiB) into window slot 3.
    assert_eq!(
        s.setup(nodeid, FH_BY_NODEID, 2 * MIB, SLOT, 3 * SLOT, READ),
        0
    );
    let got = s.window().read(3 * SLOT, SLOT as usize).unwrap();
    assert!(
        got == pattern(2 * MIB, SLOT),
        "window bytes differ from the file"
    );

    let maps = s.window().mappings();
    assert_eq!(maps.len(), 1, "{maps:?}");
    assert_eq!(
        (maps[0].offset, maps[0].len, maps[0].fd_offset),
        (3 * SLOT, SLOT, 2 * MIB)
    );
    assert!(!maps[0].writable, "a READ mapping must be read-only");
    assert!(dax_common::same_file(
        &maps[0].source,
        &daemon.backend.shared_dir().join("data")
    ));
    // Read-only: a write through it is refused by the harness (it would fault).
    assert!(matches!(
        s.window().write(3 * SLOT, b"x"),
        Err(WindowError::NotWritable { .. })
    ));
    // Neighbouring slots stay PROT_NONE.
    assert!(matches!(
        s.window().read(2 * SLOT, 1),
        Err(WindowError::NotMapped { .. })
    ));
    assert!(matches!(
        s.window().read(4 * SLOT, 1),
        Err(WindowError::NotMapped { .. })
    ));
}

#[test]
fn bytes_show_with_a_handle_from_open_and_for_page_sized_ranges() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    daemon.patterned_file("data", 4 * MIB);
    let s = daemon.connect();
    let nodeid = s.lookup("data");
    let fh = s.open(nodeid, libc::O_RDONLY);
    assert_ne!(fh, FH_BY_NODEID);

    assert_eq!(s.setup(nodeid, fh, 0, SLOT, 0, READ), 0);
    assert!(s.window().read(0, SLOT as usize).unwrap() == pattern(0, SLOT));
    // A 12 KiB range at a page-aligned window offset inside another slot.
    assert_eq!(
        s.setup(nodeid, fh, 3 * MIB + PAGE, 3 * PAGE, SLOT + 5 * PAGE, READ),
        0
    );
    assert_eq!(
        s.window().read(SLOT + 5 * PAGE, 3 * PAGE as usize).unwrap(),
        pattern(3 * MIB + PAGE, 3 * PAGE)
    );
    assert!(s.window().read(SLOT + 4 * PAGE, 1).is_err());
    assert!(s.window().read(SLOT + 8 * PAGE, 1).is_err());
    assert_eq!(s.window().mappings().len(), 2);
}

#[test]
fn a_write_through_a_writable_mapping_lands_in_the_host_file() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    let path = daemon.patterned_file("data", 4 * MIB);
    let s = daemon.connect();
    let nodeid = s.lookup("data");

    assert_eq!(s.setup(nodeid, FH_BY_NODEID, SLOT, SLOT, 0, READ_WRITE), 0);
    let maps = s.window().mappings();
    assert_eq!(maps.len(), 1);
    assert!(maps[0].writable, "{maps:?}");
    s.window()
        .write(4 * PAGE + 7, b"written through the DAX window")
        .unwrap();

    let host = std::fs::read(&path).unwrap();
    let at = (SLOT + 4 * PAGE + 7) as usize;
    assert_eq!(&host[at..at + 30], b"written through the DAX window");
    // Nothing else changed.
    let mut expected = pattern(0, 4 * MIB);
    expected[at..at + 30].copy_from_slice(b"written through the DAX window");
    assert!(host == expected, "other bytes of the file changed");
}

#[test]
fn a_write_only_handle_still_gets_a_working_writable_mapping() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    let path = daemon.patterned_file("data", 2 * MIB);
    let s = daemon.connect();
    let nodeid = s.lookup("data");
    let fh = s.open(nodeid, libc::O_WRONLY);

    // A shared writable mapping needs a read-write file: the daemon must not pass the
    // O_WRONLY descriptor (mmap would refuse it) nor refuse the request.
    assert_eq!(s.setup(nodeid, fh, 0, SLOT, SLOT, READ_WRITE), 0);
    assert_eq!(s.window().read(SLOT, 64).unwrap(), pattern(0, 64));
    s.window().write(SLOT + 100, b"O_WRONLY guest").unwrap();
    let host = std::fs::read(&path).unwrap();
    assert_eq!(&host[100..114], b"O_WRONLY guest");
    // And a read-only mapping with the same write-only handle works too.
    assert_eq!(s.setup(nodeid, fh, SLOT - PAGE, PAGE, 0, READ), 0);
    assert_eq!(
        s.window().read(0, PAGE as usize).unwrap(),
        pattern(SLOT - PAGE, PAGE)
    );
}

#[test]
fn read_to_write_upgrade_on_the_same_moffset_unmaps_then_maps() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    let path = daemon.patterned_file("data", 4 * MIB);
    let s = daemon.connect();
    let nodeid = s.lookup("data");

    assert_eq!(s.setup(nodeid, FH_BY_NODEID, SLOT, SLOT, 2 * SLOT, READ), 0);
    let before = s.channel().log().len();
    // The guest's write fault: the same moffset and file range, now with WRITE.
    assert_eq!(
        s.setup(nodeid, FH_BY_NODEID, SLOT, SLOT, 2 * SLOT, READ_WRITE),
        0
    );
    let sent: Vec<_> = s.requests_since(before);
    let kinds: Vec<_> = sent.iter().map(summary).collect();
    assert_eq!(
        kinds,
        vec![
            ("UNMAP", 2 * SLOT, SLOT, 0, false),
            ("MAP", 2 * SLOT, SLOT, SLOT, true)
        ],
        "a standard frontend needs UNMAP then MAP; got {sent:?}"
    );
    assert!(sent.iter().all(|r| r.errno == 0), "{sent:?}");

    let maps = s.window().mappings();
    assert_eq!(maps.len(), 1, "{maps:?}");
    assert!(maps[0].writable);
    assert_eq!((maps[0].offset, maps[0].fd_offset), (2 * SLOT, SLOT));
    s.window().write(2 * SLOT + 9, b"upgraded").unwrap();
    let host = std::fs::read(&path).unwrap();
    assert_eq!(
        &host[(SLOT + 9) as usize..(SLOT + 17) as usize],
        b"upgraded"
    );

    // Asking again for what is mapped sends nothing.
    let before = s.channel().log().len();
    assert_eq!(
        s.setup(nodeid, FH_BY_NODEID, SLOT, SLOT, 2 * SLOT, READ_WRITE),
        0
    );
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, SLOT, SLOT, 2 * SLOT, READ), 0);
    assert_eq!(s.requests_since(before), vec![]);
}

#[test]
fn a_different_file_range_on_a_mapped_moffset_replaces_the_mapping() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    daemon.patterned_file("data", 8 * MIB);
    let s = daemon.connect();
    let nodeid = s.lookup("data");

    assert_eq!(s.setup(nodeid, FH_BY_NODEID, 0, SLOT, SLOT, READ), 0);
    // The guest reclaimed and reuses the range for another part of the file without a
    // REMOVEMAPPING in between (as it does when it steals a busy range).
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, 3 * SLOT, SLOT, SLOT, READ), 0);
    assert!(s.window().read(SLOT, SLOT as usize).unwrap() == pattern(3 * SLOT, SLOT));
    let maps = s.window().mappings();
    assert_eq!(maps.len(), 1);
    assert_eq!(maps[0].fd_offset, 3 * SLOT);
    assert!(s.channel().log().iter().all(|r| r.errno == 0));
}

#[test]
fn after_removemapping_the_range_is_prot_none_again() {
    let daemon = DaxDaemon::start(16 * MIB, 1, &[]);
    daemon.patterned_file("data", 8 * MIB);
    let s = daemon.connect();
    let nodeid = s.lookup("data");

    for slot in 0..3 {
        assert_eq!(
            s.setup(
                nodeid,
                FH_BY_NODEID,
                slot * SLOT,
                SLOT,
                (slot + 1) * SLOT,
                READ_WRITE
            ),
            0
        );
    }
    assert_eq!(s.window().mappings().len(), 3);
    assert_eq!(dax_common::protection_at(s.window(), SLOT), "rw-s");
    // One request removing two of them (the guest batches on inode eviction).
    assert_eq!(s.remove(&[(SLOT, SLOT), (3 * SLOT, SLOT)]), 0);
    let maps = s.window().mappings();
    assert_eq!(maps.len(), 1, "{maps:?}");
    assert_eq!(maps[0].offset, 2 * SLOT);
    for gone in [SLOT, 3 * SLOT] {
        assert!(s.window().mapping_at(gone).is_none());
        // Really PROT_NONE in the address space, not only absent from the table.
        assert_eq!(dax_common::protection_at(s.window(), gone), "---p");
        assert_eq!(
            dax_common::protection_at(s.window(), gone + SLOT - PAGE),
            "---p"
        );
        assert!(matches!(
            s.window().read(gone, 1),
            Err(WindowError::NotMapped { .. })
        ));
        assert!(matches!(
            s.window().read(gone + SLOT - 1, 1),
            Err(WindowError::NotMapped { .. })
        ));
    }
    let unmaps = s.channel().stats().shmem_unmap;
    assert_eq!(unmaps, 2);
    // Removing a range that holds nothing succeeds and sends nothing.
    assert_eq!(s.remove(&[(5 * SLOT, SLOT)]), 0);
    assert_eq!(s.channel().stats().shmem_unmap, unmaps);
    assert_eq!(s.channel().stats().failed, 0, "{:?}", s.channel().log());
    // The range can be mapped again.
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, 3 * SLOT, SLOT, SLOT, READ), 0);
    assert!(s.window().read(SLOT, SLOT as usize).unwrap() == pattern(3 * SLOT, SLOT));
}

#[test]
fn a_file_shorter_than_the_range_maps_and_shows_its_bytes() {
    // The guest maps whole 2 MiB ranges, also of small files.
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    let path = daemon.backend.shared_dir().join("small");
    std::fs::write(&path, b"a small file\n").unwrap();
    let s = daemon.connect();
    let nodeid = s.lookup("small");
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, 0, SLOT, 0, READ_WRITE), 0);
    let page = s.window().read(0, PAGE as usize).unwrap();
    assert_eq!(&page[..13], b"a small file\n");
    assert!(page[13..].iter().all(|&b| b == 0));
    // Pages wholly past the end would raise SIGBUS in the VMM: the daemon maps only
    // the file's page and a zero placeholder over the rest of the range.
    let file_part = s.window().mapping_at(0).unwrap();
    assert_eq!((file_part.offset, file_part.len), (0, PAGE));
    let rest = s.window().mapping_at(PAGE).unwrap();
    assert!(!dax_common::same_file(&rest.source, &path), "{rest:?}");
    assert_eq!((rest.offset, rest.len), (PAGE, SLOT - PAGE));
    let past_end = s.window().read(PAGE, (SLOT - PAGE) as usize).unwrap();
    assert!(past_end.iter().all(|&b| b == 0));
    s.window().write(2, b"S").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"a Small file\n");
}

#[test]
fn metrics_count_setups_removals_and_a_range_mapped_again_soon_after_removal() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    daemon.patterned_file("data", 8 * MIB);
    let s = daemon.connect();
    let nodeid = s.lookup("data");
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, 0, SLOT, 0, READ), 0);
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, SLOT, SLOT, SLOT, READ), 0);
    assert_eq!(
        s.setup(nodeid, FH_BY_NODEID, SLOT, SLOT, SLOT, READ_WRITE),
        0
    );
    assert_eq!(s.remove(&[(0, SLOT)]), 0);
    // The window is too small for the working set: the range just removed comes back.
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, 0, SLOT, 2 * SLOT, READ), 0);

    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_setupmapping_total"), 3);
    assert_eq!(m.get("daxfsd_dax_upgrades_total"), 1);
    assert_eq!(m.get("daxfsd_dax_removed_mappings_total"), 1);
    assert_eq!(m.get("daxfsd_dax_thrash_total"), 1);
    assert_eq!(m.get("daxfsd_dax_live_mappings"), 2);
    assert_eq!(m.get("daxfsd_dax_window_mapped_bytes"), 2 * SLOT);
    assert_eq!(m.get("daxfsd_dax_window_bytes"), 8 * MIB);
    // The VMM saw 3 maps + the upgrade's map, and the upgrade's unmap + the removal.
    assert_eq!(m.get("daxfsd_dax_vmm_maps_total"), 4);
    assert_eq!(m.get("daxfsd_dax_vmm_unmaps_total"), 2);
    assert_eq!(s.channel().stats().shmem_map, 4);
    assert_eq!(s.channel().stats().shmem_unmap, 2);
}
