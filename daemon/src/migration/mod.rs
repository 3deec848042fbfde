//! The migration room: what the daemon hands its successor when QEMU
//! live-migrates the guest (vhost-user device-state transfer,
//! `VHOST_USER_PROTOCOL_F_DEVICE_STATE`), and how each side reacts to what
//! cannot be carried over (`--migration-*`, as virtiofsd 1.14).
//!
//! The guest's FUSE session outlives the daemon that served it: the
//! destination must know every nodeid and fh the guest holds, and the
//! features INIT agreed, because the guest will not send INIT again. The
//! source writes a [`DeviceState`] to the pipe QEMU gives it at switch-over
//! (the guest and the queues are stopped, so nothing changes under it);
//! QEMU carries the bytes in its migration stream; the destination reads
//! them before its queues start and opens every inode and handle again.
//!
//! How an inode travels ([`MigrationMode`]): as its path below the shared
//! directory (`find-paths`, found from `/proc/self/fd`, searched for when
//! that fails), or as its file handle (`file-handles`: the same filesystem
//! on both sides, the destination with CAP_DAC_READ_SEARCH). An inode the
//! source cannot name, or the destination cannot open, aborts the migration
//! (`--migration-on-error abort`) or stays known to the guest but answers
//! every request with EIO (`guest-error`).
//!
//! This room holds the record and the choices; the filesystem fills and
//! reads the record (`fs::FileSystem::export_state`/`import_state`), and
//! the vhost-user transport moves its bytes (`transport::vhost_user`).

use serde::{Deserialize, Serialize};

use crate::session::Negotiated;

mod transfer;

pub use transfer::Transfer;

/// How inodes are represented in the migration stream (`--migration-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MigrationMode {
    /// Each inode as its path relative to the shared directory.
    #[default]
    FindPaths,
    /// Each inode as its file handle: source and destination share the
    /// very same filesystem.
    FileHandles,
}

/// What the destination does with an inode it cannot open
/// (`--migration-on-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnError {
    /// The migration fails (CHECK_DEVICE_STATE reports it; the guest runs
    /// on at the source).
    #[default]
    Abort,
    /// The migration completes; the guest gets EIO for that inode.
    GuestError,
}

/// The `--migration-*` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MigrationConfig {
    /// How the source represents inodes (ignored on the destination).
    pub mode: MigrationMode,
    /// How the destination reacts to an inode it cannot open (ignored on
    /// the source).
    pub on_error: OnError,
    /// `find-paths`: the source attaches each inode's file handle, and the
    /// destination checks that the path opened the very same inode.
    pub verify_handles: bool,
    /// `find-paths`: at switch-over, check that each path collected when
    /// the migration started still leads to its inode, and find it again
    /// when it does not.
    pub confirm_paths: bool,
}

/// Why a migration failed, on either side.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The device serves a DAX window: its mappings live in the frontend
    /// and cannot be carried over.
    #[error("a device with a DAX window (--cache-size) cannot be migrated")]
    DaxWindow,
    /// The destination already serves a guest session.
    #[error("the destination already serves a guest session")]
    SessionActive,
    /// A transfer was asked for while one was still running.
    #[error("a device-state transfer is already running")]
    Busy,
    /// CHECK_DEVICE_STATE without a transfer before it.
    #[error("no device-state transfer was started")]
    NoTransfer,
    /// The transfer's thread could not be started or panicked.
    #[error("the device-state transfer thread failed")]
    Thread(#[source] std::io::Error),
    /// Reading or writing the pipe failed.
    #[error("device-state pipe")]
    Pipe(#[source] std::io::Error),
    /// The bytes are not a device state this daemon can read.
    #[error("device state unreadable")]
    Format(#[source] serde_json::Error),
    /// The record is from another version of the format.
    #[error("device state version {found}, this daxfsd reads version {FORMAT_VERSION}")]
    Version {
        /// The version the source wrote.
        found: u32,
    },
    /// With `--migration-on-error abort`: an inode or handle the
    /// destination could not open (the first of `count`).
    #[error("{count} inode(s) or handle(s) could not be migrated; the first: {first}")]
    Unmigratable {
        /// How many failed.
        count: usize,
        /// What the first failure was.
        first: String,
    },
    /// The shared directory could not be read to build the state.
    #[error("reading the shared directory")]
    Host(#[source] std::io::Error),
}

/// The version of [`DeviceState`] written and read.
pub const FORMAT_VERSION: u32 = 1;

/// Everything the destination needs to serve the guest's session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// [`FORMAT_VERSION`] of the writer.
    pub version: u32,
    /// The session INIT started (`None`: the guest has not mounted, and
    /// `fs` holds only the root).
    pub session: Option<Negotiated>,
    /// The filesystem's inodes and handles.
    pub fs: FsState,
}

/// The inodes and handles the guest holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsState {
    /// Every inode but the root (nodeid 1, the shared directory itself).
    pub inodes: Vec<InodeState>,
    /// Every open file and directory.
    pub handles: Vec<HandleState>,
    /// The next nodeid to hand out (ids are never reused in a session).
    pub next_nodeid: u64,
    /// The next fh to hand out.
    pub next_fh: u64,
}

/// One inode the guest holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InodeState {
    /// Its nodeid, kept.
    pub nodeid: u64,
    /// The guest's lookup count, kept (FORGETs will come for it).
    pub lookups: u64,
    /// How the destination finds it.
    pub location: Location,
    /// With `--migration-verify-handles`: its file handle, compared with
    /// the handle of what the destination opened.
    pub verify: Option<HandleBytes>,
}

/// How the destination finds an inode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Location {
    /// Its path relative to the shared directory (bytes: any name is a
    /// valid Linux name, UTF-8 or not).
    Path(Vec<u8>),
    /// Its file handle, opened on the shared directory's filesystem.
    Handle(HandleBytes),
    /// The source found no way to name it; why.
    Lost(String),
}

/// A file handle's type and opaque bytes (`struct file_handle` without its
/// length, which is the bytes').
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleBytes {
    /// `handle_type`.
    pub handle_type: i32,
    /// `f_handle`.
    pub bytes: Vec<u8>,
}

/// One open file or directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleState {
    /// Its fh, kept.
    pub fh: u64,
    /// The inode it was opened from.
    pub nodeid: u64,
    /// Its status flags and access mode (`F_GETFL`), to open it again with.
    pub flags: u32,
    /// A directory handle (OPENDIR) rather than a file (OPEN, CREATE).
    pub directory: bool,
}

/// What the destination made of a [`DeviceState`] under
/// `--migration-on-error guest-error`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Inodes opened again.
    pub inodes: usize,
    /// Handles opened again.
    pub handles: usize,
    /// Inodes and handles that answer EIO (or are gone): what failed.
    pub failures: Vec<String>,
}

impl DeviceState {
    /// The record's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, MigrationError> {
        serde_json::to_vec(self).map_err(MigrationError::Format)
    }

    /// Reads a record, refusing another format version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MigrationError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let found = serde_json::from_slice::<VersionOnly>(bytes)
            .map_err(MigrationError::Format)?
            .version;
        if found != FORMAT_VERSION {
            return Err(MigrationError::Version { found });
        }
        serde_json::from_slice(bytes).map_err(MigrationError::Format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DeviceState {
        DeviceState {
            version: FORMAT_VERSION,
            session: Some(Negotiated {
                writeback: true,
                ..Negotiated::default()
            }),
            fs: FsState {
                inodes: vec![InodeState {
                    nodeid: 7,
                    lookups: 3,
                    location: Location::Path(b"dir/\xffname".to_vec()),
                    verify: Some(HandleBytes {
                        handle_type: 1,
                        bytes: vec![1, 2, 3],
                    }),
                }],
                handles: vec![HandleState {
                    fh: 4,
                    nodeid: 7,
                    flags: 0o2002,
                    directory: false,
                }],
                next_nodeid: 8,
                next_fh: 5,
            },
        }
    }

    #[test]
    fn a_state_reads_back_as_written() {
        let state = sample();
        let bytes = state.to_bytes().unwrap();
        assert_eq!(DeviceState::from_bytes(&bytes).unwrap(), state);
    }

    #[test]
    fn another_version_is_refused_naming_it() {
        let mut state = sample();
        state.version = FORMAT_VERSION + 1;
        let bytes = state.to_bytes().unwrap();
        let error = DeviceState::from_bytes(&bytes).unwrap_err();
        assert!(matches!(error, MigrationError::Version { found } if found == FORMAT_VERSION + 1));
    }

    #[test]
    fn garbage_is_a_format_error() {
        let error = DeviceState::from_bytes(b"\x00\x01not json").unwrap_err();
        assert!(matches!(error, MigrationError::Format(_)));
    }
}
