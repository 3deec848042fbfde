//! Shared by the `daxfsd_ops_*` and `daxfsd_malformed` tests: a real daxfsd on a fresh
//! temporary directory, connected over its socket, and a FUSE client with one typed
//! helper per operation.
//!
//! Helpers return `Ok(reply body)` or `Err(errno)` (positive). A transport failure
//! (timeout, bad framing, wrong `unique`) panics with the daemon's logs instead: it is
//! never the answer a test expects. Success bodies are checked to be exactly as long as
//! the operation's reply struct, so a daemon that appends or drops bytes fails here.
#![allow(dead_code)] // every test file uses a different subset

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use daxfsd_harness::fuse::{FuseReply, Uniques, DEFAULT_REPLY_CAPACITY};
use daxfsd_harness::{
    error_chain, locate_daxfsd, BackendCommand, BackendProcess, Completion, Device, DeviceConfig,
    HarnessError,
};
use daxfsd_protocol::abi::*;
use daxfsd_protocol::encode::RequestEncoder;
use daxfsd_protocol::Opcode;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// The first request queue; every request except FORGET goes there.
pub const REQUEST_QUEUE: usize = 1;
/// The hiprio queue, where the Linux driver sends FORGET and BATCH_FORGET.
pub const HIPRIO_QUEUE: usize = 0;

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

/// `Ok(body)` or `Err(positive errno)`.
pub type FuseResult<T> = Result<T, i32>;

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

/// One directory entry of a READDIR / READDIRPLUS reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    /// Cookie of the entry after this one.
    pub off: u64,
    /// `DT_*`.
    pub typ: u32,
    pub name: Vec<u8>,
}

/// A GETXATTR / LISTXATTR answer: the size (for a size-0 query) or the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
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
        let config = DeviceConfig {
            request_queues,
            ..DeviceConfig::default()
        };
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
        let done = self.send_chain(queue, &[request], &[]);
        assert_eq!(done.used_len, 0, "a no-reply request came back with bytes");
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

    // ----- operations -----

    pub fn init(&self, flags: u64) -> FuseResult<InitOut> {
        exact(self.send(&daxfsd_harness::fuse::init_request(self.unique(), flags)))
    }

    pub fn destroy(&self) -> FuseResult<()> {
        empty(self.send(&self.req(Opcode::Destroy, 0).finish()))
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> FuseResult<EntryOut> {
        exact(self.send(&self.req(Opcode::Lookup, parent).name(name).finish()))
    }

    /// FORGET on the hiprio queue; returns once the daemon processed it.
    pub fn forget(&self, nodeid: u64, nlookup: u64) {
        let req = self
            .req(Opcode::Forget, nodeid)
            .push(&ForgetIn { nlookup })
            .finish();
        self.send_no_reply(HIPRIO_QUEUE, &req);
    }

    /// BATCH_FORGET of `(nodeid, nlookup)` pairs on the hiprio queue.
    pub fn batch_forget(&self, entries: &[(u64, u64)]) {
        let mut enc = self.req(Opcode::BatchForget, 0).push(&BatchForgetIn {
            count: entries.len() as u32,
            dummy: 0,
        });
        for &(nodeid, nlookup) in entries {
            enc = enc.push(&ForgetOne { nodeid, nlookup });
        }
        self.send_no_reply(HIPRIO_QUEUE, &enc.finish());
    }

    pub fn getattr(&self, nodeid: u64) -> FuseResult<AttrOut> {
        let req = self
            .req(Opcode::Getattr, nodeid)
            .push(&GetattrIn::default())
            .finish();
        exact(self.send(&req))
    }

    /// GETATTR through an open handle (GETATTR_FH).
    pub fn getattr_fh(&self, nodeid: u64, fh: u64) -> FuseResult<AttrOut> {
        let req = self
            .req(Opcode::Getattr, nodeid)
            .push(&GetattrIn {
                getattr_flags: GETATTR_FH,
                dummy: 0,
                fh,
            })
            .finish();
        exact(self.send(&req))
    }

    pub fn setattr(&self, nodeid: u64, arg: &SetattrIn) -> FuseResult<AttrOut> {
        exact(self.send(&self.req(Opcode::Setattr, nodeid).push(arg).finish()))
    }

    /// READLINK with the room Linux gives it: a header and one page less one byte.
    pub fn readlink(&self, nodeid: u64) -> FuseResult<Vec<u8>> {
        let req = self.req(Opcode::Readlink, nodeid).finish();
        bytes(self.send_cap(&req, 16 + 4095))
    }

    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8]) -> FuseResult<EntryOut> {
        let req = self
            .req(Opcode::Symlink, parent)
            .name(name)
            .name(target)
            .finish();
        exact(self.send(&req))
    }

    pub fn mknod(&self, parent: u64, name: &[u8], mode: u32, rdev: u32) -> FuseResult<EntryOut> {
        let req = self
            .req(Opcode::Mknod, parent)
            .push(&MknodIn {
                mode,
                rdev,
                umask: 0o022,
                padding: 0,
            })
            .name(name)
            .finish();
        exact(self.send(&req))
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32) -> FuseResult<EntryOut> {
        let req = self
            .req(Opcode::Mkdir, parent)
            .push(&MkdirIn { mode, umask: 0o022 })
            .name(name)
            .finish();
        exact(self.send(&req))
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> FuseResult<()> {
        empty(self.send(&self.req(Opcode::Unlink, parent).name(name).finish()))
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FuseResult<()> {
        empty(self.send(&self.req(Opcode::Rmdir, parent).name(name).finish()))
    }

    /// Plain RENAME.
    pub fn rename(&self, olddir: u64, old: &[u8], newdir: u64, new: &[u8]) -> FuseResult<()> {
        let req = self
            .req(Opcode::Rename, olddir)
            .push(&RenameIn { newdir })
            .name(old)
            .name(new)
            .finish();
        empty(self.send(&req))
    }

    /// RENAME2 with `RENAME_*` flags.
    pub fn rename2(
        &self,
        olddir: u64,
        old: &[u8],
        newdir: u64,
        new: &[u8],
        flags: u32,
    ) -> FuseResult<()> {
        let req = self
            .req(Opcode::Rename2, olddir)
            .push(&Rename2In {
                newdir,
                flags,
                padding: 0,
            })
            .name(old)
            .name(new)
            .finish();
        empty(self.send(&req))
    }

    pub fn link(&self, nodeid: u64, newparent: u64, name: &[u8]) -> FuseResult<EntryOut> {
        let req = self
            .req(Opcode::Link, newparent)
            .push(&LinkIn { oldnodeid: nodeid })
            .name(name)
            .finish();
        exact(self.send(&req))
    }

    pub fn open(&self, nodeid: u64, flags: i32) -> FuseResult<OpenOut> {
        self.open_with(nodeid, flags, 0)
    }

    /// OPEN with `OPEN_*` flags.
    pub fn open_with(&self, nodeid: u64, flags: i32, open_flags: u32) -> FuseResult<OpenOut> {
        let req = self
            .req(Opcode::Open, nodeid)
            .push(&OpenIn {
                flags: flags as u32,
                open_flags,
            })
            .finish();
        exact(self.send(&req))
    }

    /// CREATE as root with `mode` permission bits.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        flags: i32,
        mode: u32,
    ) -> FuseResult<(EntryOut, OpenOut)> {
        self.create_as(parent, name, flags, mode, 0, 0)
    }

    /// CREATE as caller `uid`/`gid`.
    pub fn create_as(
        &self,
        parent: u64,
        name: &[u8],
        flags: i32,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FuseResult<(EntryOut, OpenOut)> {
        let req = self
            .req(Opcode::Create, parent)
            .caller(uid, gid, 4242)
            .push(&CreateIn {
                flags: (flags | libc::O_CREAT) as u32,
                mode: libc::S_IFREG | mode,
                umask: 0o022,
                open_flags: 0,
            })
            .name(name)
            .finish();
        let reply = self.send(&req);
        if reply.errno() != 0 {
            return Err(reply.errno());
        }
        assert_eq!(
            reply.body.len(),
            size_of::<EntryOut>() + size_of::<OpenOut>(),
            "CREATE reply body"
        );
        let (entry, rest) = EntryOut::read_from_prefix(&reply.body).expect("entry");
        let (open, _) = OpenOut::read_from_prefix(rest).expect("open");
        Ok((entry, open))
    }

    /// CREATE `name` in the root read-write; returns (nodeid, fh).
    pub fn create_file(&self, name: &str) -> (u64, u64) {
        let (entry, open) = self
            .create(ROOT_ID, name.as_bytes(), libc::O_RDWR, 0o644)
            .unwrap_or_else(|e| panic!("CREATE {name}: errno {e}"));
        (entry.nodeid, open.fh)
    }

    /// A file written on the host, then looked up: its entry.
    pub fn host_file(&self, name: &str, content: &[u8]) -> EntryOut {
        std::fs::write(self.path(name), content).expect("host write");
        self.lookup(ROOT_ID, name.as_bytes())
            .unwrap_or_else(|e| panic!("LOOKUP {name}: errno {e}"))
    }

    pub fn read(&self, nodeid: u64, fh: u64, offset: u64, size: u32) -> FuseResult<Vec<u8>> {
        self.read_cap(nodeid, fh, offset, size, size.saturating_add(16))
    }

    /// READ with `capacity` bytes of reply room.
    pub fn read_cap(
        &self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        size: u32,
        capacity: u32,
    ) -> FuseResult<Vec<u8>> {
        bytes(self.send_cap(
            &read_request(self.unique(), nodeid, fh, offset, size),
            capacity,
        ))
    }

    pub fn write(&self, nodeid: u64, fh: u64, offset: u64, data: &[u8]) -> FuseResult<u32> {
        self.write_flags(nodeid, fh, offset, data, 0)
    }

    /// WRITE with `WRITE_*` flags.
    pub fn write_flags(
        &self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        write_flags: u32,
    ) -> FuseResult<u32> {
        let req = self
            .req(Opcode::Write, nodeid)
            .push(&WriteIn {
                fh,
                offset,
                size: data.len() as u32,
                write_flags,
                ..WriteIn::default()
            })
            .bytes(data)
            .finish();
        exact::<WriteOut>(self.send(&req)).map(|w| w.size)
    }

    pub fn statfs(&self, nodeid: u64) -> FuseResult<StatfsOut> {
        exact(self.send(&self.req(Opcode::Statfs, nodeid).finish()))
    }

    pub fn release(&self, nodeid: u64, fh: u64) -> FuseResult<()> {
        self.release_op(Opcode::Release, nodeid, fh)
    }

    pub fn releasedir(&self, nodeid: u64, fh: u64) -> FuseResult<()> {
        self.release_op(Opcode::Releasedir, nodeid, fh)
    }

    fn release_op(&self, opcode: Opcode, nodeid: u64, fh: u64) -> FuseResult<()> {
        let req = self
            .req(opcode, nodeid)
            .push(&ReleaseIn {
                fh,
                ..ReleaseIn::default()
            })
            .finish();
        empty(self.send(&req))
    }

    pub fn flush(&self, nodeid: u64, fh: u64) -> FuseResult<()> {
        let req = self
            .req(Opcode::Flush, nodeid)
            .push(&FlushIn {
                fh,
                ..FlushIn::default()
            })
            .finish();
        empty(self.send(&req))
    }

    pub fn fsync(&self, nodeid: u64, fh: u64, datasync: bool) -> FuseResult<()> {
        self.fsync_op(Opcode::Fsync, nodeid, fh, datasync)
    }

    pub fn fsyncdir(&self, nodeid: u64, fh: u64, datasync: bool) -> FuseResult<()> {
        self.fsync_op(Opcode::Fsyncdir, nodeid, fh, datasync)
    }

    fn fsync_op(&self, opcode: Opcode, nodeid: u64, fh: u64, datasync: bool) -> FuseResult<()> {
        let req = self
            .req(opcode, nodeid)
            .push(&FsyncIn {
                fh,
                fsync_flags: if datasync { FSYNC_FDATASYNC } else { 0 },
                padding: 0,
            })
            .finish();
        empty(self.send(&req))
    }

    pub fn opendir(&self, nodeid: u64) -> FuseResult<OpenOut> {
        let req = self
            .req(Opcode::Opendir, nodeid)
            .push(&OpenIn {
                flags: libc::O_RDONLY as u32,
                open_flags: 0,
            })
            .finish();
        exact(self.send(&req))
    }

    pub fn readdir(
        &self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> FuseResult<Vec<DirEntry>> {
        let req = self
            .req(Opcode::Readdir, nodeid)
            .push(&ReadIn {
                fh,
                offset,
                size,
                ..ReadIn::default()
            })
            .finish();
        let body = bytes(self.send_cap(&req, size.saturating_add(16)))?;
        assert!(body.len() <= size as usize, "READDIR reply over its size");
        Ok(parse_dirents(&body, false)
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    pub fn readdirplus(
        &self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> FuseResult<Vec<(EntryOut, DirEntry)>> {
        let req = self
            .req(Opcode::Readdirplus, nodeid)
            .push(&ReadIn {
                fh,
                offset,
                size,
                ..ReadIn::default()
            })
            .finish();
        let body = bytes(self.send_cap(&req, size.saturating_add(16)))?;
        assert!(
            body.len() <= size as usize,
            "READDIRPLUS reply over its size"
        );
        Ok(parse_dirents(&body, true)
            .into_iter()
            .map(|(e, d)| (e.expect("plus entry"), d))
            .collect())
    }

    /// ACCESS as root.
    pub fn access(&self, nodeid: u64, mask: i32) -> FuseResult<()> {
        self.access_as(nodeid, mask, 0, 0)
    }

    pub fn access_as(&self, nodeid: u64, mask: i32, uid: u32, gid: u32) -> FuseResult<()> {
        let req = self
            .req(Opcode::Access, nodeid)
            .caller(uid, gid, 4242)
            .push(&AccessIn {
                mask: mask as u32,
                padding: 0,
            })
            .finish();
        empty(self.send(&req))
    }

    pub fn fallocate(
        &self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> FuseResult<()> {
        let req = self
            .req(Opcode::Fallocate, nodeid)
            .push(&FallocateIn {
                fh,
                offset,
                length,
                mode: mode as u32,
                padding: 0,
            })
            .finish();
        empty(self.send(&req))
    }

    pub fn lseek(&self, nodeid: u64, fh: u64, offset: u64, whence: i32) -> FuseResult<u64> {
        let req = self
            .req(Opcode::Lseek, nodeid)
            .push(&LseekIn {
                fh,
                offset,
                whence: whence as u32,
                padding: 0,
            })
            .finish();
        exact::<LseekOut>(self.send(&req)).map(|o| o.offset)
    }

    /// COPY_FILE_RANGE from `(nodeid, fh, offset)` to `(nodeid, fh, offset)`.
    pub fn copy_file_range(
        &self,
        src: (u64, u64, u64),
        dst: (u64, u64, u64),
        len: u64,
        flags: u64,
    ) -> FuseResult<u32> {
        let req = self
            .req(Opcode::CopyFileRange, src.0)
            .push(&CopyFileRangeIn {
                fh_in: src.1,
                off_in: src.2,
                nodeid_out: dst.0,
                fh_out: dst.1,
                off_out: dst.2,
                len,
                flags,
            })
            .finish();
        exact::<WriteOut>(self.send(&req)).map(|w| w.size)
    }

    pub fn syncfs(&self, nodeid: u64) -> FuseResult<()> {
        let req = self
            .req(Opcode::Syncfs, nodeid)
            .push(&SyncfsIn::default())
            .finish();
        empty(self.send(&req))
    }

    pub fn setxattr(&self, nodeid: u64, name: &[u8], value: &[u8], flags: i32) -> FuseResult<()> {
        let req = self
            .req(Opcode::Setxattr, nodeid)
            .push(&SetxattrIn {
                size: value.len() as u32,
                flags: flags as u32,
            })
            .name(name)
            .bytes(value)
            .finish();
        empty(self.send(&req))
    }

    pub fn getxattr(&self, nodeid: u64, name: &[u8], size: u32) -> FuseResult<XattrReply> {
        let req = self
            .req(Opcode::Getxattr, nodeid)
            .push(&GetxattrIn { size, padding: 0 })
            .name(name)
            .finish();
        xattr_reply(self.send_cap(&req, xattr_room(size)), size)
    }

    pub fn listxattr(&self, nodeid: u64, size: u32) -> FuseResult<XattrReply> {
        let req = self
            .req(Opcode::Listxattr, nodeid)
            .push(&GetxattrIn { size, padding: 0 })
            .finish();
        xattr_reply(self.send_cap(&req, xattr_room(size)), size)
    }

    pub fn removexattr(&self, nodeid: u64, name: &[u8]) -> FuseResult<()> {
        empty(self.send(&self.req(Opcode::Removexattr, nodeid).name(name).finish()))
    }
}

/// A READ request.
pub fn read_request(unique: u64, nodeid: u64, fh: u64, offset: u64, size: u32) -> Vec<u8> {
    RequestEncoder::new(Opcode::Read, unique, nodeid)
        .push(&ReadIn {
            fh,
            offset,
            size,
            ..ReadIn::default()
        })
        .finish()
}

/// A GETATTR request.
pub fn getattr_request(unique: u64, nodeid: u64) -> Vec<u8> {
    RequestEncoder::new(Opcode::Getattr, unique, nodeid)
        .push(&GetattrIn::default())
        .finish()
}

/// The body as exactly one `T`, or the errno.
pub fn exact<T: FromBytes + IntoBytes + Immutable>(reply: FuseReply) -> FuseResult<T> {
    if reply.errno() != 0 {
        return Err(reply.errno());
    }
    assert_eq!(
        reply.body.len(),
        size_of::<T>(),
        "reply body is not one {}",
        std::any::type_name::<T>()
    );
    Ok(reply.body_as::<T>().expect("length checked"))
}

/// Success with an empty body, or the errno.
pub fn empty(reply: FuseReply) -> FuseResult<()> {
    if reply.errno() != 0 {
        return Err(reply.errno());
    }
    assert!(
        reply.body.is_empty(),
        "unexpected {}-byte body",
        reply.body.len()
    );
    Ok(())
}

/// The body bytes, or the errno.
pub fn bytes(reply: FuseReply) -> FuseResult<Vec<u8>> {
    if reply.errno() != 0 {
        return Err(reply.errno());
    }
    Ok(reply.body)
}

/// The reply room Linux gives GETXATTR / LISTXATTR: the value's size, or a
/// `fuse_getxattr_out` for a size query.
fn xattr_room(size: u32) -> u32 {
    let body = if size == 0 {
        size_of::<GetxattrOut>() as u32
    } else {
        size
    };
    body.saturating_add(16)
}

fn xattr_reply(reply: FuseReply, size: u32) -> FuseResult<XattrReply> {
    if size == 0 {
        exact::<GetxattrOut>(reply).map(|o| XattrReply::Size(o.size))
    } else {
        let body = bytes(reply)?;
        assert!(body.len() <= size as usize, "xattr reply over its size");
        Ok(XattrReply::Data(body))
    }
}

/// Splits a READDIR(PLUS) body into entries; panics on a malformed layout.
pub fn parse_dirents(mut body: &[u8], plus: bool) -> Vec<(Option<EntryOut>, DirEntry)> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let entry = if plus {
            let (e, rest) = EntryOut::read_from_prefix(body).expect("EntryOut of a plus entry");
            body = rest;
            Some(e)
        } else {
            None
        };
        let (d, rest) = Dirent::read_from_prefix(body).expect("dirent header");
        let namelen = d.namelen as usize;
        let padded = dirent_size(namelen) - size_of::<Dirent>();
        assert!(rest.len() >= padded, "dirent name runs past the reply");
        assert!(
            rest[namelen..padded].iter().all(|&b| b == 0),
            "dirent padding is not zero"
        );
        out.push((
            entry,
            DirEntry {
                ino: d.ino,
                off: d.off,
                typ: d.typ,
                name: rest[..namelen].to_vec(),
            },
        ));
        body = &rest[padded..];
    }
    out
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
