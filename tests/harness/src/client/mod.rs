//! The typed FUSE client: one method per operation, sending the request the Linux
//! virtio-fs driver would (built by the pure [`requests`] builders) and decoding the
//! reply into its type.
//!
//! Every method returns `Ok(Ok(reply))` or `Ok(Err(errno))` (positive) for a valid
//! answer of the daemon, and `Err(HarnessError)` for anything else: a timeout, bad
//! framing, a wrong `unique`, or a success body that is not exactly the operation's
//! reply struct. Tests, benchmarks and the fuzz seeds share the builders; tests and
//! benchmarks share this client.

pub mod decode;

use daxfsd_protocol::abi::{
    AttrOut, EntryOut, InitOut, LseekOut, OpenOut, SetattrIn, StatfsOut, WriteOut,
};
pub use daxfsd_protocol::encode::requests;
use daxfsd_protocol::encode::RequestEncoder;
use daxfsd_protocol::Opcode;

use self::decode::{bytes, empty, entry_open, exact, xattr, xattr_room};
pub use self::decode::{parse_dirents, DirEntry, FuseResult, Listing, XattrReply};
use crate::device::Device;
use crate::error::{HarnessError, Result};
use crate::fuse::{FuseReply, Uniques, DEFAULT_REPLY_CAPACITY};

/// The first request queue; every request but FORGET goes there.
pub const REQUEST_QUEUE: usize = 1;
/// The hiprio queue, where the Linux driver sends FORGET and BATCH_FORGET.
pub const HIPRIO_QUEUE: usize = 0;
/// The pid the requests of [`FuseClient::create_as`] and [`FuseClient::access_as`] carry.
const CALLER_PID: u32 = 4242;
/// The umask the Linux driver's requests carry for a process with the default one.
const UMASK: u32 = 0o022;

/// A typed FUSE client over a connected [`Device`], taking request ids from `uniques`.
#[derive(Debug, Clone, Copy)]
pub struct FuseClient<'a> {
    dev: &'a Device,
    uniques: &'a Uniques,
    queue: usize,
}

impl<'a> FuseClient<'a> {
    /// A client sending on [`REQUEST_QUEUE`] (FORGETs on [`HIPRIO_QUEUE`]).
    pub fn new(dev: &'a Device, uniques: &'a Uniques) -> Self {
        Self {
            dev,
            uniques,
            queue: REQUEST_QUEUE,
        }
    }

    /// The same client sending on request queue `queue`.
    pub fn on_queue(self, queue: usize) -> Self {
        Self { queue, ..self }
    }

    /// A fresh request id.
    pub fn unique(&self) -> u64 {
        self.uniques.next()
    }

    /// Sends a finished request with `capacity` bytes of reply room; checks the framing.
    pub fn send(&self, request: &[u8], capacity: u32) -> Result<FuseReply> {
        self.dev.fuse(self.queue, request, capacity)
    }

    fn call(&self, request: RequestEncoder) -> Result<FuseReply> {
        self.send(&request.finish(), DEFAULT_REPLY_CAPACITY)
    }

    /// Sends a request the daemon answers with silence (FORGET, BATCH_FORGET,
    /// INTERRUPT) as the Linux driver does: readable descriptors only. Returns once the
    /// daemon gave the chain back, and checks it wrote nothing.
    pub fn send_no_reply(&self, queue: usize, request: &[u8]) -> Result<()> {
        let token = self.dev.submit(queue, &[request], &[])?;
        let done = self.dev.wait(token)?;
        if done.used_len != 0 {
            return Err(HarnessError::MalformedReply(format!(
                "a no-reply request came back with {} bytes",
                done.used_len
            )));
        }
        Ok(())
    }

    /// INIT with capability `flags`.
    pub fn init(&self, flags: u64) -> Result<FuseResult<InitOut>> {
        exact(self.call(requests::init(self.unique(), flags))?)
    }

    /// DESTROY: the session's end.
    pub fn destroy(&self) -> Result<FuseResult<()>> {
        empty(self.call(requests::bare(Opcode::Destroy, self.unique(), 0))?)
    }

    /// LOOKUP of `name` in `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<FuseResult<EntryOut>> {
        exact(self.call(requests::lookup(self.unique(), parent, name))?)
    }

    /// FORGET on the hiprio queue; returns once the daemon processed it.
    pub fn forget(&self, nodeid: u64, nlookup: u64) -> Result<()> {
        let req = requests::forget(self.unique(), nodeid, nlookup).finish();
        self.send_no_reply(HIPRIO_QUEUE, &req)
    }

    /// BATCH_FORGET of `(nodeid, nlookup)` pairs on the hiprio queue.
    pub fn batch_forget(&self, entries: &[(u64, u64)]) -> Result<()> {
        let req = requests::batch_forget(self.unique(), entries).finish();
        self.send_no_reply(HIPRIO_QUEUE, &req)
    }

    /// GETATTR of `nodeid`.
    pub fn getattr(&self, nodeid: u64) -> Result<FuseResult<AttrOut>> {
        exact(self.call(requests::getattr(self.unique(), nodeid, None))?)
    }

    /// GETATTR through an open handle (GETATTR_FH).
    pub fn getattr_fh(&self, nodeid: u64, fh: u64) -> Result<FuseResult<AttrOut>> {
        exact(self.call(requests::getattr(self.unique(), nodeid, Some(fh)))?)
    }

    /// SETATTR of the fields `arg.valid` names.
    pub fn setattr(&self, nodeid: u64, arg: &SetattrIn) -> Result<FuseResult<AttrOut>> {
        exact(self.call(requests::setattr(self.unique(), nodeid, arg))?)
    }

    /// READLINK with the room Linux gives it: a header and one page less one byte.
    pub fn readlink(&self, nodeid: u64) -> Result<FuseResult<Vec<u8>>> {
        let req = requests::bare(Opcode::Readlink, self.unique(), nodeid).finish();
        bytes(self.send(&req, 16 + 4095)?, 4095)
    }

    /// SYMLINK `name` in `parent` to `target`.
    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8]) -> Result<FuseResult<EntryOut>> {
        exact(self.call(requests::symlink(self.unique(), parent, name, target))?)
    }

    /// MKNOD (`mode` with its file type) under the default umask.
    pub fn mknod(
        &self, parent: u64, name: &[u8], mode: u32, rdev: u32,
    ) -> Result<FuseResult<EntryOut>> {
        exact(self.call(requests::mknod(
            self.unique(),
            parent,
            name,
            mode,
            rdev,
            UMASK,
        ))?)
    }

    /// MKDIR under the default umask.
    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32) -> Result<FuseResult<EntryOut>> {
        exact(self.call(requests::mkdir(self.unique(), parent, name, mode, UMASK))?)
    }

    /// UNLINK `name` in `parent`.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<FuseResult<()>> {
        empty(self.call(requests::named(Opcode::Unlink, self.unique(), parent, name))?)
    }

    /// RMDIR `name` in `parent`.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<FuseResult<()>> {
        empty(self.call(requests::named(Opcode::Rmdir, self.unique(), parent, name))?)
    }

    /// Plain RENAME.
    pub fn rename(
        &self, olddir: u64, old: &[u8], newdir: u64, new: &[u8],
    ) -> Result<FuseResult<()>> {
        empty(self.call(requests::rename(self.unique(), olddir, old, newdir, new))?)
    }

    /// RENAME2 with `RENAME_*` flags.
    pub fn rename2(
        &self, olddir: u64, old: &[u8], newdir: u64, new: &[u8], flags: u32,
    ) -> Result<FuseResult<()>> {
        let req = requests::rename2(self.unique(), olddir, old, newdir, new, flags);
        empty(self.call(req)?)
    }

    /// LINK `nodeid` as `name` in `newparent`.
    pub fn link(&self, nodeid: u64, newparent: u64, name: &[u8]) -> Result<FuseResult<EntryOut>> {
        exact(self.call(requests::link(self.unique(), nodeid, newparent, name))?)
    }

    /// OPEN with `O_*` flags.
    pub fn open(&self, nodeid: u64, flags: i32) -> Result<FuseResult<OpenOut>> {
        self.open_with(nodeid, flags, 0)
    }

    /// OPEN with `O_*` flags and `OPEN_*` flags.
    pub fn open_with(
        &self, nodeid: u64, flags: i32, open_flags: u32,
    ) -> Result<FuseResult<OpenOut>> {
        let req = requests::open_op(
            Opcode::Open,
            self.unique(),
            nodeid,
            flags as u32,
            open_flags,
        );
        exact(self.call(req)?)
    }

    /// OPENDIR, read-only.
    pub fn opendir(&self, nodeid: u64) -> Result<FuseResult<OpenOut>> {
        let req = requests::opendir(self.unique(), nodeid, libc::O_RDONLY as u32);
        exact(self.call(req)?)
    }

    /// CREATE as root with `mode` permission bits.
    pub fn create(
        &self, parent: u64, name: &[u8], flags: i32, mode: u32,
    ) -> Result<FuseResult<(EntryOut, OpenOut)>> {
        self.create_as(parent, name, flags, mode, 0, 0)
    }

    /// CREATE as caller `uid`/`gid`, as the kernel sends it (O_CREAT, S_IFREG added).
    pub fn create_as(
        &self, parent: u64, name: &[u8], flags: i32, mode: u32, uid: u32, gid: u32,
    ) -> Result<FuseResult<(EntryOut, OpenOut)>> {
        let flags = (flags | libc::O_CREAT) as u32;
        let req = requests::create(
            self.unique(),
            parent,
            name,
            flags,
            libc::S_IFREG | mode,
            UMASK,
        )
        .caller(uid, gid, CALLER_PID);
        entry_open(self.call(req)?)
    }

    /// READ of `size` bytes with room for them.
    pub fn read(
        &self, nodeid: u64, fh: u64, offset: u64, size: u32,
    ) -> Result<FuseResult<Vec<u8>>> {
        self.read_cap(nodeid, fh, offset, size, size.saturating_add(16))
    }

    /// READ with `capacity` bytes of reply room.
    pub fn read_cap(
        &self, nodeid: u64, fh: u64, offset: u64, size: u32, capacity: u32,
    ) -> Result<FuseResult<Vec<u8>>> {
        let req = requests::read(self.unique(), nodeid, fh, offset, size).finish();
        bytes(self.send(&req, capacity)?, size)
    }

    /// WRITE of `data`; the size written.
    pub fn write(&self, nodeid: u64, fh: u64, offset: u64, data: &[u8]) -> Result<FuseResult<u32>> {
        self.write_flags(nodeid, fh, offset, data, 0)
    }

    /// WRITE with `WRITE_*` flags; the size written.
    pub fn write_flags(
        &self, nodeid: u64, fh: u64, offset: u64, data: &[u8], write_flags: u32,
    ) -> Result<FuseResult<u32>> {
        let req = requests::write(self.unique(), nodeid, fh, offset, data, write_flags);
        Ok(exact::<WriteOut>(self.call(req)?)?.map(|w| w.size))
    }

    /// STATFS of the filesystem holding `nodeid`.
    pub fn statfs(&self, nodeid: u64) -> Result<FuseResult<StatfsOut>> {
        exact(self.call(requests::bare(Opcode::Statfs, self.unique(), nodeid))?)
    }

    /// RELEASE of a file handle.
    pub fn release(&self, nodeid: u64, fh: u64) -> Result<FuseResult<()>> {
        empty(self.call(requests::release(
            Opcode::Release,
            self.unique(),
            nodeid,
            fh,
            0,
        ))?)
    }

    /// RELEASEDIR of a directory handle.
    pub fn releasedir(&self, nodeid: u64, fh: u64) -> Result<FuseResult<()>> {
        empty(self.call(requests::release(
            Opcode::Releasedir,
            self.unique(),
            nodeid,
            fh,
            0,
        ))?)
    }

    /// FLUSH of a handle.
    pub fn flush(&self, nodeid: u64, fh: u64) -> Result<FuseResult<()>> {
        empty(self.call(requests::flush(self.unique(), nodeid, fh))?)
    }

    /// FSYNC of a file handle.
    pub fn fsync(&self, nodeid: u64, fh: u64, datasync: bool) -> Result<FuseResult<()>> {
        let req = requests::fsync(Opcode::Fsync, self.unique(), nodeid, fh, datasync);
        empty(self.call(req)?)
    }

    /// FSYNCDIR of a directory handle.
    pub fn fsyncdir(&self, nodeid: u64, fh: u64, datasync: bool) -> Result<FuseResult<()>> {
        let req = requests::fsync(Opcode::Fsyncdir, self.unique(), nodeid, fh, datasync);
        empty(self.call(req)?)
    }

    /// READDIR of `size` bytes from cookie `offset`.
    pub fn readdir(
        &self, nodeid: u64, fh: u64, offset: u64, size: u32,
    ) -> Result<FuseResult<Vec<DirEntry>>> {
        let listing = self.list(Opcode::Readdir, nodeid, fh, offset, size)?;
        Ok(listing.map(|entries| entries.into_iter().map(|(_, d)| d).collect()))
    }

    /// READDIRPLUS of `size` bytes from cookie `offset`: each entry with its lookup.
    pub fn readdirplus(
        &self, nodeid: u64, fh: u64, offset: u64, size: u32,
    ) -> Result<FuseResult<Vec<(EntryOut, DirEntry)>>> {
        let listing = self.list(Opcode::Readdirplus, nodeid, fh, offset, size)?;
        Ok(listing.map(|entries| {
            entries
                .into_iter()
                .filter_map(|(e, d)| e.map(|e| (e, d)))
                .collect()
        }))
    }

    fn list(
        &self, opcode: Opcode, nodeid: u64, fh: u64, offset: u64, size: u32,
    ) -> Result<FuseResult<Listing>> {
        let req = requests::read_op(opcode, self.unique(), nodeid, fh, offset, size).finish();
        match bytes(self.send(&req, size.saturating_add(16))?, size)? {
            Ok(body) => parse_dirents(&body, opcode == Opcode::Readdirplus).map(Ok),
            Err(errno) => Ok(Err(errno)),
        }
    }

    /// ACCESS as root.
    pub fn access(&self, nodeid: u64, mask: i32) -> Result<FuseResult<()>> {
        self.access_as(nodeid, mask, 0, 0)
    }

    /// ACCESS as caller `uid`/`gid`.
    pub fn access_as(&self, nodeid: u64, mask: i32, uid: u32, gid: u32) -> Result<FuseResult<()>> {
        let req = requests::access(self.unique(), nodeid, mask as u32).caller(uid, gid, CALLER_PID);
        empty(self.call(req)?)
    }

    /// FALLOCATE with `FALLOC_FL_*` `mode`.
    pub fn fallocate(
        &self, nodeid: u64, fh: u64, offset: u64, length: u64, mode: i32,
    ) -> Result<FuseResult<()>> {
        let req = requests::fallocate(self.unique(), nodeid, fh, offset, length, mode as u32);
        empty(self.call(req)?)
    }

    /// LSEEK with `SEEK_*` `whence`; the offset found.
    pub fn lseek(&self, nodeid: u64, fh: u64, offset: u64, whence: i32) -> Result<FuseResult<u64>> {
        let req = requests::lseek(self.unique(), nodeid, fh, offset, whence as u32);
        Ok(exact::<LseekOut>(self.call(req)?)?.map(|o| o.offset))
    }

    /// COPY_FILE_RANGE from `(nodeid, fh, offset)` to `(nodeid, fh, offset)`; the size
    /// copied.
    pub fn copy_file_range(
        &self, src: (u64, u64, u64), dst: (u64, u64, u64), len: u64, flags: u64,
    ) -> Result<FuseResult<u32>> {
        let req = requests::copy_file_range(self.unique(), src, dst, len, flags);
        Ok(exact::<WriteOut>(self.call(req)?)?.map(|w| w.size))
    }

    /// SYNCFS of the filesystem holding `nodeid`.
    pub fn syncfs(&self, nodeid: u64) -> Result<FuseResult<()>> {
        empty(self.call(requests::syncfs(self.unique(), nodeid))?)
    }

    /// SETXATTR `name` = `value` with `XATTR_*` flags.
    pub fn setxattr(
        &self, nodeid: u64, name: &[u8], value: &[u8], flags: i32,
    ) -> Result<FuseResult<()>> {
        let req = requests::setxattr(self.unique(), nodeid, name, value, flags as u32);
        empty(self.call(req)?)
    }

    /// GETXATTR of `name` with room for `size` bytes (0: the size).
    pub fn getxattr(&self, nodeid: u64, name: &[u8], size: u32) -> Result<FuseResult<XattrReply>> {
        let req = requests::getxattr(self.unique(), nodeid, name, size).finish();
        xattr(self.send(&req, xattr_room(size))?, size)
    }

    /// LISTXATTR with room for `size` bytes (0: the size).
    pub fn listxattr(&self, nodeid: u64, size: u32) -> Result<FuseResult<XattrReply>> {
        let req = requests::listxattr(self.unique(), nodeid, size).finish();
        xattr(self.send(&req, xattr_room(size))?, size)
    }

    /// REMOVEXATTR of `name`.
    pub fn removexattr(&self, nodeid: u64, name: &[u8]) -> Result<FuseResult<()>> {
        empty(self.call(requests::named(
            Opcode::Removexattr,
            self.unique(),
            nodeid,
            name,
        ))?)
    }
}
