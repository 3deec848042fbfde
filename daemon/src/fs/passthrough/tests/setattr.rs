//! SETATTR and GETATTR.

use std::os::unix::fs::MetadataExt;

use daxfsd_protocol::abi::{
    FATTR_ATIME, FATTR_ATIME_NOW, FATTR_FH, FATTR_GID, FATTR_KILL_SUIDGID, FATTR_MODE, FATTR_MTIME,
    FATTR_MTIME_NOW, FATTR_SIZE, FATTR_UID,
};

use super::*;
use crate::errno::Errno;
use crate::fs::passthrough::Negotiated;
use crate::fs::{AttrOps, EntryOps, FileOps, FileSystem};

#[test]
fn setattr_mode_and_size_by_inode_and_by_handle() {
    let f = fixture();
    let (node, fh) = create_file(&f.fs, "a");
    f.fs.write(me(), node, fh, 0, &[1u8; 1000], 0).unwrap();

    let mut arg = setattr_in(FATTR_MODE);
    arg.mode = libc::S_IFREG | 0o4711;
    let out = f.fs.setattr(me(), node, &arg).expect("chmod");
    assert_eq!(out.attr.mode & 0o7777, 0o4711);
    assert_eq!(host_mode(&f.path("a")) & 0o7777, 0o4711);

    let mut arg = setattr_in(FATTR_SIZE);
    arg.size = 10;
    let out = f.fs.setattr(me(), node, &arg).expect("truncate by inode");
    assert_eq!(out.attr.size, 10);
    assert_eq!(std::fs::metadata(f.path("a")).unwrap().len(), 10);

    let mut arg = setattr_in(FATTR_SIZE | FATTR_FH | FATTR_MODE);
    arg.fh = fh;
    arg.size = 5000;
    arg.mode = 0o600;
    let out = f.fs.setattr(me(), node, &arg).expect("extend by handle");
    assert_eq!((out.attr.size, out.attr.mode & 0o7777), (5000, 0o600));
    assert_eq!(std::fs::metadata(f.path("a")).unwrap().len(), 5000);

    arg.fh = fh + 1000;
    assert_eq!(
        f.fs.setattr(me(), node, &arg).err(),
        Some(Errno::EBADF),
        "an unknown handle"
    );
    let d = f.fs.mkdir(me(), ROOT, &cs("d"), 0o755, &PLAIN).unwrap();
    let mut arg = setattr_in(FATTR_SIZE);
    arg.size = 0;
    assert_eq!(
        f.fs.setattr(me(), d.nodeid, &arg).err(),
        Some(Errno(libc::EISDIR))
    );

    let s =
        f.fs.symlink(me(), ROOT, &cs("s"), &cs("a"), &PLAIN)
            .unwrap();
    let mut arg = setattr_in(FATTR_MODE);
    arg.mode = 0o777;
    assert_eq!(
        f.fs.setattr(me(), s.nodeid, &arg).err(),
        Some(Errno::EOPNOTSUPP),
        "a symlink's mode is not changed, nor its target's"
    );
    assert_eq!(host_mode(&f.path("a")) & 0o7777, 0o600);
}

#[test]
fn setattr_times_set_now_and_omit() {
    let f = fixture();
    let (node, fh) = create_file(&f.fs, "a");
    let mut arg = setattr_in(FATTR_ATIME | FATTR_MTIME);
    arg.atime = 1_000_000;
    arg.atimensec = 5;
    arg.mtime = 2_000_000;
    arg.mtimensec = 7;
    let out = f.fs.setattr(me(), node, &arg).expect("utimens");
    assert_eq!((out.attr.atime, out.attr.atimensec), (1_000_000, 5));
    assert_eq!((out.attr.mtime, out.attr.mtimensec), (2_000_000, 7));
    let meta = std::fs::metadata(f.path("a")).unwrap();
    assert_eq!((meta.atime(), meta.mtime()), (1_000_000, 2_000_000));

    // mtime to now through the handle; atime left alone (UTIME_OMIT).
    let mut arg = setattr_in(FATTR_MTIME | FATTR_MTIME_NOW | FATTR_FH);
    arg.fh = fh;
    let out = f.fs.setattr(me(), node, &arg).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        out.attr.mtime + 60 > now,
        "mtime is now: {}",
        out.attr.mtime
    );
    assert_eq!(out.attr.atime, 1_000_000, "atime omitted");

    let mut arg = setattr_in(FATTR_ATIME | FATTR_ATIME_NOW);
    arg.atime = 5; // ignored with _NOW
    let out = f.fs.setattr(me(), node, &arg).unwrap();
    assert!(out.attr.atime + 60 > now);

    // A symlink's own times change, not its target's.
    let s =
        f.fs.symlink(me(), ROOT, &cs("s"), &cs("a"), &PLAIN)
            .unwrap();
    let before = std::fs::metadata(f.path("a")).unwrap().mtime();
    let mut arg = setattr_in(FATTR_MTIME);
    arg.mtime = 3_000_000;
    let out = f.fs.setattr(me(), s.nodeid, &arg).expect("lutimes");
    assert_eq!(out.attr.mtime, 3_000_000);
    assert_eq!(
        std::fs::symlink_metadata(f.path("s")).unwrap().mtime(),
        3_000_000
    );
    assert_eq!(std::fs::metadata(f.path("a")).unwrap().mtime(), before);
}

#[test]
fn setattr_owner() {
    let f = fixture();
    let (node, _fh) = create_file(&f.fs, "a");
    let mine = std::fs::metadata(f.path("a")).unwrap();
    // Setting the current owner works without privilege.
    let mut arg = setattr_in(FATTR_UID | FATTR_GID);
    arg.uid = mine.uid();
    arg.gid = mine.gid();
    f.fs.setattr(me(), node, &arg).expect("chown to self");
    if !is_root() {
        return;
    }
    arg.uid = 4321;
    arg.gid = 8765;
    let out = f.fs.setattr(me(), node, &arg).expect("chown");
    assert_eq!((out.attr.uid, out.attr.gid), (4321, 8765));
    let mut arg = setattr_in(FATTR_GID);
    arg.gid = 42;
    let out = f.fs.setattr(me(), node, &arg).expect("chgrp only");
    assert_eq!((out.attr.uid, out.attr.gid), (4321, 42));
    let meta = std::fs::metadata(f.path("a")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4321, 42));

    // A symlink is chowned itself, not its target.
    let s =
        f.fs.symlink(me(), ROOT, &cs("s"), &cs("a"), &PLAIN)
            .unwrap();
    let mut arg = setattr_in(FATTR_UID);
    arg.uid = 99;
    f.fs.setattr(me(), s.nodeid, &arg).expect("lchown");
    assert_eq!(std::fs::symlink_metadata(f.path("s")).unwrap().uid(), 99);
    assert_eq!(std::fs::metadata(f.path("a")).unwrap().uid(), 4321);
}

#[test]
fn setattr_kill_suidgid_with_truncate() {
    if !is_root() {
        eprintln!("skipped: without CAP_FSETID the host clears the bits itself");
        return;
    }
    let f = fixture();
    let (node, _) = create_file(&f.fs, "a");
    std::fs::set_permissions(
        f.path("a"),
        std::os::unix::fs::PermissionsExt::from_mode(0o6775),
    )
    .unwrap();
    let mut arg = setattr_in(FATTR_SIZE | FATTR_KILL_SUIDGID);
    arg.size = 1;
    f.fs.setattr(me(), node, &arg).unwrap();
    assert_eq!(
        host_mode(&f.path("a")) & 0o7777,
        0o6775,
        "not negotiated: left to the guest"
    );
    f.fs.session().begin(Negotiated {
        killpriv_v2: true,
        ..Negotiated::default()
    });
    let out = f.fs.setattr(me(), node, &arg).unwrap();
    assert_eq!(out.attr.mode & 0o7777, 0o775);
    assert_eq!(host_mode(&f.path("a")) & 0o7777, 0o775);
}

#[test]
fn getattr_through_inode_and_handle() {
    let f = fixture();
    let (node, fh) = create_file(&f.fs, "a");
    f.fs.write(me(), node, fh, 0, b"12345", 0).unwrap();
    let by_inode = f.fs.getattr(me(), node, None).unwrap();
    let by_handle = f.fs.getattr(me(), node, Some(fh)).unwrap();
    assert_eq!(by_inode.attr, by_handle.attr);
    assert_eq!(by_inode.attr.size, 5);
    assert_eq!(
        by_inode.attr.ino,
        std::fs::metadata(f.path("a")).unwrap().ino()
    );
    assert_eq!(
        f.fs.getattr(me(), node, Some(fh + 1)).err(),
        Some(Errno::EBADF)
    );
    assert_eq!(f.fs.getattr(me(), 12345, None).err(), Some(Errno::EBADF));
}
