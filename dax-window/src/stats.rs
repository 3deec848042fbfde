//! Counters and gauges of a window, readable as a snapshot.
//!
//! Each field is an independent relaxed atomic: a snapshot is not a consistent
//! cut across fields (a map may be counted in `maps` before `live_mappings`), but
//! every field on its own is exact once the window is quiet.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::sync::StatCounter;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) live_mappings: StatCounter,
    pub(crate) zapped_mappings: StatCounter,
    pub(crate) mapped_bytes: StatCounter,
    pub(crate) split_slots: StatCounter,
    pub(crate) grabs: StatCounter,
    pub(crate) maps: StatCounter,
    pub(crate) map_failures: StatCounter,
    pub(crate) unmaps: StatCounter,
    pub(crate) unmap_failures: StatCounter,
    pub(crate) upgrades: StatCounter,
    pub(crate) waits: StatCounter,
    pub(crate) wait_nanos: StatCounter,
    pub(crate) conflicts: StatCounter,
    pub(crate) invalidations: StatCounter,
    pub(crate) clips: StatCounter,
    pub(crate) clipped_bytes: StatCounter,
    pub(crate) restores: StatCounter,
    pub(crate) restored_bytes: StatCounter,
    pub(crate) resets: StatCounter,
}

pub(crate) fn bump(counter: &StatCounter) {
    counter.fetch_add(1, Relaxed);
}

pub(crate) fn add(counter: &StatCounter, amount: u64) {
    counter.fetch_add(amount, Relaxed);
}

pub(crate) fn sub(counter: &StatCounter, amount: u64) {
    counter.fetch_sub(amount, Relaxed);
}

/// A snapshot of a window's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Number of 2 MiB slots in the window.
    pub slots: u64,
    /// Gauge: records whose file is mapped in the VMM.
    pub live_mappings: u64,
    /// Gauge: zapped records still associated with their inode.
    pub zapped_mappings: u64,
    /// Gauge: bytes of the window the VMM maps files into (occupancy).
    pub mapped_bytes: u64,
    /// Gauge: slots currently split into 4 KiB entries.
    pub split_slots: u64,
    /// Successful grabs.
    pub grabs: u64,
    /// Maps the VMM accepted: files and placeholders, including the second
    /// half of upgrades and the maps of repairs.
    pub maps: u64,
    /// Maps the mapper refused.
    pub map_failures: u64,
    /// Unmaps the VMM accepted: removals, replacements, upgrades, repairs,
    /// resets.
    pub unmaps: u64,
    /// Unmaps the mapper refused.
    pub unmap_failures: u64,
    /// Read -> write upgrades.
    pub upgrades: u64,
    /// Times a thread went to sleep on the wait table.
    pub waits: u64,
    /// Total time threads spent asleep on the wait table.
    pub wait_time: Duration,
    /// Grabs answered with a conflict.
    pub conflicts: u64,
    /// Repair passes that clipped at least one record (a mapped file shrank).
    pub invalidations: u64,
    /// Records whose file pages at or beyond the file's end were replaced by
    /// a placeholder.
    pub clips: u64,
    /// Window bytes that stopped mapping a file in those repairs.
    pub clipped_bytes: u64,
    /// Records whose placeholder pages below the file's end map the file
    /// again (a mapped file grew).
    pub restores: u64,
    /// Window bytes that map a file again in those repairs.
    pub restored_bytes: u64,
    /// Calls to reset.
    pub resets: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self, slots: u64) -> WindowStats {
        let get = |counter: &StatCounter| counter.load(Relaxed);
        WindowStats {
            slots,
            live_mappings: get(&self.live_mappings),
            zapped_mappings: get(&self.zapped_mappings),
            mapped_bytes: get(&self.mapped_bytes),
            split_slots: get(&self.split_slots),
            grabs: get(&self.grabs),
            maps: get(&self.maps),
            map_failures: get(&self.map_failures),
            unmaps: get(&self.unmaps),
            unmap_failures: get(&self.unmap_failures),
            upgrades: get(&self.upgrades),
            waits: get(&self.waits),
            wait_time: Duration::from_nanos(get(&self.wait_nanos)),
            conflicts: get(&self.conflicts),
            invalidations: get(&self.invalidations),
            clips: get(&self.clips),
            clipped_bytes: get(&self.clipped_bytes),
            restores: get(&self.restores),
            restored_bytes: get(&self.restored_bytes),
            resets: get(&self.resets),
        }
    }
}
