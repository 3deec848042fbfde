//! Open files, read-only shares, extended attributes, ACCESS.

use std::io::Write as _;

use daxfsd_protocol::abi::{
    FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, OPEN_KILL_SUIDGID, WRITE_KILL_SUIDGID,
};

use super::*;
use crate::errno::Errno;
use crate::fs::passthrough::{MapAccess, Negotiated};
use crate::fs::{BufferSink, FileSystem};

#[test]
fn create_write_read_release() {
    let f = fixture();
    let (node, fh) = create_file(&f.fs, "data");
    assert_eq!(f.fs.counts(), (2, 1));
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        f.fs.write(me(), node, fh, 0, &payload, 0).unwrap(),
        payload.len()
    );
    assert_eq!(f.fs.write(me(), node, fh, 200_000, b"tail", 0).unwrap(), 4);
    assert_eq!(
        std::fs::read(f.path("data")).unwrap()[..100_000],
        payload[..]
    );

    let mut buf = vec![0u8; 4096];
    assert_eq!(
        f.fs.read(me(), node, fh, 1000, &mut BufferSink(&mut buf))
            .unwrap(),
        4096
    );
    assert_eq!(buf[..], payload[1000..5096]);
    // A read past the end is short, and one at the end is empty.
    assert_eq!(
        f.fs.read(me(), node, fh, 200_002, &mut BufferSink(&mut buf))
            .unwrap(),
        2
    );
    assert_eq!(&buf[..2], b"il");
    assert_eq!(
        f.fs.read(me(), node, fh, 300_000, &mut BufferSink(&mut buf))
            .unwrap(),
        0
    );
    // The hole reads as zeros.
    assert_eq!(
        f.fs.read(me(), node, fh, 150_000, &mut BufferSink(&mut buf))
            .unwrap(),
        4096
    );
    assert!(buf.iter().all(|&b| b == 0));

    let attr = f.fs.getattr(me(), node, Some(fh)).unwrap().attr;
    assert_eq!(attr.size, 200_004);
    assert_eq!(
        f.fs.read(me(), ROOT, fh, 0, &mut BufferSink(&mut buf))
            .err(),
        Some(Errno::EBADF),
        "a handle used with the wrong nodeid"
    );

    f.fs.flush(node, fh).expect("flush");
    f.fs.fsync(node, fh, false).expect("fsync");
    f.fs.fsync(node, fh, true).expect("fdatasync");
    f.fs.release(node, fh).expect("release");
    assert_eq!(f.fs.counts(), (2, 0));
    assert_eq!(f.fs.release(node, fh).err(), Some(Errno::EBADF));
    assert_eq!(
        f.fs.read(me(), node, fh, 0, &mut BufferSink(&mut buf))
            .err(),
        Some(Errno::EBADF)
    );
    f.fs.forget(node, 1);
    assert_eq!(f.fs.counts(), (1, 0));
}

#[test]
fn create_excl_and_open_flags() {
    let f = fixture();
    let (node, fh) = create_file(&f.fs, "a");
    f.fs.release(node, fh).unwrap();
    let excl = f.fs.create(
        me(),
        ROOT,
        &cs("a"),
        &create_in(libc::O_RDWR | libc::O_EXCL, 0o644),
        &PLAIN,
    );
    assert_eq!(excl.err(), Some(Errno(libc::EEXIST)));
    let (again, o) =
        f.fs.create(
            me(),
            ROOT,
            &cs("a"),
            &create_in(libc::O_RDWR, 0o644),
            &PLAIN,
        )
        .expect("create without O_EXCL opens the existing file");
    assert_eq!(again.nodeid, node);
    f.fs.release(node, o.fh).unwrap();

    std::fs::write(f.path("a"), b"0123456789").unwrap();
    // O_APPEND without writeback: the host appends whatever the offset.
    let o =
        f.fs.open(me(), node, (libc::O_WRONLY | libc::O_APPEND) as u32, 0)
            .unwrap();
    f.fs.write(me(), node, o.fh, 0, b"++", 0).unwrap();
    assert_eq!(std::fs::read(f.path("a")).unwrap(), b"0123456789++");
    let mut buf = [0u8; 4];
    assert_eq!(
        f.fs.read(me(), node, o.fh, 0, &mut BufferSink(&mut buf))
            .err(),
        Some(Errno::EBADF),
        "write-only stays write-only without writeback"
    );
    f.fs.release(node, o.fh).unwrap();

    // O_TRUNC is honoured; O_CREAT/O_EXCL in OPEN are ignored.
    let o =
        f.fs.open(
            me(),
            node,
            (libc::O_RDWR | libc::O_TRUNC | libc::O_CREAT | libc::O_EXCL) as u32,
            0,
        )
        .unwrap();
    assert_eq!(std::fs::metadata(f.path("a")).unwrap().len(), 0);
    assert_eq!(o.open_flags, 0, "cache=auto sets no FOPEN flags");
    f.fs.release(node, o.fh).unwrap();
    assert_eq!(
        f.fs.open(me(), node, libc::O_ACCMODE as u32, 0).err(),
        Some(Errno::EINVAL)
    );
    let d = f.fs.mkdir(me(), ROOT, &cs("d"), 0o755, &PLAIN).unwrap();
    assert_eq!(
        f.fs.create(
            me(),
            ROOT,
            &cs("d"),
            &create_in(libc::O_RDONLY, 0o644),
            &PLAIN
        )
        .err(),
        Some(Errno(libc::EISDIR))
    );
    assert_eq!(
        f.fs.open(me(), d.nodeid, libc::O_WRONLY as u32, 0).err(),
        Some(Errno(libc::EISDIR))
    );
}

#[test]
fn writeback_opens_write_only_files_read_write_without_append() {
    let f = fixture();
    f.fs.session().begin(Negotiated {
        writeback: true,
        ..Negotiated::default()
    });
    std::fs::write(f.path("a"), b"abcdef").unwrap();
    let node = f.fs.lookup(me(), ROOT, &cs("a")).unwrap().nodeid;
    let o =
        f.fs.open(me(), node, (libc::O_WRONLY | libc::O_APPEND) as u32, 0)
            .unwrap();
    let mut buf = [0u8; 3];
    assert_eq!(
        f.fs.read(me(), node, o.fh, 0, &mut BufferSink(&mut buf))
            .unwrap(),
        3,
        "page-cache fills read a write-only file"
    );
    assert_eq!(&buf, b"abc");
    f.fs.write(me(), node, o.fh, 1, b"XY", 0).unwrap();
    assert_eq!(
        std::fs::read(f.path("a")).unwrap(),
        b"aXYdef",
        "O_APPEND is dropped: the guest places appends itself"
    );
}

#[test]
fn writeback_create_write_only_reads_back_even_for_a_write_only_caller() {
    let f = fixture();
    f.fs.session().begin(Negotiated {
        writeback: true,
        ..Negotiated::default()
    });
    let (e, o) =
        f.fs.create(
            me(),
            ROOT,
            &cs("new"),
            &create_in(libc::O_WRONLY, 0o644),
            &PLAIN,
        )
        .unwrap();
    f.fs.write(me(), e.nodeid, o.fh, 0, b"page", 0).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(
        f.fs.read(me(), e.nodeid, o.fh, 0, &mut BufferSink(&mut buf))
            .unwrap(),
        4
    );
    assert_eq!(&buf, b"page");

    if !is_root() {
        return;
    }
    // A caller that may only write the existing file still gets a handle
    // the guest page cache can read through.
    std::fs::write(f.path("wo"), b"secret").unwrap();
    std::os::unix::fs::chown(f.path("wo"), Some(1234), Some(1234)).unwrap();
    std::fs::set_permissions(
        f.path("wo"),
        std::os::unix::fs::PermissionsExt::from_mode(0o200),
    )
    .unwrap();
    let caller = Context {
        uid: 1234,
        gid: 1234,
        pid: 1,
    };
    std::fs::set_permissions(
        f.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let (e, o) =
        f.fs.create(
            caller,
            ROOT,
            &cs("wo"),
            &create_in(libc::O_WRONLY, 0o644),
            &PLAIN,
        )
        .expect("write-only caller");
    assert_eq!(
        f.fs.read(me(), e.nodeid, o.fh, 0, &mut BufferSink(&mut buf))
            .unwrap(),
        4
    );
    assert_eq!(
        f.fs.create(
            caller,
            ROOT,
            &cs("wo"),
            &create_in(libc::O_RDWR, 0o644),
            &PLAIN
        )
        .err(),
        Some(Errno(libc::EACCES)),
        "asking to read is still checked as the caller"
    );
    assert_eq!(
        f.fs.counts(),
        (3, 2),
        "the refused create took no reference"
    );
}

#[test]
fn cache_policy_sets_open_flags() {
    let never = fixture_with(false, false, CachePolicy::Never);
    let (node, _) = create_file(&never.fs, "a");
    let o = never.fs.open(me(), node, libc::O_RDONLY as u32, 0).unwrap();
    assert_eq!(o.open_flags, FOPEN_DIRECT_IO);
    let always = fixture_with(false, false, CachePolicy::Always);
    let (e, o) = always
        .fs
        .create(
            me(),
            ROOT,
            &cs("a"),
            &create_in(libc::O_RDWR, 0o644),
            &PLAIN,
        )
        .unwrap();
    assert_eq!(o.open_flags, FOPEN_KEEP_CACHE);
    let node = e.nodeid;
    let o = always
        .fs
        .open(me(), node, libc::O_RDONLY as u32, 0)
        .unwrap();
    assert_eq!(o.open_flags, FOPEN_KEEP_CACHE);
}

fn suid_file(f: &Fixture, name: &str) -> u64 {
    let (node, fh) = create_file(&f.fs, name);
    f.fs.release(node, fh).unwrap();
    std::fs::set_permissions(
        f.path(name),
        std::os::unix::fs::PermissionsExt::from_mode(0o6755),
    )
    .unwrap();
    node
}

#[test]
fn write_kills_suid_only_when_asked_and_negotiated() {
    if !is_root() {
        eprintln!("skipped: without CAP_FSETID the host clears the bits itself");
        return;
    }
    let f = fixture();
    let node = suid_file(&f, "s");
    let o = f.fs.open(me(), node, libc::O_RDWR as u32, 0).unwrap();
    f.fs.write(me(), node, o.fh, 0, b"x", WRITE_KILL_SUIDGID)
        .unwrap();
    assert_eq!(
        host_mode(&f.path("s")) & 0o7777,
        0o6755,
        "without HANDLE_KILLPRIV_V2 the guest kernel handles it"
    );
    f.fs.session().begin(Negotiated {
        killpriv_v2: true,
        ..Negotiated::default()
    });
    f.fs.write(me(), node, o.fh, 0, b"x", 0).unwrap();
    assert_eq!(host_mode(&f.path("s")) & 0o7777, 0o6755, "not asked");
    f.fs.write(me(), node, o.fh, 0, b"x", WRITE_KILL_SUIDGID)
        .unwrap();
    assert_eq!(host_mode(&f.path("s")) & 0o7777, 0o755);

    let node = suid_file(&f, "t");
    let o =
        f.fs.open(
            me(),
            node,
            (libc::O_RDWR | libc::O_TRUNC) as u32,
            OPEN_KILL_SUIDGID,
        )
        .unwrap();
    assert_eq!(host_mode(&f.path("t")) & 0o7777, 0o755, "open with O_TRUNC");
    f.fs.release(node, o.fh).unwrap();
}

#[test]
fn lseek_fallocate_copy_statfs_syncfs() {
    let f = fixture();
    let (node, fh) = create_file(&f.fs, "sparse");
    f.fs.write(me(), node, fh, 1 << 20, b"data", 0).unwrap();
    let data =
        f.fs.lseek(me(), node, fh, 0, libc::SEEK_DATA as u32)
            .unwrap();
    assert!(
        data <= 1 << 20 && data > 0,
        "data starts after the hole: {data}"
    );
    let hole =
        f.fs.lseek(me(), node, fh, 0, libc::SEEK_HOLE as u32)
            .unwrap();
    assert_eq!(hole, 0);
    assert_eq!(
        f.fs.lseek(me(), node, fh, 0, libc::SEEK_END as u32)
            .unwrap(),
        (1 << 20) + 4
    );
    assert_eq!(
        f.fs.lseek(me(), node, fh, 7, libc::SEEK_SET as u32)
            .unwrap(),
        7
    );
    assert_eq!(f.fs.lseek(me(), node, fh, 0, 99).err(), Some(Errno::EINVAL));
    assert_eq!(
        f.fs.lseek(me(), node, fh, 2 << 20, libc::SEEK_DATA as u32)
            .err(),
        Some(Errno(libc::ENXIO))
    );

    f.fs.fallocate(me(), node, fh, 0, 8192, 0)
        .expect("fallocate");
    let keep = libc::FALLOC_FL_KEEP_SIZE as u32;
    f.fs.fallocate(me(), node, fh, 4 << 20, 4096, keep)
        .expect("keep size");
    assert_eq!(
        f.fs.getattr(me(), node, None).unwrap().attr.size,
        (1 << 20) + 4
    );

    let (dst, dfh) = create_file(&f.fs, "copy");
    let copied =
        f.fs.copy_file_range(me(), node, fh, 1 << 20, dst, dfh, 10, 4, 0)
            .unwrap();
    assert_eq!(copied, 4);
    let mut host = std::fs::read(f.path("copy")).unwrap();
    assert_eq!(host.split_off(10), b"data");
    assert_eq!(
        f.fs.copy_file_range(me(), node, fh, 0, dst, dfh, 0, 4, 1)
            .err(),
        Some(Errno::EINVAL)
    );

    let st = f.fs.statfs(me(), ROOT).unwrap();
    let host = rustix::fs::statvfs(f.dir.path()).unwrap();
    assert_eq!(st.blocks, host.f_blocks);
    assert_eq!(u64::from(st.namelen), host.f_namemax);
    f.fs.syncfs(ROOT).expect("syncfs");
    f.fs.syncfs(node).expect("syncfs through a file");
}

#[test]
fn readonly_refuses_every_change() {
    let f = fixture_with(true, true, CachePolicy::Auto);
    std::fs::write(f.path("a"), b"abc").unwrap();
    std::fs::create_dir(f.path("d")).unwrap();
    std::fs::File::create(f.path("d/x"))
        .unwrap()
        .write_all(b"x")
        .unwrap();
    let a = f.fs.lookup(me(), ROOT, &cs("a")).unwrap().nodeid;
    let ro = Some(Errno::EROFS);
    let rdonly =
        f.fs.open(me(), a, libc::O_RDONLY as u32, 0)
            .expect("reads work");
    let mut buf = [0u8; 3];
    assert_eq!(
        f.fs.read(me(), a, rdonly.fh, 0, &mut BufferSink(&mut buf))
            .unwrap(),
        3
    );

    assert_eq!(f.fs.open(me(), a, libc::O_WRONLY as u32, 0).err(), ro);
    assert_eq!(f.fs.open(me(), a, libc::O_RDWR as u32, 0).err(), ro);
    assert_eq!(
        f.fs.open(me(), a, (libc::O_RDONLY | libc::O_TRUNC) as u32, 0)
            .err(),
        ro
    );
    assert_eq!(
        f.fs.create(
            me(),
            ROOT,
            &cs("n"),
            &create_in(libc::O_RDWR, 0o644),
            &PLAIN
        )
        .err(),
        ro
    );
    assert_eq!(f.fs.mkdir(me(), ROOT, &cs("n"), 0o755, &PLAIN).err(), ro);
    assert_eq!(f.mknod(me(), ROOT, "n", libc::S_IFIFO | 0o644, 0).err(), ro);
    assert_eq!(
        f.fs.symlink(me(), ROOT, &cs("n"), &cs("a"), &PLAIN).err(),
        ro
    );
    assert_eq!(f.fs.link(me(), a, ROOT, &cs("n")).err(), ro);
    assert_eq!(f.fs.unlink(me(), ROOT, &cs("a")).err(), ro);
    assert_eq!(f.fs.rmdir(me(), ROOT, &cs("d")).err(), ro);
    assert_eq!(
        f.fs.rename(me(), ROOT, &cs("a"), ROOT, &cs("b"), 0).err(),
        ro
    );
    let mut chmod = setattr_in(daxfsd_protocol::abi::FATTR_MODE);
    chmod.mode = 0o600;
    assert_eq!(f.fs.setattr(me(), a, &chmod).err(), ro);
    assert_eq!(f.fs.write(me(), a, rdonly.fh, 0, b"x", 0).err(), ro);
    assert_eq!(f.fs.fallocate(me(), a, rdonly.fh, 0, 10, 0).err(), ro);
    assert_eq!(
        f.fs.copy_file_range(me(), a, rdonly.fh, 0, a, rdonly.fh, 10, 1, 0)
            .err(),
        ro
    );
    assert_eq!(f.fs.setxattr(me(), a, &cs("user.k"), b"v", 0, 0).err(), ro);
    assert_eq!(f.fs.removexattr(me(), a, &cs("user.k")).err(), ro);
    assert_eq!(f.fs.access(me(), a, libc::W_OK as u32).err(), ro);
    f.fs.access(me(), a, libc::R_OK as u32)
        .expect("reading is fine");
    assert_eq!(
        f.fs.getxattr(me(), a, &cs("user.k")).err(),
        Some(Errno::ENODATA),
        "reading xattrs is fine"
    );
    // Nothing changed on the host.
    assert_eq!(std::fs::read(f.path("a")).unwrap(), b"abc");
    assert!(f.path("d/x").exists() && !f.path("n").exists());
}

#[test]
fn xattrs_round_trip_and_are_off_by_default() {
    let off = fixture_with(false, false, CachePolicy::Auto);
    assert_eq!(
        off.fs.getxattr(me(), ROOT, &cs("user.k")).err(),
        Some(Errno::ENOSYS)
    );
    assert_eq!(off.fs.listxattr(me(), ROOT).err(), Some(Errno::ENOSYS));
    assert_eq!(
        off.fs.setxattr(me(), ROOT, &cs("user.k"), b"v", 0, 0).err(),
        Some(Errno::ENOSYS)
    );

    let f = fixture();
    let (node, _) = create_file(&f.fs, "a");
    f.fs.setxattr(me(), node, &cs("user.colour"), b"blue", 0, 0)
        .expect("setxattr");
    f.fs.setxattr(me(), node, &cs("user.size"), &[7u8; 3000], 0, 0)
        .unwrap();
    assert_eq!(
        f.fs.getxattr(me(), node, &cs("user.colour")).unwrap(),
        b"blue"
    );
    assert_eq!(
        f.fs.getxattr(me(), node, &cs("user.size")).unwrap(),
        vec![7u8; 3000]
    );
    let xattr_create = libc::XATTR_CREATE as u32;
    assert_eq!(
        f.fs.setxattr(me(), node, &cs("user.colour"), b"red", xattr_create, 0)
            .err(),
        Some(Errno(libc::EEXIST))
    );
    let list = f.fs.listxattr(me(), node).unwrap();
    let names: Vec<&[u8]> = list.split(|&b| b == 0).filter(|n| !n.is_empty()).collect();
    assert!(names.contains(&&b"user.colour"[..]) && names.contains(&&b"user.size"[..]));
    f.fs.removexattr(me(), node, &cs("user.colour")).unwrap();
    assert_eq!(
        f.fs.getxattr(me(), node, &cs("user.colour")).err(),
        Some(Errno::ENODATA)
    );
    // Directories work the same way.
    f.fs.setxattr(me(), ROOT, &cs("user.d"), b"1", 0, 0)
        .unwrap();
    assert_eq!(f.fs.getxattr(me(), ROOT, &cs("user.d")).unwrap(), b"1");

    // Symlinks: user.* cannot be set, as on Linux; nothing leaks from the target.
    let s =
        f.fs.symlink(me(), ROOT, &cs("s"), &cs("a"), &PLAIN)
            .unwrap();
    assert_eq!(
        f.fs.setxattr(me(), s.nodeid, &cs("user.k"), b"v", 0, 0)
            .err(),
        Some(Errno::EPERM)
    );
    assert_eq!(
        f.fs.getxattr(me(), s.nodeid, &cs("user.size")).err(),
        Some(Errno::ENODATA)
    );
    assert_eq!(f.fs.listxattr(me(), s.nodeid).unwrap(), b"");
}

#[test]
fn access_checks_mode_bits_against_the_caller() {
    let f = fixture();
    std::fs::write(f.path("a"), b"").unwrap();
    let meta = std::fs::metadata(f.path("a")).unwrap();
    let (owner, group) = {
        use std::os::unix::fs::MetadataExt;
        (meta.uid(), meta.gid())
    };
    std::fs::set_permissions(
        f.path("a"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let a = f.fs.lookup(me(), ROOT, &cs("a")).unwrap().nodeid;
    let who = |uid, gid| Context { uid, gid, pid: 1 };
    let (r, w, x) = (libc::R_OK as u32, libc::W_OK as u32, libc::X_OK as u32);
    let eacces = Some(Errno(libc::EACCES));
    let stranger = who(owner.wrapping_add(1000), group.wrapping_add(1000));
    f.fs.access(stranger, a, 0).expect("F_OK");
    assert_eq!(f.fs.access(stranger, a, r).err(), eacces);
    let member = who(owner.wrapping_add(1000), group);
    f.fs.access(member, a, r).unwrap();
    assert_eq!(f.fs.access(member, a, w).err(), eacces);
    if owner != 0 {
        let own = who(owner, group);
        f.fs.access(own, a, r | w).unwrap();
        assert_eq!(f.fs.access(own, a, x).err(), eacces);
    }
    let root = who(0, 0);
    f.fs.access(root, a, r | w).unwrap();
    assert_eq!(
        f.fs.access(root, a, x).err(),
        eacces,
        "root needs some x bit to execute"
    );
    f.fs.access(root, ROOT, x)
        .expect("root may search any directory");
}

#[test]
fn open_for_mapping_gives_a_file_with_the_access_asked() {
    use std::io::Read as _;
    let f = fixture();
    std::fs::write(f.path("m"), b"mapped").unwrap();
    let node = f.fs.lookup(me(), ROOT, &cs("m")).unwrap().nodeid;
    let access =
        |file: &std::fs::File| rustix::fs::fcntl_getfl(file).unwrap() & rustix::fs::OFlags::RWMODE;

    // By nodeid (fh = u64::MAX, what the guest sends).
    let mut ro =
        f.fs.open_for_mapping(me(), node, u64::MAX, MapAccess::Read)
            .unwrap();
    assert_eq!(access(&ro), rustix::fs::OFlags::RDONLY);
    let mut text = String::new();
    ro.read_to_string(&mut text).unwrap();
    assert_eq!(text, "mapped");
    let rw =
        f.fs.open_for_mapping(me(), node, u64::MAX, MapAccess::Write)
            .unwrap();
    assert_eq!(access(&rw), rustix::fs::OFlags::RDWR);

    // A read-only handle serves a read mapping but not a write mapping.
    let o = f.fs.open(me(), node, libc::O_RDONLY as u32, 0).unwrap();
    let dup =
        f.fs.open_for_mapping(me(), node, o.fh, MapAccess::Read)
            .unwrap();
    assert_eq!(access(&dup), rustix::fs::OFlags::RDONLY);
    let w =
        f.fs.open_for_mapping(me(), node, o.fh, MapAccess::Write)
            .unwrap();
    assert_eq!(access(&w), rustix::fs::OFlags::RDWR);
    assert_eq!(f.fs.counts(), (2, 1), "mapping files are not handles");

    let d = f.fs.mkdir(me(), ROOT, &cs("d"), 0o755, &PLAIN).unwrap();
    assert_eq!(
        f.fs.open_for_mapping(me(), d.nodeid, u64::MAX, MapAccess::Read)
            .err(),
        Some(Errno(libc::EISDIR))
    );
    assert_eq!(
        f.fs.open_for_mapping(me(), 999, u64::MAX, MapAccess::Read)
            .err(),
        Some(Errno::EBADF)
    );

    let ro_share = fixture_with(true, false, CachePolicy::Auto);
    std::fs::write(ro_share.path("m"), b"x").unwrap();
    let node = ro_share.fs.lookup(me(), ROOT, &cs("m")).unwrap().nodeid;
    assert_eq!(
        ro_share
            .fs
            .open_for_mapping(me(), node, u64::MAX, MapAccess::Write)
            .err(),
        Some(Errno::EROFS)
    );
    ro_share
        .fs
        .open_for_mapping(me(), node, u64::MAX, MapAccess::Read)
        .unwrap();
}
