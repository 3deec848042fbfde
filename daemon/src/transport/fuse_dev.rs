//! Host FUSE transport: the same dispatcher and passthrough, served over
//! `/dev/fuse` instead of virtqueues (`daxfsd --mount-point DIR`).
//!
//! The Linux kernel's own FUSE client then drives our request path without a
//! VM, so POSIX suites (pjdfstest), `ls`, editors and compilers can run
//! against the daemon on the host. The loop is ours rather than fuser's on
//! purpose: a reader copies each request out of `/dev/fuse` into a buffer
//! and hands those bytes to [`Dispatcher::dispatch`], exactly as a queue
//! worker hands it the readable bytes of a descriptor chain. fuser would
//! bring its own parser and its own request types, so the protocol crate and
//! the dispatcher — the code a guest reaches — would not be exercised.
//!
//! Differences from the virtqueue transport, all handled here:
//! - a read must offer at least `max_write` plus the request headers (the
//!   kernel refuses smaller buffers with EINVAL), so each reader owns a
//!   [`REQUEST_BUFFER`]-byte buffer;
//! - a reply is one `write(2)` of header and body; a reply to a request the
//!   kernel has meanwhile dropped (interrupted, aborted) fails with ENOENT
//!   and is forgotten;
//! - FORGET, BATCH_FORGET and INTERRUPT get no reply (the dispatcher already
//!   says so); requests run to completion, so INTERRUPT needs no action;
//! - a read fails with ENODEV once the filesystem is unmounted: that ends
//!   the session. Reads interrupted by a signal (EINTR) or racing an
//!   aborted request (ENOENT, EAGAIN) are retried;
//! - INIT is negotiated by the same code, without a DAX window, so nothing
//!   virtio-only (MAP_ALIGNMENT, inode DAX) is announced; `--mount-point`
//!   conflicts with `--cache-size`.
//!
//! The mount is made with `mount(2)` (the daemon must be root, as virtiofsd
//! must be to switch credentials), with the options `virtio_fs.c` applies to
//! a guest mount: `default_permissions,allow_other`. SIGTERM, SIGINT and
//! SIGHUP unmount it; the readers then see ENODEV and the daemon exits.

use std::ffi::CString;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno as SysErrno;
use rustix::mount::{MountFlags, UnmountFlags};

use crate::dispatch::{DaemonReplySpace, Dispatcher, SessionEnd, MAX_REPLY, MAX_TRANSFER};
use crate::process::signals::{BlockedSignals, STOP_SIGNALS};
use crate::ratelimit::RateLimit;
use crate::worker_guard::{run_guarded, WorkerFailure, WorkerPanic};

/// Bytes each reader offers to `read(2)`: the largest WRITE (`max_write`)
/// plus a page for its headers, more than the kernel's minimum of
/// `max_write + sizeof(fuse_in_header) + sizeof(fuse_write_in)` (and of
/// FUSE_MIN_READ_BUFFER, 8 KiB).
pub const REQUEST_BUFFER: usize = MAX_TRANSFER as usize + 4096;

/// The largest reply the dispatcher may build: a full READ or READDIR.
pub const REPLY_CAPACITY: usize = MAX_REPLY;

/// Why the FUSE transport could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum FuseDevError {
    /// `/dev/fuse` could not be opened.
    #[error("cannot open /dev/fuse")]
    OpenDevice(#[source] std::io::Error),
    /// The mount point is unusable.
    #[error("mount point {path}")]
    MountPoint {
        /// The mount point.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The mount point lies inside the shared directory: a lookup of it
    /// would reach this very mount and wait for itself.
    #[error("mount point {mount_point} is inside the shared directory {shared_dir}")]
    MountInsideShare {
        /// The mount point.
        mount_point: PathBuf,
        /// The shared directory.
        shared_dir: PathBuf,
    },
    /// `mount(2)` failed (EPERM: the daemon is not root).
    #[error("cannot mount FUSE on {path}")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Signal handling could not be set up.
    #[error("cannot set up SIGTERM/SIGINT handling")]
    Signals(#[source] std::io::Error),
    /// A reader thread could not be started.
    #[error("cannot start a /dev/fuse reader thread")]
    Spawn(#[source] std::io::Error),
    /// Reading a request failed for a reason other than unmount.
    #[error("reading a request from /dev/fuse")]
    Read(#[source] std::io::Error),
    /// A reply could not be written and the session cannot go on.
    #[error("writing a reply to /dev/fuse")]
    Write(#[source] std::io::Error),
    /// A reader panicked; the filesystem was unmounted.
    #[error("serving /dev/fuse")]
    Panicked(#[source] WorkerPanic),
}

/// A FUSE filesystem mounted on a host directory, and the `/dev/fuse`
/// descriptor its requests arrive on.
#[derive(Debug)]
pub struct FuseMount {
    device: OwnedFd,
    mount_point: PathBuf,
    /// Set once a reader saw ENODEV (or the signal thread unmounted):
    /// the mount is gone and `Drop` must not unmount whatever is at the
    /// path now.
    gone: AtomicBool,
}

impl FuseMount {
    /// Opens `/dev/fuse` and mounts it on `mount_point` as `fuse.daxfsd`,
    /// source `fsname`. The daemon's credentials become the mount's owner.
    pub fn mount(mount_point: &Path, fsname: &str) -> Result<Self, FuseDevError> {
        let mount_err = |source: std::io::Error| FuseDevError::Mount {
            path: mount_point.to_owned(),
            source,
        };
        let meta = std::fs::metadata(mount_point).map_err(|source| FuseDevError::MountPoint {
            path: mount_point.to_owned(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(FuseDevError::MountPoint {
                path: mount_point.to_owned(),
                source: std::io::Error::from_raw_os_error(libc::ENOTDIR),
            });
        }
        let device = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| FuseDevError::OpenDevice(e.into()))?;
        let options = format!(
            "fd={},rootmode=40000,user_id={},group_id={},default_permissions,allow_other",
            device.as_raw_fd(),
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        let options = CString::new(options).map_err(|e| mount_err(e.into()))?;
        let source = CString::new(fsname.as_bytes()).map_err(|e| mount_err(e.into()))?;
        rustix::mount::mount(
            source.as_c_str(),
            mount_point,
            c"fuse.daxfsd",
            MountFlags::NOSUID | MountFlags::NODEV,
            options.as_c_str(),
        )
        .map_err(|e| mount_err(e.into()))?;
        Ok(Self {
            device,
            mount_point: mount_point.to_owned(),
            gone: AtomicBool::new(false),
        })
    }

    /// The descriptor requests are read from and replies written to.
    pub fn device(&self) -> BorrowedFd<'_> {
        self.device.as_fd()
    }

    /// Where the filesystem is mounted.
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if !self.gone.load(Ordering::Acquire) {
            // The readers stopped on an error while still mounted: do not
            // leave a dead mount ("Transport endpoint is not connected").
            if let Err(error) = unmount(&self.mount_point) {
                tracing::warn!(mount_point = %self.mount_point.display(), %error, "cannot unmount");
            }
        }
    }
}

/// Unmounts `mount_point`; a busy mount is detached instead (it goes away
/// once its last open file is closed, and the readers see ENODEV then).
pub fn unmount(mount_point: &Path) -> std::io::Result<()> {
    match rustix::mount::unmount(mount_point, UnmountFlags::empty()) {
        Err(SysErrno::BUSY) => rustix::mount::unmount(mount_point, UnmountFlags::DETACH)?,
        other => other?,
    }
    Ok(())
}

/// Refuses a mount point inside the shared directory (both canonicalised).
pub fn check_mount_point(mount_point: &Path, shared_dir: &Path) -> Result<(), FuseDevError> {
    let canon = |p: &Path| {
        p.canonicalize().map_err(|source| FuseDevError::MountPoint {
            path: p.to_owned(),
            source,
        })
    };
    let (mount, shared) = (canon(mount_point)?, canon(shared_dir)?);
    if mount.starts_with(&shared) {
        return Err(FuseDevError::MountInsideShare {
            mount_point: mount,
            shared_dir: shared,
        });
    }
    Ok(())
}

/// Mounts, serves until unmounted (by a signal or by `umount`), and ends the
/// session. `readers` threads read requests concurrently.
pub fn run(
    dispatcher: &Dispatcher, shared_dir: &Path, mount_point: &Path, fsname: &str, readers: u16,
) -> Result<(), FuseDevError> {
    check_mount_point(mount_point, shared_dir)?;
    // Block the signals before any thread starts so that every thread
    // inherits the mask and only the signal thread receives them.
    let signals = BlockedSignals::block(&STOP_SIGNALS).map_err(FuseDevError::Signals)?;
    let mount = FuseMount::mount(mount_point, fsname)?;
    tracing::info!(mount_point = %mount_point.display(), readers, "daxfsd serving /dev/fuse");
    let target = mount.mount_point().to_owned();
    std::thread::Builder::new()
        .name("daxfsd-signals".into())
        .spawn(move || unmount_on_signal(&signals, &target))
        .map_err(FuseDevError::Spawn)?;
    let served = serve(dispatcher, &mount, readers);
    dispatcher.end_session(SessionEnd::Disconnect);
    let stats = dispatcher.stats();
    tracing::info!(
        requests = stats.requests.load(Ordering::Relaxed),
        malformed = stats.malformed.load(Ordering::Relaxed),
        unsupported = stats.unsupported.load(Ordering::Relaxed),
        "FUSE session ended"
    );
    served
}

/// Runs `readers` reader threads on `mount` until the filesystem is
/// unmounted; the first reader error stops the others by unmounting.
pub fn serve(dispatcher: &Dispatcher, mount: &FuseMount, readers: u16) -> Result<(), FuseDevError> {
    let write_log = &RateLimit::per_second(10);
    // A reader that panics unmounts (below, as on any reader error): the
    // others then see ENODEV and the daemon exits with the error.
    let failure = &WorkerFailure::default();
    std::thread::scope(|scope| {
        let mut threads = Vec::new();
        for i in 0..readers.max(1) {
            let spawned = std::thread::Builder::new()
                .name(format!("daxfsd-fuse{i}"))
                .spawn_scoped(scope, move || {
                    let result = run_guarded(
                        || format!("/dev/fuse reader {i}"),
                        || reader_loop(dispatcher, mount.device(), write_log),
                    )
                    .unwrap_or_else(|panic| {
                        failure.report(panic.clone());
                        Err(FuseDevError::Panicked(panic))
                    });
                    match &result {
                        Ok(()) => mount.gone.store(true, Ordering::Release),
                        // Wake the other readers: they see ENODEV.
                        Err(_) => {
                            if unmount(&mount.mount_point).is_ok() {
                                mount.gone.store(true, Ordering::Release);
                            }
                        }
                    }
                    result
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    if unmount(&mount.mount_point).is_ok() {
                        mount.gone.store(true, Ordering::Release);
                    }
                    return Err(FuseDevError::Spawn(e));
                }
            }
        }
        let mut first_error = Ok(());
        for t in threads {
            let result = t
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            if first_error.is_ok() {
                first_error = result;
            }
        }
        first_error
    })
}

/// One reader: read a request, dispatch it, write the reply; until ENODEV.
fn reader_loop(
    dispatcher: &Dispatcher, device: BorrowedFd<'_>, write_log: &RateLimit,
) -> Result<(), FuseDevError> {
    let mut request = vec![0u8; REQUEST_BUFFER];
    let mut reply = Vec::with_capacity(REPLY_CAPACITY);
    let mut space = DaemonReplySpace::new(REPLY_CAPACITY);
    loop {
        let n = match rustix::io::read(device, &mut request) {
            Ok(n) => n,
            Err(SysErrno::NODEV) => return Ok(()),
            Err(SysErrno::INTR | SysErrno::AGAIN | SysErrno::NOENT) => continue,
            Err(e) => return Err(FuseDevError::Read(e.into())),
        };
        let answer = dispatcher.dispatch(&request[..n], &mut reply, &space);
        let Some((head, data)) = answer.head_and_data() else {
            continue;
        };
        // One write per reply (the kernel takes a reply whole): the head
        // from the reply buffer, READ data from where it was read to.
        let parts = [IoSlice::new(&reply[..head]), IoSlice::new(space.data(data))];
        match rustix::io::writev(device, &parts) {
            Ok(_) => {}
            // The request was interrupted or aborted meanwhile.
            Err(SysErrno::NOENT) => {}
            Err(SysErrno::NODEV) => return Ok(()),
            // The kernel refused this reply (a dispatcher bug, or a reply
            // the kernel's copy of the request no longer matches); the
            // request ends with an error there and the session goes on.
            Err(SysErrno::INVAL) => {
                if let Some(suppressed) = write_log.check() {
                    let unique = crate::dispatch::reply_header(&reply[..head]).map(|h| h.unique);
                    tracing::warn!(
                        ?unique,
                        len = head + data,
                        suppressed,
                        "/dev/fuse refused a reply (EINVAL)"
                    );
                }
            }
            Err(e) => return Err(FuseDevError::Write(e.into())),
        }
    }
}

/// Waits for one of `signals` (blocked everywhere) and unmounts.
fn unmount_on_signal(signals: &BlockedSignals, mount_point: &Path) {
    let Some(signal) = wait_signal(signals) else {
        return;
    };
    // Found before unmounting: a detached mount has no path any more.
    let connection = fuse_connection(mount_point);
    tracing::info!(signal, mount_point = %mount_point.display(), "stopping: unmounting");
    if let Err(error) = unmount(mount_point) {
        tracing::warn!(mount_point = %mount_point.display(), %error, "cannot unmount");
    }
    // A second signal while a detached (busy) mount drains: abort the
    // connection, so that pending and future requests fail and the readers
    // see ENODEV.
    if let Some(again) = wait_signal(signals) {
        tracing::warn!(
            signal = again,
            "second signal: aborting the FUSE connection"
        );
        match connection {
            Some(id) => {
                let abort = format!("/sys/fs/fuse/connections/{id}/abort");
                if let Err(error) = std::fs::write(&abort, b"1") {
                    tracing::warn!(%abort, %error, "cannot abort the FUSE connection");
                }
            }
            None => tracing::warn!("FUSE connection not found in /proc/self/mountinfo"),
        }
    }
}

fn wait_signal(signals: &BlockedSignals) -> Option<i32> {
    match signals.wait() {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "sigwait failed; signals will not unmount");
            None
        }
    }
}

/// The fusectl connection id (the minor device number of the mount) of the
/// last `fuse.daxfsd` mount on `mount_point`, from `/proc/self/mountinfo`.
fn fuse_connection(mount_point: &Path) -> Option<u32> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let target = mount_point.canonicalize().ok()?;
    let target = target.to_str()?;
    mountinfo.lines().rev().find_map(|line| {
        // id parent major:minor root mount-point options... - fstype ...
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        let fstype = fields.get(dash + 1)?;
        if *fstype != "fuse.daxfsd" || *fields.get(4)? != target {
            return None;
        }
        fields.get(2)?.split_once(':')?.1.parse().ok()
    })
}
