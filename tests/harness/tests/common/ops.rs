//! The harness's typed [`FuseClient`](daxfsd_harness::FuseClient) operations on
//! [`Session`], each panicking with the daemon's logs on a transport failure, plus the
//! few conveniences tests share.

use daxfsd_protocol::abi::*;

use super::*;

/// For each `fn name(args) -> T;`, a `Session::name(args) -> T` that calls the client's
/// `name` and unwraps its transport result with [`Session::check`].
macro_rules! checked {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        impl Session {
            $(
                #[doc = concat!("[`FuseClient::", stringify!($name), "`](daxfsd_harness::FuseClient::", stringify!($name), ")")]
                pub fn $name(&self, $($arg: $ty),*) -> $ret {
                    self.check(self.client().$name($($arg),*))
                }
            )*
        }
    };
}

checked! {
    fn init(flags: u64) -> FuseResult<InitOut>;
    fn destroy() -> FuseResult<()>;
    fn lookup(parent: u64, name: &[u8]) -> FuseResult<EntryOut>;
    fn forget(nodeid: u64, nlookup: u64) -> ();
    fn batch_forget(entries: &[(u64, u64)]) -> ();
    fn getattr(nodeid: u64) -> FuseResult<AttrOut>;
    fn getattr_fh(nodeid: u64, fh: u64) -> FuseResult<AttrOut>;
    fn setattr(nodeid: u64, arg: &SetattrIn) -> FuseResult<AttrOut>;
    fn readlink(nodeid: u64) -> FuseResult<Vec<u8>>;
    fn symlink(parent: u64, name: &[u8], target: &[u8]) -> FuseResult<EntryOut>;
    fn mknod(parent: u64, name: &[u8], mode: u32, rdev: u32) -> FuseResult<EntryOut>;
    fn mkdir(parent: u64, name: &[u8], mode: u32) -> FuseResult<EntryOut>;
    fn unlink(parent: u64, name: &[u8]) -> FuseResult<()>;
    fn rmdir(parent: u64, name: &[u8]) -> FuseResult<()>;
    fn rename(olddir: u64, old: &[u8], newdir: u64, new: &[u8]) -> FuseResult<()>;
    fn rename2(olddir: u64, old: &[u8], newdir: u64, new: &[u8], flags: u32) -> FuseResult<()>;
    fn link(nodeid: u64, newparent: u64, name: &[u8]) -> FuseResult<EntryOut>;
    fn open(nodeid: u64, flags: i32) -> FuseResult<OpenOut>;
    fn open_with(nodeid: u64, flags: i32, open_flags: u32) -> FuseResult<OpenOut>;
    fn opendir(nodeid: u64) -> FuseResult<OpenOut>;
    fn create(parent: u64, name: &[u8], flags: i32, mode: u32) -> FuseResult<(EntryOut, OpenOut)>;
    fn create_as(parent: u64, name: &[u8], flags: i32, mode: u32, uid: u32, gid: u32)
        -> FuseResult<(EntryOut, OpenOut)>;
    fn read(nodeid: u64, fh: u64, offset: u64, size: u32) -> FuseResult<Vec<u8>>;
    fn read_cap(nodeid: u64, fh: u64, offset: u64, size: u32, capacity: u32) -> FuseResult<Vec<u8>>;
    fn write(nodeid: u64, fh: u64, offset: u64, data: &[u8]) -> FuseResult<u32>;
    fn write_flags(nodeid: u64, fh: u64, offset: u64, data: &[u8], write_flags: u32) -> FuseResult<u32>;
    fn statfs(nodeid: u64) -> FuseResult<StatfsOut>;
    fn release(nodeid: u64, fh: u64) -> FuseResult<()>;
    fn releasedir(nodeid: u64, fh: u64) -> FuseResult<()>;
    fn flush(nodeid: u64, fh: u64) -> FuseResult<()>;
    fn fsync(nodeid: u64, fh: u64, datasync: bool) -> FuseResult<()>;
    fn fsyncdir(nodeid: u64, fh: u64, datasync: bool) -> FuseResult<()>;
    fn readdir(nodeid: u64, fh: u64, offset: u64, size: u32) -> FuseResult<Vec<DirEntry>>;
    fn readdirplus(nodeid: u64, fh: u64, offset: u64, size: u32) -> FuseResult<Vec<(EntryOut, DirEntry)>>;
    fn access(nodeid: u64, mask: i32) -> FuseResult<()>;
    fn access_as(nodeid: u64, mask: i32, uid: u32, gid: u32) -> FuseResult<()>;
    fn fallocate(nodeid: u64, fh: u64, offset: u64, length: u64, mode: i32) -> FuseResult<()>;
    fn lseek(nodeid: u64, fh: u64, offset: u64, whence: i32) -> FuseResult<u64>;
    fn copy_file_range(src: (u64, u64, u64), dst: (u64, u64, u64), len: u64, flags: u64) -> FuseResult<u32>;
    fn syncfs(nodeid: u64) -> FuseResult<()>;
    fn setxattr(nodeid: u64, name: &[u8], value: &[u8], flags: i32) -> FuseResult<()>;
    fn getxattr(nodeid: u64, name: &[u8], size: u32) -> FuseResult<XattrReply>;
    fn listxattr(nodeid: u64, size: u32) -> FuseResult<XattrReply>;
    fn removexattr(nodeid: u64, name: &[u8]) -> FuseResult<()>;
}

impl Session {
    /// CREATE `name` in the root read-write; returns (nodeid, fh).
    pub fn create_file(&self, name: &str) -> (u64, u64) {
        let (entry, open) = self
            .create(ROOT_ID, name.as_bytes(), libc::O_RDWR, 0o644)
            .unwrap_or_else(|e| panic!("CREATE {name}: errno {e}"));
        (entry.nodeid, open.fh)
    }

    /// The value of attribute `name` of `rel` in the shared directory, read on the host.
    pub fn host_xattr(&self, rel: &str, name: &str) -> Result<Vec<u8>, rustix::io::Errno> {
        let mut buf = vec![0u8; 65_536];
        let n = rustix::fs::getxattr(self.path(rel), name, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// A file written on the host, then looked up: its entry.
    pub fn host_file(&self, name: &str, content: &[u8]) -> EntryOut {
        std::fs::write(self.path(name), content).expect("host write");
        self.lookup(ROOT_ID, name.as_bytes())
            .unwrap_or_else(|e| panic!("LOOKUP {name}: errno {e}"))
    }
}
