//! Seed inputs: real request sequences, built with `RequestEncoder`, that
//! reach every opcode over the fixture of [`crate::run_input`] (`file`,
//! `dir/inner`, `link`, `big`). Nodeids and handles are those a fresh
//! session hands out: the first new inode looked up or created is 2, the
//! first handle 1.

use daxfsd_protocol::abi::*;
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

    fn req(
        mut self,
        op: Opcode,
        nodeid: u64,
        build: impl FnOnce(RequestEncoder) -> RequestEncoder,
    ) -> Self {
        self.unique += 1;
        let e = build(RequestEncoder::new(op, self.unique, nodeid));
        self.bytes.extend_from_slice(&e.finish());
        self
    }

    fn bare(self, op: Opcode, nodeid: u64) -> Self {
        self.req(op, nodeid, |e| e)
    }

    fn lookup(self, parent: u64, name: &[u8]) -> Self {
        self.req(Opcode::Lookup, parent, |e| e.name(name))
    }

    fn open(self, nodeid: u64, flags: i32) -> Self {
        self.req(Opcode::Open, nodeid, |e| {
            e.push(&OpenIn {
                flags: flags as u32,
                open_flags: 0,
            })
        })
    }

    fn read(self, op: Opcode, nodeid: u64, fh: u64, offset: u64, size: u32) -> Self {
        self.req(op, nodeid, |e| {
            e.push(&ReadIn {
                fh,
                offset,
                size,
                ..ReadIn::default()
            })
        })
    }

    fn write(self, nodeid: u64, fh: u64, offset: u64, data: &[u8]) -> Self {
        self.req(Opcode::Write, nodeid, |e| {
            e.push(&WriteIn {
                fh,
                offset,
                size: data.len() as u32,
                ..WriteIn::default()
            })
            .bytes(data)
        })
    }

    fn map(self, nodeid: u64, fh: u64, foffset: u64, moffset: u64, flags: u64) -> Self {
        self.req(Opcode::SetupMapping, nodeid, |e| {
            e.push(&SetupMappingIn {
                fh,
                foffset,
                len: 2 << 20,
                flags,
                moffset,
            })
        })
    }

    fn unmap(self, ranges: &[(u64, u64)]) -> Self {
        self.req(Opcode::RemoveMapping, 1, |mut e| {
            e = e.push(&RemoveMappingIn {
                count: ranges.len() as u32,
            });
            for &(moffset, len) in ranges {
                e = e.push(&RemoveMappingOne { moffset, len });
            }
            e
        })
    }

    fn setattr(self, nodeid: u64, arg: SetattrIn) -> Self {
        self.req(Opcode::Setattr, nodeid, |e| e.push(&arg))
    }

    fn done(self) -> Vec<u8> {
        self.bytes
    }
}

const RW: i32 = libc::O_RDWR;
const R: u64 = SETUPMAPPING_FLAG_READ;
const RW_MAP: u64 = SETUPMAPPING_FLAG_READ | SETUPMAPPING_FLAG_WRITE;
const MIB2: u64 = 2 << 20;

/// Every seed, by name.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let s = || Seq::new(FULL);
    let mut out = vec![
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
                .req(Opcode::Forget, 2, |e| e.push(&ForgetIn { nlookup: 1 }))
                .req(Opcode::Getattr, 2, |e| e.push(&GetattrIn::default()))
                .done(),
        ),
        (
            "batch_forget",
            s().lookup(1, b"file")
                .lookup(1, b"dir")
                .req(Opcode::BatchForget, 0, |e| {
                    e.push(&BatchForgetIn { count: 3, dummy: 0 })
                        .push(&ForgetOne {
                            nodeid: 2,
                            nlookup: 1,
                        })
                        .push(&ForgetOne {
                            nodeid: 3,
                            nlookup: 5,
                        })
                        .push(&ForgetOne {
                            nodeid: 99,
                            nlookup: 1,
                        })
                })
                .done(),
        ),
        (
            "getattr",
            s().req(Opcode::Getattr, 1, |e| e.push(&GetattrIn::default()))
                .lookup(1, b"file")
                .open(2, RW)
                .req(Opcode::Getattr, 2, |e| {
                    e.push(&GetattrIn {
                        getattr_flags: GETATTR_FH,
                        dummy: 0,
                        fh: 1,
                    })
                })
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
        (
            "readlink",
            s().lookup(1, b"link").bare(Opcode::Readlink, 2).done(),
        ),
        (
            "symlink",
            s().req(Opcode::Symlink, 1, |e| {
                e.name(b"s").name(b"../../etc/passwd")
            })
            .lookup(1, b"s")
            .done(),
        ),
        (
            "mknod",
            s().req(Opcode::Mknod, 1, |e| {
                e.push(&MknodIn {
                    mode: libc::S_IFIFO | 0o644,
                    rdev: 0,
                    umask: 0o022,
                    padding: 0,
                })
                .name(b"fifo")
            })
            .open(2, libc::O_RDONLY)
            .done(),
        ),
        (
            "mkdir",
            s().req(Opcode::Mkdir, 1, |e| {
                e.push(&MkdirIn {
                    mode: 0o755,
                    umask: 0,
                })
                .name(b"newdir")
            })
            .req(Opcode::Mkdir, 2, |e| {
                e.push(&MkdirIn {
                    mode: 0o700,
                    umask: 0,
                })
                .name(b"sub")
            })
            .done(),
        ),
        (
            "unlink",
            s().lookup(1, b"file")
                .open(2, RW)
                .req(Opcode::Unlink, 1, |e| e.name(b"file"))
                .write(2, 1, 0, b"after unlink")
                .done(),
        ),
        (
            "rmdir",
            s().lookup(1, b"dir")
                .req(Opcode::Rmdir, 1, |e| e.name(b"dir"))
                .req(Opcode::Unlink, 2, |e| e.name(b"inner"))
                .req(Opcode::Rmdir, 1, |e| e.name(b"dir"))
                .done(),
        ),
        (
            "rename",
            s().req(Opcode::Rename, 1, |e| {
                e.push(&RenameIn { newdir: 1 })
                    .name(b"file")
                    .name(b"renamed")
            })
            .lookup(1, b"renamed")
            .done(),
        ),
        (
            "rename2",
            s().lookup(1, b"dir")
                .req(Opcode::Rename2, 1, |e| {
                    e.push(&Rename2In {
                        newdir: 2,
                        flags: RENAME_EXCHANGE,
                        padding: 0,
                    })
                    .name(b"file")
                    .name(b"inner")
                })
                .req(Opcode::Rename2, 1, |e| {
                    e.push(&Rename2In {
                        newdir: 1,
                        flags: RENAME_NOREPLACE,
                        padding: 0,
                    })
                    .name(b"link")
                    .name(b"big")
                })
                .done(),
        ),
        (
            "link",
            s().lookup(1, b"file")
                .req(Opcode::Link, 1, |e| {
                    e.push(&LinkIn { oldnodeid: 2 }).name(b"hard")
                })
                .lookup(1, b"hard")
                .done(),
        ),
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
                .req(Opcode::Release, 2, |e| {
                    e.push(&ReleaseIn {
                        fh: 1,
                        ..ReleaseIn::default()
                    })
                })
                .read(Opcode::Read, 2, 1, 0, 10)
                .done(),
        ),
        (
            "fsync",
            s().lookup(1, b"file")
                .open(2, RW)
                .write(2, 1, 0, b"x")
                .req(Opcode::Fsync, 2, |e| {
                    e.push(&FsyncIn {
                        fh: 1,
                        fsync_flags: FSYNC_FDATASYNC,
                        padding: 0,
                    })
                })
                .done(),
        ),
        (
            "flush",
            s().lookup(1, b"file")
                .open(2, RW)
                .req(Opcode::Flush, 2, |e| {
                    e.push(&FlushIn {
                        fh: 1,
                        ..FlushIn::default()
                    })
                })
                .done(),
        ),
        (
            "xattr",
            s().lookup(1, b"file")
                .req(Opcode::Setxattr, 2, |e| {
                    e.push(&SetxattrIn { size: 3, flags: 0 })
                        .name(b"user.k")
                        .bytes(b"val")
                })
                .req(Opcode::Getxattr, 2, |e| {
                    e.push(&GetxattrIn {
                        size: 0,
                        padding: 0,
                    })
                    .name(b"user.k")
                })
                .req(Opcode::Getxattr, 2, |e| {
                    e.push(&GetxattrIn {
                        size: 64,
                        padding: 0,
                    })
                    .name(b"user.k")
                })
                .req(Opcode::Getxattr, 2, |e| {
                    e.push(&GetxattrIn {
                        size: 1,
                        padding: 0,
                    })
                    .name(b"user.k")
                })
                .req(Opcode::Listxattr, 2, |e| {
                    e.push(&GetxattrIn {
                        size: 0,
                        padding: 0,
                    })
                })
                .req(Opcode::Listxattr, 2, |e| {
                    e.push(&GetxattrIn {
                        size: 64,
                        padding: 0,
                    })
                })
                .req(Opcode::Removexattr, 2, |e| e.name(b"user.k"))
                .done(),
        ),
        (
            "init",
            s().req(Opcode::Init, 0, |e| {
                e.push(&InitInCompat {
                    major: 7,
                    minor: 31,
                    max_readahead: 0,
                    flags: ASYNC_READ as u32,
                })
            })
            .req(Opcode::Init, 0, |e| {
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
            s().req(Opcode::Opendir, 1, |e| e.push(&OpenIn::default()))
                .read(Opcode::Readdir, 1, 1, 0, 4096)
                .read(Opcode::Readdirplus, 1, 1, 0, 4096)
                .read(Opcode::Readdirplus, 1, 1, 2, 80)
                .req(Opcode::Fsyncdir, 1, |e| {
                    e.push(&FsyncIn {
                        fh: 1,
                        ..FsyncIn::default()
                    })
                })
                .req(Opcode::Releasedir, 1, |e| {
                    e.push(&ReleaseIn {
                        fh: 1,
                        ..ReleaseIn::default()
                    })
                })
                .done(),
        ),
        (
            "access",
            s().req(Opcode::Access, 1, |e| {
                e.push(&AccessIn {
                    mask: 7,
                    padding: 0,
                })
            })
            .done(),
        ),
        (
            "create",
            s().req(Opcode::Create, 1, |e| {
                e.push(&CreateIn {
                    flags: (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32,
                    mode: libc::S_IFREG | 0o644,
                    umask: 0o022,
                    open_flags: 0,
                })
                .name(b"new")
            })
            .write(2, 1, 0, b"created")
            .done(),
        ),
        (
            "interrupt",
            s().req(Opcode::Interrupt, 0, |e| {
                e.push(&InterruptIn { unique: 101 })
            })
            .done(),
        ),
        (
            "destroy",
            s().bare(Opcode::Destroy, 0)
                .req(Opcode::Getattr, 1, |e| e.push(&GetattrIn::default()))
                .done(),
        ),
        (
            "fallocate",
            s().lookup(1, b"file")
                .open(2, RW)
                .req(Opcode::Fallocate, 2, |e| {
                    e.push(&FallocateIn {
                        fh: 1,
                        offset: 0,
                        length: 1 << 20,
                        mode: 0,
                        padding: 0,
                    })
                })
                .req(Opcode::Fallocate, 2, |e| {
                    e.push(&FallocateIn {
                        fh: 1,
                        offset: 4096,
                        length: 4096,
                        mode: (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE) as u32,
                        padding: 0,
                    })
                })
                .done(),
        ),
        (
            "lseek",
            s().lookup(1, b"file")
                .open(2, libc::O_RDONLY)
                .req(Opcode::Lseek, 2, |e| {
                    e.push(&LseekIn {
                        fh: 1,
                        offset: 0,
                        whence: libc::SEEK_DATA as u32,
                        padding: 0,
                    })
                })
                .req(Opcode::Lseek, 2, |e| {
                    e.push(&LseekIn {
                        fh: 1,
                        offset: 0,
                        whence: libc::SEEK_HOLE as u32,
                        padding: 0,
                    })
                })
                .done(),
        ),
        (
            "copy_file_range",
            s().lookup(1, b"file")
                .open(2, RW)
                .req(Opcode::Create, 1, |e| {
                    e.push(&CreateIn {
                        flags: (libc::O_RDWR | libc::O_CREAT) as u32,
                        mode: libc::S_IFREG | 0o644,
                        umask: 0,
                        open_flags: 0,
                    })
                    .name(b"dst")
                })
                .req(Opcode::CopyFileRange, 2, |e| {
                    e.push(&CopyFileRangeIn {
                        fh_in: 1,
                        off_in: 0,
                        nodeid_out: 3,
                        fh_out: 2,
                        off_out: 0,
                        len: 8192,
                        flags: 0,
                    })
                })
                .done(),
        ),
        (
            "syncfs",
            s().req(Opcode::Syncfs, 1, |e| e.push(&SyncfsIn::default()))
                .done(),
        ),
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
                .req(Opcode::Statfs, 1, |e| e)
                .done(),
        ),
        (
            "no_capacity",
            Seq::new(0)
                .lookup(1, b"file")
                .req(Opcode::Forget, 2, |e| e.push(&ForgetIn { nlookup: 1 }))
                .done(),
        ),
        // Malformed: bad names, counts and framing.
        ("malformed", {
            let mut q = s()
                .lookup(1, b"..")
                .lookup(1, b"a/b")
                .req(Opcode::RemoveMapping, 1, |e| {
                    e.push(&RemoveMappingIn { count: 1000 })
                });
            q.bytes.extend_from_slice(&[40, 0, 0, 0, 1, 0, 0, 0]);
            q.done()
        }),
    ];
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
            s().req(op, 1, |e| e.bytes(&[0; 64])).done(),
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
