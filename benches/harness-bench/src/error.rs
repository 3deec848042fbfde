//! Errors of the benchmark command.

use std::io;

use daxfsd_harness::HarnessError;

/// Result alias of the benchmark.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// Why a benchmark run could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The harness failed (spawn, handshake, a hung or malformed reply).
    #[error("{what}")]
    Harness {
        /// What the benchmark was doing.
        what: String,
        /// The harness's error.
        #[source]
        source: HarnessError,
    },
    /// A file or process operation of the benchmark itself failed.
    #[error("{what}")]
    Io {
        /// What the benchmark was doing.
        what: String,
        /// Cause reported by the OS.
        #[source]
        source: io::Error,
    },
    /// A backend answered a benchmark request wrongly (an error, a short reply): its
    /// throughput would not be comparable, so the run stops.
    #[error("{backend} answered a {workload} request wrongly: {detail}")]
    BadReply {
        /// Backend name.
        backend: &'static str,
        /// Workload name.
        workload: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Building or locating a backend binary failed.
    #[error("{0}")]
    Binary(String),
    /// A DAX window operation of the limit measurement failed.
    #[error("the limit measurement's own {what} failed")]
    Window {
        /// Which step.
        what: &'static str,
        /// The window's error.
        #[source]
        source: daxfsd_harness::WindowError,
    },
}

impl BenchError {
    /// Wraps a harness error with what the benchmark was doing.
    pub fn harness(what: impl Into<String>, source: HarnessError) -> Self {
        BenchError::Harness {
            what: what.into(),
            source,
        }
    }

    /// Wraps an I/O error with what the benchmark was doing.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Adds context to harness results.
pub trait HarnessContext<T> {
    /// Maps the error to [`BenchError::Harness`] with `what`.
    fn during(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> HarnessContext<T> for Result<T, HarnessError> {
    fn during(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| BenchError::harness(what(), e))
    }
}
