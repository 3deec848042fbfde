//! Counters of the descriptor chains a vhost-user device serves.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::prometheus::{ExportMetrics, PrometheusText};

/// Counters of chain handling, for the metrics.
#[derive(Debug, Default)]
pub struct ChainStats {
    /// Chains returned to the guest.
    pub chains: AtomicU64,
    /// Chains whose descriptors could not be read or written (outside guest
    /// memory and the DAX window's reported placement, or in window pages
    /// that map nothing usable).
    pub bad_chains: AtomicU64,
    /// Replies of a pool thread dropped because the frontend had stopped
    /// the queue (GET_VRING_BASE) before the request finished.
    pub dropped_completions: AtomicU64,
}

impl ExportMetrics for ChainStats {
    fn export_metrics(&self, out: &mut PrometheusText) {
        out.metric(
            "chains_total",
            "counter",
            "Descriptor chains returned to the guest.",
            self.chains.load(Ordering::Relaxed),
        );
        out.metric(
            "bad_chains_total",
            "counter",
            "Descriptor chains outside guest memory.",
            self.bad_chains.load(Ordering::Relaxed),
        );
        out.metric(
            "dropped_completions_total",
            "counter",
            "Replies dropped because the frontend stopped the queue before the request finished (--thread-pool-size).",
            self.dropped_completions.load(Ordering::Relaxed),
        );
    }
}
