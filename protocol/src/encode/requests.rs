//! One pure builder per request, laid out as the Linux virtio-fs driver sends it.
//!
//! Each takes the request id (`unique`), the node it is about and the operation's
//! arguments, and returns the [`RequestEncoder`] unfinished, so a caller can still set
//! the credentials ([`RequestEncoder::caller`]) before [`RequestEncoder::finish`]. They
//! need no device: the harness's typed client sends them, the benchmarks drive the
//! daemons with them and the fuzz seeds are sequences of them.

use crate::abi::*;
use crate::encode::RequestEncoder;

/// INIT of a 7.41 guest with capability `flags`; INIT_EXT is added, as the kernel does,
/// so `flags2` is read.
pub fn init(unique: u64, flags: u64) -> RequestEncoder {
    let flags = flags | INIT_EXT;
    RequestEncoder::new(Opcode::Init, unique, 0)
        .push(&InitInCompat {
            major: KERNEL_VERSION,
            minor: KERNEL_MINOR_VERSION,
            max_readahead: 128 * 1024,
            flags: flags as u32,
        })
        .push(&InitInExt {
            flags2: (flags >> 32) as u32,
            unused: [0; 11],
        })
}

/// A request with no arguments (DESTROY, READLINK, STATFS, ...).
pub fn bare(opcode: Opcode, unique: u64, nodeid: u64) -> RequestEncoder {
    RequestEncoder::new(opcode, unique, nodeid)
}

/// A request whose only argument is a name (LOOKUP, UNLINK, RMDIR, REMOVEXATTR).
pub fn named(opcode: Opcode, unique: u64, nodeid: u64, name: &[u8]) -> RequestEncoder {
    RequestEncoder::new(opcode, unique, nodeid).name(name)
}

/// LOOKUP of `name` in `parent`.
pub fn lookup(unique: u64, parent: u64, name: &[u8]) -> RequestEncoder {
    named(Opcode::Lookup, unique, parent, name)
}

/// FORGET of `nlookup` references to `nodeid`.
pub fn forget(unique: u64, nodeid: u64, nlookup: u64) -> RequestEncoder {
    RequestEncoder::new(Opcode::Forget, unique, nodeid).push(&ForgetIn { nlookup })
}

/// BATCH_FORGET of `(nodeid, nlookup)` pairs.
pub fn batch_forget(unique: u64, entries: &[(u64, u64)]) -> RequestEncoder {
    let count = entries.len() as u32;
    let mut enc = RequestEncoder::new(Opcode::BatchForget, unique, 0)
        .push(&BatchForgetIn { count, dummy: 0 });
    for &(nodeid, nlookup) in entries {
        enc = enc.push(&ForgetOne { nodeid, nlookup });
    }
    enc
}

/// GETATTR of `nodeid`, through the open handle `fh` if given (GETATTR_FH).
pub fn getattr(unique: u64, nodeid: u64, fh: Option<u64>) -> RequestEncoder {
    let arg = match fh {
        Some(fh) => GetattrIn {
            getattr_flags: GETATTR_FH,
            dummy: 0,
            fh,
        },
        None => GetattrIn::default(),
    };
    RequestEncoder::new(Opcode::Getattr, unique, nodeid).push(&arg)
}

/// SETATTR of `nodeid` with `arg` (its `valid` names the fields that count).
pub fn setattr(unique: u64, nodeid: u64, arg: &SetattrIn) -> RequestEncoder {
    RequestEncoder::new(Opcode::Setattr, unique, nodeid).push(arg)
}

/// SYMLINK `name` in `parent` pointing at `target`.
pub fn symlink(unique: u64, parent: u64, name: &[u8], target: &[u8]) -> RequestEncoder {
    RequestEncoder::new(Opcode::Symlink, unique, parent)
        .name(name)
        .name(target)
}

/// MKNOD `name` in `parent` (`mode` includes the file type).
pub fn mknod(
    unique: u64, parent: u64, name: &[u8], mode: u32, rdev: u32, umask: u32,
) -> RequestEncoder {
    RequestEncoder::new(Opcode::Mknod, unique, parent)
        .push(&MknodIn {
            mode,
            rdev,
            umask,
            padding: 0,
        })
        .name(name)
}

/// MKDIR `name` in `parent`.
pub fn mkdir(unique: u64, parent: u64, name: &[u8], mode: u32, umask: u32) -> RequestEncoder {
    RequestEncoder::new(Opcode::Mkdir, unique, parent)
        .push(&MkdirIn { mode, umask })
        .name(name)
}

/// Plain RENAME of `old` in `olddir` to `new` in `newdir`.
pub fn rename(unique: u64, olddir: u64, old: &[u8], newdir: u64, new: &[u8]) -> RequestEncoder {
    RequestEncoder::new(Opcode::Rename, unique, olddir)
        .push(&RenameIn { newdir })
        .name(old)
        .name(new)
}

/// RENAME2 with `RENAME_*` flags.
pub fn rename2(
    unique: u64, olddir: u64, old: &[u8], newdir: u64, new: &[u8], flags: u32,
) -> RequestEncoder {
    RequestEncoder::new(Opcode::Rename2, unique, olddir)
        .push(&Rename2In {
            newdir,
            flags,
            padding: 0,
        })
        .name(old)
        .name(new)
}

/// LINK: a new name `name` in `newparent` for `nodeid`.
pub fn link(unique: u64, nodeid: u64, newparent: u64, name: &[u8]) -> RequestEncoder {
    RequestEncoder::new(Opcode::Link, unique, newparent)
        .push(&LinkIn { oldnodeid: nodeid })
        .name(name)
}

/// OPEN (or OPENDIR, by `opcode`) of `nodeid` with `O_*` `flags` and `OPEN_*` flags.
pub fn open_op(
    opcode: Opcode, unique: u64, nodeid: u64, flags: u32, open_flags: u32,
) -> RequestEncoder {
    RequestEncoder::new(opcode, unique, nodeid).push(&OpenIn { flags, open_flags })
}

/// OPEN of `nodeid` with `O_*` `flags`.
pub fn open(unique: u64, nodeid: u64, flags: u32) -> RequestEncoder {
    open_op(Opcode::Open, unique, nodeid, flags, 0)
}

/// OPENDIR of `nodeid` with `O_*` `flags`.
pub fn opendir(unique: u64, nodeid: u64, flags: u32) -> RequestEncoder {
    open_op(Opcode::Opendir, unique, nodeid, flags, 0)
}

/// CREATE `name` in `parent`: `flags` and `mode` are sent as given (the kernel adds
/// O_CREAT and S_IFREG; so must the caller).
pub fn create(
    unique: u64, parent: u64, name: &[u8], flags: u32, mode: u32, umask: u32,
) -> RequestEncoder {
    RequestEncoder::new(Opcode::Create, unique, parent)
        .push(&CreateIn {
            flags,
            mode,
            umask,
            open_flags: 0,
        })
        .name(name)
}

/// READ, READDIR or READDIRPLUS (by `opcode`) of `size` bytes at `offset` of handle `fh`.
pub fn read_op(
    opcode: Opcode, unique: u64, nodeid: u64, fh: u64, offset: u64, size: u32,
) -> RequestEncoder {
    RequestEncoder::new(opcode, unique, nodeid).push(&ReadIn {
        fh,
        offset,
        size,
        ..ReadIn::default()
    })
}

/// READ of `size` bytes at `offset` of handle `fh`.
pub fn read(unique: u64, nodeid: u64, fh: u64, offset: u64, size: u32) -> RequestEncoder {
    read_op(Opcode::Read, unique, nodeid, fh, offset, size)
}

/// WRITE of `data` at `offset` of handle `fh` with `WRITE_*` flags.
pub fn write(
    unique: u64, nodeid: u64, fh: u64, offset: u64, data: &[u8], write_flags: u32,
) -> RequestEncoder {
    RequestEncoder::new(Opcode::Write, unique, nodeid)
        .push(&WriteIn {
            fh,
            offset,
            size: data.len() as u32,
            write_flags,
            ..WriteIn::default()
        })
        .bytes(data)
}

/// RELEASE or RELEASEDIR (by `opcode`) of handle `fh`, opened with `O_*` `flags`.
pub fn release(opcode: Opcode, unique: u64, nodeid: u64, fh: u64, flags: u32) -> RequestEncoder {
    RequestEncoder::new(opcode, unique, nodeid).push(&ReleaseIn {
        fh,
        flags,
        ..ReleaseIn::default()
    })
}

/// FLUSH of handle `fh`.
pub fn flush(unique: u64, nodeid: u64, fh: u64) -> RequestEncoder {
    RequestEncoder::new(Opcode::Flush, unique, nodeid).push(&FlushIn {
        fh,
        ..FlushIn::default()
    })
}

/// FSYNC or FSYNCDIR (by `opcode`) of handle `fh`.
pub fn fsync(opcode: Opcode, unique: u64, nodeid: u64, fh: u64, datasync: bool) -> RequestEncoder {
    RequestEncoder::new(opcode, unique, nodeid).push(&FsyncIn {
        fh,
        fsync_flags: if datasync { FSYNC_FDATASYNC } else { 0 },
        padding: 0,
    })
}

/// ACCESS of `nodeid` with the `R_OK | W_OK | X_OK` `mask`.
pub fn access(unique: u64, nodeid: u64, mask: u32) -> RequestEncoder {
    RequestEncoder::new(Opcode::Access, unique, nodeid).push(&AccessIn { mask, padding: 0 })
}

/// FALLOCATE of `length` bytes at `offset` of handle `fh` with `FALLOC_FL_*` `mode`.
pub fn fallocate(
    unique: u64, nodeid: u64, fh: u64, offset: u64, length: u64, mode: u32,
) -> RequestEncoder {
    RequestEncoder::new(Opcode::Fallocate, unique, nodeid).push(&FallocateIn {
        fh,
        offset,
        length,
        mode,
        padding: 0,
    })
}

/// LSEEK of handle `fh` from `offset` with `SEEK_*` `whence`.
pub fn lseek(unique: u64, nodeid: u64, fh: u64, offset: u64, whence: u32) -> RequestEncoder {
    RequestEncoder::new(Opcode::Lseek, unique, nodeid).push(&LseekIn {
        fh,
        offset,
        whence,
        padding: 0,
    })
}

/// COPY_FILE_RANGE of `len` bytes from `(nodeid, fh, offset)` to `(nodeid, fh, offset)`.
pub fn copy_file_range(
    unique: u64, src: (u64, u64, u64), dst: (u64, u64, u64), len: u64, flags: u64,
) -> RequestEncoder {
    RequestEncoder::new(Opcode::CopyFileRange, unique, src.0).push(&CopyFileRangeIn {
        fh_in: src.1,
        off_in: src.2,
        nodeid_out: dst.0,
        fh_out: dst.1,
        off_out: dst.2,
        len,
        flags,
    })
}

/// SYNCFS of the filesystem holding `nodeid`.
pub fn syncfs(unique: u64, nodeid: u64) -> RequestEncoder {
    RequestEncoder::new(Opcode::Syncfs, unique, nodeid).push(&SyncfsIn::default())
}

/// SETXATTR `name` = `value` with `XATTR_*` flags (the plain layout, without
/// SETXATTR_EXT).
pub fn setxattr(unique: u64, nodeid: u64, name: &[u8], value: &[u8], flags: u32) -> RequestEncoder {
    RequestEncoder::new(Opcode::Setxattr, unique, nodeid)
        .push(&SetxattrIn {
            size: value.len() as u32,
            flags,
        })
        .name(name)
        .bytes(value)
}

/// SETXATTR in the SETXATTR_EXT layout: as [`setxattr`], with
/// `SETXATTR_*` flags.
pub fn setxattr_ext(
    unique: u64, nodeid: u64, name: &[u8], value: &[u8], flags: u32, setxattr_flags: u32,
) -> RequestEncoder {
    RequestEncoder::new(Opcode::Setxattr, unique, nodeid)
        .push(&SetxattrInExt {
            size: value.len() as u32,
            flags,
            setxattr_flags,
            padding: 0,
        })
        .name(name)
        .bytes(value)
}

/// The security context extension Linux appends to a creating request once
/// SECURITY_CTX is agreed (for [`RequestEncoder::extension`]): a header
/// naming one context, `(name, value)`, or none; the `fuse_secctx`; the
/// name with its NUL; the value; zeros up to a multiple of 8 bytes.
pub fn security_context(context: Option<(&[u8], &[u8])>) -> Vec<u8> {
    use zerocopy::IntoBytes;
    let mut record = Vec::new();
    if let Some((name, value)) = context {
        let secctx = Secctx {
            size: value.len() as u32,
            padding: 0,
        };
        record.extend_from_slice(secctx.as_bytes());
        record.extend_from_slice(name);
        record.push(0);
        record.extend_from_slice(value);
        record.resize(record.len().next_multiple_of(8), 0);
    }
    let header = ExtHeader {
        size: (core::mem::size_of::<ExtHeader>() + record.len()) as u32,
        ext_type: u32::from(context.is_some()),
    };
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(&record);
    out
}

/// GETXATTR of `name` with room for `size` bytes (0: the size is asked for).
pub fn getxattr(unique: u64, nodeid: u64, name: &[u8], size: u32) -> RequestEncoder {
    RequestEncoder::new(Opcode::Getxattr, unique, nodeid)
        .push(&GetxattrIn { size, padding: 0 })
        .name(name)
}

/// LISTXATTR with room for `size` bytes (0: the size is asked for).
pub fn listxattr(unique: u64, nodeid: u64, size: u32) -> RequestEncoder {
    RequestEncoder::new(Opcode::Listxattr, unique, nodeid).push(&GetxattrIn { size, padding: 0 })
}

/// INTERRUPT of the request `target`.
pub fn interrupt(unique: u64, target: u64) -> RequestEncoder {
    RequestEncoder::new(Opcode::Interrupt, unique, 0).push(&InterruptIn { unique: target })
}

/// SETUP_MAPPING of `len` bytes of handle `fh` at `foffset` to window offset `moffset`.
pub fn setup_mapping(
    unique: u64, nodeid: u64, fh: u64, foffset: u64, len: u64, moffset: u64, flags: u64,
) -> RequestEncoder {
    RequestEncoder::new(Opcode::SetupMapping, unique, nodeid).push(&SetupMappingIn {
        fh,
        foffset,
        len,
        flags,
        moffset,
    })
}

/// REMOVE_MAPPING of `(moffset, len)` window ranges.
pub fn remove_mapping(unique: u64, nodeid: u64, ranges: &[(u64, u64)]) -> RequestEncoder {
    let count = ranges.len() as u32;
    let mut enc =
        RequestEncoder::new(Opcode::RemoveMapping, unique, nodeid).push(&RemoveMappingIn { count });
    for &(moffset, len) in ranges {
        enc = enc.push(&RemoveMappingOne { moffset, len });
    }
    enc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{parse, Limits, Operation};

    /// Every builder's request parses, with its opcode, id and node in the header.
    #[test]
    fn every_builder_parses_as_its_opcode() {
        let built = [
            (init(1, ASYNC_READ), Opcode::Init, 0),
            (bare(Opcode::Destroy, 2, 0), Opcode::Destroy, 0),
            (lookup(3, 1, b"a"), Opcode::Lookup, 1),
            (forget(4, 2, 1), Opcode::Forget, 2),
            (batch_forget(5, &[(2, 1), (3, 4)]), Opcode::BatchForget, 0),
            (getattr(6, 1, Some(9)), Opcode::Getattr, 1),
            (setattr(7, 2, &SetattrIn::default()), Opcode::Setattr, 2),
            (symlink(8, 1, b"s", b"../t"), Opcode::Symlink, 1),
            (mknod(9, 1, b"f", 0o10644, 0, 0o22), Opcode::Mknod, 1),
            (mkdir(10, 1, b"d", 0o755, 0), Opcode::Mkdir, 1),
            (named(Opcode::Unlink, 11, 1, b"f"), Opcode::Unlink, 1),
            (rename(12, 1, b"a", 1, b"b"), Opcode::Rename, 1),
            (rename2(13, 1, b"a", 2, b"b", 1), Opcode::Rename2, 1),
            (link(14, 2, 1, b"h"), Opcode::Link, 1),
            (open(15, 2, 2), Opcode::Open, 2),
            (opendir(16, 1, 0), Opcode::Opendir, 1),
            (
                create(17, 1, b"n", 0o102, 0o100644, 0o22),
                Opcode::Create,
                1,
            ),
            (read(18, 2, 1, 0, 4096), Opcode::Read, 2),
            (
                read_op(Opcode::Readdirplus, 19, 1, 1, 0, 4096),
                Opcode::Readdirplus,
                1,
            ),
            (write(20, 2, 1, 8, b"data", 0), Opcode::Write, 2),
            (release(Opcode::Release, 21, 2, 1, 0), Opcode::Release, 2),
            (flush(22, 2, 1), Opcode::Flush, 2),
            (fsync(Opcode::Fsyncdir, 23, 1, 1, true), Opcode::Fsyncdir, 1),
            (access(24, 1, 7), Opcode::Access, 1),
            (fallocate(25, 2, 1, 0, 4096, 0), Opcode::Fallocate, 2),
            (lseek(26, 2, 1, 0, 3), Opcode::Lseek, 2),
            (
                copy_file_range(27, (2, 1, 0), (3, 2, 0), 10, 0),
                Opcode::CopyFileRange,
                2,
            ),
            (syncfs(28, 1), Opcode::Syncfs, 1),
            (setxattr(29, 2, b"user.k", b"v", 0), Opcode::Setxattr, 2),
            (getxattr(30, 2, b"user.k", 0), Opcode::Getxattr, 2),
            (listxattr(31, 2, 64), Opcode::Listxattr, 2),
            (interrupt(32, 5), Opcode::Interrupt, 0),
            (
                setup_mapping(33, 2, 1, 0, 2 << 20, 0, SETUPMAPPING_FLAG_READ),
                Opcode::SetupMapping,
                2,
            ),
            (
                remove_mapping(34, 1, &[(0, 2 << 20)]),
                Opcode::RemoveMapping,
                1,
            ),
        ];
        for (i, (enc, opcode, nodeid)) in built.into_iter().enumerate() {
            let bytes = enc.finish();
            let req = parse(&bytes, &Limits::default())
                .unwrap_or_else(|e| panic!("{opcode:?} does not parse: {e}"));
            assert_eq!(req.header.opcode, opcode as u32);
            assert_eq!(req.header.unique, i as u64 + 1, "{opcode:?}");
            assert_eq!(req.header.nodeid, nodeid, "{opcode:?}");
        }
    }

    /// The arguments land where the server reads them.
    #[test]
    fn arguments_round_trip() {
        let bytes = write(1, 2, 7, 4096, b"abc", WRITE_LOCKOWNER).finish();
        match parse(&bytes, &Limits::default()).unwrap().op {
            Operation::Write { arg, data } => {
                assert_eq!((arg.fh, arg.offset, arg.size), (7, 4096, 3));
                assert_eq!(arg.write_flags, WRITE_LOCKOWNER);
                assert_eq!(data, b"abc");
            }
            other => panic!("WRITE parsed as {other:?}"),
        }
        let bytes = create(1, 1, b"new", 0o102, 0o100600, 0o22).finish();
        match parse(&bytes, &Limits::default()).unwrap().op {
            Operation::Create { arg, name } => {
                assert_eq!((arg.flags, arg.mode, arg.umask), (0o102, 0o100600, 0o22));
                assert_eq!(name.as_bytes(), b"new");
            }
            other => panic!("CREATE parsed as {other:?}"),
        }
        let bytes = init(1, 1 << 40).finish();
        match parse(&bytes, &Limits::default()).unwrap().op {
            Operation::Init { flags, .. } => assert_eq!(flags, (1 << 40) | INIT_EXT),
            other => panic!("INIT parsed as {other:?}"),
        }
    }
}
