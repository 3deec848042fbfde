//! Prometheus text lines: each room writes its own counters with
//! [`ExportMetrics`]; `metrics` only gathers them into the snapshot.

use std::fmt::Write as _;

/// A snapshot being written, in Prometheus text format.
#[derive(Debug, Default)]
pub struct PrometheusText {
    out: String,
}

impl PrometheusText {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// One metric `daxfsd_{name}` of `kind` ("counter" or "gauge") with its
    /// help line.
    pub fn metric(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        let _ = writeln!(
            self.out,
            "# HELP daxfsd_{name} {help}\n# TYPE daxfsd_{name} {kind}\ndaxfsd_{name} {value}"
        );
    }

    /// The text written.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A room's counters, written as Prometheus lines.
pub trait ExportMetrics {
    /// Writes this room's metrics to `out`.
    fn export_metrics(&self, out: &mut PrometheusText);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_help_type_and_value() {
        let mut out = PrometheusText::new();
        out.metric("x_total", "counter", "Xs.", 3);
        assert_eq!(
            out.finish(),
            "# HELP daxfsd_x_total Xs.\n# TYPE daxfsd_x_total counter\ndaxfsd_x_total 3\n"
        );
    }
}
