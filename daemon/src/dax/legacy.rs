//! The legacy DAX protocol of older frontends (alioth, Kata's Dragonball):
//! backend requests FS_MAP (6) and FS_UNMAP (7) with a 256-byte payload of
//! eight `{fd_offset, cache_offset, len, flags}` entries, flags being PROT
//! bits, and MAP_FIXED semantics (a map replaces whatever the range holds).
//!
//! rust-vmm `vhost` 0.18 numbers 6 and 7 SHARED_OBJECT_ADD/REMOVE and its
//! `Backend` neither sends these payloads nor exposes its socket. So in
//! legacy mode the daemon finds the backend channel's socket itself when
//! the frontend installs it: it is the one unnamed UNIX stream socket whose
//! peer is the frontend process (identified through the vhost-user
//! connection, the socket bound to `--socket-path`). It keeps a duplicate of
//! that descriptor and speaks the legacy messages on it; `Backend` is never
//! used in this mode, so the two never interleave on the socket.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rustix::fs::{fstat, FileType};
use rustix::net::{getsockname, sockopt, AddressFamily, SocketAddrUnix, SocketType};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Backend request id of the legacy FS_MAP.
pub const FS_MAP: u32 = 6;
/// Backend request id of the legacy FS_UNMAP.
pub const FS_UNMAP: u32 = 7;
/// Entries in one legacy request.
pub const ENTRIES: usize = 8;

/// vhost-user header flags: protocol version 1, this is a reply, reply wanted.
const VERSION_1: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;
/// How long a frontend may take to acknowledge one request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The 256-byte legacy payload (`VhostUserFSBackendMsg` in older vhost).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct LegacyFsMsg {
    /// File offsets.
    pub fd_offset: [u64; ENTRIES],
    /// Window offsets.
    pub cache_offset: [u64; ENTRIES],
    /// Lengths; 0 marks an unused entry.
    pub len: [u64; ENTRIES],
    /// PROT_READ / PROT_WRITE.
    pub flags: [u64; ENTRIES],
}

#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Header {
    request: u32,
    flags: u32,
    size: u32,
}

/// Why the legacy channel could not be found or used.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    /// Listing or inspecting the daemon's descriptors failed.
    #[error("inspecting the daemon's descriptors")]
    Inspect(#[source] io::Error),
    /// No connection to the frontend bound to the socket path was found.
    #[error("no frontend connection on {0}")]
    NoFrontend(String),
    /// Zero or several candidate sockets.
    #[error(
        "{0} unnamed sockets from the frontend process; cannot tell which is the backend channel"
    )]
    Ambiguous(usize),
    /// Sending the request failed.
    #[error("sending request {request}")]
    Send {
        /// Request id.
        request: u32,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The frontend's reply did not arrive or did not fit.
    #[error("reading the reply to request {request}")]
    Reply {
        /// Request id.
        request: u32,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The frontend refused the request.
    #[error("the frontend refused request {request} (status {status})")]
    Refused {
        /// Request id.
        request: u32,
        /// The status it returned.
        status: u64,
    },
}

/// The backend channel in legacy mode.
#[derive(Debug)]
pub struct LegacyChannel {
    /// The duplicated socket; the lock keeps one request/reply exchange
    /// whole when several queue workers map at once.
    stream: Mutex<UnixStream>,
}

struct SocketInfo {
    raw: i32,
    name: Option<Vec<u8>>,
    unnamed: bool,
    peer_pid: i32,
}

/// The process's open UNIX stream sockets (descriptors 0-2 excluded).
fn unix_stream_sockets() -> io::Result<Vec<SocketInfo>> {
    let mut found = Vec::new();
    // Through the descriptor the sandbox opened: inside it the path
    // /proc/self/fd would name a directory of the guest's.
    let dir = crate::process::fds::read_fd_dir()?;
    for entry in dir {
        let Ok(raw) = entry?.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if raw <= 2 {
            continue;
        }
        // SAFETY: `raw` was listed in /proc/self/fd a moment ago. The
        // borrow lives only for this loop iteration and is used only with
        // inspecting syscalls (fstat, getsockopt, getsockname), which fail
        // harmlessly with EBADF if another thread closed it meanwhile; the
        // daemon never reuses a descriptor number for something it would
        // mind being fstat'ed.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        let Ok(st) = fstat(fd) else { continue };
        if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
            continue;
        }
        if sockopt::socket_type(fd).ok() != Some(SocketType::STREAM) {
            continue;
        }
        // The listening socket carries the path too, but it is no one's
        // connection.
        if sockopt::socket_acceptconn(fd).unwrap_or(false) {
            continue;
        }
        let Ok(addr) = getsockname(fd) else { continue };
        if addr.address_family() != AddressFamily::UNIX {
            continue;
        }
        let Ok(unix) = SocketAddrUnix::try_from(addr) else {
            continue;
        };
        let Some(peer_pid) = peer_pid(fd) else {
            continue;
        };
        found.push(SocketInfo {
            raw,
            name: unix.path_bytes().map(<[u8]>::to_vec),
            // rustix's `is_unnamed` is false for the 2-byte address
            // getsockname gives a socketpair end (and `abstract_name` is an
            // empty name); no path and no non-empty abstract name is what
            // "unnamed" means here.
            unnamed: unix.path_bytes().is_none()
                && unix.abstract_name().is_none_or(<[u8]>::is_empty),
            peer_pid,
        });
    }
    Ok(found)
}

/// The process id of `fd`'s peer (`SO_PEERCRED`), or 0 when the peer lives
/// outside the daemon's PID namespace (`--sandbox namespace`): then the
/// frontend's connection and its backend channel both show 0, which still
/// tells them from the daemon's own sockets. (rustix's `socket_peercred`
/// cannot hold a 0 pid, so the raw structure is read here.)
fn peer_pid(fd: BorrowedFd<'_>) -> Option<i32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of a ucred and its
    // length; the kernel writes at most `len` bytes; `fd` is borrowed.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<libc::ucred>()).then_some(cred.pid)
}

impl LegacyChannel {
    /// Finds the backend channel the frontend connected to `socket_path`
    /// just installed (call from the SET_BACKEND_REQ_FD handler).
    pub fn discover(socket_path: &Path) -> Result<Self, LegacyError> {
        let own = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let sockets = unix_stream_sockets().map_err(LegacyError::Inspect)?;
        let path = socket_path.as_os_str().as_encoded_bytes();
        let frontend = sockets
            .iter()
            .find(|s| s.name.as_deref() == Some(path) && s.peer_pid != own)
            .map(|s| s.peer_pid)
            .ok_or_else(|| LegacyError::NoFrontend(socket_path.display().to_string()))?;
        let candidates: Vec<&SocketInfo> = sockets
            .iter()
            .filter(|s| s.unnamed && s.peer_pid == frontend)
            .collect();
        let [channel] = candidates.as_slice() else {
            return Err(LegacyError::Ambiguous(candidates.len()));
        };
        // SAFETY: the descriptor belongs to the `Backend` vhost-user-backend
        // created from SET_BACKEND_REQ_FD in this very message handler, which
        // is still running, so nothing can have closed it since the scan;
        // it is only borrowed for the duplication.
        let borrowed = unsafe { BorrowedFd::borrow_raw(channel.raw) };
        let owned: OwnedFd = borrowed
            .try_clone_to_owned()
            .map_err(LegacyError::Inspect)?;
        tracing::debug!(fd = channel.raw, frontend, "legacy backend channel found");
        let stream = UnixStream::from(owned);
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(LegacyError::Inspect)?;
        Ok(Self {
            stream: Mutex::new(stream),
        })
    }

    /// A channel over an already known socket (tests).
    pub fn from_stream(stream: UnixStream) -> io::Result<Self> {
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Self {
            stream: Mutex::new(stream),
        })
    }

    /// Sends one request and waits for its acknowledgement. The legacy
    /// protocol is only used with frontends that negotiate REPLY_ACK (the
    /// daemon offers it), so every request asks for a reply.
    pub fn request(
        &self, request: u32, msg: &LegacyFsMsg, fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), LegacyError> {
        let header = Header {
            request,
            flags: VERSION_1 | FLAG_NEED_REPLY,
            size: core::mem::size_of::<LegacyFsMsg>() as u32,
        };
        let mut stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        let mut message = Vec::with_capacity(12 + 256);
        message.extend_from_slice(header.as_bytes());
        message.extend_from_slice(msg.as_bytes());
        let fds: Vec<i32> = fd.map(|f| f.as_raw_fd()).into_iter().collect();
        let sent = stream
            .send_with_fds(&[message.as_slice()], &fds)
            .map_err(|e| LegacyError::Send {
                request,
                source: io::Error::from_raw_os_error(e.errno()),
            })?;
        if sent != message.len() {
            return Err(LegacyError::Send {
                request,
                source: io::Error::new(io::ErrorKind::WriteZero, "short send"),
            });
        }
        let mut reply = [0u8; 12 + 8];
        stream
            .read_exact(&mut reply)
            .map_err(|source| LegacyError::Reply { request, source })?;
        let (h, body) = Header::read_from_prefix(&reply).map_err(|_| LegacyError::Reply {
            request,
            source: io::Error::new(io::ErrorKind::InvalidData, "short header"),
        })?;
        if h.request != request || h.flags & FLAG_REPLY == 0 || h.size != 8 {
            return Err(LegacyError::Reply {
                request,
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected reply header {h:?}"),
                ),
            });
        }
        let status = u64::read_from_bytes(body).unwrap_or(u64::MAX);
        if status != 0 {
            return Err(LegacyError::Refused { request, status });
        }
        Ok(())
    }
}

/// A one-entry map request.
pub fn map_msg(moffset: u64, len: u64, foffset: u64, writable: bool) -> LegacyFsMsg {
    let mut msg = LegacyFsMsg::default();
    msg.fd_offset[0] = foffset;
    msg.cache_offset[0] = moffset;
    msg.len[0] = len;
    msg.flags[0] = (libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 }) as u64;
    msg
}

/// A one-entry unmap request.
pub fn unmap_msg(moffset: u64, len: u64) -> LegacyFsMsg {
    let mut msg = LegacyFsMsg::default();
    msg.cache_offset[0] = moffset;
    msg.len[0] = len;
    msg
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    #[test]
    fn peer_pid_names_the_peer_process() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let own = i32::try_from(std::process::id()).unwrap();
        assert_eq!(super::peer_pid(a.as_fd()), Some(own));
    }

    #[test]
    fn listening_sockets_are_not_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let found = super::unix_stream_sockets().unwrap();
        let raw = |fd: std::os::fd::BorrowedFd<'_>| std::os::fd::AsRawFd::as_raw_fd(&fd);
        assert!(!found.iter().any(|s| s.raw == raw(listener.as_fd())));
        assert!(found.iter().any(|s| s.raw == raw(accepted.as_fd())));
    }
}
