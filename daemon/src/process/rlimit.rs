//! RLIMIT_NOFILE, as `--rlimit-nofile` asks (virtiofsd's flag).
//!
//! Half of the soft limit is the budget of inode descriptors the
//! passthrough filesystem keeps open; the rest is for the guest's open
//! files and the daemon's own descriptors (sockets, queues' eventfds,
//! memory regions).

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// The smallest `--rlimit-nofile` accepted: 256 descriptors for the daemon
/// itself and its guest's open files, 256 for inodes.
pub const MIN_NOFILE: u64 = 512;

/// What the default raises the soft limit to at most (virtiofsd's default).
const DEFAULT_NOFILE: u64 = 1_000_000;

/// `--rlimit-nofile N` could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("--rlimit-nofile {limit}: cannot set RLIMIT_NOFILE")]
pub struct RlimitError {
    /// The limit asked for.
    pub limit: u64,
    /// Why setrlimit refused (EPERM above the hard limit without
    /// CAP_SYS_RESOURCE, or above /proc/sys/fs/nr_open).
    #[source]
    pub source: std::io::Error,
}

/// Applies `--rlimit-nofile`: `Some(0)` leaves the limit alone, `Some(n)`
/// sets the soft and hard limits to `n`, `None` raises the soft limit to
/// min(1000000, /proc/sys/fs/nr_open) where allowed (to the hard limit
/// where not), never failing.
pub fn apply(requested: Option<u64>) -> Result<(), RlimitError> {
    match requested {
        Some(0) => Ok(()),
        Some(limit) => setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(limit),
                maximum: Some(limit),
            },
        )
        .map_err(|e| RlimitError {
            limit,
            source: e.into(),
        }),
        None => {
            raise_default();
            Ok(())
        }
    }
}

/// The default: as high as min(1000000, nr_open), or the hard limit.
fn raise_default() {
    let now = getrlimit(Resource::Nofile);
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_NOFILE);
    let target = DEFAULT_NOFILE.min(nr_open);
    if now.current.is_none_or(|soft| soft >= target) {
        return;
    }
    let wanted = Rlimit {
        current: Some(target),
        maximum: now.maximum.map(|hard| hard.max(target)),
    };
    if setrlimit(Resource::Nofile, wanted).is_ok() {
        tracing::debug!(limit = target, "raised RLIMIT_NOFILE");
        return;
    }
    // Not allowed above the hard limit: up to it, as far as the target.
    let soft = now.maximum.map_or(target, |hard| hard.min(target));
    if now.current.is_some_and(|current| current < soft) {
        let raised = Rlimit {
            current: Some(soft),
            maximum: now.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(limit = soft, "raised RLIMIT_NOFILE to the hard limit"),
            Err(error) => tracing::warn!(%error, "cannot raise RLIMIT_NOFILE"),
        }
    }
}
