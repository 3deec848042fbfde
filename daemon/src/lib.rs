//! daxfsd: a vhost-user-fs daemon that shares a host directory with a VM over
//! virtio-fs and serves the DAX window.
//!
//! The binary (`main.rs`) is a thin shell over this library so that tests and
//! fuzz targets can drive the dispatcher and filesystem directly.
//!
//! The modules are rooms, each importing only rooms below it (see
//! docs/architecture.md, "Which room may import which"; checked by
//! `daemon/tests/rooms.rs`): `server` → `config`, `metrics`, `transport` →
//! `dispatch` → `dax` → `fs` → `migration` → `session`, `process`; `errno`,
//! `ratelimit`, `prometheus` and `worker_guard` are leaves anyone may use.

pub mod config;
pub mod dax;
pub mod dispatch;
pub mod errno;
pub mod fs;
pub(crate) mod metrics;
pub mod migration;
pub mod process;
pub(crate) mod prometheus;
pub(crate) mod ratelimit;
pub mod server;
pub mod session;
pub mod transport;
pub(crate) mod worker_guard;

/// Renders an error and its `source` chain on one line, "a: b: c".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
