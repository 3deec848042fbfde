//! Whole-inode and whole-window operations: reset, waiting for a range to
//! settle, the reverse index (repairs after a file changed size are in
//! `repair.rs`).
//!
//! Each walks slots one at a time and holds at most one entry lock at a time,
//! so it can run concurrently with grabs (which lock in ascending order) without
//! deadlock.

use thiserror::Error;

use crate::entry::{InodeId, MappingRecord, Records};
use crate::geometry::{RangeError, PAGES_PER_SLOT, SLOT_SIZE};
use crate::stats;
use crate::wait::WaitKind;
use crate::window::EntryAt;
use crate::{Mapper, Window};

const ALL_PAGES: (u16, u16) = (0, PAGES_PER_SLOT as u16);

/// A VMM call that failed while tearing a record down or repairing it.
#[derive(Debug, Error)]
pub enum TeardownFailure<E: std::error::Error + 'static> {
    /// The file mapping could not be unmapped; the record stays live.
    #[error("unmapping {:#x}+{:#x} failed; the file stays mapped", record.moffset, record.len)]
    Unmap {
        /// The record, unchanged.
        record: MappingRecord,
        /// The mapper's error.
        #[source]
        source: E,
    },
    /// The file mapping was unmapped for a repair but mapping the part below
    /// the file's end back failed: that part holds a placeholder (or nothing).
    #[error("mapping the file back at {:#x}+{:#x} failed", record.moffset, record.len)]
    Remap {
        /// The record as it was before the repair.
        record: MappingRecord,
        /// The mapper's error.
        #[source]
        source: E,
    },
    /// No placeholder could be put in place of file pages past the file's
    /// end: that part holds nothing.
    #[error("mapping a placeholder in {:#x}+{:#x} failed", record.moffset, record.len)]
    Placeholder {
        /// The record as it was before the repair.
        record: MappingRecord,
        /// The mapper's error.
        #[source]
        source: E,
    },
}

/// What [`Window::reset`] did.
#[derive(Debug)]
pub struct ResetReport<E: std::error::Error + 'static> {
    /// Every record the window held, as it was before the reset.
    pub removed: Vec<MappingRecord>,
    /// Unmaps that failed (the records are forgotten regardless).
    pub failures: Vec<TeardownFailure<E>>,
}

impl Window {
    /// Empties the whole window: waits for each locked entry, unmaps every
    /// record the VMM holds (file or placeholder) through `mapper`, forgets all
    /// records and wakes every waiter. Slots are processed one at a time, so a
    /// grab may fill an already reset slot before the reset returns; callers
    /// that need a quiet window stop issuing grabs first.
    ///
    /// When the VMM is gone, pass a mapper whose calls succeed without doing
    /// anything.
    pub fn reset<M: Mapper + ?Sized>(&self, mapper: &M) -> ResetReport<M::Error> {
        stats::bump(&self.counters.resets);
        let mut report = ResetReport {
            removed: Vec::new(),
            failures: Vec::new(),
        };
        for slot in 0..self.geometry().slot_count() as u32 {
            self.reset_slot(mapper, slot, &mut report);
        }
        report
    }

    fn reset_slot<M: Mapper + ?Sized>(
        &self, mapper: &M, slot: u32, report: &mut ResetReport<M::Error>,
    ) {
        let mut woken: Option<EntryAt> = None;
        let (mut shard, local) = loop {
            let (mut shard, local) = self.shard(slot);
            match shard.first_locked(local, ALL_PAGES.0, ALL_PAGES.1) {
                Some(locked) => {
                    // Woken for one entry but now waiting for another: hand the
                    // first one on before sleeping.
                    if let Some(previous) = woken.filter(|previous| *previous != locked) {
                        self.pass_on(&mut shard, local, slot, previous);
                    }
                    self.sleep_on(shard, local, slot, locked, WaitKind::Exclusive);
                    woken = Some(locked);
                }
                None => break (shard, local),
            }
        };
        // Anything present is taken whole, so a hand-off that woke us is
        // consumed; an empty slot means the entry is gone (nobody to wake).
        let word = shard.words[local];
        if word.handle().is_none() {
            return;
        }
        let split = word.split();
        if let (true, Some(split)) = (split, shard.split_mut(local)) {
            for page in ALL_PAGES.0..ALL_PAGES.1 {
                split.locked.set(page, true);
            }
        } else {
            shard.words[local] = word.set_locked(true);
        }
        let records = Records::from_slice(shard.records(local, ALL_PAGES.0, ALL_PAGES.1));
        drop(shard);

        for record in &records {
            if !record.in_vmm() {
                continue;
            }
            match mapper.unmap(record.moffset, record.len) {
                Ok(()) => stats::bump(&self.counters.unmaps),
                Err(source) => {
                    stats::bump(&self.counters.unmap_failures);
                    report.failures.push(TeardownFailure::Unmap {
                        record: *record,
                        source,
                    });
                }
            }
        }
        {
            let (mut shard, local) = self.shard(slot);
            for record in &records {
                self.remove_record(&mut shard, local, record.moffset);
            }
        }
        for record in &records {
            self.reverse.remove(record.inode, slot);
        }
        let (mut shard, local) = self.shard(slot);
        if split {
            self.unlock_pages(&mut shard, local, slot, ALL_PAGES, true);
        } else {
            self.unlock_whole(&mut shard, local, slot, true);
        }
        report.removed.extend(records);
    }

    /// Waits until no entry overlapping `[moffset, moffset + len)` is locked,
    /// then returns the records overlapping it (slot by slot, so not one atomic
    /// snapshot). Takes no lock, so it waits *shared*: an unlock's hand-off
    /// always goes to a thread that will pass it on.
    pub fn wait_unlocked(&self, moffset: u64, len: u64) -> Result<Vec<MappingRecord>, RangeError> {
        let range = self.geometry().range(moffset, len)?;
        let kind = if self.faulty(crate::fault_point!(SharedPathWaitsExclusive)) {
            WaitKind::Exclusive
        } else {
            WaitKind::Shared
        };
        let (first, last) = range.slot_span();
        let mut found = Vec::new();
        for slot in first..=last {
            let (a, b) = range.pages_in_slot(slot);
            loop {
                let (shard, local) = self.shard(slot);
                match shard.first_locked(local, a, b) {
                    Some(locked) => self.sleep_on(shard, local, slot, locked, kind),
                    None => {
                        found.extend_from_slice(shard.records(local, a, b));
                        break;
                    }
                }
            }
        }
        Ok(found)
    }

    /// Window offsets of the slots that hold, or are about to hold, mappings of
    /// `inode` (the reverse index).
    pub fn slots_of(&self, inode: InodeId) -> Vec<u64> {
        self.reverse
            .slots(inode)
            .into_iter()
            .map(|slot| u64::from(slot) * SLOT_SIZE)
            .collect()
    }

    /// Every record of `inode` (live and zapped), in window order.
    pub fn mappings_of(&self, inode: InodeId) -> Vec<MappingRecord> {
        let mut found = Vec::new();
        for slot in self.reverse.slots(inode) {
            let (shard, local) = self.shard(slot);
            found.extend(
                shard
                    .records(local, ALL_PAGES.0, ALL_PAGES.1)
                    .iter()
                    .filter(|record| record.inode == inode),
            );
        }
        found
    }
}
