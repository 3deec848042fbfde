//! Seed inputs: real request sequences that reach every opcode over the
//! fixture of [`crate::run_input`] (`file`, `dir/inner`, `link`, `big`),
//! built with the request builders the harness's typed client sends
//! (`daxfsd_protocol::encode::requests`; `RequestEncoder` directly only for
//! requests no client sends: odd INIT versions, unsupported opcodes,
//! malformed counts). Nodeids and handles are those a fresh session hands
//! out: the first new inode looked up or created is 2, the first handle 1.

use daxfsd_protocol::abi::*;
use daxfsd_protocol::encode::requests as rq;
use daxfsd_protocol::encode::RequestEncoder;

/// Byte 0 of a seed: the capacity of a full READ.
const FULL: u8 = 7;

struct Seq {
    bytes: Vec<u8>,
    unique: u64,
}

impl Seq {
    fn new(selector: u8) -> Self {
        Self {
            bytes: vec![selector],
            unique: 100,
        }
    }

    /// Appends the request `build` makes with the next request id.
    fn then(mut self, build: impl FnOnce(u64) -> RequestEncoder) -> Self {
        self.unique += 1;
        self.bytes.extend_from_slice(&build(self.unique).finish());
        self
    }

    /// Appends a request no client builds: `opcode` on `nodeid` with `build`'s body.
    fn raw(
        self, op: Opcode, nodeid: u64, build: impl FnOnce(RequestEncoder) -> RequestEncoder,
    ) -> Self {
        self.then(|u| build(RequestEncoder::new(op, u, nodeid)))
    }

    fn bare(self, op: Opcode, nodeid: u64) -> Self {
        self.then(|u| rq::bare(op, u, nodeid))
    }

    fn lookup(self, parent: u64, name: &[u8]) -> Self {
        self.then(|u| rq::lookup(u, parent, name))
    }

    fn open(self, nodeid: u64, flags: i32) -> Self {
        self.then(|u| rq::open(u, nodeid, flags as u32))
    }

    fn read(self, op: Opcode, nodeid: u64, fh: u64, offset: u64, size: u32) -> Self {
        self.then(|u| rq::read_op(op, u, nodeid, fh, offset, size))
    }

    fn write(self, nodeid: u64, fh: u64, offset: u64, data: &[u8]) -> Self {
        self.then(|u| rq::write(u, nodeid, fh, offset, data, 0))
    }

    fn map(self, nodeid: u64, fh: u64, foffset: u64, moffset: u64, flags: u64) -> Self {
        self.then(|u| rq::setup_mapping(u, nodeid, fh, foffset, 2 << 20, moffset, flags))
    }

    fn unmap(self, ranges: &[(u64, u64)]) -> Self {
        self.then(|u| rq::remove_mapping(u, 1, ranges))
    }

    fn setattr(self, nodeid: u64, arg: SetattrIn) -> Self {
        self.then(|u| rq::setattr(u, nodeid, &arg))
    }

    fn done(self) -> Vec<u8> {
        self.bytes
    }
}

const RW: i32 = libc::O_RDWR;
const R: u64 = SETUPMAPPING_FLAG_READ;
const RW_MAP: u64 = SETUPMAPPING_FLAG_READ | SETUPMAPPING_FLAG_WRITE;
const MIB2: u64 = 2 << 20;

/// Seeds by name.
type Seeds = Vec<(&'static str, Vec<u8>)>;
/// A group of seeds, made with a fresh-sequence maker.
type Group = fn(&dyn Fn() -> Seq) -> Seeds;

/// Every seed, by name.
pub fn seeds() -> Seeds {
    let s = || Seq::new(FULL);
    let groups: [Group; 7] = [
        node_seeds,
        entry_seeds,
        io_seeds,
        meta_seeds,
        misc_seeds,
        dax_and_edge_seeds,
        unsupported_seeds,
    ];
    groups.iter().flat_map(|group| group(&s)).collect()
}

/// LOOKUP, FORGET, BATCH_FORGET, GETATTR, SETATTR.
fn node_seeds(s: &dyn Fn() -> Seq) -> Seeds {
    vec![
        (
            "lookup",
            s().lookup(1, b"file")
                .lookup(1, b"dir")
                .lookup(3, b"inner")
                .lookup(1, b"absent")
                .done(),
        ),
        (
            "forget",
            s().lookup(1, b"file")
                .then(|u| rq::forget(u, 2, 1))
                .then(|u| rq::getattr(u, 2, None))
                .done(),
        ),
        (
            "batch_forget",
            s().lookup(1, b"file")
                .lookup(1, b"dir")
                .then(|u| rq::batch_forget(u, &[(2, 1), (3, 5), (99, 1)]))
                .done(),
        ),
        (
            "getattr",
            s().then(|u| rq::getattr(u, 1, None))
                .lookup(1, b"file")
                .open(2, RW)
                .then(|u| rq::getattr(u, 2, Some(1)))
                .done(),
        ),
        (
            "setattr",
            s().lookup(1, b"file")
                .setattr(
                    2,
                    SetattrIn {
                        valid: FATTR_MODE
                            | FATTR_SIZE
                            | FATTR_ATIME
                            | FATTR_MTIME_NOW
                            | FATTR_UID
                            | FATTR_GID,
                        mode: 0o600,
                        size: 100,
                        atime: 1_000_000,
                        uid: 1000,
                        gid: 1000,
                        ..SetattrIn::default()
                    },
                )
                .done(),
        ),
    ]
}

/// Directory entries: READLINK, SYMLINK, MKNOD, MKDIR, UNLINK, RMDIR, RENAME(2), LINK.
fn entry_seeds(s: &dyn Fn() -> Seq) -> Seeds {
    vec![
        (
            "readlink",
            s().lookup(1, b"link").bare(Opcode::Readlink, 2).done(),
        ),
        (
            "symlink",
            s().then(|u| rq::symlink(u, 1, b"s", b"../../etc/passwd"))
                .lookup(1, b"s")
                .done(),
        ),
        (
            "mknod",
            s().then(|u| rq::mknod(u, 1, b"fifo", libc::S_IFIFO | 0o644, 0, 0o022))
                .open(2, libc::O_RDONLY)
                .done(),
        ),
        (
            "mkdir",
            s().then(|u| rq::mkdir(u, 1, b"newdir", 0o755, 0))
                .then(|u| rq::mkdir(u, 2, b"sub", 0o700, 0))
                .done(),
        ),
        (
            "unlink",
            s().lookup(1, b"file")
                .open(2, RW)
                .then(|u| rq::named(Opcode::Unlink, u, 1, b"file"))
                .write(2, 1, 0, b"after unlink")
                .done(),
        ),
        (
            "rmdir",
            s().lookup(1, b"dir")
                .then(|u| rq::named(Opcode::Rmdir, u, 1, b"dir"))
                .then(|u| rq::named(Opcode::Unlink, u, 2, b"inner"))
                .then(|u| rq::named(Opcode::Rmdir, u, 1, b"dir"))
                .done(),
        ),
        (
            "rename",
            s().then(|u| rq::rename(u, 1, b"file", 1, b"renamed"))
                .lookup(1, b"renamed")
                .done(),
        ),
        (
            "rename2",
            s().lookup(1, b"dir")
                .then(|u| rq::rename2(u, 1, b"file", 2, b"inner", RENAME_EXCHANGE))
                .then(|u| rq::rename2(u, 1, b"link", 1, b"big", RENAME_NOREPLACE))
                .done(),
        ),
        (
            "link",
            s().lookup(1, b"file")
                .then(|u| rq::link(u, 2, 1, b"hard"))
                .lookup(1, b"hard")
                .done(),
        ),
    ]
}

/// File I/O: OPEN, READ, WRITE, STATFS, RELEASE, FSYNC, FLUSH.
fn io_seeds(s: &dyn Fn() -> Seq) -> Seeds {
    vec![
        (
            "open_read",
            s().lookup(1, b"file")
                .open(2, RW)
                .read(Opcode::Read, 2, 1, 0, 4096)
                .read(Opcode::Read, 2, 1, 8000, 1 << 20)
                .done(),
        ),
        (
            "write",
            s().lookup(1, b"file")
                .open(2, RW)
                .write(2, 1, 8000, b"hello, world")
                .write(2, 1, 1 << 30, b"far")
                .done(),
        ),
        ("statfs", s().bare(Opcode::Statfs, 1).done()),
        (
            "release",
            s().lookup(1, b"file")
                .open(2, RW)
                .then(|u| rq::release(Opcode::Release, u, 2, 1, 0))
                .read(Opcode::Read, 2, 1, 0, 10)
                .done(),
        ),
        (
            "fsync",
            s().lookup(1, b"file")
                .open(2, RW)
                .write(2, 1, 0, b"x")
                .then(|u| rq::fsync(Opcode::Fsync, u, 2, 1, true))
                .done(),
        ),
        (
            "flush",
            s().lookup(1, b"file")
                .open(2, RW)
                .then(|u| rq::flush(u, 2, 1))
                .done(),
        ),
    ]
}

/// Xattrs, INIT versions, directory handles, ACCESS.
fn meta_seeds(s: &dyn Fn() -> Seq) -> Seeds {
    vec![
        (
            "xattr",
            s().lookup(1, b"file")
                .then(|u| rq::setxattr(u, 2, b"user.k", b"val", 0))
                .then(|u| rq::getxattr(u, 2, b"user.k", 0))
                .then(|u| rq::getxattr(u, 2, b"user.k", 64))
                .then(|u| rq::getxattr(u, 2, b"user.k", 1))
                .then(|u| rq::listxattr(u, 2, 0))
                .then(|u| rq::listxattr(u, 2, 64))
                .then(|u| rq::named(Opcode::Removexattr, u, 2, b"user.k"))
                .done(),
        ),
        (
            "init",
            s().raw(Opcode::Init, 0, |e| {
                e.push(&InitInCompat {
                    major: 7,
                    minor: 31,
                    max_readahead: 0,
                    flags: ASYNC_READ as u32,
                })
            })
            .raw(Opcode::Init, 0, |e| {
                e.push(&InitInCompat {
                    major: 8,
                    minor: 0,
                    max_readahead: 0,
                    flags: 0,
                })
            })
            .done(),
        ),
        (
            "dir",
            s().then(|u| rq::opendir(u, 1, 0))
                .read(Opcode::Readdir, 1, 1, 0, 4096)
                .read(Opcode::Readdirplus, 1, 1, 0, 4096)
                .read(Opcode::Readdirplus, 1, 1, 2, 80)
                .then(|u| rq::fsync(Opcode::Fsyncdir, u, 1, 1, false))
                .then(|u| rq::release(Opcode::Releasedir, u, 1, 1, 0))
                .done(),
        ),
        ("access", s().then(|u| rq::access(u, 1, 7)).done()),
    ]
}

/// CREATE, INTERRUPT, DESTROY, FALLOCATE, LSEEK, COPY_FILE_RANGE, SYNCFS.
fn misc_seeds(s: &dyn Fn() -> Seq) -> Seeds {
    vec![
        (
            "create",
            s().then(|u| {
                let flags = (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32;
                rq::create(u, 1, b"new", flags, libc::S_IFREG | 0o644, 0o022)
            })
            .write(2, 1, 0, b"created")
            .done(),
        ),
        ("interrupt", s().then(|u| rq::interrupt(u, 101)).done()),
        (
            "destroy",
            s().bare(Opcode::Destroy, 0)
                .then(|u| rq::getattr(u, 1, None))
                .done(),
        ),
        (
            "fallocate",
            s().lookup(1, b"file")
                .open(2, RW)
                .then(|u| rq::fallocate(u, 2, 1, 0, 1 << 20, 0))
                .then(|u| {
                    let punch = (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE) as u32;
                    rq::fallocate(u, 2, 1, 4096, 4096, punch)
                })
                .done(),
        ),
        (
            "lseek",
            s().lookup(1, b"file")
                .open(2, libc::O_RDONLY)
                .then(|u| rq::lseek(u, 2, 1, 0, libc::SEEK_DATA as u32))
                .then(|u| rq::lseek(u, 2, 1, 0, libc::SEEK_HOLE as u32))
                .done(),
        ),
        (
            "copy_file_range",
            s().lookup(1, b"file")
                .open(2, RW)
                .then(|u| {
                    let flags = (libc::O_RDWR | libc::O_CREAT) as u32;
                    rq::create(u, 1, b"dst", flags, libc::S_IFREG | 0o644, 0)
                })
                .then(|u| rq::copy_file_range(u, (2, 1, 0), (3, 2, 0), 8192, 0))
                .done(),
        ),
        ("syncfs", s().then(|u| rq::syncfs(u, 1)).done()),
    ]
}

/// The DAX window, capacities too small for the replies, malformed requests.
fn dax_and_edge_seeds(s: &dyn Fn() -> Seq) -> Seeds {
    vec![
        (
            "setupmapping",
            s().lookup(1, b"big")
                .open(2, RW)
                .map(2, 1, 0, 0, R)
                .map(2, u64::MAX, MIB2, MIB2, RW_MAP)
                .map(2, 1, 0, 0, RW_MAP)
                .setattr(
                    2,
                    SetattrIn {
                        valid: FATTR_SIZE,
                        size: 1 << 20,
                        ..SetattrIn::default()
                    },
                )
                .unmap(&[(0, MIB2)])
                .done(),
        ),
        (
            "removemapping",
            s().lookup(1, b"big")
                .open(2, RW)
                .map(2, 1, 0, 0, R)
                .map(2, 1, MIB2, MIB2, R)
                .unmap(&[(0, MIB2), (MIB2, MIB2)])
                .unmap(&[(4 * MIB2, MIB2)])
                .done(),
        ),
        ("dax_thrash", {
            let mut q = s().lookup(1, b"big").open(2, RW).lookup(1, b"file");
            for i in 0..6u64 {
                q = q.map(
                    2,
                    1,
                    (i % 2) * MIB2,
                    (i % 4) * MIB2,
                    if i % 3 == 0 { RW_MAP } else { R },
                );
            }
            q.map(3, u64::MAX, 0, 3 * MIB2, R)
                .bare(Opcode::Destroy, 0)
                .done()
        }),
        // Capacity too small for the replies: refused before acting.
        (
            "small_capacity",
            Seq::new(3)
                .lookup(1, b"file")
                .bare(Opcode::Statfs, 1)
                .done(),
        ),
        (
            "no_capacity",
            Seq::new(0)
                .lookup(1, b"file")
                .then(|u| rq::forget(u, 2, 1))
                .done(),
        ),
        // Malformed: bad names, counts and framing.
        ("malformed", {
            let mut q = s()
                .lookup(1, b"..")
                .lookup(1, b"a/b")
                .raw(Opcode::RemoveMapping, 1, |e| {
                    e.push(&RemoveMappingIn { count: 1000 })
                });
            q.bytes.extend_from_slice(&[40, 0, 0, 0, 1, 0, 0, 0]);
            q.done()
        }),
    ]
}

/// Opcodes the daemon does not implement: refused with ENOSYS.
fn unsupported_seeds(s: &dyn Fn() -> Seq) -> Seeds {
    let mut out = Vec::new();
    for op in [
        Opcode::Getlk,
        Opcode::Setlk,
        Opcode::Setlkw,
        Opcode::Bmap,
        Opcode::Ioctl,
        Opcode::Poll,
        Opcode::NotifyReply,
        Opcode::Tmpfile,
        Opcode::Statx,
        Opcode::CopyFileRange64,
    ] {
        out.push((
            unsupported_name(op),
            s().raw(op, 1, |e| e.bytes(&[0; 64])).done(),
        ));
    }
    out
}

fn unsupported_name(op: Opcode) -> &'static str {
    match op {
        Opcode::Getlk => "getlk",
        Opcode::Setlk => "setlk",
        Opcode::Setlkw => "setlkw",
        Opcode::Bmap => "bmap",
        Opcode::Ioctl => "ioctl",
        Opcode::Poll => "poll",
        Opcode::NotifyReply => "notify_reply",
        Opcode::Tmpfile => "tmpfile",
        Opcode::Statx => "statx",
        _ => "copy_file_range_64",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every opcode appears in some seed.
    #[test]
    fn seeds_cover_every_opcode() {
        let mut seen = std::collections::HashSet::new();
        for (_, seed) in seeds() {
            for request in crate::split_requests(&seed[1..]) {
                if let Some(op) = request
                    .get(4..8)
                    .and_then(|b| Opcode::from_u32(u32::from_ne_bytes(b.try_into().unwrap())))
                {
                    seen.insert(op);
                }
            }
        }
        let missing: Vec<_> = Opcode::ALL.iter().filter(|op| !seen.contains(op)).collect();
        assert!(missing.is_empty(), "no seed for {missing:?}");
    }
}
