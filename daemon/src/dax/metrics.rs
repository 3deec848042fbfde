//! DAX counters that the window index does not keep itself: FUSE-level
//! request outcomes and the thrash signal.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use super::Dax;
use crate::prometheus::{ExportMetrics, PrometheusText};
use dax_window::{MappingRecord, RepairReport, SetupOutcome, Window, WindowStats};

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
    restored_mappings: AtomicU64,
    restored_bytes: AtomicU64,
    repair_failures: AtomicU64,
    host_events: AtomicU64,
    host_repairs: AtomicU64,
    refusals: AtomicU64,
    thrash: AtomicU64,
    forgotten: AtomicU64,
    init_refusals: AtomicU64,
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
            restored_mappings: AtomicU64::new(0),
            restored_bytes: AtomicU64::new(0),
            repair_failures: AtomicU64::new(0),
            host_events: AtomicU64::new(0),
            host_repairs: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            thrash: AtomicU64::new(0),
            forgotten: AtomicU64::new(0),
            init_refusals: AtomicU64::new(0),
            recent_key: (0..RECENT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            recent_time: (0..RECENT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// What caused a repair of an inode's mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairSource {
    /// The daemon changed the file's size for the guest (SETATTR, OPEN or
    /// CREATE with O_TRUNC, FALLOCATE, WRITE, COPY_FILE_RANGE).
    Daemon,
    /// Another host process did (seen through the file's watch).
    Host,
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
    /// Mappings whose file pages past the file's end were replaced by zero
    /// placeholders because the file shrank.
    pub invalidated_mappings: u64,
    /// Window bytes replaced by zero placeholders that way.
    pub invalidated_bytes: u64,
    /// Placeholders replaced by the file again because the file grew.
    pub restored_mappings: u64,
    /// Window bytes that map their file again that way.
    pub restored_bytes: u64,
    /// VMM calls that failed during repairs.
    pub repair_failures: u64,
    /// Host-side change events read from the watches of mapped files.
    pub host_events: u64,
    /// Repairs caused by host-side changes (another process truncated or
    /// extended a mapped file) that changed at least one mapping.
    pub host_repairs: u64,
    /// Gauge: files with mappings, held open (and watched) by the daemon.
    pub mapped_files: u64,
    /// Mapped files whose inotify watch could not be added.
    pub unwatched_files: u64,
    /// Requests refused (EINVAL or EIO).
    pub refusals: u64,
    /// File ranges mapped again within [`THRASH_WINDOW_MS`] of their removal.
    pub thrash: u64,
    /// Records of an ended session forgotten without an unmap because the
    /// frontend no longer held them (QEMU 11.1 drops them at a device reset).
    pub forgotten_mappings: u64,
    /// INITs answered so that the guest's DAX mount fails (dax=always on a
    /// frontend that cannot map partial last pages).
    pub init_refusals: u64,
    /// Gauge: 1 when the frontend of the current session was probed.
    pub frontend_probed: u64,
    /// Gauge: 1 when the frontend maps partial last pages (probed or assumed).
    pub frontend_partial_tail: u64,
    /// Gauge: 1 when the frontend maps read-only descriptors (probed or assumed).
    pub frontend_read_only_fd: u64,
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

    pub(super) fn record_repair<E: std::error::Error>(
        &self, source: RepairSource, report: &RepairReport<E>,
    ) {
        self.invalidated_mappings.fetch_add(report.clipped, Relaxed);
        self.invalidated_bytes
            .fetch_add(report.clipped_bytes, Relaxed);
        self.restored_mappings.fetch_add(report.restored, Relaxed);
        self.restored_bytes
            .fetch_add(report.restored_bytes, Relaxed);
        self.repair_failures
            .fetch_add(report.failures.len() as u64, Relaxed);
        if source == RepairSource::Host && report.changed() {
            self.host_repairs.fetch_add(1, Relaxed);
        }
    }

    pub(super) fn host_events(&self, count: u64) {
        self.host_events.fetch_add(count, Relaxed);
    }

    pub(super) fn refused(&self) {
        self.refusals.fetch_add(1, Relaxed);
    }

    pub(super) fn forgotten(&self, count: u64) {
        self.forgotten.fetch_add(count, Relaxed);
    }

    pub(super) fn init_refused(&self) {
        self.init_refusals.fetch_add(1, Relaxed);
    }

    /// A snapshot; the file and frontend gauges are filled in by the caller.
    pub(super) fn snapshot(&self, window: &Window) -> DaxMetricsSnapshot {
        DaxMetricsSnapshot {
            setups: self.setups.load(Relaxed),
            upgrades: self.upgrades.load(Relaxed),
            already_mapped: self.already_mapped.load(Relaxed),
            removed_mappings: self.removed_mappings.load(Relaxed),
            invalidated_mappings: self.invalidated_mappings.load(Relaxed),
            invalidated_bytes: self.invalidated_bytes.load(Relaxed),
            restored_mappings: self.restored_mappings.load(Relaxed),
            restored_bytes: self.restored_bytes.load(Relaxed),
            repair_failures: self.repair_failures.load(Relaxed),
            host_events: self.host_events.load(Relaxed),
            host_repairs: self.host_repairs.load(Relaxed),
            mapped_files: 0,
            unwatched_files: 0,
            refusals: self.refusals.load(Relaxed),
            thrash: self.thrash.load(Relaxed),
            forgotten_mappings: self.forgotten.load(Relaxed),
            init_refusals: self.init_refusals.load(Relaxed),
            frontend_probed: 0,
            frontend_partial_tail: 0,
            frontend_read_only_fd: 0,
            window: window.stats(),
        }
    }
}

/// One exported DAX metric: name, type, help, and its value in a snapshot.
type DaxMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&DaxMetricsSnapshot) -> u64,
);

/// The DAX metrics after `dax_window_bytes`, in the order they are exported.
const DAX_METRICS: &[DaxMetric] = &[
    (
        "dax_window_mapped_bytes",
        "gauge",
        "Bytes of the window mapping files (occupancy).",
        |m| m.window.mapped_bytes,
    ),
    (
        "dax_live_mappings",
        "gauge",
        "Mappings of files in the window.",
        |m| m.window.live_mappings,
    ),
    (
        "dax_zapped_mappings",
        "gauge",
        "Mappings torn down by invalidation, not yet removed by the guest.",
        |m| m.window.zapped_mappings,
    ),
    (
        "dax_split_slots",
        "gauge",
        "2 MiB slots split into 4 KiB entries.",
        |m| m.window.split_slots,
    ),
    (
        "dax_setupmapping_total",
        "counter",
        "SETUPMAPPING requests that mapped new ranges.",
        |m| m.setups,
    ),
    (
        "dax_upgrades_total",
        "counter",
        "SETUPMAPPING read-to-write upgrades.",
        |m| m.upgrades,
    ),
    (
        "dax_already_mapped_total",
        "counter",
        "SETUPMAPPING requests that found the range mapped.",
        |m| m.already_mapped,
    ),
    (
        "dax_removed_mappings_total",
        "counter",
        "Mappings removed by REMOVEMAPPING or replaced.",
        |m| m.removed_mappings,
    ),
    (
        "dax_refusals_total",
        "counter",
        "DAX requests refused (EINVAL, EIO, or EACCES for a read mapping the frontend could only take writable).",
        |m| m.refusals,
    ),
    (
        "dax_vmm_maps_total",
        "counter",
        "Maps sent to the VMM.",
        |m| m.window.maps,
    ),
    (
        "dax_vmm_map_failures_total",
        "counter",
        "Maps the VMM refused.",
        |m| m.window.map_failures,
    ),
    (
        "dax_vmm_unmaps_total",
        "counter",
        "Unmaps sent to the VMM (records forgotten because the frontend no longer held them not included).",
        |m| m.window.unmaps.saturating_sub(m.forgotten_mappings),
    ),
    (
        "dax_vmm_unmap_failures_total",
        "counter",
        "Unmaps the VMM refused.",
        |m| m.window.unmap_failures,
    ),
    (
        "dax_waits_total",
        "counter",
        "Times a request waited for a locked slot.",
        |m| m.window.waits,
    ),
    (
        "dax_wait_microseconds_total",
        "counter",
        "Time requests spent waiting for locked slots.",
        |m| u64::try_from(m.window.wait_time.as_micros()).unwrap_or(u64::MAX),
    ),
    (
        "dax_conflicts_total",
        "counter",
        "Grabs that met an entry of another size.",
        |m| m.window.conflicts,
    ),
    (
        "dax_invalidations_total",
        "counter",
        "Invalidation passes (a mapped file shrank).",
        |m| m.window.invalidations,
    ),
    (
        "dax_invalidated_mappings_total",
        "counter",
        "Mappings torn down because their file shrank.",
        |m| m.invalidated_mappings,
    ),
    (
        "dax_invalidated_bytes_total",
        "counter",
        "Window bytes replaced with zero pages.",
        |m| m.invalidated_bytes,
    ),
    (
        "dax_restored_mappings_total",
        "counter",
        "Zero placeholders replaced by the file again because it grew.",
        |m| m.restored_mappings,
    ),
    (
        "dax_restored_bytes_total",
        "counter",
        "Window bytes that map their file again after it grew.",
        |m| m.restored_bytes,
    ),
    (
        "dax_repair_failures_total",
        "counter",
        "VMM calls that failed while repairing mappings of a resized file.",
        |m| m.repair_failures,
    ),
    (
        "dax_host_events_total",
        "counter",
        "Change events of mapped files read from their inotify watches.",
        |m| m.host_events,
    ),
    (
        "dax_host_repairs_total",
        "counter",
        "Repairs after another host process truncated or extended a mapped file.",
        |m| m.host_repairs,
    ),
    (
        "dax_mapped_files",
        "gauge",
        "Files with mappings in the window, held open and watched.",
        |m| m.mapped_files,
    ),
    (
        "dax_unwatched_files_total",
        "counter",
        "Mapped files whose inotify watch could not be added (host-side truncations of them are not repaired).",
        |m| m.unwatched_files,
    ),
    (
        "dax_thrash_total",
        "counter",
        "File ranges mapped again within 1 s of their removal (window smaller than the working set).",
        |m| m.thrash,
    ),
    (
        "dax_forgotten_mappings_total",
        "counter",
        "Mappings of an ended session forgotten without an unmap: the frontend no longer held them (dropped at its device reset, or a new frontend).",
        |m| m.forgotten_mappings,
    ),
    (
        "dax_init_refusals_total",
        "counter",
        "INITs answered so that the guest's DAX mount fails: dax=always on a frontend that cannot map partial last pages.",
        |m| m.init_refusals,
    ),
    (
        "dax_frontend_probed",
        "gauge",
        "1 when the frontend's mapping capabilities were probed at the current session's INIT (standard protocol); 0: assumed.",
        |m| m.frontend_probed,
    ),
    (
        "dax_frontend_maps_partial_tail",
        "gauge",
        "1 when the frontend maps the partial last page of a file (patched QEMU); 0: it refuses maps passing the file's end (QEMU 11.1).",
        |m| m.frontend_partial_tail,
    ),
    (
        "dax_frontend_maps_read_only",
        "gauge",
        "1 when the frontend maps read-only descriptors; 0: it maps every mapping writable (QEMU 11.1), so read mappings need a writable descriptor.",
        |m| m.frontend_read_only_fd,
    ),
];

impl ExportMetrics for Dax {
    fn export_metrics(&self, out: &mut PrometheusText) {
        out.metric(
            "dax_window_bytes",
            "gauge",
            "Size of the DAX window.",
            self.size(),
        );
        let snapshot = self.metrics();
        for (name, kind, help, value) in DAX_METRICS {
            out.metric(name, kind, help, value(&snapshot));
        }
    }
}
