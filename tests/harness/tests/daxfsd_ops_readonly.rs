//! daxfsd `--readonly` over its socket: every modifying operation is EROFS and leaves
//! the host directory as it was; reading still works.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use daxfsd_protocol::abi::*;

/// The host tree every test starts from; returns a snapshot to compare with.
fn seed(s: &Session) -> Vec<(String, Vec<u8>, u32)> {
    std::fs::write(s.path("f"), b"original").unwrap();
    std::fs::create_dir(s.path("d")).unwrap();
    std::fs::write(s.path("d/inner"), b"inner").unwrap();
    std::os::unix::fs::symlink("f", s.path("l")).unwrap();
    snapshot(s)
}

fn snapshot(s: &Session) -> Vec<(String, Vec<u8>, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![s.dir().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(s.dir()).unwrap().display().to_string();
            let content = if meta.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            if meta.is_dir() {
                stack.push(path);
            }
            out.push((rel, content, meta.permissions().mode()));
        }
    }
    out.sort();
    out
}

#[test]
fn modifying_operations_are_erofs_and_the_host_is_untouched() {
    let s = Session::start(&["--readonly", "--xattr"]);
    let before = seed(&s);
    let f = s.lookup(ROOT_ID, b"f").unwrap();
    let d = s.lookup(ROOT_ID, b"d").unwrap();
    let rofs = libc::EROFS;

    assert_eq!(s.mkdir(ROOT_ID, b"new", 0o755).unwrap_err(), rofs);
    assert_eq!(
        s.mknod(ROOT_ID, b"new", libc::S_IFIFO | 0o644, 0)
            .unwrap_err(),
        rofs
    );
    assert_eq!(s.symlink(ROOT_ID, b"new", b"f").unwrap_err(), rofs);
    assert_eq!(s.link(f.nodeid, ROOT_ID, b"new").unwrap_err(), rofs);
    assert_eq!(
        s.create(ROOT_ID, b"new", libc::O_RDWR, 0o644).unwrap_err(),
        rofs
    );
    assert_eq!(
        s.create(ROOT_ID, b"f", libc::O_RDONLY, 0o644).unwrap_err(),
        rofs
    );
    assert_eq!(s.unlink(ROOT_ID, b"f").unwrap_err(), rofs);
    assert_eq!(s.unlink(ROOT_ID, b"l").unwrap_err(), rofs);
    assert_eq!(s.unlink(d.nodeid, b"inner").unwrap_err(), rofs);
    assert_eq!(s.rmdir(ROOT_ID, b"d").unwrap_err(), rofs);
    assert_eq!(s.rename(ROOT_ID, b"f", ROOT_ID, b"g").unwrap_err(), rofs);
    assert_eq!(
        s.rename2(ROOT_ID, b"f", ROOT_ID, b"d", RENAME_EXCHANGE)
            .unwrap_err(),
        rofs
    );
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        assert_eq!(
            s.open(f.nodeid, flags).unwrap_err(),
            rofs,
            "open {flags:#o}"
        );
    }
    for valid in [
        FATTR_SIZE,
        FATTR_MODE,
        FATTR_UID | FATTR_GID,
        FATTR_MTIME | FATTR_MTIME_NOW,
    ] {
        assert_eq!(
            s.setattr(
                f.nodeid,
                &SetattrIn {
                    mode: 0o777,
                    ..setattr_in(valid)
                }
            )
            .unwrap_err(),
            rofs,
            "setattr valid {valid:#x}"
        );
    }
    assert_eq!(s.setxattr(f.nodeid, b"user.x", b"v", 0).unwrap_err(), rofs);
    assert_eq!(s.removexattr(f.nodeid, b"user.x").unwrap_err(), rofs);
    assert_eq!(s.access(f.nodeid, libc::W_OK).unwrap_err(), rofs);

    // Operations on a read-only handle that would write.
    let fh = s.open(f.nodeid, libc::O_RDONLY).expect("read-only open").fh;
    assert_eq!(s.write(f.nodeid, fh, 0, b"X").unwrap_err(), rofs);
    assert_eq!(s.fallocate(f.nodeid, fh, 0, 1 << 20, 0).unwrap_err(), rofs);
    let dst = s.open(d.nodeid, libc::O_RDONLY).unwrap().fh;
    assert_eq!(
        s.copy_file_range((f.nodeid, fh, 0), (d.nodeid, dst, 0), 4, 0)
            .unwrap_err(),
        rofs
    );

    assert_eq!(snapshot(&s), before, "the host directory changed");
    s.assert_serving();
}

#[test]
fn reading_works_on_a_readonly_share() {
    let s = Session::start(&["--readonly", "--xattr"]);
    seed(&s);
    let f = s.lookup(ROOT_ID, b"f").unwrap();
    let fh = s.open(f.nodeid, libc::O_RDONLY).unwrap().fh;
    assert_eq!(s.read(f.nodeid, fh, 0, 100).unwrap(), b"original");
    assert_eq!(s.lseek(f.nodeid, fh, 0, libc::SEEK_HOLE).unwrap(), 8);
    s.flush(f.nodeid, fh).unwrap();
    s.fsync(f.nodeid, fh, false).unwrap();
    s.release(f.nodeid, fh).unwrap();
    let l = s.lookup(ROOT_ID, b"l").unwrap();
    assert_eq!(s.readlink(l.nodeid).unwrap(), b"f");
    let dh = s.opendir(ROOT_ID).unwrap().fh;
    let names: Vec<Vec<u8>> = s
        .readdirplus(ROOT_ID, dh, 0, 65_536)
        .unwrap()
        .into_iter()
        .map(|(_, d)| d.name)
        .collect();
    assert_eq!(names.len(), 5, "., .., f, d, l");
    s.releasedir(ROOT_ID, dh).unwrap();
    s.access(f.nodeid, libc::R_OK).unwrap();
    assert!(s.statfs(ROOT_ID).is_ok());
    assert_eq!(s.listxattr(f.nodeid, 0).unwrap(), XattrReply::Size(0));
    s.syncfs(ROOT_ID).unwrap();
}
