//! The backend-request channel (SET_BACKEND_REQ_FD) served the way a VMM serves it.
//!
//! Messages are parsed here rather than by vhost's `FrontendReqHandler`, so a malformed
//! request (len 0, out of window, legacy ids 6/7 carrying fds) gets an error reply and the
//! stream stays in sync. Each message is read as header (with its fds) then exactly `size`
//! body bytes. Served requests:
//! - SHMEM_MAP (9) / SHMEM_UNMAP (10), payload `VhostUserMMap` (40 bytes);
//! - legacy FS_MAP (6) / FS_UNMAP (7), 256-byte payload `{fd_offset[8], cache_offset[8],
//!   len[8], flags[8]}` with PROT bits in flags (ids 6/7 with any other size are
//!   SHARED_OBJECT_* and refused).
//!
//! When the request asks for a reply (NEED_REPLY), the answer is a u64: 0 on success, an
//! errno otherwise (1 for any failure when playing upstream QEMU 11.1).
//!
//! Two frontends are played ([`FrontendBehaviour`]): the patched QEMU of tests/qemu (maps
//! with the access asked, partial last pages included, keeps mappings across a device
//! reset) and upstream QEMU 11.1 (refuses a map that passes the file's end and any
//! descriptor not open read-write, maps everything writable, drops its mappings at a
//! device reset).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::error::{HarnessError, Result};
use crate::window::{Window, WindowError};

/// Backend request ids served here.
pub const SHMEM_MAP: u32 = 9;
/// See [`SHMEM_MAP`].
pub const SHMEM_UNMAP: u32 = 10;
/// Legacy virtio-fs map request (shares its id with SHARED_OBJECT_ADD).
pub const LEGACY_FS_MAP: u32 = 6;
/// Legacy virtio-fs unmap request (shares its id with SHARED_OBJECT_REMOVE).
pub const LEGACY_FS_UNMAP: u32 = 7;

const HDR_LEN: usize = 12;
const FLAG_VERSION_1: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;
const MMAP_MSG_LEN: usize = 40;
const LEGACY_MSG_LEN: usize = 256;
const LEGACY_ENTRIES: usize = 8;
/// Bodies larger than this are drained and refused.
const MAX_BODY: usize = 4096;
const MAX_FDS: usize = 32;
const SHMEM_FLAG_WRITABLE: u64 = 1;
const LEGACY_PROT_READ: u64 = 1;
const LEGACY_PROT_WRITE: u64 = 2;

/// Which frontend the harness plays on the backend channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrontendBehaviour {
    /// The patched QEMU 10.0.2 of tests/qemu: a SHMEM_MAP maps with the access it asks for
    /// (a read-only mapping of an `O_RDONLY` descriptor works), the partial last page of a
    /// file maps (bytes past the end read as zeros); a device reset drops every mapping, as
    /// upstream does ([`crate::Device::device_reset_window`]).
    #[default]
    Patched,
    /// Upstream QEMU 11.1 (measured with Debian's 11.1.3): a SHMEM_MAP whose descriptor is
    /// shorter than `fd_offset + len` is refused ("backing store size ... is too small"),
    /// as is one whose descriptor is not open read-write (every mapping is `PROT_READ |
    /// PROT_WRITE`, `MAP_SHARED`: "unable to map backing store for guest RAM: Permission
    /// denied"); replies are 0 or 1; a device reset drops every mapping
    /// ([`crate::Device::device_reset_window`]).
    Upstream11_1,
}

/// One entry of a legacy FS_MAP / FS_UNMAP payload (entries with `len == 0` are unused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyEntry {
    /// File offset.
    pub fd_offset: u64,
    /// Window offset.
    pub cache_offset: u64,
    /// Length (`u64::MAX` in an unmap: to the end of the window).
    pub len: u64,
    /// PROT bits (read = 1, write = 2).
    pub flags: u64,
}

/// A parsed backend request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendRequest {
    /// SHMEM_MAP.
    ShmemMap {
        /// Region id.
        shmid: u8,
        /// File offset.
        fd_offset: u64,
        /// Window offset.
        shm_offset: u64,
        /// Length.
        len: u64,
        /// Flags (bit 0 = writable).
        flags: u64,
    },
    /// SHMEM_UNMAP.
    ShmemUnmap {
        /// Region id.
        shmid: u8,
        /// Window offset.
        shm_offset: u64,
        /// Length.
        len: u64,
    },
    /// Legacy FS_MAP with its used entries.
    LegacyMap(Vec<LegacyEntry>),
    /// Legacy FS_UNMAP with its used entries.
    LegacyUnmap(Vec<LegacyEntry>),
    /// Anything else (refused).
    Other {
        /// Request id.
        request: u32,
        /// Body size.
        size: u32,
    },
}

/// What happened to one backend request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRequestRecord {
    /// The request.
    pub request: BackendRequest,
    /// Number of fds that came with it.
    pub fds: usize,
    /// Access mode (`F_GETFL & O_ACCMODE`: `O_RDONLY`, `O_WRONLY` or `O_RDWR`) of the
    /// first fd, if any came.
    pub fd_access: Option<i32>,
    /// Whether the backend asked for a reply.
    pub need_reply: bool,
    /// 0 on success, else the errno sent (or that would have been sent) back.
    pub errno: i32,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Counters of served backend requests (failed ones included in their kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendRequestStats {
    /// SHMEM_MAP requests.
    pub shmem_map: u64,
    /// SHMEM_UNMAP requests.
    pub shmem_unmap: u64,
    /// Legacy FS_MAP requests.
    pub legacy_map: u64,
    /// Legacy FS_UNMAP requests.
    pub legacy_unmap: u64,
    /// Other requests.
    pub other: u64,
    /// Requests answered with an error.
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    shmem_map: AtomicU64,
    shmem_unmap: AtomicU64,
    legacy_map: AtomicU64,
    legacy_unmap: AtomicU64,
    other: AtomicU64,
    failed: AtomicU64,
}

struct ChannelState {
    window: Arc<Window>,
    behaviour: FrontendBehaviour,
    counters: Counters,
    /// Every request in arrival order. Guarded by its own lock; never held with the
    /// window's table lock.
    log: Mutex<Vec<BackendRequestRecord>>,
    /// Why the serving thread stopped, if it stopped on its own.
    stopped: Mutex<Option<String>>,
    /// Map requests still to refuse with EIO (fault injection).
    fail_maps: AtomicU32,
    /// Delay before each reply, in microseconds (widens race windows).
    reply_delay_us: AtomicU64,
    /// Main-loop lock taken around handling and answering each request.
    gate: Option<Arc<Mutex<()>>>,
    /// Requests held unhandled on the test's demand; see [`BackendChannel::hold_requests`].
    hold: (Mutex<Hold>, Condvar),
}

/// Whether arriving requests wait before being handled, and whether one does.
#[derive(Debug, Default)]
struct Hold {
    armed: bool,
    /// Requests waiting now.
    waiting: usize,
}

/// The serving thread and what it observed. Stops (and joins) on drop.
pub struct BackendChannel {
    state: Arc<ChannelState>,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for BackendChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendChannel")
            .field("stats", &self.stats())
            .finish()
    }
}

impl BackendChannel {
    /// Starts serving `sock` (our end of the pair whose other end went to the backend).
    /// `io_timeout` bounds the read of a message's remainder and the reply write.
    pub fn serve(sock: UnixStream, window: Arc<Window>, io_timeout: Duration) -> Result<Self> {
        Self::serve_gated(sock, window, io_timeout, None)
    }

    /// Like [`Self::serve`]; each request is handled and answered while holding `gate`
    /// (the device's main-loop lock, held during every vhost-user call).
    pub fn serve_gated(
        sock: UnixStream, window: Arc<Window>, io_timeout: Duration, gate: Option<Arc<Mutex<()>>>,
    ) -> Result<Self> {
        Self::serve_as(sock, window, io_timeout, gate, FrontendBehaviour::Patched)
    }

    /// Like [`Self::serve_gated`], playing the frontend `behaviour`.
    pub fn serve_as(
        sock: UnixStream, window: Arc<Window>, io_timeout: Duration, gate: Option<Arc<Mutex<()>>>,
        behaviour: FrontendBehaviour,
    ) -> Result<Self> {
        sock.set_read_timeout(Some(io_timeout))
            .and_then(|()| sock.set_write_timeout(Some(io_timeout)))
            .map_err(|e| HarnessError::io("setting backend channel timeouts", e))?;
        let stop = EventFd::new(libc::EFD_NONBLOCK)
            .map_err(|e| HarnessError::io("creating the channel stop eventfd", e))?;
        let stop_fd = stop
            .try_clone()
            .map_err(|e| HarnessError::io("cloning the channel stop eventfd", e))?;
        let state = Arc::new(ChannelState {
            window,
            behaviour,
            counters: Counters::default(),
            log: Mutex::new(Vec::new()),
            stopped: Mutex::new(None),
            fail_maps: AtomicU32::new(0),
            reply_delay_us: AtomicU64::new(0),
            gate,
            hold: (Mutex::new(Hold::default()), Condvar::new()),
        });
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("backend-req".to_string())
            .spawn(move || {
                let reason = serve_loop(&sock, &stop_fd, &thread_state);
                *lock(&thread_state.stopped) = Some(reason);
            })
            .map_err(|e| HarnessError::io("spawning the backend channel thread", e))?;
        Ok(BackendChannel {
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> BackendRequestStats {
        let c = &self.state.counters;
        BackendRequestStats {
            shmem_map: c.shmem_map.load(Ordering::Acquire),
            shmem_unmap: c.shmem_unmap.load(Ordering::Acquire),
            legacy_map: c.legacy_map.load(Ordering::Acquire),
            legacy_unmap: c.legacy_unmap.load(Ordering::Acquire),
            other: c.other.load(Ordering::Acquire),
            failed: c.failed.load(Ordering::Acquire),
        }
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<BackendRequestRecord> {
        lock(&self.state.log).clone()
    }

    /// Forgets the log and zeroes the counters (e.g. after the requests a session's INIT
    /// caused, so a test sees only its own).
    pub fn clear_history(&self) {
        lock(&self.state.log).clear();
        let c = &self.state.counters;
        for counter in [
            &c.shmem_map,
            &c.shmem_unmap,
            &c.legacy_map,
            &c.legacy_unmap,
            &c.other,
            &c.failed,
        ] {
            counter.store(0, Ordering::Release);
        }
    }

    /// The frontend played.
    pub fn behaviour(&self) -> FrontendBehaviour {
        self.state.behaviour
    }

    /// Why the serving thread stopped (EOF, protocol error), if it did.
    pub fn stopped(&self) -> Option<String> {
        lock(&self.state.stopped).clone()
    }

    /// Refuse the next `n` map requests (SHMEM_MAP or legacy FS_MAP) with EIO.
    pub fn fail_next_maps(&self, n: u32) {
        self.state.fail_maps.store(n, Ordering::Release);
    }

    /// From now on each request waits, read but not handled, until
    /// [`Self::release_requests`]: as a request does while QEMU's main loop is busy with
    /// a device reset (the window is dropped before the request is seen).
    pub fn hold_requests(&self) {
        lock(&self.state.hold.0).armed = true;
    }

    /// Waits until a request is held by [`Self::hold_requests`]; false after `timeout`.
    pub fn wait_for_held_request(&self, timeout: Duration) -> bool {
        let (m, cv) = &self.state.hold;
        let held = cv
            .wait_timeout_while(lock(m), timeout, |h| h.waiting == 0)
            .unwrap_or_else(|p| p.into_inner());
        held.0.waiting > 0
    }

    /// Handles the held requests and stops holding new ones.
    pub fn release_requests(&self) {
        let (m, cv) = &self.state.hold;
        lock(m).armed = false;
        cv.notify_all();
    }

    /// Sleep this long before answering each request.
    pub fn set_reply_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.state.reply_delay_us.store(us, Ordering::Release);
    }
}

impl Drop for BackendChannel {
    fn drop(&mut self) {
        self.release_requests();
        let _ = self.stop.write(1);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves until EOF, a stop request or a stream error; returns why it stopped.
fn serve_loop(sock: &UnixStream, stop: &EventFd, state: &ChannelState) -> String {
    loop {
        match wait_readable(sock.as_raw_fd(), stop.as_raw_fd()) {
            Ok(true) => {}
            Ok(false) => return "stopped by the harness".to_string(),
            Err(e) => return format!("poll failed: {e}"),
        }
        match serve_one(sock, state) {
            Ok(true) => {}
            Ok(false) => return "backend closed the channel".to_string(),
            Err(e) => return format!("channel stream error: {e}"),
        }
    }
}

/// Blocks until `sock` is readable (true) or `stop` is signalled (false).
fn wait_readable(sock: RawFd, stop: RawFd) -> std::io::Result<bool> {
    let mut fds = [
        libc::pollfd {
            fd: sock,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call and
        // its length is passed alongside.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if fds[1].revents != 0 {
            return Ok(false);
        }
        if fds[0].revents != 0 {
            return Ok(true);
        }
    }
}

/// Reads, handles and answers one message. Ok(false) on clean EOF.
fn serve_one(sock: &UnixStream, state: &ChannelState) -> std::io::Result<bool> {
    let mut hdr = [0u8; HDR_LEN];
    let mut raw_fds = [-1 as RawFd; MAX_FDS];
    let mut iov = [libc::iovec {
        iov_base: hdr.as_mut_ptr().cast(),
        iov_len: hdr.len(),
    }];
    // SAFETY: the iovec points at `hdr`, a live local buffer of iov_len bytes that nothing
    // else references during the call.
    let (got, nfds) = unsafe { sock.recv_with_fds(&mut iov, &mut raw_fds) }
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    let fds: Vec<OwnedFd> = raw_fds[..nfds]
        .iter()
        // SAFETY: recv_with_fds returned `nfds` fresh descriptors that nobody else owns.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if got == 0 && nfds == 0 {
        return Ok(false);
    }
    let mut reader = sock;
    reader.read_exact(&mut hdr[got..])?;
    let request = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let flags = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    let size = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);

    let mut body = vec![0u8; (size as usize).min(MAX_BODY)];
    reader.read_exact(&mut body)?;
    if size as usize > MAX_BODY {
        // Drain the rest to stay in sync, then refuse.
        std::io::copy(
            &mut reader.take(u64::from(size) - MAX_BODY as u64),
            &mut std::io::sink(),
        )?;
    }
    let need_reply = flags & FLAG_NEED_REPLY != 0;
    wait_while_held(state);
    let _main_loop = state.gate.as_deref().map(lock);
    let parsed = parse(request, size, &body);
    let nfds_received = fds.len();
    let fd_access = fds.first().and_then(|fd| {
        rustix::fs::fcntl_getfl(fd)
            .ok()
            .map(|flags| (flags & rustix::fs::OFlags::RWMODE).bits() as i32)
    });
    let outcome = if size as usize > MAX_BODY {
        Err(WindowError::UnsupportedRequest { request, size })
    } else {
        handle(&parsed, fds, state)
    };
    let (errno, error) = match &outcome {
        Ok(()) => (0, None),
        Err(e) => (e.errno(), Some(crate::error::error_chain(e))),
    };
    count(state, &parsed, errno != 0);
    lock(&state.log).push(BackendRequestRecord {
        request: parsed,
        fds: nfds_received,
        fd_access,
        need_reply,
        errno,
        error,
    });

    let delay = state.reply_delay_us.load(Ordering::Acquire);
    if delay > 0 {
        std::thread::sleep(Duration::from_micros(delay));
    }
    if need_reply {
        let mut reply = [0u8; HDR_LEN + 8];
        reply[0..4].copy_from_slice(&request.to_le_bytes());
        reply[4..8].copy_from_slice(&(FLAG_VERSION_1 | FLAG_REPLY).to_le_bytes());
        reply[8..12].copy_from_slice(&8u32.to_le_bytes());
        let value = match (errno, state.behaviour) {
            (0, _) => 0,
            (_, FrontendBehaviour::Upstream11_1) => 1,
            (errno, FrontendBehaviour::Patched) => u64::from(errno.unsigned_abs()),
        };
        reply[12..20].copy_from_slice(&value.to_le_bytes());
        let mut writer = sock;
        writer.write_all(&reply)?;
    }
    Ok(true)
}

/// Blocks while the test holds requests (see [`BackendChannel::hold_requests`]).
fn wait_while_held(state: &ChannelState) {
    let (m, cv) = &state.hold;
    let mut hold = lock(m);
    if !hold.armed {
        return;
    }
    hold.waiting += 1;
    cv.notify_all();
    hold = cv
        .wait_while(hold, |h| h.armed)
        .unwrap_or_else(|p| p.into_inner());
    hold.waiting -= 1;
}

fn u64_at(body: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&body[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Decodes a message body; anything unrecognised becomes `Other`.
pub fn parse(request: u32, size: u32, body: &[u8]) -> BackendRequest {
    match (request, body.len()) {
        (SHMEM_MAP | SHMEM_UNMAP, MMAP_MSG_LEN) if size as usize == MMAP_MSG_LEN => {
            let shmid = body[0];
            let fd_offset = u64_at(body, 8);
            let shm_offset = u64_at(body, 16);
            let len = u64_at(body, 24);
            let flags = u64_at(body, 32);
            if request == SHMEM_MAP {
                BackendRequest::ShmemMap {
                    shmid,
                    fd_offset,
                    shm_offset,
                    len,
                    flags,
                }
            } else {
                BackendRequest::ShmemUnmap {
                    shmid,
                    shm_offset,
                    len,
                }
            }
        }
        (LEGACY_FS_MAP | LEGACY_FS_UNMAP, LEGACY_MSG_LEN) if size as usize == LEGACY_MSG_LEN => {
            let entries = (0..LEGACY_ENTRIES)
                .map(|i| LegacyEntry {
                    fd_offset: u64_at(body, 8 * i),
                    cache_offset: u64_at(body, 64 + 8 * i),
                    len: u64_at(body, 128 + 8 * i),
                    flags: u64_at(body, 192 + 8 * i),
                })
                .filter(|e| e.len != 0)
                .collect();
            if request == LEGACY_FS_MAP {
                BackendRequest::LegacyMap(entries)
            } else {
                BackendRequest::LegacyUnmap(entries)
            }
        }
        _ => BackendRequest::Other { request, size },
    }
}

fn count(state: &ChannelState, req: &BackendRequest, failed: bool) {
    let c = &state.counters;
    let counter = match req {
        BackendRequest::ShmemMap { .. } => &c.shmem_map,
        BackendRequest::ShmemUnmap { .. } => &c.shmem_unmap,
        BackendRequest::LegacyMap(_) => &c.legacy_map,
        BackendRequest::LegacyUnmap(_) => &c.legacy_unmap,
        BackendRequest::Other { .. } => &c.other,
    };
    counter.fetch_add(1, Ordering::AcqRel);
    if failed {
        c.failed.fetch_add(1, Ordering::AcqRel);
    }
}

/// What QEMU 11.1 checks of a SHMEM_MAP's descriptor before mapping it: open read-write
/// (it maps `PROT_READ | PROT_WRITE`), and at least `fd_offset + len` bytes long (its
/// memory backend refuses a smaller backing store).
fn check_upstream_backing(file: &OwnedFd, fd_offset: u64, len: u64) -> Result<(), WindowError> {
    let access = rustix::fs::fcntl_getfl(file).map_err(|e| WindowError::Stat(e.into()))?
        & rustix::fs::OFlags::RWMODE;
    if access != rustix::fs::OFlags::RDWR {
        return Err(WindowError::BackingStoreNotWritable);
    }
    let size = rustix::fs::fstat(file)
        .map_err(|e| WindowError::Stat(e.into()))?
        .st_size as u64;
    if fd_offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(WindowError::BackingStoreTooSmall {
            size,
            len,
            offset: fd_offset,
        });
    }
    Ok(())
}

/// Whether the next map should be refused (consumes one injected failure).
fn injected_failure(state: &ChannelState) -> bool {
    state
        .fail_maps
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

fn injected_error(offset: u64, len: u64) -> WindowError {
    WindowError::Mmap {
        offset,
        len,
        // No raw OS error: answered with EIO.
        source: std::io::Error::other("failure injected by the harness"),
    }
}

fn handle(
    req: &BackendRequest, mut fds: Vec<OwnedFd>, state: &ChannelState,
) -> Result<(), WindowError> {
    let window = &state.window;
    match *req {
        BackendRequest::ShmemMap {
            shmid,
            fd_offset,
            shm_offset,
            len,
            flags,
        } => {
            if fds.len() != 1 {
                return Err(WindowError::FdCount(fds.len()));
            }
            if shmid != 0 {
                return Err(WindowError::BadShmid(shmid));
            }
            if flags & !SHMEM_FLAG_WRITABLE != 0 {
                return Err(WindowError::BadFlags(flags));
            }
            if injected_failure(state) {
                return Err(injected_error(shm_offset, len));
            }
            let file = fds.remove(0);
            let writable = flags & SHMEM_FLAG_WRITABLE != 0;
            match state.behaviour {
                FrontendBehaviour::Patched => {
                    window.map_exclusive(shm_offset, len, file, fd_offset, writable)
                }
                FrontendBehaviour::Upstream11_1 => {
                    check_upstream_backing(&file, fd_offset, len)?;
                    window.map_exclusive(shm_offset, len, file, fd_offset, true)
                }
            }
        }
        BackendRequest::ShmemUnmap {
            shmid,
            shm_offset,
            len,
        } => {
            if !fds.is_empty() {
                return Err(WindowError::UnexpectedFds(fds.len()));
            }
            if shmid != 0 {
                return Err(WindowError::BadShmid(shmid));
            }
            window.unmap_exact(shm_offset, len).map(|_| ())
        }
        BackendRequest::LegacyMap(ref entries) => {
            if fds.len() != 1 {
                return Err(WindowError::FdCount(fds.len()));
            }
            if let Some(bad) = entries
                .iter()
                .find(|e| e.flags & !(LEGACY_PROT_READ | LEGACY_PROT_WRITE) != 0)
            {
                return Err(WindowError::BadFlags(bad.flags));
            }
            if entries.is_empty() {
                return Err(WindowError::ZeroLength { offset: 0 });
            }
            if injected_failure(state) {
                return Err(injected_error(entries[0].cache_offset, entries[0].len));
            }
            let file = fds.remove(0);
            for e in entries {
                let dup = file.try_clone().map_err(|source| WindowError::Mmap {
                    offset: e.cache_offset,
                    len: e.len,
                    source,
                })?;
                window.map_replace(
                    e.cache_offset,
                    e.len,
                    dup,
                    e.fd_offset,
                    e.flags & LEGACY_PROT_READ != 0,
                    e.flags & LEGACY_PROT_WRITE != 0,
                )?;
            }
            Ok(())
        }
        BackendRequest::LegacyUnmap(ref entries) => {
            if !fds.is_empty() {
                return Err(WindowError::UnexpectedFds(fds.len()));
            }
            if entries.is_empty() {
                return Err(WindowError::ZeroLength { offset: 0 });
            }
            for e in entries {
                window.unmap_range(e.cache_offset, e.len)?;
            }
            Ok(())
        }
        BackendRequest::Other { request, size } => {
            Err(WindowError::UnsupportedRequest { request, size })
        }
    }
}
