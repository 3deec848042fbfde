//! The window: sharded slot words, entry locking and the wake rules.
//!
//! ## Who guards what
//! | state | guarded by |
//! |-------|------------|
//! | slot words, detail slab, split-slot page bits and records of slot `s` | mutex of shard `s % shards` (held only for short, I/O-free sections) |
//! | an entry's *contents* between critical sections (the records of a locked range may only be changed by the lock holder) | the entry lock bit (LOCKED in the word, or the page bits) |
//! | wait queues | bucket mutexes of the [`WaitTable`] (taken inside a shard section, never the other way round) |
//! | inode -> slots | reverse-index shard mutexes (never held with another lock) |
//! | counters | relaxed atomics, updated inside the shard section that made the change |
//!
//! No mutex is ever held across a [`crate::Mapper`] call; only entry locks are.
//! Entry locks nest only in ascending window order (a grab of several slots
//! locks them in order; every other path holds one entry at a time), so they
//! cannot deadlock among themselves.
//!
//! ## The wake rules (the state machine)
//! | event | wakeup for the entry's key |
//! |-------|----------------------------|
//! | unlock, the entry still holds a record | next: one exclusive waiter (plus any shared waiters) |
//! | unlock after the holder removed or zapped a record, or the entry is left empty | all |
//! | a 2 MiB entry is split into 4 KiB entries, or 4 KiB entries merge back | all, on every key that disappears |
//! | a woken exclusive waiter leaves a present, unlocked entry alone | next (passes the hand-off on) |
//! | a woken waiter finds its entry gone | nobody (whoever removed it woke everyone) |
//! | a 2 MiB grab meets a locked 4 KiB entry | nobody; the grab returns a conflict instead of sleeping |
//! | a path that never locks the entry (`wait_unlocked`) | it waits *shared*, so a hand-off is never lost on it |

use std::time::Instant;

use thiserror::Error;

use crate::entry::{Detail, MappingRecord, SlotWord, SplitSlot};
use crate::geometry::{Order, RangeError, WindowGeometry, WindowRange, PAGE_SIZE, SLOT_SIZE};
use crate::reverse::ReverseIndex;
pub(crate) use crate::shard::Shard;
use crate::stats::{self, Counters, WindowStats};
use crate::sync::{self, Arc, CachePadded, Mutex, MutexGuard};
use crate::wait::{WaitKey, WaitKind, WaitTable, WakeMode};
use crate::SlotGuard;

/// A deliberately wrong wake rule, for showing that the loom models catch it.
/// Only exists in `cfg(loom)` builds.
#[cfg(loom)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFault {
    /// A 2 MiB grab that meets a locked 4 KiB entry sleeps on its own (2 MiB)
    /// key instead of returning a conflict — Linux's 2019 PMD-waits-on-PTE bug.
    WaitOnSmallerOrder,
    /// A woken waiter that leaves a present entry alone does not pass the
    /// hand-off on (the "found nothing, woke nobody" half of the 2021 bug,
    /// applied to an entry that is still there).
    DeclineWakesNobody,
    /// Removing, zapping, emptying or splitting an entry wakes one waiter
    /// instead of all (the "invalidation wakes next" half of the 2021 bug).
    RemovalWakesNext,
    /// `wait_unlocked` waits exclusively although it never locks the entry,
    /// so a hand-off given to it is lost.
    SharedPathWaitsExclusive,
    /// A map registers its inode in the reverse index only after the VMM
    /// mapped it, so a concurrent invalidation can miss it.
    RegisterAfterMap,
}

/// Sizing and sharing options for [`Window::with_config`].
#[derive(Debug, Default, Clone)]
pub struct WindowConfig {
    /// Number of slot shards (rounded up to a power of two); default scales with
    /// the window, 1 per 128 slots, at most 64.
    pub slot_shards: Option<usize>,
    /// Number of reverse-index shards; default 1 per 256 slots, at most 16.
    pub inode_shards: Option<usize>,
    /// Number of wait buckets when the window gets its own table; default 1 per
    /// 32 slots, between 4 and 1024.
    pub wait_buckets: Option<usize>,
    /// Share an existing wait table (e.g. one per process, like Linux's).
    pub wait_table: Option<Arc<WaitTable>>,
    /// Test-only wrong wake rule (loom builds only).
    #[cfg(loom)]
    pub fault: Option<InjectedFault>,
}

/// Why a grab returned without locking anything.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GrabConflict {
    /// A 2 MiB grab met a locked 4 KiB entry in the slot (it never sleeps on a
    /// smaller entry); retry at [`Order::Page`] or later.
    #[error("slot at {slot:#x} has a locked 4 KiB entry at {moffset:#x}")]
    LockedPage {
        /// Start of the slot.
        slot: u64,
        /// The locked page.
        moffset: u64,
    },
    /// A 2 MiB grab met a slot holding mappings smaller than the slot; retry at
    /// [`Order::Page`].
    #[error("slot at {slot:#x} holds mappings smaller than 2 MiB")]
    PageMappings {
        /// Start of the slot.
        slot: u64,
    },
}

/// Why [`Window::grab`] failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GrabError {
    /// The range is not valid for this window and order.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// An entry of a smaller order is in the way.
    #[error(transparent)]
    Conflict(#[from] GrabConflict),
}

/// An entry inside a slot: the order-9 entry or one page's order-0 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryAt {
    Whole,
    Page(u16),
}

static NEXT_WINDOW_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The locked-entry index of one DAX window.
///
/// Pure and I/O-free: it never talks to the VMM itself. Operations that must
/// change what the VMM maps take a [`crate::Mapper`] and call it with only the
/// affected entries locked, never a global lock.
#[derive(Debug)]
pub struct Window {
    id: u64,
    geometry: WindowGeometry,
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    shard_bits: u32,
    pub(crate) waits: Arc<WaitTable>,
    pub(crate) reverse: ReverseIndex,
    pub(crate) counters: Counters,
    #[cfg(loom)]
    fault: Option<InjectedFault>,
}

impl Window {
    /// An empty window with default sizing and its own wait table.
    pub fn new(geometry: WindowGeometry) -> Self {
        Self::with_config(geometry, WindowConfig::default())
    }

    /// An empty window with explicit sizing.
    pub fn with_config(geometry: WindowGeometry, config: WindowConfig) -> Self {
        let slots = geometry.slot_count() as usize;
        let shard_count = config
            .slot_shards
            .unwrap_or(slots / 128)
            .clamp(1, 64.min(slots))
            .next_power_of_two()
            .min(slots.next_power_of_two());
        let shard_bits = shard_count.trailing_zeros();
        let shards = (0..shard_count)
            .map(|index| {
                let words = (index..slots).step_by(shard_count).count();
                CachePadded(Mutex::new(Shard {
                    words: vec![SlotWord::EMPTY; words].into_boxed_slice(),
                    details: Vec::new(),
                    free: Vec::new(),
                }))
            })
            .collect();
        let waits = config.wait_table.unwrap_or_else(|| {
            Arc::new(WaitTable::new(
                config.wait_buckets.unwrap_or((slots / 32).clamp(4, 1024)),
            ))
        });
        Self {
            id: NEXT_WINDOW_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            geometry,
            shards,
            shard_bits,
            waits,
            reverse: ReverseIndex::new(config.inode_shards.unwrap_or((slots / 256).clamp(1, 16))),
            counters: Counters::default(),
            #[cfg(loom)]
            fault: config.fault,
        }
    }

    /// The window's geometry.
    pub fn geometry(&self) -> &WindowGeometry {
        &self.geometry
    }

    /// The identifier used in this window's wait keys.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> WindowStats {
        self.counters.snapshot(self.geometry.slot_count())
    }

    /// Bytes the index occupies now: the window object, shard words and
    /// details, reverse index and (even when shared) the wait table.
    pub fn index_bytes(&self) -> usize {
        let mut bytes = std::mem::size_of::<Self>() + std::mem::size_of_val(&*self.shards);
        for shard in self.shards.iter() {
            bytes += sync::lock(shard).heap_bytes();
        }
        bytes + self.reverse.heap_bytes() + self.waits.heap_bytes()
    }

    #[cfg(loom)]
    pub(crate) fn faulty(&self, fault: InjectedFault) -> bool {
        self.fault == Some(fault)
    }

    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn faulty(&self, _fault: FaultPoint) -> bool {
        false
    }

    /// Locks the shard of `slot`; returns the guard and the slot's index in it.
    pub(crate) fn shard(&self, slot: u32) -> (MutexGuard<'_, Shard>, usize) {
        let index = slot as usize & (self.shards.len() - 1);
        (
            sync::lock(&self.shards[index]),
            (slot >> self.shard_bits) as usize,
        )
    }

    pub(crate) fn shard_mutexes(&self) -> impl Iterator<Item = &Mutex<Shard>> {
        self.shards.iter().map(|shard| &shard.0)
    }

    pub(crate) fn slot_of_local(&self, shard: usize, local: usize) -> u32 {
        ((local << self.shard_bits) | shard) as u32
    }

    pub(crate) fn key(&self, slot: u32, entry: EntryAt) -> WaitKey {
        let page = match entry {
            EntryAt::Whole => 0,
            EntryAt::Page(page) => u64::from(page),
        };
        WaitKey {
            window: self.id,
            start: u64::from(slot) * SLOT_SIZE + page * PAGE_SIZE,
        }
    }

    /// Marks `entry` as waited on, queues the caller on its key and sleeps.
    pub(crate) fn sleep_on(
        &self, mut shard: MutexGuard<'_, Shard>, local: usize, slot: u32, entry: EntryAt,
        kind: WaitKind,
    ) {
        match entry {
            EntryAt::Whole => shard.words[local] = shard.words[local].set_waiters(true),
            EntryAt::Page(page) => {
                if let Some(split) = shard.split_mut(local) {
                    split.waiters.set(page, true);
                }
            }
        }
        self.sleep_keyed(shard, self.key(slot, entry), kind);
    }

    fn sleep_keyed(&self, shard: MutexGuard<'_, Shard>, key: WaitKey, kind: WaitKind) {
        stats::bump(&self.counters.waits);
        let started = Instant::now();
        self.waits.sleep(shard, key, kind);
        stats::add(
            &self.counters.wait_nanos,
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
        );
    }

    /// The wake mode for an entry that was removed, zapped, emptied or split.
    pub(crate) fn removal_mode(&self) -> WakeMode {
        if self.faulty(fault_point!(RemovalWakesNext)) {
            WakeMode::Next
        } else {
            WakeMode::All
        }
    }

    /// Wakes waiters of the order-9 entry of `slot` (if any are queued) and
    /// keeps the WAITERS bit exact.
    pub(crate) fn wake_whole(&self, shard: &mut Shard, local: usize, slot: u32, mode: WakeMode) {
        let word = shard.words[local];
        if word.waiters() {
            let remaining = self.waits.wake(self.key(slot, EntryAt::Whole), mode);
            shard.words[local] = word.set_waiters(remaining);
        }
    }

    /// Wakes waiters of page `page` of split `slot` and keeps its bit exact.
    fn wake_page(&self, split: &mut SplitSlot, slot: u32, page: u16, mode: WakeMode) {
        if split.waiters.test(page) {
            let remaining = self.waits.wake(self.key(slot, EntryAt::Page(page)), mode);
            split.waiters.set(page, remaining);
        }
    }

    /// Locks the order-9 entry of `slot`, sleeping while it is locked. Never
    /// sleeps on 4 KiB entries: a split slot is a conflict unless its pages are
    /// unlocked and can merge back into one 2 MiB entry.
    pub(crate) fn lock_whole(&self, slot: u32) -> Result<(), GrabConflict> {
        loop {
            let (mut shard, local) = self.shard(slot);
            let word = shard.words[local];
            if word.split() {
                let Some(split) = shard.split(local) else {
                    unreachable!("split slot without detail")
                };
                if let Some(page) = split.locked.first_in(0, crate::PAGES_PER_SLOT as u16) {
                    if self.faulty(fault_point!(WaitOnSmallerOrder)) {
                        // The bug: queue as if waiting for the 4 KiB entry, but
                        // under this grab's own (2 MiB) key.
                        if let Some(split) = shard.split_mut(local) {
                            split.waiters.set(page, true);
                        }
                        self.sleep_keyed(
                            shard,
                            self.key(slot, EntryAt::Whole),
                            WaitKind::Exclusive,
                        );
                        continue;
                    }
                    stats::bump(&self.counters.conflicts);
                    return Err(GrabConflict::LockedPage {
                        slot: u64::from(slot) * SLOT_SIZE,
                        moffset: u64::from(slot) * SLOT_SIZE + u64::from(page) * PAGE_SIZE,
                    });
                }
                let mergeable = match split.records.as_slice() {
                    [] => true,
                    [only] => only.is_full_slot(),
                    _ => false,
                };
                if !mergeable {
                    stats::bump(&self.counters.conflicts);
                    return Err(GrabConflict::PageMappings {
                        slot: u64::from(slot) * SLOT_SIZE,
                    });
                }
                self.merge(&mut shard, local, slot);
                shard.words[local] = shard.words[local].set_locked(true);
                return Ok(());
            }
            if word.locked() {
                self.sleep_on(shard, local, slot, EntryAt::Whole, WaitKind::Exclusive);
                continue;
            }
            shard.words[local] = word.set_locked(true);
            return Ok(());
        }
    }

    /// Locks the 4 KiB entries `[first, end)` of `slot` in ascending order,
    /// splitting the slot first if it holds an unlocked 2 MiB entry.
    pub(crate) fn lock_pages(&self, slot: u32, first: u16, end: u16) {
        let mut next = first;
        loop {
            let (mut shard, local) = self.shard(slot);
            let word = shard.words[local];
            if !word.split() {
                if word.locked() {
                    self.sleep_on(shard, local, slot, EntryAt::Whole, WaitKind::Exclusive);
                    continue;
                }
                self.split_slot(&mut shard, local, slot);
            }
            let Some(split) = shard.split_mut(local) else {
                unreachable!("split slot without detail")
            };
            while next < end && !split.locked.test(next) {
                split.locked.set(next, true);
                next += 1;
            }
            if next == end {
                return;
            }
            self.sleep_on(shard, local, slot, EntryAt::Page(next), WaitKind::Exclusive);
        }
    }

    /// Turns the unlocked order-9 entry of `slot` into order-0 entries (its
    /// record, if any, becomes one 512-page record) and wakes every waiter of
    /// the order-9 key, which no longer exists.
    fn split_slot(&self, shard: &mut Shard, local: usize, slot: u32) {
        let word = shard.words[local];
        let mut split = Box::<SplitSlot>::default();
        if let Some(Detail::Whole(record)) = shard.take_detail(word) {
            split.records.push(record);
        }
        let handle = shard.insert_detail(Detail::Split(split));
        shard.words[local] = word.with_handle(Some(handle)).set_split(true);
        self.wake_whole(shard, local, slot, self.removal_mode());
        stats::add(&self.counters.split_slots, 1);
    }

    /// Turns an unlocked split slot whose records are none or one full-slot
    /// record back into an order-9 entry, waking every waiter of the page keys
    /// that disappear.
    fn merge(&self, shard: &mut Shard, local: usize, slot: u32) {
        let word = shard.words[local];
        let Some(Detail::Split(mut split)) = shard.take_detail(word) else {
            unreachable!("merge of a slot that is not split")
        };
        let waited: Vec<u16> = split.waiters.iter().collect();
        let mode = self.removal_mode();
        for page in waited {
            self.wake_page(&mut split, slot, page, mode);
        }
        let handle = split
            .records
            .pop()
            .map(|record| shard.insert_detail(Detail::Whole(record)));
        shard.words[local] = word.with_handle(handle).set_split(false);
        stats::sub(&self.counters.split_slots, 1);
    }

    /// Unlocks the order-9 entry of `slot` inside the caller's shard section.
    /// `changed` says the holder removed or zapped a record.
    pub(crate) fn unlock_whole(&self, shard: &mut Shard, local: usize, slot: u32, changed: bool) {
        let word = shard.words[local].set_locked(false);
        shard.words[local] = word;
        let mode = if changed || word.handle().is_none() {
            self.removal_mode()
        } else {
            WakeMode::Next
        };
        self.wake_whole(shard, local, slot, mode);
    }

    /// Unlocks pages `[first, end)` of split `slot` inside the caller's shard
    /// section, and returns the slot to empty when nothing is left in it.
    pub(crate) fn unlock_pages(
        &self, shard: &mut Shard, local: usize, slot: u32, (first, end): (u16, u16), changed: bool,
    ) {
        let removal = self.removal_mode();
        let Some(split) = shard.split_mut(local) else {
            unreachable!("page unlock of a slot that is not split")
        };
        for page in first..end {
            split.locked.set(page, false);
        }
        if split.waiters.any() {
            let waited: Vec<u16> = split.waiters.iter_in(first, end).collect();
            for page in waited {
                let mode = if changed || split.record_at(page).is_none() {
                    removal
                } else {
                    WakeMode::Next
                };
                self.wake_page(split, slot, page, mode);
            }
        }
        if split.is_idle_empty() {
            // Waiters still queued on other pages are woken by the merge.
            self.merge(shard, local, slot);
        }
    }

    /// Passes on a hand-off the caller received for `entry` but does not take:
    /// if the entry is still there and unlocked, wake its next waiter. An entry
    /// that is gone or locked needs nothing (its remover woke everyone; its new
    /// holder will wake on unlock).
    pub(crate) fn pass_on(&self, shard: &mut Shard, local: usize, slot: u32, entry: EntryAt) {
        if self.faulty(fault_point!(DeclineWakesNobody)) {
            return;
        }
        let word = shard.words[local];
        match entry {
            EntryAt::Whole => {
                if !word.split() && !word.locked() && word.handle().is_some() {
                    self.wake_whole(shard, local, slot, WakeMode::Next);
                }
            }
            EntryAt::Page(page) => {
                if let Some(split) = shard.split_mut(local) {
                    if !split.locked.test(page) && split.record_at(page).is_some() {
                        self.wake_page(split, slot, page, WakeMode::Next);
                    }
                }
            }
        }
    }

    /// Stores `record` in its slot (the caller holds the entry lock).
    pub(crate) fn insert_record(&self, shard: &mut Shard, local: usize, record: MappingRecord) {
        let word = shard.words[local];
        match shard.detail_mut(word) {
            Some(Detail::Split(split)) => split.insert(record),
            _ => {
                let handle = shard.insert_detail(Detail::Whole(record));
                shard.words[local] = word.with_handle(Some(handle));
            }
        }
        self.count_record(&record, true);
    }

    /// Removes the record starting at `moffset` from its slot.
    pub(crate) fn remove_record(
        &self, shard: &mut Shard, local: usize, moffset: u64,
    ) -> Option<MappingRecord> {
        let word = shard.words[local];
        let removed = match shard.detail_mut(word) {
            Some(Detail::Split(split)) => {
                let index = split.records.iter().position(|r| r.moffset == moffset)?;
                Some(split.records.remove(index))
            }
            Some(Detail::Whole(record)) if record.moffset == moffset => {
                let removed = shard.take_detail(word);
                shard.words[local] = word.with_handle(None);
                match removed {
                    Some(Detail::Whole(record)) => Some(record),
                    _ => None,
                }
            }
            _ => None,
        }?;
        self.count_record(&removed, false);
        Some(removed)
    }

    /// Applies `change` to the record starting at `moffset`, keeping gauges
    /// exact, and returns the new record.
    pub(crate) fn update_record(
        &self, shard: &mut Shard, local: usize, moffset: u64,
        change: impl FnOnce(&mut MappingRecord),
    ) -> Option<MappingRecord> {
        let word = shard.words[local];
        let record = match shard.detail_mut(word)? {
            Detail::Whole(record) => Some(record).filter(|r| r.moffset == moffset),
            Detail::Split(split) => split.records.iter_mut().find(|r| r.moffset == moffset),
        }?;
        let before = *record;
        change(record);
        let after = *record;
        self.count_record(&before, false);
        self.count_record(&after, true);
        Some(after)
    }

    fn count_record(&self, record: &MappingRecord, add: bool) {
        let apply = if add { stats::add } else { stats::sub };
        if record.is_live() {
            apply(&self.counters.live_mappings, 1);
            apply(&self.counters.mapped_bytes, record.len);
        } else {
            apply(&self.counters.zapped_mappings, 1);
        }
    }

    /// Locks `range` at `order`: every 2 MiB entry of the range for
    /// [`Order::Slot`] (the range must be slot aligned), or every 4 KiB entry for
    /// [`Order::Page`]. Sleeps while entries are locked; returns
    /// [`GrabConflict`] without sleeping when a 2 MiB grab meets 4 KiB entries.
    pub fn grab(&self, range: WindowRange, order: Order) -> Result<SlotGuard<'_>, GrabError> {
        let range = self
            .geometry
            .range_at(range.moffset(), range.len(), order)?;
        if order == Order::Page {
            return Ok(self.grab_pages(range));
        }
        let (first, last) = range.slot_span();
        for slot in first..=last {
            if let Err(conflict) = self.lock_whole(slot) {
                for held in first..slot {
                    let (mut shard, local) = self.shard(held);
                    self.unlock_whole(&mut shard, local, held, false);
                }
                return Err(conflict.into());
            }
        }
        stats::bump(&self.counters.grabs);
        Ok(SlotGuard::new(self, range, order))
    }

    /// Locks every 4 KiB entry of a range already validated for this window.
    pub(crate) fn grab_pages(&self, range: WindowRange) -> SlotGuard<'_> {
        let (first, last) = range.slot_span();
        for slot in first..=last {
            let (a, b) = range.pages_in_slot(slot);
            self.lock_pages(slot, a, b);
        }
        stats::bump(&self.counters.grabs);
        SlotGuard::new(self, range, Order::Page)
    }

    /// [`grab`](Self::grab) of `[moffset, moffset + len)`, validating the range.
    pub fn grab_at(
        &self, moffset: u64, len: u64, order: Order,
    ) -> Result<SlotGuard<'_>, GrabError> {
        let range = self.geometry.range_at(moffset, len, order)?;
        self.grab(range, order)
    }

    /// The record covering window offset `moffset`, if any (live or zapped).
    /// Does not wait for locked entries: it reports the last committed state.
    pub fn lookup(&self, moffset: u64) -> Option<MappingRecord> {
        if moffset >= self.geometry.size() {
            return None;
        }
        let slot = (moffset / SLOT_SIZE) as u32;
        let page = ((moffset % SLOT_SIZE) / PAGE_SIZE) as u16;
        let (shard, local) = self.shard(slot);
        match shard.detail(shard.words[local])? {
            Detail::Whole(record) => Some(*record),
            Detail::Split(split) => split.record_at(page).map(|index| split.records[index]),
        }
    }

    /// Every record overlapping `[moffset, moffset + len)`, with its exact
    /// extent (records may reach beyond the range). Does not wait.
    pub fn mappings_in(&self, moffset: u64, len: u64) -> Result<Vec<MappingRecord>, RangeError> {
        let range = self.geometry.range(moffset, len)?;
        Ok(self.records_in(range))
    }

    pub(crate) fn records_in(&self, range: WindowRange) -> Vec<MappingRecord> {
        let (first, last) = range.slot_span();
        let mut found = Vec::new();
        for slot in first..=last {
            let (a, b) = range.pages_in_slot(slot);
            let (shard, local) = self.shard(slot);
            found.extend_from_slice(shard.records(local, a, b));
        }
        found
    }
}

/// Stand-in for [`InjectedFault`] outside loom builds.
#[cfg(not(loom))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct FaultPoint;
