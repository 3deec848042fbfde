//! A vhost-user-fs frontend test harness: it plays the VMM and the guest driver against
//! a real backend (daxfsd or upstream virtiofsd) over its socket.
//!
//! - [`BackendCommand`] / [`BackendProcess`]: start the backend on a temporary socket and
//!   shared directory, capture its logs, kill it on drop.
//! - [`Device`]: memfd guest memory shared with SET_MEM_TABLE, the vhost-user handshake,
//!   split virtqueues driven from guest memory, bounded waits for used buffers, and raw
//!   descriptor chains for malformed-input tests.
//! - [`Window`] / [`BackendChannel`]: the DAX window as a VMM holds it, filled by the
//!   backend's SHMEM_MAP / SHMEM_UNMAP (and legacy FS_MAP / FS_UNMAP) requests.
//! - [`FuseClient`] ([`client`]): one typed method per FUSE operation over a [`Device`],
//!   sending the requests of the pure builders in [`client::requests`].
//! - [`fuse`]: sending FUSE requests built with `daxfsd_protocol` and checking replies.
//! - [`DirtyLog`] ([`dirty_log`]): the dirty log of a live migration, installed with
//!   SET_LOG_BASE and read page by page.
//! - [`dax_replay`]: replaying a DAX trace (`daxfsd --dax-trace`) against the daemon and
//!   checking the window page by page against what the guest asked for.

pub mod backend_channel;
pub mod client;
pub mod dax_replay;
pub mod device;
pub mod dirty_log;
pub mod error;
pub mod fuse;
pub mod guest_memory;
pub mod handshake;
pub mod process;
mod skip;
pub mod virtqueue;
mod watchdog;
pub mod window;

pub use backend_channel::{
    BackendChannel, BackendRequest, BackendRequestRecord, BackendRequestStats, FrontendBehaviour,
    LegacyEntry,
};
pub use client::{FuseClient, FuseResult};
pub use device::{Device, DeviceConfig, FsConfig, Negotiated};
pub use dirty_log::DirtyLog;
pub use error::{error_chain, HarnessError, Result};
pub use fuse::{FuseReply, Uniques};
pub use guest_memory::{GuestAllocator, GuestBuf, GuestMemory};
pub use process::{locate_daxfsd, locate_virtiofsd, BackendCommand, BackendProcess};
pub use skip::{in_ci, skip};
pub use virtqueue::{Completion, Link, QueueStats, RawDesc, Token};
pub use window::{MappingInfo, Window, WindowError};
