//! Page-granular placement and repair: mappings of a file that ends inside
//! them, and of a file that shrinks or grows while mapped.
#![cfg(not(loom))]

use dax_window::memory_mapper::VmmMapping;
use dax_window::*;

const MIB: u64 = 1024 * 1024;
const X: InodeId = InodeId(7);

fn window(slots: u64) -> Window {
    Window::new(WindowGeometry::new(slots * SLOT_SIZE).unwrap())
}

fn request(moffset: u64, len: u64, foffset: u64, writable: bool) -> MapRequest<'static, InodeId> {
    MapRequest {
        moffset,
        len,
        inode: X,
        file: &X,
        foffset,
        writable,
    }
}

fn vmm_with_eof(eof: u64) -> MemoryMapper {
    let mapper = MemoryMapper::new().with_placeholders(true);
    mapper.set_eof(X, eof);
    mapper
}

fn assert_consistent(window: &Window, mapper: &MemoryMapper) {
    window.check_invariants().unwrap();
    mapper.check_matches(window).unwrap();
    assert_eq!(mapper.mappings_past_eof(), Vec::new(), "a page past EOF");
}

/// The VMM's mappings as (moffset, len, file offset or None for a placeholder).
fn vmm(mapper: &MemoryMapper) -> Vec<(u64, u64, Option<u64>)> {
    mapper
        .mappings()
        .into_iter()
        .map(|m| (m.moffset, m.len, m.inode.map(|_| m.foffset)))
        .collect()
}

/// Truncates (or extends) X to `eof` and repairs.
fn resize(
    window: &Window, mapper: &MemoryMapper, eof: u64,
) -> RepairReport<impl std::error::Error> {
    mapper.set_eof(X, eof);
    let report = window.repair(mapper, X, &X, eof);
    assert_consistent(window, mapper);
    report
}

#[test]
fn a_file_shorter_than_the_range_maps_its_pages_and_a_placeholder() {
    let window = window(2);
    // 5 pages and 7 bytes: the sixth page is partly the file and maps it.
    let mapper = vmm_with_eof(5 * PAGE_SIZE + 7);
    let outcome = window
        .setup_mapping(&mapper, &request(SLOT_SIZE, SLOT_SIZE, 0, true))
        .unwrap();
    let SetupOutcome::Mapped { records, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(records.len(), 2);
    assert_eq!(
        vmm(&mapper),
        vec![
            (SLOT_SIZE, 6 * PAGE_SIZE, Some(0)),
            (SLOT_SIZE + 6 * PAGE_SIZE, SLOT_SIZE - 6 * PAGE_SIZE, None)
        ]
    );
    // The placeholder is writable like the mapping it stands in for.
    assert!(mapper.mappings().iter().all(|m| m.writable));
    let tail = window.lookup(SLOT_SIZE + 6 * PAGE_SIZE).unwrap();
    assert_eq!(tail.state, MappingState::Zapped { placeholder: true });
    assert_eq!(tail.foffset, 6 * PAGE_SIZE);
    let stats = window.stats();
    assert_eq!(
        (
            stats.live_mappings,
            stats.zapped_mappings,
            stats.mapped_bytes
        ),
        (1, 1, 6 * PAGE_SIZE)
    );
    assert_eq!(stats.split_slots, 1);
    assert_consistent(&window, &mapper);

    // The guest's REMOVEMAPPING of its 2 MiB extent unmaps both mappings.
    let removed = window
        .remove_mapping(&mapper, SLOT_SIZE, SLOT_SIZE)
        .unwrap();
    assert_eq!(removed.len(), 2);
    assert!(mapper.mappings().is_empty());
    assert_eq!(window.stats().split_slots, 0);
    assert!(window.slots_of(X).is_empty());
    assert_consistent(&window, &mapper);

    // A range wholly past the end is one placeholder, a plain 2 MiB entry.
    window
        .setup_mapping(&mapper, &request(0, SLOT_SIZE, SLOT_SIZE, false))
        .unwrap();
    assert_eq!(vmm(&mapper), vec![(0, SLOT_SIZE, None)]);
    assert_eq!(window.stats().split_slots, 0);
    assert_consistent(&window, &mapper);
}

#[test]
fn truncation_in_the_middle_keeps_the_pages_below_the_end_mapped() {
    let window = window(3);
    let mapper = vmm_with_eof(4 * MIB);
    window
        .setup_mapping(&mapper, &request(0, 2 * SLOT_SIZE, 0, true))
        .unwrap();
    let head_before = window.lookup(0).unwrap();
    let calls = mapper.calls();

    // 3 MiB + 100 bytes: slot 0 stays, slot 1 keeps 1 MiB + 1 page.
    let report = resize(&window, &mapper, 3 * MIB + 100);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let kept = MIB + PAGE_SIZE;
    assert_eq!(
        (report.clipped, report.clipped_bytes),
        (1, SLOT_SIZE - kept)
    );
    assert_eq!(report.restored, 0);
    assert_eq!(
        vmm(&mapper),
        vec![
            (0, SLOT_SIZE, Some(0)),
            (SLOT_SIZE, kept, Some(SLOT_SIZE)),
            (SLOT_SIZE + kept, SLOT_SIZE - kept, None)
        ]
    );
    // One unmap of the whole mapping, the head mapped back, the placeholder.
    assert_eq!(mapper.calls(), (calls.0 + 2, calls.1 + 1));
    assert_eq!(window.lookup(0), Some(head_before), "slot 0 was touched");
    let head = window.lookup(SLOT_SIZE).unwrap();
    assert!(head.is_live() && head.writable);
    let stats = window.stats();
    assert_eq!(
        (stats.invalidations, stats.clips, stats.clipped_bytes),
        (1, 1, SLOT_SIZE - kept)
    );

    // Nothing left to do: a second pass changes nothing and calls nobody.
    let calls = mapper.calls();
    assert!(!resize(&window, &mapper, 3 * MIB + 100).changed());
    assert_eq!(mapper.calls(), calls);

    // The guest removes its original extent: both VMM mappings go.
    let removed = window
        .remove_mapping(&mapper, SLOT_SIZE, SLOT_SIZE)
        .unwrap();
    assert_eq!(removed.len(), 2);
    assert_eq!(vmm(&mapper), vec![(0, SLOT_SIZE, Some(0))]);
    assert_consistent(&window, &mapper);
}

#[test]
fn growth_maps_the_file_again_without_touching_the_head() {
    let window = window(1);
    let mapper = vmm_with_eof(MIB);
    window
        .setup_mapping(&mapper, &request(0, SLOT_SIZE, 0, false))
        .unwrap();
    let head = window.lookup(0).unwrap();
    assert_eq!((head.len, head.is_live()), (MIB, true));

    // The file grows by 100 KiB: only the placeholder is replaced.
    let calls = mapper.calls();
    let report = resize(&window, &mapper, MIB + 100 * 1024);
    assert_eq!((report.restored, report.restored_bytes), (1, 100 * 1024));
    assert_eq!(mapper.calls(), (calls.0 + 2, calls.1 + 1));
    assert_eq!(window.lookup(0), Some(head), "the head was re-mapped");
    assert_eq!(
        vmm(&mapper),
        vec![
            (0, MIB, Some(0)),
            (MIB, 100 * 1024, Some(MIB)),
            (MIB + 100 * 1024, MIB - 100 * 1024, None)
        ]
    );

    // Grown past the range: no placeholder left, three file mappings.
    let report = resize(&window, &mapper, 3 * MIB);
    assert_eq!(report.restored, 1);
    assert_eq!(window.mappings_in(0, SLOT_SIZE).unwrap().len(), 3);
    assert!(vmm(&mapper).iter().all(|m| m.2.is_some()));
    assert_eq!(window.stats().mapped_bytes, SLOT_SIZE);

    // The guest sends the same SETUPMAPPING again: the three mappings are
    // exactly the file range it asks for, so nothing is sent to the VMM.
    let calls = mapper.calls();
    let outcome = window
        .setup_mapping(&mapper, &request(0, SLOT_SIZE, 0, false))
        .unwrap();
    assert!(
        matches!(&outcome, SetupOutcome::AlreadyMapped { records } if records.len() == 3),
        "{outcome:?}"
    );
    assert_eq!(
        mapper.calls(),
        calls,
        "the VMM was asked to change the range"
    );
    assert_eq!(vmm(&mapper).len(), 3);
    assert_eq!(window.stats().split_slots, 1);
    assert_consistent(&window, &mapper);
}

#[test]
fn truncation_to_zero_and_rewrite() {
    let window = window(2);
    let mapper = vmm_with_eof(4 * MIB);
    window
        .setup_mapping(&mapper, &request(0, 2 * SLOT_SIZE, 0, true))
        .unwrap();
    let report = resize(&window, &mapper, 0);
    assert_eq!((report.clipped, report.clipped_bytes), (2, 2 * SLOT_SIZE));
    assert_eq!(
        vmm(&mapper),
        vec![(0, SLOT_SIZE, None), (SLOT_SIZE, SLOT_SIZE, None)]
    );
    // Whole-slot placeholders keep their 2 MiB entries.
    assert_eq!(window.stats().split_slots, 0);
    // Still the inode's: a rewrite of the file shows through them again.
    assert_eq!(window.slots_of(X).len(), 2);
    let report = resize(&window, &mapper, SLOT_SIZE + 1);
    assert_eq!(
        (report.restored, report.restored_bytes),
        (2, SLOT_SIZE + PAGE_SIZE)
    );
    assert_eq!(
        vmm(&mapper),
        vec![
            (0, SLOT_SIZE, Some(0)),
            (SLOT_SIZE, PAGE_SIZE, Some(SLOT_SIZE)),
            (SLOT_SIZE + PAGE_SIZE, SLOT_SIZE - PAGE_SIZE, None)
        ]
    );
    // Restored writable mappings are writable again.
    assert_eq!(window.mappings_of(X).len(), 3);
    assert!(window.mappings_of(X).iter().all(|r| r.writable));
}

#[test]
fn page_sized_mappings_and_other_inodes_in_the_slot() {
    let window = window(1);
    let mapper = vmm_with_eof(MIB);
    // 8 pages of X at page 16, and a 2-page mapping of another inode next to it.
    window
        .setup_mapping(&mapper, &request(16 * PAGE_SIZE, 8 * PAGE_SIZE, 0, false))
        .unwrap();
    let other = InodeId(8);
    window
        .setup_mapping(
            &mapper,
            &MapRequest {
                moffset: 24 * PAGE_SIZE,
                len: 2 * PAGE_SIZE,
                inode: other,
                file: &other,
                foffset: 0,
                writable: false,
            },
        )
        .unwrap();
    let report = resize(&window, &mapper, 3 * PAGE_SIZE);
    assert_eq!(report.clipped, 1);
    assert_eq!(
        vmm(&mapper),
        vec![
            (16 * PAGE_SIZE, 3 * PAGE_SIZE, Some(0)),
            (19 * PAGE_SIZE, 5 * PAGE_SIZE, None),
            (24 * PAGE_SIZE, 2 * PAGE_SIZE, Some(0)),
        ]
    );
    assert_eq!(window.lookup(24 * PAGE_SIZE).unwrap().inode, other);
    // The guest's removal of its 8 pages takes both records.
    assert_eq!(
        window
            .remove_mapping(&mapper, 16 * PAGE_SIZE, 8 * PAGE_SIZE)
            .unwrap()
            .len(),
        2
    );
    assert_consistent(&window, &mapper);
}

#[test]
fn failed_calls_are_reported_and_leave_nothing_past_the_end() {
    let window = window(3);
    let mapper = vmm_with_eof(6 * MIB);
    window
        .setup_mapping(&mapper, &request(0, 3 * SLOT_SIZE, 0, false))
        .unwrap();

    // The VMM refuses the unmap of slot 0's mapping: it stays as it was (past
    // the new end: reported, not retried in this pass).
    mapper.fail_next_unmaps(1);
    mapper.set_eof(X, MIB);
    let report = window.repair(&mapper, X, &X, MIB);
    assert!(matches!(
        report.failures.as_slice(),
        [TeardownFailure::Unmap { record, .. }] if record.moffset == 0
    ));
    assert_eq!(report.clipped, 2);
    assert_eq!(mapper.mappings_past_eof().len(), 1);
    window.check_invariants().unwrap();
    mapper.check_matches(&window).unwrap();
    // The next pass repairs it.
    assert_eq!(resize(&window, &mapper, MIB).clipped, 1);

    // Mapping the head back fails: a placeholder takes the whole record.
    let window = self::window(1);
    let mapper = vmm_with_eof(4 * MIB);
    window
        .setup_mapping(&mapper, &request(0, SLOT_SIZE, 0, false))
        .unwrap();
    mapper.fail_next_maps(1);
    mapper.set_eof(X, MIB);
    let report = window.repair(&mapper, X, &X, MIB);
    assert!(matches!(
        report.failures.as_slice(),
        [TeardownFailure::Remap { .. }]
    ));
    assert_eq!(vmm(&mapper), vec![(0, SLOT_SIZE, None)]);
    assert_consistent(&window, &mapper);
    // It maps the file again on the next pass (the head is below the end).
    assert_eq!(resize(&window, &mapper, MIB).restored, 1);
    assert_eq!(vmm(&mapper)[0], (0, MIB, Some(0)));

    // The placeholder is refused: the tail holds nothing, and is forgotten
    // without a VMM call when the guest removes the extent.
    let window = self::window(1);
    let mapper = vmm_with_eof(4 * MIB);
    window
        .setup_mapping(&mapper, &request(0, SLOT_SIZE, 0, false))
        .unwrap();
    mapper.set_eof(X, MIB);
    // Second map call of the repair: the placeholder.
    let report = {
        struct RefusePlaceholder<'a>(&'a MemoryMapper);
        impl Mapper for RefusePlaceholder<'_> {
            type File = InodeId;
            type Error = dax_window::memory_mapper::MemoryMapperError;
            fn map(&self, m: u64, l: u64, f: &InodeId, o: u64, w: bool) -> Result<(), Self::Error> {
                self.0.map(m, l, f, o, w)
            }
            fn unmap(&self, m: u64, l: u64) -> Result<(), Self::Error> {
                self.0.unmap(m, l)
            }
            fn map_placeholder(&self, m: u64, l: u64, _: bool) -> Result<bool, Self::Error> {
                self.0.fail_next_maps(1);
                self.0.map_placeholder(m, l, false)
            }
        }
        window.repair(&RefusePlaceholder(&mapper), X, &X, MIB)
    };
    assert!(matches!(
        report.failures.as_slice(),
        [TeardownFailure::Placeholder { .. }]
    ));
    assert_eq!(vmm(&mapper), vec![(0, MIB, Some(0))]);
    let tail = window.lookup(MIB).unwrap();
    assert_eq!(tail.state, MappingState::Zapped { placeholder: false });
    assert_consistent(&window, &mapper);
    let calls = mapper.calls();
    assert_eq!(
        window.remove_mapping(&mapper, 0, SLOT_SIZE).unwrap().len(),
        2
    );
    assert_eq!(mapper.calls(), (calls.0, calls.1 + 1));
    assert_consistent(&window, &mapper);
}

#[test]
fn a_failed_placeholder_fails_the_map_and_rolls_back() {
    let window = window(2);
    let mapper = vmm_with_eof(MIB);
    // Map calls: slot 0's file part (1), then its placeholder (2).
    mapper.fail_every_map(2);
    let error = window
        .setup_mapping(&mapper, &request(0, 2 * SLOT_SIZE, 0, false))
        .unwrap_err();
    assert!(!error.is_invalid_request(), "{error}");
    mapper.fail_every_map(0);
    assert!(mapper.mappings().is_empty());
    assert!(window.mappings_in(0, 2 * SLOT_SIZE).unwrap().is_empty());
    assert!(window.slots_of(X).is_empty());
    assert_eq!(window.stats().split_slots, 0);
    assert_consistent(&window, &mapper);
}

#[test]
fn a_replacing_mapper_repairs_without_unmapping() {
    let window = window(1);
    let mapper = MemoryMapper::replacing().with_placeholders(true);
    mapper.set_eof(X, 4 * MIB);
    window
        .setup_mapping(&mapper, &request(0, SLOT_SIZE, 0, true))
        .unwrap();
    let calls = mapper.calls();
    let report = resize(&window, &mapper, MIB);
    assert_eq!(report.clipped, 1);
    assert_eq!(mapper.calls(), (calls.0 + 2, calls.1), "no unmap, no gap");
    assert_eq!(vmm(&mapper), vec![(0, MIB, Some(0)), (MIB, MIB, None)]);
    let report = resize(&window, &mapper, 2 * MIB);
    assert_eq!(report.restored, 1);
    assert_eq!(vmm(&mapper), vec![(0, MIB, Some(0)), (MIB, MIB, Some(MIB))]);
}

#[test]
fn a_mapper_that_reports_no_size_maps_whole_ranges() {
    // No EOF set: file_size is None, the index maps what the guest asked.
    let window = window(1);
    let mapper = MemoryMapper::new().with_placeholders(true);
    window
        .setup_mapping(&mapper, &request(0, SLOT_SIZE, 0, false))
        .unwrap();
    assert_eq!(
        mapper.mappings(),
        vec![VmmMapping {
            moffset: 0,
            len: SLOT_SIZE,
            inode: Some(X),
            foffset: 0,
            writable: false
        }]
    );
    // Its repair still clips at the size it is given.
    let report = window.repair(&mapper, X, &X, 10);
    assert_eq!(report.clipped, 1);
    assert_eq!(
        vmm(&mapper),
        vec![
            (0, PAGE_SIZE, Some(0)),
            (PAGE_SIZE, SLOT_SIZE - PAGE_SIZE, None)
        ]
    );
}

/// Regression (found by the soak): a refused placeholder left the file head
/// alone in a 2 MiB entry until the rollback removed it — a partial record
/// where only a full-slot one may be. The mapper checks the index from inside
/// the rollback's unmap.
#[test]
fn a_refused_placeholder_never_leaves_a_partial_record_in_a_2_mib_entry() {
    use dax_window::memory_mapper::MemoryMapperError;
    use std::cell::RefCell;

    struct Checking<'a> {
        vmm: MemoryMapper,
        window: &'a Window,
        seen: RefCell<Vec<String>>,
    }
    impl Mapper for Checking<'_> {
        type File = InodeId;
        type Error = MemoryMapperError;
        fn map(&self, m: u64, l: u64, f: &InodeId, o: u64, w: bool) -> Result<(), Self::Error> {
            self.vmm.map(m, l, f, o, w)
        }
        fn unmap(&self, m: u64, l: u64) -> Result<(), Self::Error> {
            if let Err(violation) = self.window.check_invariants() {
                self.seen.borrow_mut().push(violation.to_string());
            }
            self.vmm.unmap(m, l)
        }
        fn map_placeholder(&self, m: u64, l: u64, w: bool) -> Result<bool, Self::Error> {
            self.vmm.fail_next_maps(1);
            self.vmm.map_placeholder(m, l, w)
        }
        fn file_size(&self, file: &InodeId) -> Result<Option<u64>, Self::Error> {
            self.vmm.file_size(file)
        }
    }

    let window = window(1);
    let mapper = Checking {
        vmm: vmm_with_eof(MIB),
        window: &window,
        seen: RefCell::new(Vec::new()),
    };
    let error = window
        .setup_mapping(&mapper, &request(0, SLOT_SIZE, 0, false))
        .unwrap_err();
    assert!(!error.is_invalid_request(), "{error}");
    assert_eq!(mapper.vmm.calls().1, 1, "the head was not rolled back");
    assert_eq!(*mapper.seen.borrow(), Vec::<String>::new());
    assert!(mapper.vmm.mappings().is_empty());
    window.check_invariants().unwrap();
}

/// The range holding a file's end (a file part and a placeholder) is the range
/// the guest asked for: a write setup upgrades both parts in place, and the
/// same setup again, for writing or reading, changes nothing in the VMM.
#[test]
fn a_range_holding_the_files_end_is_upgraded_in_place_and_then_left_alone() {
    let window = window(2);
    let mapper = vmm_with_eof(MIB + 4096);
    window
        .setup_mapping(&mapper, &request(0, SLOT_SIZE, 0, false))
        .unwrap();
    let before = mapper.mappings();
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(before.iter().all(|m| !m.writable));

    let outcome = window
        .setup_mapping(&mapper, &request(0, SLOT_SIZE, 0, true))
        .unwrap();
    assert!(
        matches!(&outcome, SetupOutcome::Upgraded { records } if records.len() == 2),
        "{outcome:?}"
    );
    let after = mapper.mappings();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.iter().all(|m| m.writable), "{after:?}");
    assert!(window
        .mappings_in(0, SLOT_SIZE)
        .unwrap()
        .iter()
        .all(|r| r.writable));

    for writable in [true, false] {
        let calls = mapper.calls();
        let outcome = window
            .setup_mapping(&mapper, &request(0, SLOT_SIZE, 0, writable))
            .unwrap();
        assert!(
            matches!(outcome, SetupOutcome::AlreadyMapped { .. }),
            "{outcome:?}"
        );
        assert_eq!(mapper.calls(), calls);
        assert!(mapper.mappings().iter().all(|m| m.writable));
    }
    assert_consistent(&window, &mapper);
}
