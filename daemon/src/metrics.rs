//! The metrics file: every counter an operator needs, rewritten once a
//! second in Prometheus text format (`--metrics-file`).
//!
//! The file is replaced atomically (write to a temporary name, then rename),
//! so a reader never sees half a snapshot; node_exporter's textfile
//! collector or a plain `cat` can read it.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::prometheus::{ExportMetrics, PrometheusText};
use crate::transport::vhost_user::FsDevice;

/// Renders the daemon's counters: each room writes its own, in a fixed
/// order (the metric names and their order are part of the interface).
pub fn render(device: &FsDevice) -> String {
    let mut out = PrometheusText::new();
    let dispatcher = device.dispatcher();
    dispatcher.stats().export_metrics(&mut out);
    device.chain_stats().export_metrics(&mut out);
    dispatcher.fs().export_metrics(&mut out);
    if let Some(dax) = dispatcher.dax() {
        dax.export_metrics(&mut out);
        device.window_placement().export_metrics(&mut out);
    }
    out.finish()
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
    device: Arc<FsDevice>, sink: Arc<MetricsSink>, period: Duration,
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
