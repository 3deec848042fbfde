//! daxfsd over its socket: SETATTR (size, mode, uid/gid, atime/mtime explicit and NOW,
//! kill-suid/sgid), by nodeid and through an open handle, checked against the host.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use daxfsd_protocol::abi::*;

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A daemon with no extra flags whose shared directory holds the file `f` with
/// `content`; returns the session and `f`'s entry from a LOOKUP.
fn session_with_file(content: &[u8]) -> (Session, EntryOut) {
    let s = Session::start(&[]);
    let e = s.host_file("f", content);
    (s, e)
}

#[test]
fn setattr_size_truncates_and_extends_the_host_file() {
    let (s, e) = session_with_file(b"0123456789");
    let a = s
        .setattr(
            e.nodeid,
            &SetattrIn {
                size: 3,
                ..setattr_in(FATTR_SIZE)
            },
        )
        .expect("truncate");
    assert_eq!(a.attr.size, 3);
    assert_eq!(std::fs::read(s.path("f")).unwrap(), b"012");
    let a = s
        .setattr(
            e.nodeid,
            &SetattrIn {
                size: 10_000,
                ..setattr_in(FATTR_SIZE)
            },
        )
        .expect("extend");
    assert_eq!(a.attr.size, 10_000);
    let host = std::fs::read(s.path("f")).unwrap();
    assert_eq!(host.len(), 10_000);
    assert!(host[3..].iter().all(|&b| b == 0));
    // Through a handle (FATTR_FH), as ftruncate in the guest sends it.
    let fh = s.open(e.nodeid, libc::O_RDWR).unwrap().fh;
    let a = s
        .setattr(
            e.nodeid,
            &SetattrIn {
                size: 1,
                fh,
                ..setattr_in(FATTR_SIZE | FATTR_FH)
            },
        )
        .expect("ftruncate");
    assert_eq!(a.attr.size, 1);
    assert_eq!(std::fs::read(s.path("f")).unwrap(), b"0");
    // A handle that does not exist is EBADF; a directory cannot be truncated.
    assert_eq!(
        s.setattr(
            e.nodeid,
            &SetattrIn {
                size: 0,
                fh: 999,
                ..setattr_in(FATTR_SIZE | FATTR_FH)
            }
        )
        .unwrap_err(),
        libc::EBADF
    );
    let d = s.mkdir(ROOT_ID, b"d", 0o755).unwrap();
    assert_eq!(
        s.setattr(d.nodeid, &setattr_in(FATTR_SIZE)).unwrap_err(),
        libc::EISDIR
    );
    assert_eq!(std::fs::read(s.path("f")).unwrap(), b"0");
}

#[test]
fn setattr_mode_changes_host_permissions() {
    let (s, e) = session_with_file(b"x");
    let a = s
        .setattr(
            e.nodeid,
            &SetattrIn {
                mode: libc::S_IFREG | 0o4711,
                ..setattr_in(FATTR_MODE)
            },
        )
        .expect("chmod");
    assert_eq!(a.attr.mode, libc::S_IFREG | 0o4711);
    let mode = std::fs::metadata(s.path("f")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o4711);
    // On a directory, and through a handle.
    let d = s.mkdir(ROOT_ID, b"d", 0o755).unwrap();
    s.setattr(
        d.nodeid,
        &SetattrIn {
            mode: 0o1777,
            ..setattr_in(FATTR_MODE)
        },
    )
    .expect("chmod dir");
    let dmode = std::fs::metadata(s.path("d")).unwrap().permissions().mode();
    assert_eq!(dmode & 0o7777, 0o1777);
    let fh = s.open(e.nodeid, libc::O_RDONLY).unwrap().fh;
    s.setattr(
        e.nodeid,
        &SetattrIn {
            mode: 0o600,
            fh,
            ..setattr_in(FATTR_MODE | FATTR_FH)
        },
    )
    .expect("fchmod");
    let mode = std::fs::metadata(s.path("f")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o600);
    // Symlinks have no mode on Linux.
    let l = s.symlink(ROOT_ID, b"l", b"f").unwrap();
    assert_eq!(
        s.setattr(
            l.nodeid,
            &SetattrIn {
                mode: 0o600,
                ..setattr_in(FATTR_MODE)
            }
        )
        .unwrap_err(),
        libc::EOPNOTSUPP
    );
    let mode = std::fs::metadata(s.path("f")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o600, "the symlink's target is untouched");
}

#[test]
fn setattr_uid_gid_chowns_the_host_inode() {
    if !is_root() {
        daxfsd_harness::skip("chown to another uid needs root");
        return;
    }
    let (s, e) = session_with_file(b"x");
    let a = s
        .setattr(
            e.nodeid,
            &SetattrIn {
                uid: 1234,
                gid: 5678,
                ..setattr_in(FATTR_UID | FATTR_GID)
            },
        )
        .expect("chown");
    assert_eq!((a.attr.uid, a.attr.gid), (1234, 5678));
    let meta = std::fs::metadata(s.path("f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    // Only the gid.
    s.setattr(
        e.nodeid,
        &SetattrIn {
            uid: 1,
            gid: 42,
            ..setattr_in(FATTR_GID)
        },
    )
    .expect("chgrp");
    let meta = std::fs::metadata(s.path("f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 42));
    // A symlink is chowned itself, not its target.
    let l = s.symlink(ROOT_ID, b"l", b"f").unwrap();
    s.setattr(
        l.nodeid,
        &SetattrIn {
            uid: 77,
            ..setattr_in(FATTR_UID)
        },
    )
    .expect("lchown");
    assert_eq!(std::fs::symlink_metadata(s.path("l")).unwrap().uid(), 77);
    assert_eq!(std::fs::metadata(s.path("f")).unwrap().uid(), 1234);
}

#[test]
fn setattr_kill_suidgid_clears_the_bits_on_truncate() {
    if !is_root() {
        daxfsd_harness::skip("an unprivileged daemon's truncate clears the bits by itself");
        return;
    }
    // FATTR_KILL_SUIDGID is honoured once HANDLE_KILLPRIV_V2 is negotiated,
    // which daxfsd offers only with --killpriv-v2 (as virtiofsd).
    let s = Session::start(&["--killpriv-v2"]);
    let e = s.host_file("f", b"0123456789");
    std::fs::set_permissions(s.path("f"), std::fs::Permissions::from_mode(0o6775)).unwrap();
    let a = s
        .setattr(
            e.nodeid,
            &SetattrIn {
                size: 2,
                ..setattr_in(FATTR_SIZE | FATTR_KILL_SUIDGID)
            },
        )
        .expect("truncate with kill");
    assert_eq!(a.attr.mode & 0o7777, 0o775);
    let mode = std::fs::metadata(s.path("f")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o775);
    assert_eq!(std::fs::read(s.path("f")).unwrap(), b"01");
    // Without the flag a root truncate keeps them.
    std::fs::set_permissions(s.path("f"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    s.setattr(e.nodeid, &setattr_in(FATTR_SIZE)).unwrap();
    let mode = std::fs::metadata(s.path("f")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o4755);
}

#[test]
fn setattr_times_explicit_and_now() {
    let (s, e) = session_with_file(b"x");
    let a = s
        .setattr(
            e.nodeid,
            &SetattrIn {
                atime: 1_000_000_000,
                atimensec: 123_456_789,
                mtime: 1_500_000_000,
                mtimensec: 987_654_321,
                ..setattr_in(FATTR_ATIME | FATTR_MTIME)
            },
        )
        .expect("utimens");
    let meta = std::fs::metadata(s.path("f")).unwrap();
    assert_eq!(
        (meta.atime(), meta.atime_nsec()),
        (1_000_000_000, 123_456_789)
    );
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_500_000_000, 987_654_321)
    );
    assert_eq!(
        (a.attr.atime, a.attr.atimensec),
        (1_000_000_000, 123_456_789)
    );
    assert_eq!(
        (a.attr.mtime, a.attr.mtimensec),
        (1_500_000_000, 987_654_321)
    );

    // Only mtime, to NOW: atime stays.
    let before = now_secs();
    s.setattr(e.nodeid, &setattr_in(FATTR_MTIME | FATTR_MTIME_NOW))
        .expect("mtime now");
    let meta = std::fs::metadata(s.path("f")).unwrap();
    assert!(
        meta.mtime() >= before && meta.mtime() <= now_secs() + 1,
        "mtime {}",
        meta.mtime()
    );
    assert_eq!(meta.atime(), 1_000_000_000);

    // atime NOW through a handle.
    let fh = s.open(e.nodeid, libc::O_RDONLY).unwrap().fh;
    s.setattr(
        e.nodeid,
        &SetattrIn {
            fh,
            ..setattr_in(FATTR_ATIME | FATTR_ATIME_NOW | FATTR_FH)
        },
    )
    .expect("atime now through fh");
    let meta = std::fs::metadata(s.path("f")).unwrap();
    assert!(meta.atime() >= before, "atime {}", meta.atime());

    // A symlink's own times, not its target's.
    let l = s.symlink(ROOT_ID, b"l", b"f").unwrap();
    let target_mtime = std::fs::metadata(s.path("f")).unwrap().mtime();
    s.setattr(
        l.nodeid,
        &SetattrIn {
            mtime: 1_234_567_890,
            ..setattr_in(FATTR_MTIME)
        },
    )
    .expect("lutimes");
    assert_eq!(
        std::fs::symlink_metadata(s.path("l")).unwrap().mtime(),
        1_234_567_890
    );
    assert_eq!(
        std::fs::metadata(s.path("f")).unwrap().mtime(),
        target_mtime
    );
}

#[test]
fn setattr_applies_several_fields_at_once() {
    let (s, e) = session_with_file(b"0123456789");
    let a = s
        .setattr(
            e.nodeid,
            &SetattrIn {
                size: 4,
                mode: 0o604,
                mtime: 1_111_111_111,
                ..setattr_in(FATTR_SIZE | FATTR_MODE | FATTR_MTIME)
            },
        )
        .expect("setattr");
    let meta = std::fs::metadata(s.path("f")).unwrap();
    assert_eq!(meta.len(), 4);
    assert_eq!(meta.permissions().mode() & 0o7777, 0o604);
    // Times are applied after the truncate, so the truncate does not overwrite them.
    assert_eq!(meta.mtime(), 1_111_111_111);
    assert_eq!((a.attr.size, a.attr.mtime), (4, 1_111_111_111));
    // An empty SETATTR is a GETATTR.
    let a = s.setattr(e.nodeid, &setattr_in(0)).expect("no-op setattr");
    assert_eq!(a.attr.ino, meta.ino());
    assert_eq!(s.setattr(31337, &setattr_in(0)).unwrap_err(), libc::EBADF);
}
