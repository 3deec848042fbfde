//! Entry representation: the packed per-slot word, split-slot detail and
//! mapping records.
//!
//! ## The packed slot word
//!
//! Every 2 MiB slot owns one `u64` in its shard's `words` array. All words of a
//! shard are guarded by that shard's mutex (see `window.rs`); an idle, empty slot
//! is the value 0, so an idle window costs 8 bytes per slot plus amortised shard
//! and wait-bucket headers.
//!
//! ```text
//!  63        35   34      33     32     31 ........ 0
//! [ reserved | WAITERS | SPLIT | LOCKED | detail handle ]
//! ```
//! *detail handle* is 0 or 1 + an index into the shard's detail slab, holding
//! either the slot's order-9 mapping record (`Detail::Whole`) or its order-0
//! entries (`Detail::Split`).
//!
//! | handle | SPLIT | LOCKED | WAITERS | meaning |
//! |--------|-------|--------|---------|---------|
//! | 0      | 0     | 0      | 0       | empty and idle (the only state of an untouched slot) |
//! | 0      | 0     | 1      | 0/1     | order-9 entry locked by a grab of an empty slot (a map may be in flight) |
//! | 0      | 0     | 0      | 1       | never: releasing an empty entry wakes all waiters and clears WAITERS |
//! | n      | 0     | 0      | 0/1     | order-9 entry with a mapping record (live or zapped), unlocked; WAITERS=1 means a woken successor is about to re-check and more waiters are queued |
//! | n      | 0     | 1      | 0/1     | order-9 entry with a record, locked (upgrade, unmap, invalidation or reset in progress) |
//! | n      | 1     | 0      | 0       | split into order-0 entries: per-page lock and waiter bits and the page-sized records live in the detail |
//! | 0      | 1     | x      | x       | never: a split slot always has a detail |
//! | n      | 1     | 1      | x       | never: the order-9 lock is not used while split |
//! | n      | 1     | x      | 1       | never (splitting wakes every order-9 waiter and clears WAITERS) |
//!
//! WAITERS is exact: it is set by a waiter inside the shard critical section in
//! which it queues itself on the slot key, and cleared by the waker in the
//! critical section in which the wait table reports no waiter left for the key.
//! So an unlock with WAITERS clear skips the wait table entirely.
//!
//! The split detail keeps the same pair of bits per page (`locked`, `waiters`,
//! 512 bits each), with the same exactness rule for page keys.

use smallvec::SmallVec;

use crate::geometry::{PAGES_PER_SLOT, PAGE_SIZE, SLOT_SIZE};

/// Identifies a file (inode) on the daemon's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InodeId(pub u64);

/// Whether the VMM still maps the file behind a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingState {
    /// The VMM maps the file range at this extent.
    Live,
    /// The file pages this extent stands for lie at or beyond the file's end:
    /// the file mapping was torn down by a repair after the file shrank, or
    /// never made because the file was already shorter. The extent stays
    /// associated with its inode (and its file offset) until the guest removes
    /// it or the window is reset, and maps the file again if the file grows.
    Zapped {
        /// Whether a placeholder mapping (see [`crate::Mapper::map_placeholder`])
        /// now occupies exactly this extent in the VMM and must be unmapped when
        /// the extent is removed.
        placeholder: bool,
    },
}

/// One mapping the daemon sent to the VMM: exactly the extent a later UNMAP has
/// to name (a zapped record without placeholder holds nothing in the VMM).
///
/// One guest mapping (one SETUPMAPPING extent within a slot) is one record, or
/// — when the file ends inside it — a live record for the pages below the end
/// followed by a zapped record (the placeholder) for the rest. Repairs after
/// the file shrinks or grows split a record the same way; consecutive records
/// of one guest mapping show consecutive file offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappingRecord {
    /// Window offset of the mapping.
    pub moffset: u64,
    /// Length in bytes (page multiple, never crossing a slot boundary).
    pub len: u64,
    /// The file mapped.
    pub inode: InodeId,
    /// Offset in the file of the first mapped byte.
    pub foffset: u64,
    /// Whether the VMM maps it writable (for a placeholder: whether the
    /// guest mapping it stands in for was writable).
    pub writable: bool,
    /// Live or zapped.
    pub state: MappingState,
}

impl MappingRecord {
    /// End of the mapping in the window (exclusive).
    pub const fn end(&self) -> u64 {
        self.moffset + self.len
    }

    /// End of the mapped file range (exclusive), saturating.
    pub const fn file_end(&self) -> u64 {
        self.foffset.saturating_add(self.len)
    }

    /// Whether the file is still mapped.
    pub const fn is_live(&self) -> bool {
        matches!(self.state, MappingState::Live)
    }

    /// Whether the VMM holds a mapping at exactly this extent (the file, or a
    /// placeholder), so removing the extent needs an UNMAP.
    pub const fn in_vmm(&self) -> bool {
        matches!(
            self.state,
            MappingState::Live | MappingState::Zapped { placeholder: true }
        )
    }

    /// Whether the record agrees with a file of `size` bytes: a live record maps
    /// no file page at or beyond `round_up(size, 4 KiB)` (such a page would
    /// raise SIGBUS in the VMM), and a zapped one stands for no file page below
    /// it (such a page should show the file again).
    pub const fn conforms_to(&self, size: u64) -> bool {
        let kept = file_pages_end(size);
        match self.state {
            MappingState::Live => self.file_end() <= kept,
            MappingState::Zapped { .. } => self.foffset >= kept,
        }
    }

    /// First page of the record relative to its slot.
    pub(crate) const fn first_page(&self) -> u16 {
        ((self.moffset % SLOT_SIZE) / PAGE_SIZE) as u16
    }

    /// One past the last page of the record relative to its slot.
    pub(crate) const fn end_page(&self) -> u16 {
        self.first_page() + (self.len / PAGE_SIZE) as u16
    }

    /// Whether the record covers its whole slot.
    pub(crate) const fn is_full_slot(&self) -> bool {
        self.moffset % SLOT_SIZE == 0 && self.len == SLOT_SIZE
    }
}

/// A short list of records kept inline: what one extent is placed as (a file
/// part and a placeholder, so at most two records), or a copy of one slot's
/// records. Longer lists (a slot split into many 4 KiB mappings) spill to the
/// heap.
///
/// The repair, map and unmap paths use it instead of a `Vec` so that the
/// common case makes no heap allocation at all. With a `Vec` per step, a
/// repair made six allocations; on a large, fragmented heap (a fully mapped
/// 64 GiB window) glibc served them from its free lists instead of its
/// thread cache, and the repair's cost grew with the window although the
/// index's own work does not (see docs/dax-window.md, "Benchmarks").
pub(crate) type Records = SmallVec<[MappingRecord; 2]>;

/// End of the file pages a file of `size` bytes has: `size` rounded up to
/// whole 4 KiB pages (saturating). Bytes of the last, partial page past `size`
/// read as zeros through a mapping; whole pages at or beyond it raise SIGBUS.
pub const fn file_pages_end(size: u64) -> u64 {
    match size.checked_next_multiple_of(PAGE_SIZE) {
        Some(end) => end,
        None => u64::MAX - u64::MAX % PAGE_SIZE,
    }
}

/// How many bytes at the start of an extent of `len` bytes showing the file
/// from `foffset` lie below the file pages of a file of `size` bytes: what
/// may map the file, the rest being past its end.
pub const fn file_part(foffset: u64, len: u64, size: u64) -> u64 {
    let kept = file_pages_end(size);
    if foffset >= kept {
        0
    } else if kept - foffset < len {
        kept - foffset
    } else {
        len
    }
}

/// The packed per-slot word described in the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct SlotWord(pub(crate) u64);

impl SlotWord {
    const HANDLE_MASK: u64 = 0xFFFF_FFFF;
    const LOCKED: u64 = 1 << 32;
    const SPLIT: u64 = 1 << 33;
    const WAITERS: u64 = 1 << 34;

    pub(crate) const EMPTY: SlotWord = SlotWord(0);

    pub(crate) const fn handle(self) -> Option<u32> {
        match self.0 & Self::HANDLE_MASK {
            0 => None,
            n => Some((n - 1) as u32),
        }
    }

    pub(crate) const fn with_handle(self, handle: Option<u32>) -> SlotWord {
        let bits = match handle {
            None => 0,
            Some(index) => index as u64 + 1,
        };
        SlotWord((self.0 & !Self::HANDLE_MASK) | bits)
    }

    pub(crate) const fn locked(self) -> bool {
        self.0 & Self::LOCKED != 0
    }

    pub(crate) const fn split(self) -> bool {
        self.0 & Self::SPLIT != 0
    }

    pub(crate) const fn waiters(self) -> bool {
        self.0 & Self::WAITERS != 0
    }

    pub(crate) const fn set_locked(self, on: bool) -> SlotWord {
        self.flag(Self::LOCKED, on)
    }

    pub(crate) const fn set_split(self, on: bool) -> SlotWord {
        self.flag(Self::SPLIT, on)
    }

    pub(crate) const fn set_waiters(self, on: bool) -> SlotWord {
        self.flag(Self::WAITERS, on)
    }

    const fn flag(self, bit: u64, on: bool) -> SlotWord {
        if on {
            SlotWord(self.0 | bit)
        } else {
            SlotWord(self.0 & !bit)
        }
    }
}

/// 512 bits, one per page of a slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PageBits([u64; (PAGES_PER_SLOT / 64) as usize]);

impl PageBits {
    pub(crate) fn test(&self, page: u16) -> bool {
        self.0[usize::from(page / 64)] & (1 << (page % 64)) != 0
    }

    pub(crate) fn set(&mut self, page: u16, on: bool) {
        let word = &mut self.0[usize::from(page / 64)];
        if on {
            *word |= 1 << (page % 64);
        } else {
            *word &= !(1 << (page % 64));
        }
    }

    pub(crate) fn any(&self) -> bool {
        self.0.iter().any(|word| *word != 0)
    }

    /// First set page in `[first, end)`.
    pub(crate) fn first_in(&self, first: u16, end: u16) -> Option<u16> {
        (first..end).find(|page| self.test(*page))
    }

    /// Every set page in `[first, end)`.
    pub(crate) fn iter_in(&self, first: u16, end: u16) -> impl Iterator<Item = u16> + '_ {
        (first..end).filter(|page| self.test(*page))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.iter_in(0, PAGES_PER_SLOT as u16)
    }
}

/// The order-0 entries of a split slot.
#[derive(Debug, Default)]
pub(crate) struct SplitSlot {
    /// Lock bit of each page entry.
    pub(crate) locked: PageBits,
    /// Set while waiters are queued on a page's key (exact, like `WAITERS`).
    pub(crate) waiters: PageBits,
    /// Records inside this slot, sorted by window offset, never overlapping.
    pub(crate) records: Vec<MappingRecord>,
}

impl SplitSlot {
    /// Index of the record covering `page`, if any.
    pub(crate) fn record_at(&self, page: u16) -> Option<usize> {
        let index = self
            .records
            .partition_point(|record| record.end_page() <= page);
        match self.records.get(index) {
            Some(record) if record.first_page() <= page => Some(index),
            _ => None,
        }
    }

    /// Indices of records overlapping pages `[first, end)`.
    pub(crate) fn records_in(&self, first: u16, end: u16) -> std::ops::Range<usize> {
        let start = self
            .records
            .partition_point(|record| record.end_page() <= first);
        let stop = self
            .records
            .partition_point(|record| record.first_page() < end);
        start..stop.max(start)
    }

    /// Inserts a record, keeping the order. The caller guarantees no overlap.
    pub(crate) fn insert(&mut self, record: MappingRecord) {
        let at = self
            .records
            .partition_point(|existing| existing.moffset < record.moffset);
        self.records.insert(at, record);
    }

    /// Whether no record and no lock remain (the slot can return to empty).
    pub(crate) fn is_idle_empty(&self) -> bool {
        self.records.is_empty() && !self.locked.any()
    }
}

/// What a slot's detail handle points at.
#[derive(Debug)]
pub(crate) enum Detail {
    /// The record of an order-9 entry.
    Whole(MappingRecord),
    /// The order-0 entries of a split slot.
    Split(Box<SplitSlot>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_word_packs_and_unpacks() {
        let word = SlotWord::EMPTY
            .with_handle(Some(41))
            .set_locked(true)
            .set_waiters(true);
        assert_eq!(word.handle(), Some(41));
        assert!(word.locked() && word.waiters() && !word.split());
        let word = word.set_locked(false).with_handle(None);
        assert_eq!(word.handle(), None);
        assert!(!word.locked() && word.waiters());
        assert_eq!(word.set_waiters(false), SlotWord::EMPTY);
    }

    #[test]
    fn split_slot_finds_records_by_page() {
        let record = |page: u64, pages: u64| MappingRecord {
            moffset: SLOT_SIZE + page * PAGE_SIZE,
            len: pages * PAGE_SIZE,
            inode: InodeId(1),
            foffset: 0,
            writable: false,
            state: MappingState::Live,
        };
        let mut split = SplitSlot::default();
        split.insert(record(10, 2));
        split.insert(record(0, 1));
        split.insert(record(100, 412));
        assert_eq!(split.record_at(0), Some(0));
        assert_eq!(split.record_at(1), None);
        assert_eq!(split.record_at(11), Some(1));
        assert_eq!(split.record_at(12), None);
        assert_eq!(split.record_at(511), Some(2));
        assert_eq!(split.records_in(1, 10), 1..1);
        assert_eq!(split.records_in(0, 512), 0..3);
        assert_eq!(split.records_in(11, 101), 1..3);
        let mut bits = PageBits::default();
        bits.set(300, true);
        bits.set(7, true);
        assert_eq!(bits.first_in(8, 512), Some(300));
        assert_eq!(bits.iter().collect::<Vec<_>>(), vec![7, 300]);
        bits.set(7, false);
        assert_eq!(bits.first_in(0, 300), None);
    }
}
