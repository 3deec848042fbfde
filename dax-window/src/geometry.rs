//! Window geometry: sizes, slots, pages, entry orders and validated ranges.
//!
//! A DAX window is a fixed-size region the VMM owns. The guest carves it into
//! 2 MiB *slots*; each slot holds either one order-9 (2 MiB) entry or up to 512
//! order-0 (4 KiB) entries. Everything here is plain arithmetic with typed errors:
//! no input can make it panic.

use thiserror::Error;

/// Size of a page, the order-0 entry size: 4 KiB.
pub const PAGE_SIZE: u64 = 4096;
/// Size of a slot, the order-9 entry size: 2 MiB.
pub const SLOT_SIZE: u64 = 2 * 1024 * 1024;
/// Number of pages in one slot.
pub const PAGES_PER_SLOT: u64 = SLOT_SIZE / PAGE_SIZE;
/// Largest window this index accepts: 2^31 slots (4 PiB), so slot numbers fit in
/// the 31 bits the packed slot word and the shard arithmetic use.
pub const MAX_WINDOW_SIZE: u64 = (1 << 31) * SLOT_SIZE;

/// The order of an entry: how much of the window one lock covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Order {
    /// A 4 KiB entry (one page); a slot split into pages holds up to 512.
    Page,
    /// A 2 MiB entry covering a whole slot.
    Slot,
}

impl Order {
    /// The page-count exponent Linux uses for this order (0 or 9).
    pub const fn exponent(self) -> u32 {
        match self {
            Order::Page => 0,
            Order::Slot => 9,
        }
    }

    /// Bytes covered by one entry of this order.
    pub const fn size(self) -> u64 {
        match self {
            Order::Page => PAGE_SIZE,
            Order::Slot => SLOT_SIZE,
        }
    }
}

/// Why a window size was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GeometryError {
    /// A window of zero bytes cannot hold a slot.
    #[error("window size is zero")]
    Empty,
    /// The size is not a whole number of 2 MiB slots.
    #[error("window size {size:#x} is not a multiple of the 2 MiB slot size")]
    NotSlotMultiple {
        /// The rejected size.
        size: u64,
    },
    /// The size exceeds [`MAX_WINDOW_SIZE`].
    #[error("window size {size:#x} exceeds the largest supported window ({max:#x})")]
    TooLarge {
        /// The rejected size.
        size: u64,
        /// The largest accepted size.
        max: u64,
    },
}

/// Why a range `[moffset, moffset + len)` was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RangeError {
    /// A range of zero bytes maps nothing.
    #[error("range at window offset {moffset:#x} has length zero")]
    Empty {
        /// Start of the range.
        moffset: u64,
    },
    /// Start or length is not a multiple of the entry size the operation needs.
    #[error("range {moffset:#x}+{len:#x} is not aligned to {align:#x} bytes")]
    Misaligned {
        /// Start of the range.
        moffset: u64,
        /// Length of the range.
        len: u64,
        /// The required alignment.
        align: u64,
    },
    /// The range reaches past the end of the window (or its end overflows).
    #[error("range {moffset:#x}+{len:#x} lies outside the {window_size:#x}-byte window")]
    OutOfBounds {
        /// Start of the range.
        moffset: u64,
        /// Length of the range.
        len: u64,
        /// Size of the window.
        window_size: u64,
    },
}

/// A validated window size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowGeometry {
    size: u64,
}

impl WindowGeometry {
    /// Accepts a window of `size` bytes: non-zero, a multiple of 2 MiB and at most
    /// [`MAX_WINDOW_SIZE`].
    pub fn new(size: u64) -> Result<Self, GeometryError> {
        if size == 0 {
            return Err(GeometryError::Empty);
        }
        if size % SLOT_SIZE != 0 {
            return Err(GeometryError::NotSlotMultiple { size });
        }
        if size > MAX_WINDOW_SIZE {
            return Err(GeometryError::TooLarge {
                size,
                max: MAX_WINDOW_SIZE,
            });
        }
        Ok(Self { size })
    }

    /// Window size in bytes.
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// Number of 2 MiB slots.
    pub const fn slot_count(&self) -> u64 {
        self.size / SLOT_SIZE
    }

    /// Validates `[moffset, moffset + len)`: non-empty, page aligned, inside the
    /// window.
    pub fn range(&self, moffset: u64, len: u64) -> Result<WindowRange, RangeError> {
        self.range_aligned(moffset, len, PAGE_SIZE)
    }

    /// Validates a range whose start and length are multiples of `order`'s
    /// entry size.
    pub fn range_at(
        &self, moffset: u64, len: u64, order: Order,
    ) -> Result<WindowRange, RangeError> {
        self.range_aligned(moffset, len, order.size())
    }

    fn range_aligned(&self, moffset: u64, len: u64, align: u64) -> Result<WindowRange, RangeError> {
        if len == 0 {
            return Err(RangeError::Empty { moffset });
        }
        if moffset % align != 0 || len % align != 0 {
            return Err(RangeError::Misaligned {
                moffset,
                len,
                align,
            });
        }
        match moffset.checked_add(len) {
            Some(end) if end <= self.size => Ok(WindowRange { moffset, len }),
            _ => Err(RangeError::OutOfBounds {
                moffset,
                len,
                window_size: self.size,
            }),
        }
    }

    /// The range covering the whole window.
    pub const fn whole(&self) -> WindowRange {
        WindowRange {
            moffset: 0,
            len: self.size,
        }
    }
}

/// A non-empty, page-aligned range known to lie inside its window. Only
/// [`WindowGeometry`] creates one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WindowRange {
    moffset: u64,
    len: u64,
}

impl WindowRange {
    /// Start offset in the window.
    pub const fn moffset(&self) -> u64 {
        self.moffset
    }

    /// Length in bytes.
    pub const fn len(&self) -> u64 {
        self.len
    }

    /// Always false: a `WindowRange` is never empty.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// End offset (exclusive).
    pub const fn end(&self) -> u64 {
        self.moffset + self.len
    }

    /// Whether both ends fall on 2 MiB slot boundaries.
    pub const fn is_slot_aligned(&self) -> bool {
        self.moffset % SLOT_SIZE == 0 && self.len % SLOT_SIZE == 0
    }

    /// The largest order whose entries tile this range exactly.
    pub const fn natural_order(&self) -> Order {
        if self.is_slot_aligned() {
            Order::Slot
        } else {
            Order::Page
        }
    }

    /// Whether `[moffset, moffset + len)` overlaps this range.
    pub const fn overlaps(&self, moffset: u64, len: u64) -> bool {
        moffset < self.end() && self.moffset < moffset.saturating_add(len)
    }

    /// Whether `[moffset, moffset + len)` lies entirely inside this range.
    pub const fn contains(&self, moffset: u64, len: u64) -> bool {
        self.moffset <= moffset && moffset.saturating_add(len) <= self.end()
    }

    /// First and last slot numbers the range touches.
    pub(crate) const fn slot_span(&self) -> (u32, u32) {
        (
            (self.moffset / SLOT_SIZE) as u32,
            ((self.end() - 1) / SLOT_SIZE) as u32,
        )
    }

    /// The pages `[first, end)` of `slot` that this range covers (slot-relative).
    pub(crate) const fn pages_in_slot(&self, slot: u32) -> (u16, u16) {
        let slot_start = slot as u64 * SLOT_SIZE;
        let start = if self.moffset > slot_start {
            self.moffset
        } else {
            slot_start
        };
        let slot_end = slot_start + SLOT_SIZE;
        let end = if self.end() < slot_end {
            self.end()
        } else {
            slot_end
        };
        (
            ((start - slot_start) / PAGE_SIZE) as u16,
            ((end - slot_start) / PAGE_SIZE) as u16,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_window_sizes() {
        assert_eq!(WindowGeometry::new(0), Err(GeometryError::Empty));
        assert_eq!(
            WindowGeometry::new(SLOT_SIZE + PAGE_SIZE),
            Err(GeometryError::NotSlotMultiple {
                size: SLOT_SIZE + PAGE_SIZE
            })
        );
        assert!(matches!(
            WindowGeometry::new(MAX_WINDOW_SIZE + SLOT_SIZE),
            Err(GeometryError::TooLarge { .. })
        ));
        let geometry = WindowGeometry::new(8 * SLOT_SIZE).unwrap();
        assert_eq!(geometry.slot_count(), 8);
    }

    #[test]
    fn validates_ranges() {
        let geometry = WindowGeometry::new(4 * SLOT_SIZE).unwrap();
        assert!(matches!(
            geometry.range(0, 0),
            Err(RangeError::Empty { .. })
        ));
        assert!(matches!(
            geometry.range(100, PAGE_SIZE),
            Err(RangeError::Misaligned { .. })
        ));
        assert!(matches!(
            geometry.range_at(PAGE_SIZE, SLOT_SIZE, Order::Slot),
            Err(RangeError::Misaligned { .. })
        ));
        assert!(matches!(
            geometry.range(3 * SLOT_SIZE, 2 * SLOT_SIZE),
            Err(RangeError::OutOfBounds { .. })
        ));
        assert!(matches!(
            geometry.range(u64::MAX - PAGE_SIZE + 1, PAGE_SIZE),
            Err(RangeError::OutOfBounds { .. })
        ));
        let range = geometry
            .range(SLOT_SIZE - PAGE_SIZE, 2 * PAGE_SIZE)
            .unwrap();
        assert_eq!(range.slot_span(), (0, 1));
        assert_eq!(range.pages_in_slot(0), (511, 512));
        assert_eq!(range.pages_in_slot(1), (0, 1));
        assert_eq!(range.natural_order(), Order::Page);
        let whole = geometry.range(SLOT_SIZE, 2 * SLOT_SIZE).unwrap();
        assert_eq!(whole.natural_order(), Order::Slot);
        assert_eq!(whole.slot_span(), (1, 2));
    }
}
