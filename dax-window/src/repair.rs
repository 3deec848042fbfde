//! Keeping an inode's mappings in agreement with its file's size.
//!
//! A VMM maps file pages with `MAP_SHARED`; touching a mapped page that lies
//! wholly past the file's end raises SIGBUS in the VMM (QEMU dies). So every
//! extent the index maps is *placed* page-granularly: the pages below
//! `round_up(size, 4 KiB)` map the file, the pages at or beyond it map a
//! placeholder ([`crate::Mapper::map_placeholder`]) — a live record followed by
//! a zapped one. [`Window::repair`] re-places the records of an inode after its
//! file changed size, in both directions:
//!
//! | record | file now | repair (standard SHMEM: UNMAP names one mapping) |
//! |--------|----------|--------------------------------------------------|
//! | live, file pages past the new end | shrank | unmap it, map the head back to the file, a placeholder over the tail |
//! | zapped, file pages below the new end | grew | unmap its placeholder, map the file over the part now below the end, a placeholder over the rest |
//! | live within the end / zapped past it | — | nothing |
//!
//! A repair never touches the records before the one it repairs, so the head
//! of a guest mapping that the guest is reading stays mapped while the file
//! grows. Repairing a live record unmaps its head for two backend round trips
//! (as an upgrade does); with a mapper whose maps replace
//! ([`crate::Mapper::map_replaces_existing`], legacy `FS_MAP`) nothing is
//! unmapped first and there is no gap.

use crate::entry::{file_part, Detail, InodeId, MappingRecord, MappingState, Records, SplitSlot};
use crate::geometry::PAGES_PER_SLOT;
use crate::maintenance::TeardownFailure;
use crate::shard::Shard;
use crate::stats;
use crate::wait::WaitKind;
use crate::window::EntryAt;
use crate::{Mapper, Window};

const ALL_PAGES: (u16, u16) = (0, PAGES_PER_SLOT as u16);

/// What [`Window::repair`] did.
#[derive(Debug)]
pub struct RepairReport<E: std::error::Error + 'static> {
    /// The records the repaired ones were replaced with, as they are now.
    pub records: Vec<MappingRecord>,
    /// Records whose file pages at or beyond the end were replaced by a
    /// placeholder (the file shrank).
    pub clipped: u64,
    /// Bytes of the window that stopped mapping the file.
    pub clipped_bytes: u64,
    /// Records whose placeholder pages below the end map the file again (the
    /// file grew).
    pub restored: u64,
    /// Bytes of the window that map the file again.
    pub restored_bytes: u64,
    /// Calls that failed. An unmap failure leaves its record as it was; after
    /// a failed map the part concerned holds nothing (or, with a replacing
    /// mapper, what it held before) and is not retried by this pass.
    pub failures: Vec<TeardownFailure<E>>,
}

impl<E: std::error::Error + 'static> RepairReport<E> {
    /// Whether the pass changed any record.
    pub fn changed(&self) -> bool {
        !self.records.is_empty()
    }
}

/// An extent to place: one slot's piece of a guest mapping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Extent {
    pub(crate) moffset: u64,
    pub(crate) len: u64,
    pub(crate) inode: InodeId,
    pub(crate) foffset: u64,
    pub(crate) writable: bool,
}

impl Extent {
    fn of(record: &MappingRecord) -> Self {
        Self {
            moffset: record.moffset,
            len: record.len,
            inode: record.inode,
            foffset: record.foffset,
            writable: record.writable,
        }
    }

    fn end(&self) -> u64 {
        self.moffset + self.len
    }
}

/// Which part of an extent a failed call was placing.
#[derive(Debug)]
pub(crate) enum Part {
    File,
    Placeholder,
}

/// A mapper call that failed while placing an extent.
#[derive(Debug)]
pub(crate) struct PlaceFailure<E> {
    pub(crate) part: Part,
    pub(crate) moffset: u64,
    pub(crate) len: u64,
    pub(crate) source: E,
}

/// What placing an extent put in the VMM.
#[derive(Debug)]
pub(crate) struct Placed<E> {
    /// Records of what the VMM now holds (a zapped record without
    /// placeholder when the mapper maps none), in window order: at most a
    /// file part and a placeholder, so never on the heap.
    pub(crate) made: Records,
    pub(crate) failures: Vec<PlaceFailure<E>>,
}

impl Window {
    /// Maps `extent` through `mapper`: the part below the file pages of `size`
    /// to `file`, a placeholder over the rest (`size` `None`: all to the file).
    /// With `fall_back`, a refused file map is followed by a placeholder over
    /// the whole extent; without, placing stops at the first failure. Changes
    /// no index state; the caller holds the entry lock and records the result.
    pub(crate) fn place<M: Mapper + ?Sized>(
        &self, mapper: &M, extent: &Extent, file: &M::File, size: Option<u64>, fall_back: bool,
    ) -> Placed<M::Error> {
        let file_len = size.map_or(extent.len, |size| {
            file_part(extent.foffset, extent.len, size)
        });
        let mut placed = Placed {
            made: Records::new(),
            failures: Vec::new(),
        };
        let mut placeholder_from = extent.moffset + file_len;
        if file_len > 0 {
            match mapper.map(
                extent.moffset,
                file_len,
                file,
                extent.foffset,
                extent.writable,
            ) {
                Ok(()) => {
                    stats::bump(&self.counters.maps);
                    placed
                        .made
                        .push(self.record(extent, extent.moffset, file_len, None));
                }
                Err(source) => {
                    stats::bump(&self.counters.map_failures);
                    placed.failures.push(PlaceFailure {
                        part: Part::File,
                        moffset: extent.moffset,
                        len: file_len,
                        source,
                    });
                    if !fall_back {
                        return placed;
                    }
                    placeholder_from = extent.moffset;
                }
            }
        }
        if placeholder_from < extent.end() {
            let len = extent.end() - placeholder_from;
            match mapper.map_placeholder(placeholder_from, len, extent.writable) {
                Ok(placeholder) => {
                    if placeholder {
                        stats::bump(&self.counters.maps);
                    }
                    placed
                        .made
                        .push(self.record(extent, placeholder_from, len, Some(placeholder)));
                }
                Err(source) => {
                    stats::bump(&self.counters.map_failures);
                    placed.failures.push(PlaceFailure {
                        part: Part::Placeholder,
                        moffset: placeholder_from,
                        len,
                        source,
                    });
                }
            }
        }
        placed
    }

    /// The record of the piece `[moffset, moffset + len)` of `extent`: live,
    /// or zapped with or without placeholder.
    fn record(
        &self, extent: &Extent, moffset: u64, len: u64, placeholder: Option<bool>,
    ) -> MappingRecord {
        let state = match placeholder {
            None => MappingState::Live,
            Some(placeholder) => MappingState::Zapped { placeholder },
        };
        MappingRecord {
            moffset,
            len,
            inode: extent.inode,
            foffset: extent.foffset + (moffset - extent.moffset),
            writable: extent.writable,
            state,
        }
    }

    /// Turns the order-9 entry of `slot`, locked by the caller, into 512
    /// locked order-0 entries, so the holder can store records smaller than
    /// the slot. The order-9 key disappears, so every waiter of it is woken
    /// (they re-check and wait on page keys). The caller releases the pages
    /// with `unlock_pages` over the whole slot.
    pub(crate) fn convert_locked_to_pages(&self, shard: &mut Shard, local: usize, slot: u32) {
        debug_assert!(shard.words[local].locked() && !shard.words[local].split());
        self.wake_whole(shard, local, slot, self.removal_mode());
        let word = shard.words[local];
        let mut split = Box::<SplitSlot>::default();
        if let Some(Detail::Whole(record)) = shard.take_detail(word) {
            split.records.push(record);
        }
        for page in ALL_PAGES.0..ALL_PAGES.1 {
            split.locked.set(page, true);
        }
        let handle = shard.insert_detail(Detail::Split(split));
        shard.words[local] = word
            .with_handle(Some(handle))
            .set_split(true)
            .set_locked(false);
        stats::add(&self.counters.split_slots, 1);
    }

    /// Repairs every mapping of `inode` after its file changed size to
    /// `size`, page by page (see the module documentation): no record maps a
    /// file page at or beyond `round_up(size, 4 KiB)`, and every page below it
    /// that a guest mapping covers maps `file` again. Records are replaced in
    /// place; they stay associated with the inode until the guest removes
    /// them. Every waiter of a changed entry is woken.
    ///
    /// Call it *after* the file changed: every map that registered before this
    /// call read the reverse index is found and waited for; every map
    /// registering later reads the size after the change
    /// ([`crate::Mapper::file_size`]). `file` must allow mapping with the
    /// access of the inode's writable records.
    pub fn repair<M: Mapper + ?Sized>(
        &self, mapper: &M, inode: InodeId, file: &M::File, size: u64,
    ) -> RepairReport<M::Error> {
        let mut report = RepairReport {
            records: Vec::new(),
            clipped: 0,
            clipped_bytes: 0,
            restored: 0,
            restored_bytes: 0,
            failures: Vec::new(),
        };
        for slot in self.reverse.slots(inode) {
            self.repair_slot(mapper, slot, inode, file, size, &mut report);
        }
        if report.clipped > 0 {
            stats::bump(&self.counters.invalidations);
        }
        report
    }

    fn repair_slot<M: Mapper + ?Sized>(
        &self, mapper: &M, slot: u32, inode: InodeId, file: &M::File, size: u64,
        report: &mut RepairReport<M::Error>,
    ) {
        // The entry whose hand-off woke us, until we take it or pass it on.
        let mut woken: Option<EntryAt> = None;
        // Records this pass could not repair; not retried.
        let mut refused: Vec<u64> = Vec::new();
        loop {
            let (mut shard, local) = self.shard(slot);
            // Wait for anything in flight in the slot: a map of this inode may
            // have registered and not yet recorded.
            if let Some(locked) = shard.first_locked(local, ALL_PAGES.0, ALL_PAGES.1) {
                if let Some(previous) = woken.filter(|previous| *previous != locked) {
                    self.pass_on(&mut shard, local, slot, previous);
                }
                self.sleep_on(shard, local, slot, locked, WaitKind::Exclusive);
                woken = Some(locked);
                continue;
            }
            let target = shard
                .records(local, ALL_PAGES.0, ALL_PAGES.1)
                .iter()
                .find(|record| {
                    record.inode == inode
                        && !record.conforms_to(size)
                        && !refused.contains(&record.moffset)
                })
                .copied();
            let Some(target) = target else {
                if let Some(previous) = woken {
                    self.pass_on(&mut shard, local, slot, previous);
                }
                return;
            };
            let split = shard.words[local].split();
            let pages = (target.first_page(), target.end_page());
            if let (true, Some(split)) = (split, shard.split_mut(local)) {
                for page in pages.0..pages.1 {
                    split.locked.set(page, true);
                }
            } else {
                shard.words[local] = shard.words[local].set_locked(true);
            }
            if let Some(previous) = woken.take() {
                let taken = match previous {
                    EntryAt::Whole => !split,
                    EntryAt::Page(page) => split && (pages.0..pages.1).contains(&page),
                };
                if !taken {
                    self.pass_on(&mut shard, local, slot, previous);
                }
            }
            drop(shard);

            let (records, failed) = self.rebuild(mapper, &target, file, size, report);
            let Some(records) = records else {
                refused.push(target.moffset);
                let (mut shard, local) = self.shard(slot);
                if split {
                    self.unlock_pages(&mut shard, local, slot, pages, false);
                } else {
                    self.unlock_whole(&mut shard, local, slot, false);
                }
                continue;
            };
            if failed {
                refused.extend(records.iter().map(|record| record.moffset));
            }
            self.count_repair(&target, &records, report);
            for _ in 1..records.len() {
                self.reverse.add(inode, slot);
            }
            let (mut shard, local) = self.shard(slot);
            self.remove_record(&mut shard, local, target.moffset);
            let pieces = match records.as_slice() {
                [only] if !split && only.is_full_slot() => None,
                _ if !split => {
                    self.convert_locked_to_pages(&mut shard, local, slot);
                    Some(ALL_PAGES)
                }
                _ => Some(pages),
            };
            for record in &records {
                self.insert_record(&mut shard, local, *record);
            }
            match pieces {
                Some(pages) => self.unlock_pages(&mut shard, local, slot, pages, true),
                None => self.unlock_whole(&mut shard, local, slot, true),
            }
            report.records.extend_from_slice(&records);
        }
    }

    /// Re-places `target` (locked by the caller) for a file of `size` bytes.
    /// Returns the records that replace it (`None`: the VMM was not changed)
    /// and whether a call failed; failures go to `report`.
    fn rebuild<M: Mapper + ?Sized>(
        &self, mapper: &M, target: &MappingRecord, file: &M::File, size: u64,
        report: &mut RepairReport<M::Error>,
    ) -> (Option<Records>, bool) {
        let replaces = mapper.map_replaces_existing();
        if !replaces && target.in_vmm() {
            if let Err(source) = mapper.unmap(target.moffset, target.len) {
                stats::bump(&self.counters.unmap_failures);
                report.failures.push(TeardownFailure::Unmap {
                    record: *target,
                    source,
                });
                return (None, true);
            }
            stats::bump(&self.counters.unmaps);
        }
        let placed = self.place(mapper, &Extent::of(target), file, Some(size), true);
        let failed = !placed.failures.is_empty();
        for failure in placed.failures {
            report.failures.push(match failure.part {
                Part::File => TeardownFailure::Remap {
                    record: *target,
                    source: failure.source,
                },
                Part::Placeholder => TeardownFailure::Placeholder {
                    record: *target,
                    source: failure.source,
                },
            });
        }
        if replaces && placed.made.is_empty() {
            // Nothing replaced what the VMM held: the record stands.
            return (None, failed);
        }
        // Parts no call covers: nothing is there after the unmap, or — with a
        // replacing mapper — what was there before.
        let fill = |moffset: u64, len: u64| {
            let mut record = *target;
            record.foffset = target.foffset + (moffset - target.moffset);
            record.moffset = moffset;
            record.len = len;
            if !replaces {
                record.state = MappingState::Zapped { placeholder: false };
            }
            record
        };
        // At most two: `place` maps from the extent's start (file part, then
        // placeholder), so only a tail can be left uncovered.
        let mut records = Records::new();
        let mut cursor = target.moffset;
        for record in placed.made {
            if record.moffset > cursor {
                records.push(fill(cursor, record.moffset - cursor));
            }
            cursor = record.end();
            records.push(record);
        }
        if cursor < target.end() {
            records.push(fill(cursor, target.end() - cursor));
        }
        (Some(records), failed)
    }

    /// Counts a repair of `before` into `after` in the report and the window.
    fn count_repair(
        &self, before: &MappingRecord, after: &[MappingRecord],
        report: &mut RepairReport<impl std::error::Error + 'static>,
    ) {
        let file_bytes = |record: &MappingRecord| if record.is_live() { record.len } else { 0 };
        let was = file_bytes(before);
        let now: u64 = after.iter().map(file_bytes).sum();
        if now < was {
            report.clipped += 1;
            report.clipped_bytes += was - now;
            stats::bump(&self.counters.clips);
            stats::add(&self.counters.clipped_bytes, was - now);
        } else if now > was {
            report.restored += 1;
            report.restored_bytes += now - was;
            stats::bump(&self.counters.restores);
            stats::add(&self.counters.restored_bytes, now - was);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::file_pages_end;
    use crate::geometry::{PAGE_SIZE, SLOT_SIZE};

    #[test]
    fn file_part_is_page_granular() {
        assert_eq!(file_pages_end(0), 0);
        assert_eq!(file_pages_end(1), PAGE_SIZE);
        assert_eq!(file_pages_end(PAGE_SIZE), PAGE_SIZE);
        assert_eq!(file_pages_end(u64::MAX) % PAGE_SIZE, 0);
        // A 2 MiB extent of a file cut 5 pages and 7 bytes in keeps 6 pages.
        assert_eq!(file_part(0, SLOT_SIZE, 5 * PAGE_SIZE + 7), 6 * PAGE_SIZE);
        assert_eq!(file_part(SLOT_SIZE, SLOT_SIZE, 5 * PAGE_SIZE), 0);
        assert_eq!(file_part(0, SLOT_SIZE, 4 * SLOT_SIZE), SLOT_SIZE);
        assert_eq!(file_part(u64::MAX - PAGE_SIZE + 1, PAGE_SIZE, u64::MAX), 0);
        let record = MappingRecord {
            moffset: 0,
            len: SLOT_SIZE,
            inode: InodeId(1),
            foffset: 0,
            writable: false,
            state: MappingState::Live,
        };
        assert!(record.conforms_to(SLOT_SIZE) && record.conforms_to(SLOT_SIZE - 1));
        assert!(!record.conforms_to(SLOT_SIZE - PAGE_SIZE));
        let zapped = MappingRecord {
            state: MappingState::Zapped { placeholder: true },
            ..record
        };
        assert!(zapped.conforms_to(0) && !zapped.conforms_to(1));
    }
}
