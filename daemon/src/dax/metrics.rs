//! DAX counters that the window index does not keep itself: FUSE-level
//! request outcomes and the thrash signal.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use dax_window::{MappingRecord, SetupOutcome, Window, WindowStats};

/// Slots of the recent-removal table; a power of two.
const RECENT_SLOTS: usize = 4096;
/// A file range mapped again within this many milliseconds of its removal
/// counts as thrash.
pub const THRASH_WINDOW_MS: u64 = 1000;

/// DAX counters, all independent relaxed atomics.
#[derive(Debug)]
pub struct DaxMetrics {
    start: Instant,
    setups: AtomicU64,
    upgrades: AtomicU64,
    already_mapped: AtomicU64,
    removed_mappings: AtomicU64,
    invalidated_mappings: AtomicU64,
    invalidated_bytes: AtomicU64,
    refusals: AtomicU64,
    thrash: AtomicU64,
    /// Recently removed file ranges: each slot holds a hash of
    /// (inode, file offset) and the removal time in ms since `start`, plus
    /// one. A lossy, lock-free table: collisions overwrite, which can only
    /// make the thrash signal undercount.
    recent_key: Box<[AtomicU64]>,
    recent_time: Box<[AtomicU64]>,
}

impl Default for DaxMetrics {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            setups: AtomicU64::new(0),
            upgrades: AtomicU64::new(0),
            already_mapped: AtomicU64::new(0),
            removed_mappings: AtomicU64::new(0),
            invalidated_mappings: AtomicU64::new(0),
            invalidated_bytes: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            thrash: AtomicU64::new(0),
            recent_key: (0..RECENT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            recent_time: (0..RECENT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// A point-in-time copy of the DAX counters and the window's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaxMetricsSnapshot {
    /// SETUPMAPPING requests that mapped new file ranges.
    pub setups: u64,
    /// SETUPMAPPING requests that upgraded a read mapping to write.
    pub upgrades: u64,
    /// SETUPMAPPING requests that found the range already mapped.
    pub already_mapped: u64,
    /// Mappings removed by REMOVEMAPPING or replaced by SETUPMAPPING.
    pub removed_mappings: u64,
    /// Mappings torn down because their file shrank.
    pub invalidated_mappings: u64,
    /// Bytes of window repaired with zero placeholders.
    pub invalidated_bytes: u64,
    /// Requests refused (EINVAL or EIO).
    pub refusals: u64,
    /// File ranges mapped again within [`THRASH_WINDOW_MS`] of their removal.
    pub thrash: u64,
    /// The index's own counters (occupancy, maps, unmaps, waits, conflicts...).
    pub window: WindowStats,
}

fn key(inode: u64, foffset: u64) -> u64 {
    // splitmix64 of the pair: spreads neighbouring offsets over the table.
    let mut z = inode.rotate_left(32) ^ foffset ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}

impl DaxMetrics {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn record_setup(&self, inode: u64, foffset: u64, outcome: &SetupOutcome) {
        match outcome {
            SetupOutcome::Mapped { .. } => {
                self.setups.fetch_add(1, Relaxed);
                let k = key(inode, foffset);
                let i = (k as usize) & (RECENT_SLOTS - 1);
                if self.recent_key[i].load(Relaxed) == k {
                    let removed_at = self.recent_time[i].load(Relaxed);
                    if removed_at != 0 && self.now_ms() + 1 - removed_at <= THRASH_WINDOW_MS {
                        self.thrash.fetch_add(1, Relaxed);
                    }
                }
            }
            SetupOutcome::Upgraded { .. } => {
                self.upgrades.fetch_add(1, Relaxed);
            }
            SetupOutcome::AlreadyMapped { .. } => {
                self.already_mapped.fetch_add(1, Relaxed);
            }
        }
    }

    pub(super) fn record_removed(&self, removed: &[MappingRecord]) {
        let now = self.now_ms() + 1;
        for record in removed {
            self.removed_mappings.fetch_add(1, Relaxed);
            let k = key(record.inode.0, record.foffset);
            let i = (k as usize) & (RECENT_SLOTS - 1);
            self.recent_key[i].store(k, Relaxed);
            self.recent_time[i].store(now, Relaxed);
        }
    }

    pub(super) fn record_invalidated(&self, zapped: &[MappingRecord]) {
        for record in zapped {
            self.invalidated_mappings.fetch_add(1, Relaxed);
            self.invalidated_bytes.fetch_add(record.len, Relaxed);
        }
    }

    pub(super) fn refused(&self) {
        self.refusals.fetch_add(1, Relaxed);
    }

    pub(super) fn snapshot(&self, window: &Window) -> DaxMetricsSnapshot {
        DaxMetricsSnapshot {
            setups: self.setups.load(Relaxed),
            upgrades: self.upgrades.load(Relaxed),
            already_mapped: self.already_mapped.load(Relaxed),
            removed_mappings: self.removed_mappings.load(Relaxed),
            invalidated_mappings: self.invalidated_mappings.load(Relaxed),
            invalidated_bytes: self.invalidated_bytes.load(Relaxed),
            refusals: self.refusals.load(Relaxed),
            thrash: self.thrash.load(Relaxed),
            window: window.stats(),
        }
    }
}
