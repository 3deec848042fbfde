//! Behaviour of the index operations, single-threaded and with plain threads.
#![cfg(not(loom))]

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use dax_window::memory_mapper::VmmMapping;
use dax_window::*;

const MIB: u64 = 1024 * 1024;

fn window(slots: u64) -> Window {
    Window::new(WindowGeometry::new(slots * SLOT_SIZE).unwrap())
}

fn request(
    inode: u64, moffset: u64, len: u64, foffset: u64, writable: bool,
) -> MapRequest<'static, InodeId> {
    let file: &'static InodeId = Box::leak(Box::new(InodeId(inode)));
    MapRequest {
        moffset,
        len,
        inode: InodeId(inode),
        file,
        foffset,
        writable,
    }
}

fn assert_consistent(window: &Window, mapper: &MemoryMapper) {
    window.check_invariants().unwrap();
    mapper.check_matches(window).unwrap();
}

#[test]
fn setup_lookup_and_remove_a_slot() {
    let window = window(4);
    let mapper = MemoryMapper::new();
    let outcome = window
        .setup_mapping(&mapper, &request(7, SLOT_SIZE, SLOT_SIZE, 4 * MIB, false))
        .unwrap();
    let SetupOutcome::Mapped { records, replaced } = outcome else {
        panic!("expected a new mapping, got {outcome:?}");
    };
    assert!(replaced.is_empty());
    assert_eq!(records.len(), 1);
    let record = window.lookup(SLOT_SIZE + 5 * PAGE_SIZE).unwrap();
    assert_eq!(
        (record.moffset, record.len, record.foffset),
        (SLOT_SIZE, SLOT_SIZE, 4 * MIB)
    );
    assert_eq!(record.inode, InodeId(7));
    assert!(record.is_live() && !record.writable);
    assert_eq!(window.lookup(0), None);
    assert_eq!(window.lookup(u64::MAX), None);
    assert_eq!(window.slots_of(InodeId(7)), vec![SLOT_SIZE]);
    assert_eq!(
        mapper.mappings(),
        vec![VmmMapping {
            moffset: SLOT_SIZE,
            len: SLOT_SIZE,
            inode: Some(InodeId(7)),
            foffset: 4 * MIB,
            writable: false
        }]
    );
    let stats = window.stats();
    assert_eq!(
        (stats.live_mappings, stats.mapped_bytes, stats.maps),
        (1, SLOT_SIZE, 1)
    );
    assert_consistent(&window, &mapper);

    let removed = window
        .remove_mapping(&mapper, SLOT_SIZE, SLOT_SIZE)
        .unwrap();
    assert_eq!(removed, vec![record]);
    assert!(mapper.mappings().is_empty());
    assert!(window.slots_of(InodeId(7)).is_empty());
    assert_eq!(window.stats().live_mappings, 0);
    // Removing nothing succeeds and sends nothing to the VMM.
    let calls = mapper.calls();
    assert!(window
        .remove_mapping(&mapper, 0, SLOT_SIZE)
        .unwrap()
        .is_empty());
    assert_eq!(mapper.calls(), calls);
    assert_consistent(&window, &mapper);
}

#[test]
fn repeated_setup_is_a_no_op_and_write_upgrades() {
    let window = window(2);
    let mapper = MemoryMapper::new();
    window
        .setup_mapping(&mapper, &request(1, 0, SLOT_SIZE, 0, false))
        .unwrap();
    let again = window
        .setup_mapping(&mapper, &request(1, 0, SLOT_SIZE, 0, false))
        .unwrap();
    assert!(matches!(again, SetupOutcome::AlreadyMapped { .. }));
    assert_eq!(mapper.calls(), (1, 0));

    let upgraded = window
        .setup_mapping(&mapper, &request(1, 0, SLOT_SIZE, 0, true))
        .unwrap();
    let SetupOutcome::Upgraded { records } = upgraded else {
        panic!("expected an upgrade, got {upgraded:?}");
    };
    assert!(records[0].writable);
    // The standard VMM needs the read-only mapping gone before the writable one.
    assert_eq!(mapper.calls(), (2, 1));
    assert!(mapper.mappings()[0].writable);
    // A read request over a writable mapping keeps it.
    let read = window
        .setup_mapping(&mapper, &request(1, 0, SLOT_SIZE, 0, false))
        .unwrap();
    assert!(matches!(read, SetupOutcome::AlreadyMapped { .. }));
    assert_eq!(window.stats().upgrades, 1);
    assert_consistent(&window, &mapper);

    // A replacing (legacy) VMM upgrades without the unmap gap.
    let legacy = MemoryMapper::replacing();
    let window = self::window(1);
    window
        .setup_mapping(&legacy, &request(1, 0, SLOT_SIZE, 0, false))
        .unwrap();
    window
        .setup_mapping(&legacy, &request(1, 0, SLOT_SIZE, 0, true))
        .unwrap();
    assert_eq!(legacy.calls(), (2, 0));
    assert_consistent(&window, &legacy);
}

#[test]
fn setup_over_another_file_replaces_it() {
    let window = window(1);
    let mapper = MemoryMapper::new();
    window
        .setup_mapping(&mapper, &request(1, 0, SLOT_SIZE, 0, false))
        .unwrap();
    let outcome = window
        .setup_mapping(&mapper, &request(2, 0, SLOT_SIZE, 2 * MIB, true))
        .unwrap();
    let SetupOutcome::Mapped { replaced, .. } = outcome else {
        panic!("expected a replacement, got {outcome:?}");
    };
    assert_eq!(replaced[0].inode, InodeId(1));
    assert!(window.slots_of(InodeId(1)).is_empty());
    assert_eq!(window.slots_of(InodeId(2)), vec![0]);
    assert_consistent(&window, &mapper);
}

#[test]
fn partial_removal_is_refused_without_change() {
    let window = window(2);
    let mapper = MemoryMapper::new();
    window
        .setup_mapping(&mapper, &request(1, 0, SLOT_SIZE, 0, false))
        .unwrap();
    let error = window
        .remove_mapping(&mapper, PAGE_SIZE, PAGE_SIZE)
        .unwrap_err();
    assert!(error.is_invalid_request(), "{error}");
    assert!(matches!(
        error,
        RemoveError::Unmap(UnmapError::Partial { .. })
    ));
    assert_eq!(mapper.mappings().len(), 1);
    assert_eq!(window.lookup(0).unwrap().len, SLOT_SIZE);
    // A 4 KiB setup inside the 2 MiB mapping is refused the same way.
    let error = window
        .setup_mapping(&mapper, &request(1, PAGE_SIZE, PAGE_SIZE, 0, false))
        .unwrap_err();
    assert!(error.is_invalid_request(), "{error}");
    assert_consistent(&window, &mapper);
    // The slot merges back into a 2 MiB entry on the next 2 MiB grab.
    drop(window.grab_at(0, SLOT_SIZE, Order::Slot).unwrap());
    assert_eq!(window.stats().split_slots, 0);
    assert_consistent(&window, &mapper);
}

#[test]
fn page_mappings_and_the_two_conflicts() {
    let window = window(2);
    let mapper = MemoryMapper::new();
    window
        .setup_mapping(&mapper, &request(3, 5 * PAGE_SIZE, 2 * PAGE_SIZE, 0, false))
        .unwrap();
    window
        .setup_mapping(&mapper, &request(4, 9 * PAGE_SIZE, PAGE_SIZE, 0, true))
        .unwrap();
    assert_eq!(window.stats().split_slots, 1);
    assert_eq!(window.lookup(6 * PAGE_SIZE).unwrap().inode, InodeId(3));
    assert_eq!(window.lookup(7 * PAGE_SIZE), None);
    assert_eq!(window.mappings_in(0, SLOT_SIZE).unwrap().len(), 2);

    // Unlocked 4 KiB mappings: a 2 MiB grab conflicts instead of merging.
    let conflict = window.grab_at(0, SLOT_SIZE, Order::Slot).unwrap_err();
    assert_eq!(
        conflict,
        GrabError::Conflict(GrabConflict::PageMappings { slot: 0 })
    );

    // A locked 4 KiB entry: a 2 MiB grab conflicts at once, never sleeps.
    let held = window
        .grab_at(100 * PAGE_SIZE, PAGE_SIZE, Order::Page)
        .unwrap();
    let conflict = window.grab_at(0, SLOT_SIZE, Order::Slot).unwrap_err();
    assert_eq!(
        conflict,
        GrabError::Conflict(GrabConflict::LockedPage {
            slot: 0,
            moffset: 100 * PAGE_SIZE
        })
    );
    // A slot-aligned grab of two slots releases the first when the second
    // conflicts.
    drop(held);
    let held = window
        .grab_at(SLOT_SIZE + PAGE_SIZE, PAGE_SIZE, Order::Page)
        .unwrap();
    assert!(window.grab_at(0, 2 * SLOT_SIZE, Order::Slot).is_err());
    drop(held);
    assert_eq!(window.stats().conflicts, 3);
    assert_consistent(&window, &mapper);

    // A 2 MiB setup over the page mappings falls back to 4 KiB entries,
    // unmaps them and maps the whole slot.
    let outcome = window
        .setup_mapping(&mapper, &request(5, 0, SLOT_SIZE, 0, false))
        .unwrap();
    let SetupOutcome::Mapped { replaced, .. } = outcome else {
        panic!("expected a replacement, got {outcome:?}");
    };
    assert_eq!(replaced.len(), 2);
    assert_eq!(mapper.mappings().len(), 1);
    assert_eq!(window.stats().conflicts, 4);
    assert_consistent(&window, &mapper);
}

#[test]
fn failed_map_leaves_the_index_as_it_was() {
    let window = window(4);
    let mapper = MemoryMapper::new();
    mapper.fail_every_map(2);
    let error = window
        .setup_mapping(&mapper, &request(9, 0, 3 * SLOT_SIZE, 0, false))
        .unwrap_err();
    let SetupError::Map(MapError::Mapper { moffset, stuck, .. }) = &error else {
        panic!("expected a mapper failure, got {error:?}");
    };
    assert_eq!(*moffset, SLOT_SIZE);
    assert!(stuck.is_empty());
    assert!(!error.is_invalid_request());
    assert!(mapper.mappings().is_empty());
    assert!(window.slots_of(InodeId(9)).is_empty());
    let stats = window.stats();
    assert_eq!(
        (
            stats.live_mappings,
            stats.map_failures,
            stats.maps,
            stats.unmaps
        ),
        (0, 1, 1, 1)
    );
    assert_consistent(&window, &mapper);

    // A failed upgrade after the unmap leaves the extent unmapped and forgotten.
    mapper.fail_every_map(0);
    window
        .setup_mapping(&mapper, &request(9, 0, SLOT_SIZE, 0, false))
        .unwrap();
    mapper.fail_next_maps(1);
    let error = window
        .setup_mapping(&mapper, &request(9, 0, SLOT_SIZE, 0, true))
        .unwrap_err();
    assert!(
        matches!(error, SetupError::Upgrade(UpgradeError::Remap { .. })),
        "{error:?}"
    );
    assert!(window.lookup(0).is_none());
    assert_consistent(&window, &mapper);

    // A refused unmap keeps the record.
    window
        .setup_mapping(&mapper, &request(9, 0, SLOT_SIZE, 0, false))
        .unwrap();
    mapper.fail_next_unmaps(1);
    let error = window.remove_mapping(&mapper, 0, SLOT_SIZE).unwrap_err();
    assert!(
        matches!(error, RemoveError::Unmap(UnmapError::Mapper { .. })),
        "{error:?}"
    );
    assert!(window.lookup(0).is_some());
    assert_consistent(&window, &mapper);
}

#[test]
fn reset_reports_and_unmaps_everything() {
    let window = window(3);
    let mapper = MemoryMapper::new().with_placeholders(true);
    window
        .setup_mapping(&mapper, &request(1, 0, SLOT_SIZE, 0, true))
        .unwrap();
    window
        .setup_mapping(&mapper, &request(2, SLOT_SIZE, 4 * PAGE_SIZE, 0, false))
        .unwrap();
    window
        .setup_mapping(
            &mapper,
            &request(3, SLOT_SIZE + 8 * PAGE_SIZE, PAGE_SIZE, 0, false),
        )
        .unwrap();
    window
        .setup_mapping(&mapper, &request(4, 2 * SLOT_SIZE, SLOT_SIZE, 0, false))
        .unwrap();
    // Truncated to 0: the 2 MiB mapping becomes a placeholder, also unmapped.
    mapper.set_eof(InodeId(4), 0);
    assert_eq!(
        window.repair(&mapper, InodeId(4), &InodeId(4), 0).clipped,
        1
    );
    let report = window.reset(&mapper);
    assert!(report.failures.is_empty());
    assert_eq!(report.removed.len(), 4);
    assert!(mapper.mappings().is_empty());
    assert!(window.mappings_in(0, 3 * SLOT_SIZE).unwrap().is_empty());
    let stats = window.stats();
    assert_eq!(
        (
            stats.live_mappings,
            stats.zapped_mappings,
            stats.split_slots
        ),
        (0, 0, 0)
    );
    assert_consistent(&window, &mapper);
}

#[test]
fn a_waiter_sleeps_until_the_holder_releases() {
    let window = Arc::new(window(1));
    let guard = window.grab_at(0, SLOT_SIZE, Order::Slot).unwrap();
    let (sender, receiver) = mpsc::channel();
    let waiter = {
        let window = Arc::clone(&window);
        thread::spawn(move || {
            let guard = window.grab_at(0, SLOT_SIZE, Order::Slot).unwrap();
            sender.send(()).unwrap();
            drop(guard);
        })
    };
    // The waiter must not get the slot while it is held.
    assert!(receiver.recv_timeout(Duration::from_millis(100)).is_err());
    drop(guard);
    receiver.recv_timeout(Duration::from_secs(10)).unwrap();
    waiter.join().unwrap();
    let stats = window.stats();
    assert!(
        stats.waits >= 1 && stats.wait_time >= Duration::from_millis(50),
        "{stats:?}"
    );
    window.check_invariants().unwrap();
}

#[test]
fn wait_unlocked_returns_once_the_range_settles() {
    let window = Arc::new(window(2));
    let mapper = Arc::new(MemoryMapper::new());
    let mut guard = window.grab_at(SLOT_SIZE, SLOT_SIZE, Order::Slot).unwrap();
    let (sender, receiver) = mpsc::channel();
    let observer = {
        let window = Arc::clone(&window);
        thread::spawn(move || {
            sender
                .send(window.wait_unlocked(0, 2 * SLOT_SIZE).unwrap())
                .unwrap()
        })
    };
    assert!(receiver.recv_timeout(Duration::from_millis(100)).is_err());
    guard
        .map(&*mapper, &InodeId(1), InodeId(1), 0, false)
        .unwrap();
    drop(guard);
    let seen = receiver.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(seen.len(), 1);
    observer.join().unwrap();
    assert_consistent(&window, &mapper);
}

#[test]
fn idle_index_costs_at_most_16_bytes_per_slot() {
    for size in [256 * MIB, 4096 * MIB, 65536 * MIB] {
        let window = Window::new(WindowGeometry::new(size).unwrap());
        let slots = window.geometry().slot_count() as usize;
        let per_slot = window.index_bytes() as f64 / slots as f64;
        println!(
            "window {:>6} MiB: {per_slot:.2} bytes of index per idle 2 MiB slot",
            size / MIB
        );
        assert!(per_slot <= 16.0, "{per_slot} bytes per slot at {size}");
    }
}

#[test]
fn shared_wait_table_and_bad_ranges() {
    let table = Arc::new(WaitTable::new(1));
    let config = WindowConfig {
        wait_table: Some(Arc::clone(&table)),
        ..WindowConfig::default()
    };
    let a = Window::with_config(WindowGeometry::new(SLOT_SIZE).unwrap(), config.clone());
    let b = Window::with_config(WindowGeometry::new(SLOT_SIZE).unwrap(), config);
    assert_ne!(a.id(), b.id());
    assert_eq!(table.bucket_count(), 1);
    assert!(matches!(
        a.grab_at(0, 2 * SLOT_SIZE, Order::Slot),
        Err(GrabError::Range(_))
    ));
    assert!(matches!(
        a.grab_at(0, PAGE_SIZE, Order::Slot),
        Err(GrabError::Range(_))
    ));
    assert!(matches!(a.mappings_in(0, 0), Err(RangeError::Empty { .. })));
    let mapper = MemoryMapper::new();
    let error = a
        .setup_mapping(&mapper, &request(1, 0, PAGE_SIZE, 3, false))
        .unwrap_err();
    assert!(error.is_invalid_request(), "{error}");
    let error = a
        .setup_mapping(&mapper, &request(1, 0, SLOT_SIZE + PAGE_SIZE, 0, false))
        .unwrap_err();
    assert!(matches!(
        error,
        SetupError::Range(RangeError::OutOfBounds { .. })
    ));
    assert!(mapper.mappings().is_empty());
}
