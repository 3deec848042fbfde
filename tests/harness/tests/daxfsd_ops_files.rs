//! daxfsd over its socket: open files (OPEN, CREATE, READ, WRITE, RELEASE, FLUSH, FSYNC,
//! FALLOCATE, LSEEK, COPY_FILE_RANGE) and ACCESS, each checked against the host file.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;
use daxfsd_protocol::abi::*;

#[test]
fn create_makes_and_opens_a_host_file() {
    let s = Session::start(&[]);
    let (entry, open) = s
        .create(ROOT_ID, b"new", libc::O_RDWR, 0o640)
        .expect("create");
    let meta = std::fs::metadata(s.path("new")).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(entry.attr.ino, meta.ino());
    assert_eq!(entry.attr.mode, libc::S_IFREG | 0o640);
    assert_eq!(entry.attr.size, 0);
    assert_ne!(open.fh, 0);
    assert_eq!(s.write(entry.nodeid, open.fh, 0, b"written").unwrap(), 7);
    assert_eq!(std::fs::read(s.path("new")).unwrap(), b"written");
    // The handle is read-write.
    assert_eq!(s.read(entry.nodeid, open.fh, 0, 100).unwrap(), b"written");
    s.release(entry.nodeid, open.fh).unwrap();

    // Without O_EXCL an existing file is opened, not truncated; with it, EEXIST.
    let (again, fh2) = s
        .create(ROOT_ID, b"new", libc::O_RDONLY, 0o600)
        .expect("create existing");
    assert_eq!(again.nodeid, entry.nodeid);
    assert_eq!(again.attr.size, 7);
    assert_eq!(std::fs::read(s.path("new")).unwrap(), b"written");
    s.release(again.nodeid, fh2.fh).unwrap();
    assert_eq!(
        s.create(ROOT_ID, b"new", libc::O_RDWR | libc::O_EXCL, 0o600)
            .unwrap_err(),
        libc::EEXIST
    );
    // With O_TRUNC an existing file is emptied.
    let (_, fh3) = s
        .create(ROOT_ID, b"new", libc::O_WRONLY | libc::O_TRUNC, 0o600)
        .unwrap();
    assert_eq!(std::fs::read(s.path("new")).unwrap(), b"");
    s.release(entry.nodeid, fh3.fh).unwrap();
    // CREATE over a directory or through an existing symlink is refused.
    std::fs::create_dir(s.path("dir")).unwrap();
    assert_eq!(
        s.create(ROOT_ID, b"dir", libc::O_RDWR, 0o600).unwrap_err(),
        libc::EISDIR
    );
    std::os::unix::fs::symlink("/tmp/daxfsd-escape-probe", s.path("lnk")).unwrap();
    assert_eq!(
        s.create(ROOT_ID, b"lnk", libc::O_RDWR, 0o600).unwrap_err(),
        libc::ELOOP
    );
    assert!(!std::path::Path::new("/tmp/daxfsd-escape-probe").exists());
}

#[test]
fn create_as_a_caller_makes_the_caller_the_owner() {
    if !is_root() {
        daxfsd_harness::skip("needs root to create as another uid");
        return;
    }
    let s = Session::start(&[]);
    let dir = s.mkdir(ROOT_ID, b"pub", 0o777).unwrap().nodeid;
    let (entry, open) = s
        .create_as(dir, b"mine", libc::O_WRONLY, 0o600, 1000, 1001)
        .expect("create as 1000");
    let meta = std::fs::metadata(s.path("pub/mine")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1001));
    assert_eq!((entry.attr.uid, entry.attr.gid), (1000, 1001));
    assert_eq!(s.write(entry.nodeid, open.fh, 0, b"x").unwrap(), 1);
    // A write-only handle is write-only: the daemon does not widen it.
    assert_eq!(
        s.read(entry.nodeid, open.fh, 0, 1).unwrap_err(),
        libc::EBADF
    );
    // Caller 1000 cannot create in the root-owned 0700 share root.
    assert_eq!(
        s.create_as(ROOT_ID, b"nope", libc::O_RDWR, 0o600, 1000, 1001)
            .unwrap_err(),
        libc::EACCES
    );
    assert!(!s.path("nope").exists());
}

#[test]
fn open_honours_access_mode_and_flags() {
    let s = Session::start(&[]);
    let e = s.host_file("f", b"0123456789");
    let ro = s.open(e.nodeid, libc::O_RDONLY).expect("open ro");
    assert_eq!(s.read(e.nodeid, ro.fh, 0, 4).unwrap(), b"0123");
    assert_eq!(
        s.write(e.nodeid, ro.fh, 0, b"x").unwrap_err(),
        libc::EBADF,
        "write through a read-only handle"
    );
    assert_eq!(std::fs::read(s.path("f")).unwrap(), b"0123456789");

    let wo = s.open(e.nodeid, libc::O_WRONLY).expect("open wo");
    assert_eq!(s.read(e.nodeid, wo.fh, 0, 4).unwrap_err(), libc::EBADF);

    // O_APPEND: the host puts every write at the end, whatever the offset.
    let ap = s.open(e.nodeid, libc::O_WRONLY | libc::O_APPEND).unwrap();
    s.write(e.nodeid, ap.fh, 0, b"AB").unwrap();
    assert_eq!(std::fs::read(s.path("f")).unwrap(), b"0123456789AB");

    // O_TRUNC empties the file on open.
    let tr = s.open(e.nodeid, libc::O_RDWR | libc::O_TRUNC).unwrap();
    assert_eq!(std::fs::metadata(s.path("f")).unwrap().len(), 0);
    for fh in [ro.fh, wo.fh, ap.fh, tr.fh] {
        s.release(e.nodeid, fh).unwrap();
    }
    // Access mode 3 is invalid; a handle of one nodeid is not usable with another.
    assert_eq!(s.open(e.nodeid, libc::O_ACCMODE).unwrap_err(), libc::EINVAL);
    let other = s.host_file("g", b"g");
    let h = s.open(e.nodeid, libc::O_RDONLY).unwrap();
    assert_eq!(s.read(other.nodeid, h.fh, 0, 1).unwrap_err(), libc::EBADF);
    // Directories open read-only (the guest uses OPENDIR, but OPEN works).
    let d = s.mkdir(ROOT_ID, b"d", 0o755).unwrap();
    let dh = s.open(d.nodeid, libc::O_RDONLY).expect("open a directory");
    s.release(d.nodeid, dh.fh).unwrap();
}

#[test]
fn read_returns_host_bytes_and_stops_at_eof() {
    let s = Session::start(&[]);
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let e = s.host_file("f", &content);
    let fh = s.open(e.nodeid, libc::O_RDONLY).unwrap().fh;
    assert_eq!(s.read(e.nodeid, fh, 0, 10).unwrap(), &content[..10]);
    assert_eq!(
        s.read(e.nodeid, fh, 12_345, 4096).unwrap(),
        &content[12_345..12_345 + 4096]
    );
    // A whole 256 KiB read in one request, and a short read at the end.
    assert_eq!(
        s.read(e.nodeid, fh, 0, 262_144).unwrap(),
        &content[..262_144]
    );
    assert_eq!(
        s.read(e.nodeid, fh, 299_990, 4096).unwrap(),
        &content[299_990..]
    );
    assert_eq!(s.read(e.nodeid, fh, 300_000, 4096).unwrap(), b"");
    assert_eq!(s.read(e.nodeid, fh, 1 << 40, 4096).unwrap(), b"");
    // The reply never exceeds the chain's writable room: a 64 KiB READ into a chain
    // with 100 bytes of body room gets 100 bytes.
    assert_eq!(
        s.read_cap(e.nodeid, fh, 0, 65_536, 16 + 100).unwrap(),
        &content[..100]
    );
    // Unknown handle.
    assert_eq!(s.read(e.nodeid, 999_999, 0, 1).unwrap_err(), libc::EBADF);
}

#[test]
fn write_lands_on_the_host_at_its_offset() {
    let s = Session::start(&[]);
    let (id, fh) = s.create_file("f");
    assert_eq!(s.write(id, fh, 0, b"hello world").unwrap(), 11);
    assert_eq!(s.write(id, fh, 6, b"WORLD").unwrap(), 5);
    assert_eq!(std::fs::read(s.path("f")).unwrap(), b"hello WORLD");
    // Past the end: the gap reads as zeros.
    assert_eq!(s.write(id, fh, 20, b"!").unwrap(), 1);
    let host = std::fs::read(s.path("f")).unwrap();
    assert_eq!(host.len(), 21);
    assert_eq!(&host[11..20], &[0u8; 9]);
    // The largest write INIT allowed (max_write = 1 MiB) in one request.
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    assert_eq!(s.write(id, fh, 4096, &big).unwrap(), 1 << 20);
    let host = std::fs::read(s.path("f")).unwrap();
    assert_eq!(&host[4096..], &big[..]);
    // An empty write succeeds and changes nothing.
    assert_eq!(s.write(id, fh, 0, b"").unwrap(), 0);
    assert_eq!(
        std::fs::metadata(s.path("f")).unwrap().len(),
        4096 + (1 << 20)
    );
    // GETATTR through the handle sees the new size.
    let a = s.getattr_fh(id, fh).expect("getattr with fh");
    assert_eq!(a.attr.size, 4096 + (1 << 20));
    assert_eq!(s.getattr_fh(id, 424_242).unwrap_err(), libc::EBADF);
}

/// WRITE_KILL_SUIDGID with HANDLE_KILLPRIV_V2 negotiated: the daemon (root, so its own
/// writes would keep the bits) clears setuid, and setgid when group-executable. The
/// flag is offered only with --killpriv-v2 (as virtiofsd).
#[test]
fn write_with_kill_suidgid_clears_the_host_setuid_bit() {
    if !is_root() {
        daxfsd_harness::skip("an unprivileged daemon's writes clear the bits by themselves");
        return;
    }
    let s = Session::start(&["--killpriv-v2"]);
    let (id, fh) = s.create_file("suid");
    let set_mode = |mode| {
        std::fs::set_permissions(s.path("suid"), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let mode = || {
        std::fs::metadata(s.path("suid"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };

    set_mode(0o6755);
    // Without the flag, a root writer keeps the bits.
    s.write(id, fh, 0, b"a").unwrap();
    assert_eq!(mode(), 0o6755);
    s.write_flags(id, fh, 0, b"b", WRITE_KILL_SUIDGID).unwrap();
    assert_eq!(mode(), 0o755, "setuid and (group-exec) setgid cleared");
    assert_eq!(std::fs::read(s.path("suid")).unwrap(), b"b");

    // setgid without group-exec is not a privilege bit: it stays.
    set_mode(0o6745);
    s.write_flags(id, fh, 0, b"c", WRITE_KILL_SUIDGID).unwrap();
    assert_eq!(mode(), 0o2745);

    // OPEN with O_TRUNC and OPEN_KILL_SUIDGID clears them too.
    set_mode(0o4755);
    let h = s
        .open_with(id, libc::O_WRONLY | libc::O_TRUNC, OPEN_KILL_SUIDGID)
        .unwrap();
    assert_eq!(mode(), 0o755);
    s.release(id, h.fh).unwrap();
}

#[test]
fn kill_suidgid_is_ignored_without_handle_killpriv_v2() {
    if !is_root() {
        daxfsd_harness::skip("an unprivileged daemon's writes clear the bits by themselves");
        return;
    }
    let s = Session::start_uninit(&[]);
    let out = s.init(LINUX_INIT_FLAGS & !HANDLE_KILLPRIV_V2).unwrap();
    assert_eq!(u64::from(out.flags) & HANDLE_KILLPRIV_V2, 0);
    let (id, fh) = s.create_file("suid");
    std::fs::set_permissions(s.path("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    s.write_flags(id, fh, 0, b"x", WRITE_KILL_SUIDGID).unwrap();
    let mode = std::fs::metadata(s.path("suid"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o7777,
        0o4755,
        "not negotiated: the flag means nothing"
    );
}

#[test]
fn release_closes_the_handle() {
    let s = Session::start(&[]);
    let e = s.host_file("f", b"x");
    let base = s.fd_count();
    let fh = s.open(e.nodeid, libc::O_RDONLY).unwrap().fh;
    assert_eq!(s.fd_count(), base + 1);
    s.release(e.nodeid, fh).expect("release");
    assert_eq!(s.fd_count(), base);
    assert_eq!(s.read(e.nodeid, fh, 0, 1).unwrap_err(), libc::EBADF);
    assert_eq!(s.release(e.nodeid, fh).unwrap_err(), libc::EBADF);
    // RELEASE must name the nodeid the handle belongs to.
    let fh = s.open(e.nodeid, libc::O_RDONLY).unwrap().fh;
    assert_eq!(s.release(ROOT_ID, fh).unwrap_err(), libc::EBADF);
    assert_eq!(s.read(e.nodeid, fh, 0, 1).unwrap(), b"x");
}

#[test]
fn flush_and_fsync_keep_the_handle_usable() {
    let s = Session::start(&[]);
    let (id, fh) = s.create_file("f");
    let base = s.fd_count();
    s.write(id, fh, 0, b"durable").unwrap();
    s.flush(id, fh).expect("flush");
    assert_eq!(s.fd_count(), base, "FLUSH closes only a duplicate");
    s.fsync(id, fh, false).expect("fsync");
    s.fsync(id, fh, true).expect("fdatasync");
    assert_eq!(s.read(id, fh, 0, 16).unwrap(), b"durable");
    assert_eq!(std::fs::read(s.path("f")).unwrap(), b"durable");
    assert_eq!(s.flush(id, 777).unwrap_err(), libc::EBADF);
    assert_eq!(s.fsync(id, 777, false).unwrap_err(), libc::EBADF);
}

#[test]
fn fallocate_allocates_extends_and_punches() {
    let s = Session::start(&[]);
    let (id, fh) = s.create_file("f");
    s.fallocate(id, fh, 0, 1 << 20, 0).expect("fallocate");
    let meta = std::fs::metadata(s.path("f")).unwrap();
    assert_eq!(meta.len(), 1 << 20);
    assert!(meta.blocks() * 512 >= 1 << 20, "blocks {}", meta.blocks());
    // KEEP_SIZE allocates beyond EOF without changing the size.
    s.fallocate(id, fh, 1 << 20, 1 << 20, libc::FALLOC_FL_KEEP_SIZE)
        .expect("keep size");
    let meta = std::fs::metadata(s.path("f")).unwrap();
    assert_eq!(meta.len(), 1 << 20);
    assert!(meta.blocks() * 512 >= 2 << 20, "blocks {}", meta.blocks());
    // PUNCH_HOLE zeroes a range.
    s.write(id, fh, 0, &[0xAB; 16384]).unwrap();
    s.fallocate(
        id,
        fh,
        4096,
        8192,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    )
    .expect("punch");
    let host = std::fs::read(s.path("f")).unwrap();
    assert!(host[..4096].iter().all(|&b| b == 0xAB));
    assert!(host[4096..12288].iter().all(|&b| b == 0));
    assert!(host[12288..16384].iter().all(|&b| b == 0xAB));
    // Invalid mode (PUNCH_HOLE needs KEEP_SIZE), unknown handle, read-only handle.
    assert_eq!(
        s.fallocate(id, fh, 0, 4096, libc::FALLOC_FL_PUNCH_HOLE)
            .unwrap_err(),
        libc::EOPNOTSUPP
    );
    assert_eq!(s.fallocate(id, 555, 0, 1, 0).unwrap_err(), libc::EBADF);
    let ro = s.open(id, libc::O_RDONLY).unwrap().fh;
    assert_eq!(s.fallocate(id, ro, 0, 1 << 22, 0).unwrap_err(), libc::EBADF);
    assert_eq!(std::fs::metadata(s.path("f")).unwrap().len(), 1 << 20);
}

#[test]
fn lseek_finds_data_and_holes() {
    let s = Session::start(&[]);
    let (id, fh) = s.create_file("sparse");
    const MIB: u64 = 1 << 20;
    s.write(id, fh, 0, &[1; 4096]).unwrap();
    s.write(id, fh, MIB, &[2; 4096]).unwrap();
    assert_eq!(
        std::fs::metadata(s.path("sparse")).unwrap().len(),
        MIB + 4096
    );
    assert_eq!(s.lseek(id, fh, 0, libc::SEEK_DATA).unwrap(), 0);
    assert_eq!(s.lseek(id, fh, 0, libc::SEEK_HOLE).unwrap(), 4096);
    assert_eq!(s.lseek(id, fh, 4096, libc::SEEK_DATA).unwrap(), MIB);
    assert_eq!(s.lseek(id, fh, MIB, libc::SEEK_HOLE).unwrap(), MIB + 4096);
    // Past the last byte: no data (ENXIO), as lseek(2) says.
    assert_eq!(
        s.lseek(id, fh, MIB + 4096, libc::SEEK_DATA).unwrap_err(),
        libc::ENXIO
    );
    // SEEK_SET / SEEK_END answer too; an unknown whence is EINVAL.
    assert_eq!(s.lseek(id, fh, 123, libc::SEEK_SET).unwrap(), 123);
    assert_eq!(s.lseek(id, fh, 0, libc::SEEK_END).unwrap(), MIB + 4096);
    assert_eq!(s.lseek(id, fh, 0, 17).unwrap_err(), libc::EINVAL);
    assert_eq!(
        s.lseek(id, 31337, 0, libc::SEEK_DATA).unwrap_err(),
        libc::EBADF
    );
}

#[test]
fn copy_file_range_copies_between_host_files() {
    let s = Session::start(&[]);
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 249) as u8).collect();
    let src = s.host_file("src", &content);
    let sfh = s.open(src.nodeid, libc::O_RDONLY).unwrap().fh;
    let (dst, dfh) = s.create_file("dst");
    let n = s
        .copy_file_range((src.nodeid, sfh, 1000), (dst, dfh, 10), 50_000, 0)
        .expect("copy_file_range");
    assert_eq!(n, 50_000);
    let host = std::fs::read(s.path("dst")).unwrap();
    assert_eq!(host.len(), 50_010);
    assert_eq!(&host[..10], &[0u8; 10]);
    assert_eq!(&host[10..], &content[1000..51_000]);
    // Past the source's end: a short copy.
    let n = s
        .copy_file_range((src.nodeid, sfh, 99_000), (dst, dfh, 0), 10_000, 0)
        .unwrap();
    assert_eq!(n, 1000);
    assert_eq!(
        &std::fs::read(s.path("dst")).unwrap()[..1000],
        &content[99_000..]
    );
    // Flags are reserved; handles must match their nodeids.
    assert_eq!(
        s.copy_file_range((src.nodeid, sfh, 0), (dst, dfh, 0), 1, 1)
            .unwrap_err(),
        libc::EINVAL
    );
    assert_eq!(
        s.copy_file_range((src.nodeid, sfh, 0), (src.nodeid, dfh, 0), 1, 0)
            .unwrap_err(),
        libc::EBADF
    );
    // The destination must be writable.
    assert_eq!(
        s.copy_file_range((dst, dfh, 0), (src.nodeid, sfh, 0), 1, 0)
            .unwrap_err(),
        libc::EBADF
    );
    assert_eq!(std::fs::read(s.path("src")).unwrap(), content);
}

#[test]
fn access_checks_mode_bits_for_the_caller() {
    let s = Session::start(&[]);
    let e = s.host_file("f", b"x");
    std::fs::set_permissions(s.path("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let owner = std::fs::metadata(s.path("f")).unwrap().uid();
    let group = std::fs::metadata(s.path("f")).unwrap().gid();
    let (r, w, x) = (libc::R_OK, libc::W_OK, libc::X_OK);
    s.access(e.nodeid, libc::F_OK).expect("F_OK");
    // Root reads and writes anything, but executes only what has an x bit.
    s.access(e.nodeid, r | w).expect("root rw");
    assert_eq!(s.access(e.nodeid, x).unwrap_err(), libc::EACCES);
    s.access(ROOT_ID, x).expect("root searches directories");
    let other = owner.wrapping_add(1000);
    let other_gid = group.wrapping_add(1000);
    s.access_as(e.nodeid, r | w, owner, other_gid)
        .expect("owner rw");
    s.access_as(e.nodeid, r, other, group).expect("group r");
    assert_eq!(
        s.access_as(e.nodeid, w, other, group).unwrap_err(),
        libc::EACCES
    );
    assert_eq!(
        s.access_as(e.nodeid, r, other, other_gid).unwrap_err(),
        libc::EACCES
    );
    s.access_as(e.nodeid, libc::F_OK, other, other_gid)
        .expect("F_OK for anyone");
    assert_eq!(s.access(4242, r).unwrap_err(), libc::EBADF);
}
