//! Errors of the harness. Every failure of the backend under test (a hung reply, a bad
//! used-ring entry, an exit) comes back as one of these, never as a panic.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::window::WindowError;

/// Result alias of the harness.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

/// Everything that can go wrong while playing the VMM.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The backend program could not be started.
    #[error("cannot start backend program {program}")]
    Spawn {
        /// Program that was executed.
        program: PathBuf,
        /// Cause reported by the OS.
        #[source]
        source: io::Error,
    },
    /// The backend exited while the harness waited for it.
    #[error("backend exited ({status}) while {waiting_for}; stderr:\n{stderr}")]
    BackendExited {
        /// Exit status of the backend.
        status: ExitStatus,
        /// What the harness was waiting for.
        waiting_for: &'static str,
        /// Tail of the backend's stderr.
        stderr: String,
    },
    /// A bounded wait expired.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What the harness was waiting for.
        what: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// A system call or file operation of the harness itself failed.
    #[error("{what}")]
    Io {
        /// The operation that failed.
        what: String,
        /// Cause reported by the OS.
        #[source]
        source: io::Error,
    },
    /// The backend program could not be located or installed.
    #[error("backend binary unavailable: {0}")]
    BinaryUnavailable(String),
    /// Creating the guest memory mapping failed.
    #[error("cannot map guest memory")]
    GuestMemoryMap(#[source] vm_memory::mmap::FromRangesError),
    /// Accessing guest memory failed (address outside guest memory).
    #[error("guest memory access at {addr:#x} (+{len} bytes)")]
    GuestMemoryAccess {
        /// Guest-physical address.
        addr: u64,
        /// Length of the access.
        len: usize,
        /// Cause reported by vm-memory.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The guest-memory allocator has no room left.
    #[error("guest memory exhausted allocating {0} bytes")]
    OutOfGuestMemory(u64),
    /// A vhost-user message exchange with the backend failed.
    #[error("vhost-user {step} failed")]
    Vhost {
        /// Handshake step or request that failed.
        step: String,
        /// Error of the vhost crate.
        #[source]
        source: vhost::Error,
    },
    /// The backend lacks a feature the requested configuration needs.
    #[error("backend does not offer {0}")]
    MissingFeature(&'static str),
    /// The backend supports fewer queues than configured.
    #[error("backend supports {supported} queues, configuration needs {requested}")]
    TooManyQueues {
        /// GET_QUEUE_NUM answer.
        supported: u64,
        /// Queues the configuration asks for.
        requested: usize,
    },
    /// The configuration is inconsistent.
    #[error("invalid device configuration: {0}")]
    InvalidConfig(String),
    /// Queue index out of range.
    #[error("queue {0} does not exist")]
    NoSuchQueue(usize),
    /// The queue was left unconfigured on purpose.
    #[error("queue {0} was enabled but never configured")]
    QueueNotConfigured(usize),
    /// Not enough free descriptors for the chain.
    #[error("queue {queue} has {free} free descriptors, the chain needs {needed}")]
    QueueFull {
        /// Queue index.
        queue: usize,
        /// Free descriptors.
        free: usize,
        /// Descriptors the chain needs.
        needed: usize,
    },
    /// A chain must have at least one descriptor.
    #[error("a descriptor chain needs at least one descriptor")]
    EmptyChain,
    /// A raw chain's link names an element outside the chain.
    #[error("raw descriptor {element} links to chain element {target}, chain has {len}")]
    BadRawLink {
        /// Element whose link is wrong.
        element: usize,
        /// Linked element.
        target: usize,
        /// Chain length.
        len: usize,
    },
    /// A buffer is longer than a descriptor can describe.
    #[error("segment of {0} bytes does not fit a descriptor")]
    SegmentTooLarge(usize),
    /// The token does not belong to a request of this device.
    #[error("unknown request token {token} on queue {queue}")]
    UnknownToken {
        /// Queue index.
        queue: usize,
        /// Token id.
        token: u64,
    },
    /// The backend put a descriptor id in the used ring that is not in flight.
    #[error(
        "backend returned used id {id} on queue {queue}, which is not an in-flight chain head"
    )]
    UnknownUsedId {
        /// Queue index.
        queue: usize,
        /// Used element id.
        id: u32,
    },
    /// The backend claimed to write more bytes than the chain can hold.
    #[error("backend reported {used_len} bytes written, the chain has {capacity} writable bytes")]
    UsedLenTooLarge {
        /// Length in the used element.
        used_len: u32,
        /// Writable capacity of the chain.
        capacity: u64,
    },
    /// The used ring index moved by more than the queue size.
    #[error("used index on queue {queue} jumped from {last} to {now}, beyond queue size {size}")]
    UsedIndexJump {
        /// Queue index.
        queue: usize,
        /// Last index seen.
        last: u16,
        /// Index read now.
        now: u16,
        /// Queue size.
        size: u16,
    },
    /// DAX was requested but the window or channel is not set up.
    #[error("this device has no DAX window (set DeviceConfig::cache_size)")]
    NoWindow,
    /// A window operation failed.
    #[error("window operation failed")]
    Window(#[from] WindowError),
    /// A reply could not be decoded.
    #[error("malformed reply: {0}")]
    MalformedReply(String),
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        HarnessError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn vhost(step: impl Into<String>, source: vhost::Error) -> Self {
        HarnessError::Vhost {
            step: step.into(),
            source,
        }
    }
}

/// Formats an error with its whole `source` chain, one cause per line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(cause) = cur {
        out.push_str("\n  caused by: ");
        out.push_str(&cause.to_string());
        cur = cause.source();
    }
    out
}
