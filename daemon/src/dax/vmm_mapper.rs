//! The [`Mapper`] that asks the VMM to change the window, over the vhost-user
//! backend channel: the standard SHMEM_MAP / SHMEM_UNMAP requests, or the
//! legacy FS_MAP / FS_UNMAP of older frontends (`--dax-protocol legacy`).
//!
//! Requests are sent from the queue worker that serves the guest's request,
//! never from a frontend-message handler (the frontend waits for that
//! message's reply and would deadlock with our request).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, RwLock};

use dax_window::Mapper;
use rustix::fs::{fallocate, ftruncate, memfd_create, FallocateFlags, MemfdFlags};
use vhost::vhost_user::message::{VhostUserMMap, VhostUserMMapFlags};
use vhost::vhost_user::{Backend, VhostUserFrontendReqHandler};

use super::frontend_caps::CapsState;
use super::legacy::{self, LegacyChannel, LegacyError, FS_MAP, FS_UNMAP};
use super::trace::{DaxTrace, Value};

/// The shared memory region id of the DAX window (`VIRTIO_FS_SHMCAP_ID_CACHE`).
pub const WINDOW_SHMID: u8 = 0;

/// Why the VMM did not change the window.
#[derive(Debug, thiserror::Error)]
pub enum VmmMapError {
    /// The frontend never sent SET_BACKEND_REQ_FD (or the session ended).
    #[error("the frontend has not opened a backend channel")]
    NoChannel,
    /// The legacy channel could not be found, or refused.
    #[error("legacy {what} at window offset {moffset:#x}+{len:#x}")]
    Legacy {
        /// "FS_MAP" or "FS_UNMAP".
        what: &'static str,
        /// Window offset.
        moffset: u64,
        /// Length.
        len: u64,
        /// Cause.
        #[source]
        source: LegacyError,
    },
    /// The frontend refused or the channel broke.
    #[error("{what} at window offset {moffset:#x}+{len:#x} refused by the frontend")]
    Refused {
        /// "SHMEM_MAP" or "SHMEM_UNMAP".
        what: &'static str,
        /// Window offset.
        moffset: u64,
        /// Length.
        len: u64,
        /// The channel's error.
        #[source]
        source: std::io::Error,
    },
    /// The size of the file to map could not be read.
    #[error("cannot read the size of the file to map")]
    Stat(#[source] rustix::io::Errno),
    /// The zero-filled placeholder could not be prepared.
    #[error("preparing the placeholder at {moffset:#x}+{len:#x}")]
    Placeholder {
        /// Window offset.
        moffset: u64,
        /// Length.
        len: u64,
        /// Cause.
        #[source]
        source: rustix::io::Errno,
    },
}

/// Which DAX protocol the frontend speaks (`--dax-protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DaxProtocol {
    /// Standard vhost-user SHMEM_MAP / SHMEM_UNMAP (protocol feature SHMEM).
    #[default]
    Shmem,
    /// Legacy FS_MAP / FS_UNMAP on backend request ids 6 / 7 (alioth, Kata
    /// Dragonball); the frontend must negotiate REPLY_ACK.
    Legacy,
}

/// The installed backend channel.
enum Channel {
    Shmem(Backend),
    Legacy(LegacyChannel),
}

/// Talks to the VMM about the window.
pub struct VmmMapper {
    protocol: DaxProtocol,
    /// The backend channel of the current connection; `None` between
    /// connections. Written by the frontend-message thread on
    /// SET_BACKEND_REQ_FD and on disconnect, read by queue workers; each
    /// channel serialises its request/reply exchanges internally.
    channel: RwLock<Option<Channel>>,
    /// A sparse memfd as large as the window, mapped in place of file pages
    /// that lie past the file's end (at map time, or after a repair): each
    /// window page at its own offset, so no two window pages alias, and
    /// hole-punched before each use so it reads as zeros and never shows an
    /// earlier occupant's data. `None`: repair switched off (test builds
    /// only), whole ranges are mapped as the guest asks.
    placeholder: Option<OwnedFd>,
    /// `--dax-trace`: every request sent is written there.
    trace: Option<Arc<DaxTrace>>,
    /// What the frontend of the current session maps (probed at INIT).
    caps: CapsState,
}

impl std::fmt::Debug for VmmMapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmmMapper")
            .field("protocol", &self.protocol)
            .field("channel", &self.has_channel())
            .field("placeholder", &self.placeholder)
            .field("trace", &self.trace.is_some())
            .field("caps", &self.caps.get())
            .finish()
    }
}

impl VmmMapper {
    /// A mapper for a window of `size` bytes; `placeholders` enables mapping
    /// only the file pages below the file's end and zero pages past it.
    /// `trace` receives one event per request sent.
    pub fn new(
        size: u64, protocol: DaxProtocol, placeholders: bool, trace: Option<Arc<DaxTrace>>,
    ) -> std::io::Result<Self> {
        let placeholder = if placeholders {
            let fd = memfd_create("daxfsd-window-placeholder", MemfdFlags::CLOEXEC)?;
            ftruncate(&fd, size)?;
            Some(fd)
        } else {
            None
        };
        Ok(Self {
            protocol,
            channel: RwLock::new(None),
            placeholder,
            trace,
            caps: CapsState::default(),
        })
    }

    /// What the frontend of the current session maps.
    pub(super) fn caps(&self) -> &CapsState {
        &self.caps
    }

    /// The size the index places `file`'s mappings by, for a file of
    /// `size` bytes: the size itself, or, when the frontend cannot map a
    /// partial last page, `size` rounded down to whole pages, so the partial
    /// page gets the placeholder instead of a map the frontend refuses (see
    /// docs/protocol.md, "Frontend capabilities").
    pub(super) fn mappable_size(&self, size: u64) -> u64 {
        if self.caps.get().partial_tail {
            size
        } else {
            size - size % dax_window::PAGE_SIZE
        }
    }

    /// The protocol spoken.
    pub fn protocol(&self) -> DaxProtocol {
        self.protocol
    }

    /// Installs (or, with `None`, drops) the backend channel. In legacy mode
    /// the channel's socket is found next to the frontend connection on
    /// `socket_path` (see [`LegacyChannel::discover`]).
    pub fn set_channel(&self, backend: Option<Backend>, socket_path: &std::path::Path) {
        let channel = match (backend, self.protocol) {
            (None, _) => None,
            (Some(b), DaxProtocol::Shmem) => Some(Channel::Shmem(b)),
            (Some(_), DaxProtocol::Legacy) => match LegacyChannel::discover(socket_path) {
                Ok(c) => Some(Channel::Legacy(c)),
                Err(error) => {
                    tracing::error!(error = %crate::error_chain(&error), "legacy DAX channel unusable");
                    None
                }
            },
        };
        *self.channel.write().unwrap_or_else(|e| e.into_inner()) = channel;
    }

    /// Whether a backend channel is installed.
    pub fn has_channel(&self) -> bool {
        self.channel
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Writes a `vmm_map` event (with `fd`: its device and inode) or a
    /// `vmm_unmap` event (without) for a request sent, when tracing.
    fn trace_sent(
        &self, map: Option<(BorrowedFd<'_>, u64, bool, bool)>, moffset: u64, len: u64,
        result: &Result<(), VmmMapError>,
    ) {
        let Some(trace) = &self.trace else {
            return;
        };
        let outcome = match result {
            Ok(()) => "ok".to_owned(),
            Err(error) => crate::error_chain(error),
        };
        let request = match (self.protocol, map.is_some()) {
            (DaxProtocol::Shmem, true) => "SHMEM_MAP",
            (DaxProtocol::Shmem, false) => "SHMEM_UNMAP",
            (DaxProtocol::Legacy, true) => "FS_MAP",
            (DaxProtocol::Legacy, false) => "FS_UNMAP",
        };
        match map {
            Some((fd, foffset, writable, placeholder)) => {
                let stat = rustix::fs::fstat(fd).ok();
                trace.event(
                    "vmm_map",
                    &[
                        ("req", request.into()),
                        ("moffset", moffset.into()),
                        ("len", len.into()),
                        ("foffset", foffset.into()),
                        ("writable", writable.into()),
                        ("placeholder", placeholder.into()),
                        ("dev", stat.as_ref().map(|s| s.st_dev).into()),
                        ("ino", stat.as_ref().map(|s| s.st_ino).into()),
                        ("result", outcome.as_str().into()),
                    ],
                );
            }
            None => trace.event(
                "vmm_unmap",
                &[
                    ("req", request.into()),
                    ("moffset", moffset.into()),
                    ("len", len.into()),
                    ("foffset", Value::Null),
                    ("writable", Value::Null),
                    ("placeholder", Value::Null),
                    ("dev", Value::Null),
                    ("ino", Value::Null),
                    ("result", outcome.as_str().into()),
                ],
            ),
        }
    }

    /// Maps `fd` at `fd_offset` over `[moffset, moffset + len)` (or unmaps
    /// the range when `fd` is `None`). Neither traced nor counted: the
    /// [`Mapper`] methods do that; the frontend probe calls this directly.
    pub(super) fn send(
        &self, moffset: u64, len: u64, fd: Option<BorrowedFd<'_>>, fd_offset: u64, writable: bool,
    ) -> Result<(), VmmMapError> {
        let channel = self.channel.read().unwrap_or_else(|e| e.into_inner());
        match channel.as_ref().ok_or(VmmMapError::NoChannel)? {
            Channel::Shmem(backend) => {
                let flags = if writable {
                    VhostUserMMapFlags::WRITABLE
                } else {
                    VhostUserMMapFlags::empty()
                };
                let msg = VhostUserMMap {
                    shmid: WINDOW_SHMID,
                    padding: [0; 7],
                    fd_offset,
                    shm_offset: moffset,
                    len,
                    flags: flags.bits(),
                };
                let (what, sent) = match fd {
                    Some(fd) => ("SHMEM_MAP", backend.shmem_map(&msg, &fd)),
                    None => ("SHMEM_UNMAP", backend.shmem_unmap(&msg)),
                };
                sent.map(|_| ()).map_err(|source| VmmMapError::Refused {
                    what,
                    moffset,
                    len,
                    source,
                })
            }
            Channel::Legacy(channel) => {
                let (what, sent) = match fd {
                    Some(fd) => (
                        "FS_MAP",
                        channel.request(
                            FS_MAP,
                            &legacy::map_msg(moffset, len, fd_offset, writable),
                            Some(fd),
                        ),
                    ),
                    None => (
                        "FS_UNMAP",
                        channel.request(FS_UNMAP, &legacy::unmap_msg(moffset, len), None),
                    ),
                };
                sent.map_err(|source| VmmMapError::Legacy {
                    what,
                    moffset,
                    len,
                    source,
                })
            }
        }
    }
}

impl Mapper for VmmMapper {
    type File = File;
    type Error = VmmMapError;

    fn map(
        &self, moffset: u64, len: u64, file: &File, foffset: u64, writable: bool,
    ) -> Result<(), VmmMapError> {
        let result = self.send(moffset, len, Some(file.as_fd()), foffset, writable);
        self.trace_sent(
            Some((file.as_fd(), foffset, writable, false)),
            moffset,
            len,
            &result,
        );
        result
    }

    fn unmap(&self, moffset: u64, len: u64) -> Result<(), VmmMapError> {
        let result = self.send(moffset, len, None, 0, false);
        self.trace_sent(None, moffset, len, &result);
        result
    }

    /// The legacy FS_MAP replaces whatever the range holds (MAP_FIXED), so
    /// a read-to-write upgrade needs no unmap and leaves no gap.
    fn map_replaces_existing(&self) -> bool {
        self.protocol == DaxProtocol::Legacy
    }

    /// Writable when the guest mapping was, so a stale guest write lands in
    /// the placeholder instead of faulting the VMM.
    fn map_placeholder(&self, moffset: u64, len: u64, writable: bool) -> Result<bool, VmmMapError> {
        let Some(memfd) = &self.placeholder else {
            return Ok(false);
        };
        // Zero whatever an earlier placeholder at this extent absorbed.
        fallocate(
            memfd,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            moffset,
            len,
        )
        .map_err(|source| VmmMapError::Placeholder {
            moffset,
            len,
            source,
        })?;
        let result = self.send(moffset, len, Some(memfd.as_fd()), moffset, writable);
        self.trace_sent(
            Some((memfd.as_fd(), moffset, writable, true)),
            moffset,
            len,
            &result,
        );
        result.map(|()| true)
    }

    /// fstat of the file, read after the index registered the map (so a
    /// repair after a truncation finds the map or the map sees the new size),
    /// rounded down to whole pages when the frontend cannot map a partial
    /// last page ([`VmmMapper::mappable_size`]).
    fn file_size(&self, file: &File) -> Result<Option<u64>, VmmMapError> {
        if self.placeholder.is_none() {
            return Ok(None);
        }
        let stat = rustix::fs::fstat(file).map_err(VmmMapError::Stat)?;
        Ok(Some(
            self.mappable_size(u64::try_from(stat.st_size).unwrap_or(0)),
        ))
    }
}
