//! Shared by the `daxfsd_ops_*` and `daxfsd_malformed` tests: a real daxfsd on a fresh
//! temporary directory, connected over its socket, and the harness's typed
//! [`FuseClient`] on it.
//!
//! The operations return `Ok(reply body)` or `Err(errno)` (positive). A transport
//! failure (timeout, bad framing, wrong `unique`, a success body that is not exactly
//! the operation's reply struct) panics with the daemon's logs instead: it is never the
//! answer a test expects.
#![allow(dead_code)] // every test file uses a different subset

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use daxfsd_harness::client::{decode, FuseClient};
#[allow(unused_imports)] // every test file uses a different subset
pub use daxfsd_harness::client::{requests, DirEntry, XattrReply, HIPRIO_QUEUE, REQUEST_QUEUE};
use daxfsd_harness::fuse::{FuseReply, Uniques, DEFAULT_REPLY_CAPACITY};
pub use daxfsd_harness::FuseResult;
use daxfsd_harness::{
    error_chain, locate_daxfsd, BackendCommand, BackendProcess, Completion, Device, DeviceConfig,
    HarnessError,
};
use daxfsd_protocol::abi::*;
use daxfsd_protocol::encode::RequestEncoder;
use daxfsd_protocol::Opcode;
use zerocopy::{FromBytes, Immutable, IntoBytes};

mod ops;

/// What the Linux 6.12 virtio-fs driver offers in INIT (without DAX), as far as the
/// protocol crate names the bits. The daemon must pick only what it implements; in
/// particular nothing that changes a request's layout (DONT_MASK, SETXATTR_EXT,
/// SECURITY_CTX, CREATE_SUPP_GROUP), since the helpers below speak the plain layouts.
pub const LINUX_INIT_FLAGS: u64 = ASYNC_READ
    | POSIX_LOCKS
    | ATOMIC_O_TRUNC
    | BIG_WRITES
    | DONT_MASK
    | FLOCK_LOCKS
    | AUTO_INVAL_DATA
    | DO_READDIRPLUS
    | READDIRPLUS_AUTO
    | ASYNC_DIO
    | WRITEBACK_CACHE
    | PARALLEL_DIROPS
    | HANDLE_KILLPRIV
    | POSIX_ACL
    | ABORT_ERROR
    | MAX_PAGES
    | CACHE_SYMLINKS
    | NO_OPENDIR_SUPPORT
    | EXPLICIT_INVAL_DATA
    | SUBMOUNTS
    | HANDLE_KILLPRIV_V2
    | SETXATTR_EXT
    | INIT_EXT
    | SECURITY_CTX
    | CREATE_SUPP_GROUP
    | HAS_EXPIRE_ONLY
    | DIRECT_IO_ALLOW_MMAP;

/// The daxfsd binary, located (and built if stale) once per test executable.
pub fn daxfsd_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| locate_daxfsd().unwrap_or_else(|e| panic!("{}", error_chain(&e))))
        .clone()
}

/// Whether the tests run as root (then the daemon does too).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A daxfsd on a fresh shared directory with a connected device.
pub struct Session {
    pub backend: BackendProcess,
    pub dev: Device,
    uniques: Uniques,
}

impl Session {
    /// A daemon started with `args` (besides socket and shared dir), connected and
    /// initialised with [`LINUX_INIT_FLAGS`].
    pub fn start(args: &[&str]) -> Session {
        let s = Session::start_uninit(args);
        s.init(LINUX_INIT_FLAGS)
            .unwrap_or_else(|e| panic!("INIT failed with errno {e}\n{}", s.backend.diagnostics()));
        s
    }

    /// Like [`Self::start`] without INIT.
    pub fn start_uninit(args: &[&str]) -> Session {
        Session::start_queues(args, 1)
    }

    /// A daemon and device with `request_queues` request queues, not initialised.
    pub fn start_queues(args: &[&str], request_queues: usize) -> Session {
        let backend = BackendCommand::daxfsd(daxfsd_bin())
            .args(["--tag", "ops", "--num-request-queues"])
            .arg(request_queues.to_string())
            .args(args.iter().copied())
            .spawn()
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        Session::connect(backend, request_queues)
    }

    /// A device with `request_queues` request queues connected to `backend`, which the
    /// test started itself; not initialised.
    pub fn connect(backend: BackendProcess, request_queues: usize) -> Session {
        let config = DeviceConfig {
            request_queues,
            ..DeviceConfig::default()
        };
        Session::connect_with(backend, config)
    }

    /// A device set up as `config` says connected to `backend`; not initialised.
    pub fn connect_with(backend: BackendProcess, config: DeviceConfig) -> Session {
        let dev = Device::connect(backend.socket_path(), config)
            .unwrap_or_else(|e| panic!("{}", backend.report(&e)));
        Session {
            backend,
            dev,
            uniques: Uniques::default(),
        }
    }

    /// The shared directory on the host.
    pub fn dir(&self) -> &Path {
        self.backend.shared_dir()
    }

    /// `rel` inside the shared directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir().join(rel)
    }

    /// The typed client on the request queue.
    pub fn client(&self) -> FuseClient<'_> {
        FuseClient::new(&self.dev, &self.uniques)
    }

    /// A fresh request id.
    pub fn unique(&self) -> u64 {
        self.uniques.next()
    }

    /// A request encoder with a fresh unique, as root.
    pub fn req(&self, opcode: Opcode, nodeid: u64) -> RequestEncoder {
        RequestEncoder::new(opcode, self.unique(), nodeid)
    }

    /// Unwraps a harness result or panics with the daemon's logs.
    pub fn check<T>(&self, r: Result<T, HarnessError>) -> T {
        r.unwrap_or_else(|e| panic!("{}", self.backend.report(&e)))
    }

    /// Sends `request` on the request queue with the default reply room.
    pub fn send(&self, request: &[u8]) -> FuseReply {
        self.send_cap(request, DEFAULT_REPLY_CAPACITY)
    }

    /// Sends `request` with `capacity` bytes of reply room.
    pub fn send_cap(&self, request: &[u8], capacity: u32) -> FuseReply {
        self.send_on(REQUEST_QUEUE, request, capacity)
    }

    /// Sends `request` on `queue` with `capacity` bytes of reply room.
    pub fn send_on(&self, queue: usize, request: &[u8], capacity: u32) -> FuseReply {
        self.check(self.dev.fuse(queue, request, capacity))
    }

    /// Sends a chain of `readable` segments and `writable` buffers; the raw completion.
    pub fn send_chain(&self, queue: usize, readable: &[&[u8]], writable: &[u32]) -> Completion {
        let token = self.check(self.dev.submit(queue, readable, writable));
        self.check(self.dev.wait(token))
    }

    /// Sends a request the daemon answers with silence (FORGET, BATCH_FORGET,
    /// INTERRUPT), as the Linux driver does: readable descriptors only. Returns once the
    /// daemon gave the chain back, and checks it wrote nothing.
    pub fn send_no_reply(&self, queue: usize, request: &[u8]) {
        self.check(self.client().send_no_reply(queue, request));
    }

    /// Number of open fds of the daemon process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.backend.daemon_pid()))
            .expect("the daemon's /proc/<pid>/fd")
            .count()
    }

    /// Asserts that the daemon still answers a GETATTR of the root correctly.
    pub fn assert_serving(&self) {
        let attr = self.getattr(ROOT_ID).unwrap_or_else(|e| {
            panic!(
                "GETATTR of the root failed with errno {e}\n{}",
                self.backend.diagnostics()
            )
        });
        let meta = std::fs::metadata(self.dir()).expect("shared dir metadata");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(attr.attr.ino, meta.ino());
        assert_eq!(attr.attr.mode & libc::S_IFMT, libc::S_IFDIR);
        assert!(self.backend.is_running().unwrap_or(false));
    }
}

/// A READ request.
pub fn read_request(unique: u64, nodeid: u64, fh: u64, offset: u64, size: u32) -> Vec<u8> {
    requests::read(unique, nodeid, fh, offset, size).finish()
}

/// A GETATTR request.
pub fn getattr_request(unique: u64, nodeid: u64) -> Vec<u8> {
    requests::getattr(unique, nodeid, None).finish()
}

/// The body as exactly one `T`, or the errno; panics on any other body.
pub fn exact<T: FromBytes + IntoBytes + Immutable>(reply: FuseReply) -> FuseResult<T> {
    decode::exact(reply).unwrap_or_else(|e| panic!("{}", error_chain(&e)))
}

/// A SETATTR argument with only `valid` set; fill the fields with struct update syntax.
pub fn setattr_in(valid: u32) -> SetattrIn {
    SetattrIn {
        valid,
        ..SetattrIn::default()
    }
}

/// Linux `new_encode_dev`: the 32-bit device number FUSE carries.
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}
