//! The dirty log a VMM hands the backend for live migration (the vhost-user spec,
//! "Migration"): one bit per 4 KiB page of guest-physical memory (bit `p % 8` of byte
//! `p / 8` for page `p`), in a memfd passed with SET_LOG_BASE (protocol feature
//! LOG_SHMFD). While VHOST_F_LOG_ALL is negotiated the backend sets the bit of every page
//! it writes into.
//!
//! QEMU's two orders, both driven from here: a device started while a migration runs
//! gets SET_FEATURES with LOG_ALL at start and SET_LOG_BASE after its rings
//! ([`DirtyLog::install`]); a running device gets SET_LOG_BASE, SET_FEATURES with
//! LOG_ALL and SET_VRING_ADDR with VHOST_VRING_F_LOG on every queue when the migration
//! starts ([`DirtyLog::start_logging`]), and the same without LOG_ALL and the flag when it
//! ends ([`DirtyLog::stop_logging`]).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt as _;

use vhost::{VhostBackend as _, VhostUserDirtyLogRegion};

use crate::device::Device;
use crate::error::{HarnessError, Result};
use crate::guest_memory::GuestMemory;

/// Bytes of guest memory one bit of the log stands for (`VHOST_LOG_PAGE`).
pub const LOG_PAGE: u64 = 4096;
/// `VHOST_F_LOG_ALL`: the virtio feature bit that switches logging on.
pub const VHOST_F_LOG_ALL: u64 = 1 << 26;
/// Pages per log word: QEMU sizes the log in `u64`s (`VHOST_LOG_CHUNK`).
const PAGES_PER_WORD: u64 = 64;

/// A dirty log held by the harness as the VMM.
#[derive(Debug)]
pub struct DirtyLog {
    file: File,
    len: u64,
}

impl DirtyLog {
    /// A clear log covering guest-physical 0 to the end of `memory`, sized as QEMU sizes
    /// it (whole `u64` words up to the word of the last page).
    pub fn for_memory(memory: &GuestMemory) -> Result<Self> {
        Self::covering(memory.base() + memory.size())
    }

    /// A clear log covering guest-physical `[0, end)` (`end` > 0), e.g. beyond guest RAM
    /// for regions added later.
    pub fn covering(end: u64) -> Result<Self> {
        let last_page = end.saturating_sub(1) / LOG_PAGE;
        let len = (last_page / PAGES_PER_WORD + 1) * 8;
        let fd =
            rustix::fs::memfd_create("daxfsd-harness-dirty-log", rustix::fs::MemfdFlags::CLOEXEC)
                .map_err(|e| HarnessError::io("memfd_create for the dirty log", e.into()))?;
        let file = File::from(fd);
        file.set_len(len)
            .map_err(|e| HarnessError::io("sizing the dirty log memfd", e))?;
        Ok(DirtyLog { file, len })
    }

    /// Size of the log in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log covers no page (never: it covers at least one word).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// SET_LOG_BASE with the log's memfd (needs LOG_SHMFD negotiated).
    pub fn install(&self, dev: &Device) -> Result<()> {
        let region = VhostUserDirtyLogRegion {
            mmap_size: self.len,
            mmap_offset: 0,
            mmap_handle: self.file.as_raw_fd(),
        };
        dev.vhost_call("SET_LOG_BASE", |fe| fe.set_log_base(0, Some(region)))
    }

    /// What QEMU sends a running device when a migration starts: SET_LOG_BASE,
    /// SET_FEATURES with LOG_ALL added to what was negotiated, then SET_VRING_ADDR with
    /// VHOST_VRING_F_LOG on every configured queue.
    pub fn start_logging(&self, dev: &Device) -> Result<()> {
        self.install(dev)?;
        let features = dev.negotiated().features | VHOST_F_LOG_ALL;
        dev.vhost_call("SET_FEATURES(+LOG_ALL)", |fe| fe.set_features(features))?;
        dev.set_vring_logging(true)
    }

    /// What QEMU sends when the migration ends or is cancelled: SET_FEATURES as
    /// negotiated (without LOG_ALL), then SET_VRING_ADDR without the log flag. The
    /// backend must stop writing into the log, which the VMM then frees.
    pub fn stop_logging(&self, dev: &Device) -> Result<()> {
        let features = dev.negotiated().features & !VHOST_F_LOG_ALL;
        dev.vhost_call("SET_FEATURES(-LOG_ALL)", |fe| fe.set_features(features))?;
        dev.set_vring_logging(false)
    }

    /// The numbers of the pages (guest-physical address / [`LOG_PAGE`]) whose bit is
    /// set, ascending.
    pub fn dirty_pages(&self) -> Result<Vec<u64>> {
        let mut bytes = vec![0u8; self.len as usize];
        self.file
            .read_exact_at(&mut bytes, 0)
            .map_err(|e| HarnessError::io("reading the dirty log", e))?;
        Ok(bytes
            .iter()
            .enumerate()
            .flat_map(|(i, &byte)| {
                (0..8u64)
                    .filter(move |bit| byte & (1 << bit) != 0)
                    .map(move |bit| i as u64 * 8 + bit)
            })
            .collect())
    }

    /// Clears every bit, as the VMM does once it synced the log.
    pub fn clear(&self) -> Result<()> {
        self.file
            .write_all_at(&vec![0u8; self.len as usize], 0)
            .map_err(|e| HarnessError::io("clearing the dirty log", e))
    }
}

/// The pages `[addr, addr + len)` touches (none when `len` is 0).
pub fn pages_of(addr: u64, len: u64) -> std::ops::Range<u64> {
    if len == 0 {
        return 0..0;
    }
    addr / LOG_PAGE..(addr + len - 1) / LOG_PAGE + 1
}
