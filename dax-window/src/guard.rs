//! [`SlotGuard`]: the entry locks of a grabbed range, and what may be done
//! under them.
//!
//! A guard holds entry lock bits, never a mutex, so a daemon may keep it across
//! a slow backend-channel round trip: other slots, and lookups of this one, go
//! on meanwhile. Dropping the guard unlocks and wakes as the rules in
//! `window.rs` say.

use thiserror::Error;

use crate::entry::{InodeId, MappingRecord, MappingState};
use crate::geometry::{Order, WindowRange, PAGE_SIZE, SLOT_SIZE};
use crate::repair::Extent;
use crate::stats;
use crate::{Mapper, Window};

/// Why [`SlotGuard::map`] did not map.
#[derive(Debug, Error)]
pub enum MapError<E: std::error::Error + 'static> {
    /// Records already overlap the range; unmap them first.
    #[error("range already holds {} mapping(s)", existing.len())]
    Occupied {
        /// The records in the way.
        existing: Vec<MappingRecord>,
    },
    /// The file offset is not page aligned, or the file range overflows.
    #[error("file range {foffset:#x}+{len:#x} is not page aligned or overflows")]
    FileRange {
        /// Requested file offset.
        foffset: u64,
        /// Requested length.
        len: u64,
    },
    /// The mapper refused a piece. Pieces mapped before it were unmapped again,
    /// except `stuck` ones whose unmap failed too (they stay recorded, because
    /// the VMM still maps them).
    #[error("mapping {moffset:#x}+{len:#x} failed")]
    Mapper {
        /// Window offset of the refused piece.
        moffset: u64,
        /// Length of the refused piece.
        len: u64,
        /// Earlier pieces that could not be rolled back.
        stuck: Vec<MappingRecord>,
        /// The mapper's error.
        #[source]
        source: E,
    },
}

/// Why [`SlotGuard::unmap`] stopped.
#[derive(Debug, Error)]
pub enum UnmapError<E: std::error::Error + 'static> {
    /// A record reaches outside the guarded range; a VMM unmap must name a whole
    /// mapping, so removing part of it needs the whole mapping unmapped (and the
    /// rest mapped back) or the request refused.
    #[error("mapping {:#x}+{:#x} extends beyond the range", record.moffset, record.len)]
    Partial {
        /// The straddling record.
        record: MappingRecord,
    },
    /// The mapper refused to unmap `record`; it stays recorded. Records in
    /// `removed` were unmapped before the failure.
    #[error("unmapping {:#x}+{:#x} failed", record.moffset, record.len)]
    Mapper {
        /// The record still mapped.
        record: MappingRecord,
        /// Records already unmapped and removed.
        removed: Vec<MappingRecord>,
        /// The mapper's error.
        #[source]
        source: E,
    },
}

/// Why [`SlotGuard::upgrade`] failed.
#[derive(Debug, Error)]
pub enum UpgradeError<E: std::error::Error + 'static> {
    /// A record in the range is zapped, belongs to another inode or extends
    /// beyond the range.
    #[error("mapping {:#x}+{:#x} cannot be upgraded in place", record.moffset, record.len)]
    NotUpgradable {
        /// The offending record.
        record: MappingRecord,
    },
    /// The mapper refused the unmap (or, for a mapper that replaces in place,
    /// the writable map); the read-only mapping is unchanged.
    #[error("upgrading {:#x}+{:#x} failed; the read-only mapping is unchanged", record.moffset, record.len)]
    Unchanged {
        /// The unchanged record.
        record: MappingRecord,
        /// The mapper's error.
        #[source]
        source: E,
    },
    /// The read-only mapping was unmapped but the writable one was refused: the
    /// extent is now unmapped and its record removed.
    #[error("mapping {:#x}+{:#x} writable failed after unmapping it", record.moffset, record.len)]
    Remap {
        /// The record as it was before the upgrade.
        record: MappingRecord,
        /// The mapper's error.
        #[source]
        source: E,
    },
}

/// Locks on every entry of a range, released on drop.
#[derive(Debug)]
pub struct SlotGuard<'w> {
    window: &'w Window,
    range: WindowRange,
    order: Order,
    /// Set once a record was removed or zapped under the guard: the release
    /// then wakes every waiter instead of one.
    changed: bool,
    /// Slots of an [`Order::Slot`] guard whose entry was turned into 512
    /// locked 4 KiB entries to hold a mapping cut at the file's end (see
    /// [`SlotGuard::map`]); released page by page.
    paged: Vec<u32>,
}

/// Unregisters an in-flight map from the reverse index unless disarmed
/// (also when the mapper panics).
struct Registration<'a> {
    window: &'a Window,
    inode: InodeId,
    slot: u32,
    armed: bool,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.window.reverse.remove(self.inode, self.slot);
        }
    }
}

impl<'w> SlotGuard<'w> {
    pub(crate) fn new(window: &'w Window, range: WindowRange, order: Order) -> Self {
        Self {
            window,
            range,
            order,
            changed: false,
            paged: Vec::new(),
        }
    }

    /// The locked range.
    pub fn range(&self) -> WindowRange {
        self.range
    }

    /// The order the range was locked at.
    pub fn order(&self) -> Order {
        self.order
    }

    fn slots(&self) -> std::ops::RangeInclusive<u32> {
        let (first, last) = self.range.slot_span();
        first..=last
    }

    /// Every record overlapping the range, with exact extents (a record may
    /// reach beyond a 4 KiB-order range when it was made at 2 MiB).
    pub fn mappings(&self) -> Vec<MappingRecord> {
        self.window.records_in(self.range)
    }

    /// Maps the whole range to `file` at `foffset` through `mapper`, one VMM
    /// mapping per slot the range touches, and records each. The range must be
    /// free of records.
    ///
    /// When the mapper reports the file's size ([`Mapper::file_size`]), each
    /// slot's piece maps the file only over its pages below `round_up(size, 4
    /// KiB)`, and a placeholder ([`Mapper::map_placeholder`]) over the rest: a
    /// live record and a zapped one. (A guest maps whole 2 MiB ranges of
    /// shorter files; a VMM page past the file's end would raise SIGBUS.) A
    /// 2 MiB entry that gets two records is turned into locked 4 KiB entries,
    /// released with the guard.
    ///
    /// Each piece's inode is registered in the reverse index *before* the size
    /// is read and the mapper is called, so any repair that starts after a
    /// truncation either finds this slot (and waits for this guard) or this
    /// map reads the truncated size.
    ///
    /// On failure the index is as it was: pieces already mapped are unmapped
    /// again (see [`MapError::Mapper`] for pieces whose rollback failed).
    pub fn map<M: Mapper + ?Sized>(
        &mut self, mapper: &M, file: &M::File, inode: InodeId, foffset: u64, writable: bool,
    ) -> Result<Vec<MappingRecord>, MapError<M::Error>> {
        let window = self.window;
        let existing = self.mappings();
        if !existing.is_empty() {
            return Err(MapError::Occupied { existing });
        }
        if foffset % PAGE_SIZE != 0 || foffset.checked_add(self.range.len()).is_none() {
            return Err(MapError::FileRange {
                foffset,
                len: self.range.len(),
            });
        }
        let late_register = window.faulty(crate::fault_point!(RegisterAfterMap));
        // The records returned; each lies inside one slot (`slot_of`).
        let mut made: Vec<MappingRecord> = Vec::new();
        for slot in self.slots() {
            let (first, end) = self.range.pages_in_slot(slot);
            let moffset = u64::from(slot) * SLOT_SIZE + u64::from(first) * PAGE_SIZE;
            let extent = Extent {
                moffset,
                len: u64::from(end - first) * PAGE_SIZE,
                inode,
                foffset: foffset + (moffset - self.range.moffset()),
                writable,
            };
            let mut registration = Registration {
                window,
                inode,
                slot,
                armed: !late_register,
            };
            if !late_register {
                window.reverse.add(inode, slot);
            }
            let size = match mapper.file_size(file) {
                Ok(size) => size,
                Err(source) => {
                    drop(registration);
                    stats::bump(&window.counters.map_failures);
                    let stuck = self.roll_back(mapper, made);
                    return Err(MapError::Mapper {
                        moffset: extent.moffset,
                        len: extent.len,
                        stuck,
                        source,
                    });
                }
            };
            let placed = window.place(mapper, &extent, file, size, false);
            if !placed.made.is_empty() {
                if late_register {
                    window.reverse.add(inode, slot);
                }
                registration.armed = false;
                for _ in 1..placed.made.len() {
                    window.reverse.add(inode, slot);
                }
                let (mut shard, local) = window.shard(slot);
                // A 2 MiB entry holds one full-slot record; anything else (a
                // head and a placeholder, or a head alone before the rollback
                // of a refused placeholder) needs 4 KiB entries.
                let whole = matches!(placed.made.as_slice(), [only] if only.is_full_slot());
                if !whole && self.order == Order::Slot && !self.paged.contains(&slot) {
                    window.convert_locked_to_pages(&mut shard, local, slot);
                    self.paged.push(slot);
                }
                for record in placed.made {
                    window.insert_record(&mut shard, local, record);
                    made.push(record);
                }
            }
            if let Some(failure) = placed.failures.into_iter().next() {
                drop(registration);
                let stuck = self.roll_back(mapper, made);
                return Err(MapError::Mapper {
                    moffset: failure.moffset,
                    len: failure.len,
                    stuck,
                    source: failure.source,
                });
            }
        }
        Ok(made)
    }

    /// Unmaps pieces a failed [`map`](Self::map) had made; returns those the
    /// mapper would not unmap.
    fn roll_back<M: Mapper + ?Sized>(
        &mut self, mapper: &M, made: Vec<MappingRecord>,
    ) -> Vec<MappingRecord> {
        let mut stuck = Vec::new();
        for record in made.into_iter().rev() {
            let slot = slot_of(&record);
            if record.in_vmm() {
                if mapper.unmap(record.moffset, record.len).is_err() {
                    stats::bump(&self.window.counters.unmap_failures);
                    stuck.push(record);
                    continue;
                }
                stats::bump(&self.window.counters.unmaps);
            }
            self.forget(slot, record.moffset);
        }
        stuck
    }

    /// Drops the record at `moffset` of `slot` from the slot and the reverse
    /// index.
    fn forget(&mut self, slot: u32, moffset: u64) {
        let window = self.window;
        let removed = {
            let (mut shard, local) = window.shard(slot);
            window.remove_record(&mut shard, local, moffset)
        };
        if let Some(record) = removed {
            window.reverse.remove(record.inode, slot);
            self.changed = true;
        }
    }

    /// Unmaps and forgets every record in the range. Zapped records without a
    /// placeholder are only forgotten (the VMM maps nothing there). Refuses,
    /// before touching anything, when a record extends beyond the range.
    pub fn unmap<M: Mapper + ?Sized>(
        &mut self, mapper: &M,
    ) -> Result<Vec<MappingRecord>, UnmapError<M::Error>> {
        // Returned as the removed records; cut back to those removed before a
        // refused unmap.
        let mut removed = self.mappings();
        if let Some(record) = removed
            .iter()
            .find(|record| !self.range.contains(record.moffset, record.len))
        {
            return Err(UnmapError::Partial { record: *record });
        }
        for index in 0..removed.len() {
            let record = removed[index];
            if record.in_vmm() {
                if let Err(source) = mapper.unmap(record.moffset, record.len) {
                    stats::bump(&self.window.counters.unmap_failures);
                    removed.truncate(index);
                    return Err(UnmapError::Mapper {
                        record,
                        removed,
                        source,
                    });
                }
                stats::bump(&self.window.counters.unmaps);
            }
            self.forget(slot_of(&record), record.moffset);
        }
        Ok(removed)
    }

    /// Makes every read-only record in the range writable (the guest re-sends
    /// SETUPMAPPING with WRITE on a write fault). Every record must be live, of
    /// `inode`, and inside the range.
    ///
    /// Unless the mapper replaces mappings in place
    /// ([`Mapper::map_replaces_existing`]), this is an unmap followed by a map:
    /// between the two the extent is unmapped in the VMM, and a guest access
    /// then faults the VMM. The gap lasts two backend round trips, with the
    /// entry locked so no other request can observe or widen it.
    pub fn upgrade<M: Mapper + ?Sized>(
        &mut self, mapper: &M, file: &M::File, inode: InodeId,
    ) -> Result<Vec<MappingRecord>, UpgradeError<M::Error>> {
        let existing = self.mappings();
        if let Some(record) = existing.iter().find(|record| {
            record.inode != inode || !self.range.contains(record.moffset, record.len)
        }) {
            return Err(UpgradeError::NotUpgradable { record: *record });
        }
        let window = self.window;
        let mut upgraded = Vec::with_capacity(existing.len());
        for record in existing {
            if record.writable {
                upgraded.push(record);
                continue;
            }
            let (moffset, len) = (record.moffset, record.len);
            if !record.is_live() {
                // Pages past the file's end: the placeholder standing in for
                // them takes the new access too.
                upgraded.push(self.upgrade_zapped(mapper, record)?);
                continue;
            }
            if !mapper.map_replaces_existing() {
                if let Err(source) = mapper.unmap(moffset, len) {
                    stats::bump(&window.counters.unmap_failures);
                    return Err(UpgradeError::Unchanged { record, source });
                }
                stats::bump(&window.counters.unmaps);
            }
            if let Err(source) = mapper.map(moffset, len, file, record.foffset, true) {
                stats::bump(&window.counters.map_failures);
                if mapper.map_replaces_existing() {
                    return Err(UpgradeError::Unchanged { record, source });
                }
                self.forget(slot_of(&record), moffset);
                return Err(UpgradeError::Remap { record, source });
            }
            let (mut shard, local) = window.shard(slot_of(&record));
            let updated = window.update_record(&mut shard, local, moffset, |r| r.writable = true);
            stats::bump(&window.counters.maps);
            stats::bump(&window.counters.upgrades);
            upgraded.extend(updated);
        }
        Ok(upgraded)
    }

    /// Gives a zapped record (pages past its file's end) write access: the
    /// placeholder the VMM holds for it, if any, is mapped again writable,
    /// so a guest write through a stale mapping lands in zeros instead of
    /// faulting the VMM. Without a placeholder only the record changes.
    fn upgrade_zapped<M: Mapper + ?Sized>(
        &mut self, mapper: &M, record: MappingRecord,
    ) -> Result<MappingRecord, UpgradeError<M::Error>> {
        let window = self.window;
        let (moffset, len) = (record.moffset, record.len);
        let mut placeholder = false;
        let mut failure = None;
        if record.in_vmm() {
            if !mapper.map_replaces_existing() {
                if let Err(source) = mapper.unmap(moffset, len) {
                    stats::bump(&window.counters.unmap_failures);
                    return Err(UpgradeError::Unchanged { record, source });
                }
                stats::bump(&window.counters.unmaps);
            }
            match mapper.map_placeholder(moffset, len, true) {
                Ok(mapped) => {
                    placeholder = mapped;
                    if mapped {
                        stats::bump(&window.counters.maps);
                    }
                }
                Err(source) => {
                    stats::bump(&window.counters.map_failures);
                    if mapper.map_replaces_existing() {
                        return Err(UpgradeError::Unchanged { record, source });
                    }
                    // The read-only placeholder is gone and nothing replaced it.
                    failure = Some(source);
                }
            }
        }
        let (mut shard, local) = window.shard(slot_of(&record));
        let updated = window.update_record(&mut shard, local, moffset, |r| {
            r.writable = failure.is_none();
            r.state = MappingState::Zapped { placeholder };
        });
        drop(shard);
        match failure {
            Some(source) => Err(UpgradeError::Remap { record, source }),
            None => Ok(updated.unwrap_or(record)),
        }
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let window = self.window;
        for slot in self.slots() {
            let (mut shard, local) = window.shard(slot);
            if self.order == Order::Slot && !self.paged.contains(&slot) {
                window.unlock_whole(&mut shard, local, slot, self.changed);
            } else {
                let pages = self.range.pages_in_slot(slot);
                window.unlock_pages(&mut shard, local, slot, pages, self.changed);
            }
        }
    }
}

/// The slot a record lives in.
pub(crate) fn slot_of(record: &MappingRecord) -> u32 {
    (record.moffset / SLOT_SIZE) as u32
}
