//! The metrics file: every counter an operator needs, rewritten once a
//! second in Prometheus text format (`--metrics-file`).
//!
//! The file is replaced atomically (write to a temporary name, then rename),
//! so a reader never sees half a snapshot; node_exporter's textfile
//! collector or a plain `cat` can read it.

use std::fmt::Write as _;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::device::FsDevice;

/// Renders the device's counters.
pub fn render(device: &FsDevice) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP daxfsd_{name} {help}\n# TYPE daxfsd_{name} {kind}\ndaxfsd_{name} {value}"
        );
    };
    let d = device.dispatcher().stats();
    metric(
        "requests_total",
        "counter",
        "FUSE requests parsed.",
        d.requests.load(Relaxed),
    );
    metric(
        "malformed_requests_total",
        "counter",
        "FUSE requests refused as malformed.",
        d.malformed.load(Relaxed),
    );
    metric(
        "unsupported_requests_total",
        "counter",
        "FUSE requests answered ENOSYS.",
        d.unsupported.load(Relaxed),
    );
    let c = device.chain_stats();
    metric(
        "chains_total",
        "counter",
        "Descriptor chains returned to the guest.",
        c.chains.load(Relaxed),
    );
    metric(
        "bad_chains_total",
        "counter",
        "Descriptor chains outside guest memory.",
        c.bad_chains.load(Relaxed),
    );
    let (inodes, handles) = device.dispatcher().fs().counts();
    metric(
        "inodes",
        "gauge",
        "Inodes the guest holds (root included).",
        inodes as u64,
    );
    metric(
        "open_handles",
        "gauge",
        "Open file and directory handles.",
        handles as u64,
    );
    if let Some(dax) = device.dispatcher().dax() {
        let m = dax.metrics();
        let w = m.window;
        metric(
            "dax_window_bytes",
            "gauge",
            "Size of the DAX window.",
            dax.size(),
        );
        metric(
            "dax_window_mapped_bytes",
            "gauge",
            "Bytes of the window mapping files (occupancy).",
            w.mapped_bytes,
        );
        metric(
            "dax_live_mappings",
            "gauge",
            "Mappings of files in the window.",
            w.live_mappings,
        );
        metric(
            "dax_zapped_mappings",
            "gauge",
            "Mappings torn down by invalidation, not yet removed by the guest.",
            w.zapped_mappings,
        );
        metric(
            "dax_split_slots",
            "gauge",
            "2 MiB slots split into 4 KiB entries.",
            w.split_slots,
        );
        metric(
            "dax_setupmapping_total",
            "counter",
            "SETUPMAPPING requests that mapped new ranges.",
            m.setups,
        );
        metric(
            "dax_upgrades_total",
            "counter",
            "SETUPMAPPING read-to-write upgrades.",
            m.upgrades,
        );
        metric(
            "dax_already_mapped_total",
            "counter",
            "SETUPMAPPING requests that found the range mapped.",
            m.already_mapped,
        );
        metric(
            "dax_removed_mappings_total",
            "counter",
            "Mappings removed by REMOVEMAPPING or replaced.",
            m.removed_mappings,
        );
        metric(
            "dax_refusals_total",
            "counter",
            "DAX requests refused (EINVAL, EIO, or EACCES for a read mapping the frontend could only take writable).",
            m.refusals,
        );
        metric(
            "dax_vmm_maps_total",
            "counter",
            "Maps sent to the VMM.",
            w.maps,
        );
        metric(
            "dax_vmm_map_failures_total",
            "counter",
            "Maps the VMM refused.",
            w.map_failures,
        );
        metric(
            "dax_vmm_unmaps_total",
            "counter",
            "Unmaps sent to the VMM (records forgotten because the frontend no longer held them not included).",
            w.unmaps.saturating_sub(m.forgotten_mappings),
        );
        metric(
            "dax_vmm_unmap_failures_total",
            "counter",
            "Unmaps the VMM refused.",
            w.unmap_failures,
        );
        metric(
            "dax_waits_total",
            "counter",
            "Times a request waited for a locked slot.",
            w.waits,
        );
        metric(
            "dax_wait_microseconds_total",
            "counter",
            "Time requests spent waiting for locked slots.",
            u64::try_from(w.wait_time.as_micros()).unwrap_or(u64::MAX),
        );
        metric(
            "dax_conflicts_total",
            "counter",
            "Grabs that met an entry of another size.",
            w.conflicts,
        );
        metric(
            "dax_invalidations_total",
            "counter",
            "Invalidation passes (a mapped file shrank).",
            w.invalidations,
        );
        metric(
            "dax_invalidated_mappings_total",
            "counter",
            "Mappings torn down because their file shrank.",
            m.invalidated_mappings,
        );
        metric(
            "dax_invalidated_bytes_total",
            "counter",
            "Window bytes replaced with zero pages.",
            m.invalidated_bytes,
        );
        metric(
            "dax_restored_mappings_total",
            "counter",
            "Zero placeholders replaced by the file again because it grew.",
            m.restored_mappings,
        );
        metric(
            "dax_restored_bytes_total",
            "counter",
            "Window bytes that map their file again after it grew.",
            m.restored_bytes,
        );
        metric(
            "dax_repair_failures_total",
            "counter",
            "VMM calls that failed while repairing mappings of a resized file.",
            m.repair_failures,
        );
        metric(
            "dax_host_events_total",
            "counter",
            "Change events of mapped files read from their inotify watches.",
            m.host_events,
        );
        metric(
            "dax_host_repairs_total",
            "counter",
            "Repairs after another host process truncated or extended a mapped file.",
            m.host_repairs,
        );
        metric(
            "dax_mapped_files",
            "gauge",
            "Files with mappings in the window, held open and watched.",
            m.mapped_files,
        );
        metric(
            "dax_unwatched_files_total",
            "counter",
            "Mapped files whose inotify watch could not be added (host-side truncations of them are not repaired).",
            m.unwatched_files,
        );
        metric(
            "dax_thrash_total",
            "counter",
            "File ranges mapped again within 1 s of their removal (window smaller than the working set).",
            m.thrash,
        );
        metric(
            "dax_forgotten_mappings_total",
            "counter",
            "Mappings of an ended session forgotten without an unmap: the frontend no longer held them (dropped at its device reset, or a new frontend).",
            m.forgotten_mappings,
        );
        metric(
            "dax_init_refusals_total",
            "counter",
            "INITs answered so that the guest's DAX mount fails: dax=always on a frontend that cannot map partial last pages.",
            m.init_refusals,
        );
        metric(
            "dax_frontend_probed",
            "gauge",
            "1 when the frontend's mapping capabilities were probed at the current session's INIT (standard protocol); 0: assumed.",
            m.frontend_probed,
        );
        metric(
            "dax_frontend_maps_partial_tail",
            "gauge",
            "1 when the frontend maps the partial last page of a file (patched QEMU); 0: it refuses maps passing the file's end (QEMU 11.1).",
            m.frontend_partial_tail,
        );
        metric(
            "dax_frontend_maps_read_only",
            "gauge",
            "1 when the frontend maps read-only descriptors; 0: it maps every mapping writable (QEMU 11.1), so read mappings need a writable descriptor.",
            m.frontend_read_only_fd,
        );
        let placement = device.window_placement();
        metric(
            "dax_window_address_known",
            "gauge",
            "1 once the frontend reported where the window sits in guest-physical memory (SET_CONFIG at offset 64).",
            u64::from(placement.span().is_some()),
        );
        let io = placement.stats();
        metric(
            "dax_window_io_read_bytes_total",
            "counter",
            "Bytes of chain buffers inside the window read through the mapped files (e.g. WRITE data).",
            io.read_bytes.load(Relaxed),
        );
        metric(
            "dax_window_io_written_bytes_total",
            "counter",
            "Bytes of chain buffers inside the window written through the mapped files (e.g. READ data).",
            io.written_bytes.load(Relaxed),
        );
        metric(
            "dax_window_io_faults_total",
            "counter",
            "Chains refused because a buffer inside the window maps nothing usable (EFAULT) or its file failed (EIO).",
            io.faults.load(Relaxed),
        );
    }
    out
}

/// Where the snapshots go.
#[derive(Debug)]
pub enum MetricsSink {
    /// The metrics file, written by this process.
    File(PathBuf),
    /// The supervisor outside the sandbox, which writes the file: one
    /// snapshot per `SOCK_SEQPACKET` record (see `process::sandbox::supervisor`).
    Relay(OwnedFd),
}

impl MetricsSink {
    /// Publishes one snapshot.
    pub fn publish(&self, contents: &str) -> std::io::Result<()> {
        match self {
            Self::File(path) => crate::process::write_atomically(path, contents.as_bytes()),
            Self::Relay(fd) => {
                rustix::io::write(fd, contents.as_bytes())?;
                Ok(())
            }
        }
    }
}

/// Writes the metrics once, now (the daemon's last word before it exits, so
/// the file ends with the final counts).
pub fn write_now(device: &FsDevice, sink: &MetricsSink) -> std::io::Result<()> {
    sink.publish(&render(device))
}

/// Starts the thread that publishes a snapshot every `period`.
pub fn spawn_writer(
    device: Arc<FsDevice>,
    sink: Arc<MetricsSink>,
    period: Duration,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("daxfsd-metrics".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                match sink.publish(&render(&device)) {
                    Ok(()) => failing = false,
                    Err(error) if !failing => {
                        tracing::warn!(?sink, %error, "cannot write the metrics");
                        failing = true;
                    }
                    Err(_) => {}
                }
                std::thread::sleep(period);
            }
        })
        .map(|_| ())
}
