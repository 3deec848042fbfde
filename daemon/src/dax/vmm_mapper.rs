//! The [`Mapper`] that asks the VMM to change the window, over the vhost-user
//! backend channel with the standard SHMEM_MAP / SHMEM_UNMAP requests.
//!
//! Requests are sent from the queue worker that serves the guest's request,
//! never from a frontend-message handler (the frontend waits for that
//! message's reply and would deadlock with our request).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::RwLock;

use dax_window::Mapper;
use rustix::fs::{fallocate, ftruncate, memfd_create, FallocateFlags, MemfdFlags};
use vhost::vhost_user::message::{VhostUserMMap, VhostUserMMapFlags};
use vhost::vhost_user::{Backend, VhostUserFrontendReqHandler};

/// The shared memory region id of the DAX window (`VIRTIO_FS_SHMCAP_ID_CACHE`).
pub const WINDOW_SHMID: u8 = 0;

/// Why the VMM did not change the window.
#[derive(Debug, thiserror::Error)]
pub enum VmmMapError {
    /// The frontend never sent SET_BACKEND_REQ_FD (or the session ended).
    #[error("the frontend has not opened a backend channel")]
    NoChannel,
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

/// Talks to the VMM about the window.
pub struct VmmMapper {
    /// The backend channel of the current connection; `None` between
    /// connections. Written by the frontend-message thread on
    /// SET_BACKEND_REQ_FD and on disconnect, read by queue workers; the
    /// channel serialises requests internally.
    channel: RwLock<Option<Backend>>,
    /// A sparse memfd as large as the window, mapped in place of file pages
    /// that invalidation removed: each window page at its own offset, so no
    /// two window pages alias, and hole-punched before each use so it reads
    /// as zeros and never shows an earlier occupant's data.
    placeholder: Option<OwnedFd>,
}

impl std::fmt::Debug for VmmMapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmmMapper")
            .field("channel", &self.has_channel())
            .field("placeholder", &self.placeholder)
            .finish()
    }
}

impl VmmMapper {
    /// A mapper for a window of `size` bytes; `placeholders` enables the
    /// zero-page repair of invalidated extents.
    pub fn new(size: u64, placeholders: bool) -> std::io::Result<Self> {
        let placeholder = if placeholders {
            let fd = memfd_create("daxfsd-window-placeholder", MemfdFlags::CLOEXEC)?;
            ftruncate(&fd, size)?;
            Some(fd)
        } else {
            None
        };
        Ok(Self {
            channel: RwLock::new(None),
            placeholder,
        })
    }

    /// Installs (or, with `None`, drops) the backend channel.
    pub fn set_channel(&self, channel: Option<Backend>) {
        *self.channel.write().unwrap_or_else(|e| e.into_inner()) = channel;
    }

    /// Whether a backend channel is installed.
    pub fn has_channel(&self) -> bool {
        self.channel
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn send(
        &self,
        what: &'static str,
        moffset: u64,
        len: u64,
        call: impl FnOnce(&Backend, &VhostUserMMap) -> std::io::Result<u64>,
        fd_offset: u64,
        writable: bool,
    ) -> Result<(), VmmMapError> {
        let channel = self.channel.read().unwrap_or_else(|e| e.into_inner());
        let backend = channel.as_ref().ok_or(VmmMapError::NoChannel)?;
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
        call(backend, &msg)
            .map(|_| ())
            .map_err(|source| VmmMapError::Refused {
                what,
                moffset,
                len,
                source,
            })
    }
}

impl Mapper for VmmMapper {
    type File = File;
    type Error = VmmMapError;

    fn map(
        &self,
        moffset: u64,
        len: u64,
        file: &File,
        foffset: u64,
        writable: bool,
    ) -> Result<(), VmmMapError> {
        self.send(
            "SHMEM_MAP",
            moffset,
            len,
            |backend, msg| backend.shmem_map(msg, file),
            foffset,
            writable,
        )
    }

    fn unmap(&self, moffset: u64, len: u64) -> Result<(), VmmMapError> {
        self.send(
            "SHMEM_UNMAP",
            moffset,
            len,
            |backend, msg| backend.shmem_unmap(msg),
            0,
            false,
        )
    }

    fn map_placeholder(&self, moffset: u64, len: u64) -> Result<bool, VmmMapError> {
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
        let fd = memfd.as_fd();
        self.send(
            "SHMEM_MAP",
            moffset,
            len,
            |backend, msg| backend.shmem_map(msg, &fd),
            moffset,
            true,
        )?;
        Ok(true)
    }
}
