//! daxfsd over its socket: extended attributes (SETXATTR, GETXATTR, LISTXATTR,
//! REMOVEXATTR) with `--xattr`, checked against the host file; ENOSYS without it.

mod common;

use common::*;
use daxfsd_protocol::abi::*;

fn host_get(s: &Session, rel: &str, name: &str) -> Result<Vec<u8>, rustix::io::Errno> {
    s.host_xattr(rel, name)
}

#[test]
fn setxattr_getxattr_listxattr_removexattr_round_trip() {
    let s = Session::start(&["--xattr"]);
    let e = s.host_file("f", b"x");
    s.setxattr(e.nodeid, b"user.color", b"blue", 0)
        .expect("setxattr");
    assert_eq!(host_get(&s, "f", "user.color").unwrap(), b"blue");
    // A value set on the host is read through the daemon.
    rustix::fs::setxattr(
        s.path("f"),
        "user.host",
        b"from host",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    assert_eq!(
        s.getxattr(e.nodeid, b"user.host", 0).unwrap(),
        XattrReply::Size(9)
    );
    assert_eq!(
        s.getxattr(e.nodeid, b"user.host", 9).unwrap(),
        XattrReply::Data(b"from host".to_vec())
    );
    assert_eq!(
        s.getxattr(e.nodeid, b"user.host", 4).unwrap_err(),
        libc::ERANGE,
        "a buffer smaller than the value"
    );
    // The list holds both names, NUL-terminated.
    let XattrReply::Size(len) = s.listxattr(e.nodeid, 0).unwrap() else {
        panic!("size query");
    };
    let XattrReply::Data(list) = s.listxattr(e.nodeid, len).unwrap() else {
        panic!("list");
    };
    assert_eq!(list.len(), len as usize);
    let mut names: Vec<&[u8]> = list.split(|&b| b == 0).filter(|n| !n.is_empty()).collect();
    names.sort();
    assert_eq!(names, [&b"user.color"[..], b"user.host"]);
    assert_eq!(list.last(), Some(&0));
    assert_eq!(s.listxattr(e.nodeid, 1).unwrap_err(), libc::ERANGE);

    // XATTR_CREATE refuses an existing name, XATTR_REPLACE a missing one.
    assert_eq!(
        s.setxattr(e.nodeid, b"user.color", b"red", libc::XATTR_CREATE)
            .unwrap_err(),
        libc::EEXIST
    );
    assert_eq!(
        s.setxattr(e.nodeid, b"user.none", b"v", libc::XATTR_REPLACE)
            .unwrap_err(),
        libc::ENODATA
    );
    s.setxattr(e.nodeid, b"user.color", b"red", libc::XATTR_REPLACE)
        .expect("replace");
    assert_eq!(host_get(&s, "f", "user.color").unwrap(), b"red");
    // An empty value is a value.
    s.setxattr(e.nodeid, b"user.empty", b"", 0).unwrap();
    assert_eq!(host_get(&s, "f", "user.empty").unwrap(), b"");
    assert_eq!(
        s.getxattr(e.nodeid, b"user.empty", 0).unwrap(),
        XattrReply::Size(0)
    );

    s.removexattr(e.nodeid, b"user.color").expect("removexattr");
    assert_eq!(
        host_get(&s, "f", "user.color").unwrap_err(),
        rustix::io::Errno::NODATA
    );
    assert_eq!(
        s.removexattr(e.nodeid, b"user.color").unwrap_err(),
        libc::ENODATA
    );
    assert_eq!(
        s.getxattr(e.nodeid, b"user.color", 64).unwrap_err(),
        libc::ENODATA
    );
    assert_eq!(s.getxattr(999, b"user.x", 64).unwrap_err(), libc::EBADF);
}

#[test]
fn xattrs_on_directories_and_symlinks() {
    let s = Session::start(&["--xattr"]);
    let d = s.mkdir(ROOT_ID, b"d", 0o755).unwrap();
    s.setxattr(d.nodeid, b"user.dir", b"yes", 0)
        .expect("on a dir");
    assert_eq!(host_get(&s, "d", "user.dir").unwrap(), b"yes");
    // Linux allows no user.* attributes on a symlink; nothing may reach its target.
    let target = s.host_file("t", b"");
    let l = s.symlink(ROOT_ID, b"l", b"t").unwrap();
    assert_eq!(
        s.setxattr(l.nodeid, b"user.x", b"v", 0).unwrap_err(),
        libc::EPERM
    );
    assert_eq!(
        s.getxattr(l.nodeid, b"user.x", 64).unwrap_err(),
        libc::ENODATA
    );
    assert_eq!(s.listxattr(l.nodeid, 0).unwrap(), XattrReply::Size(0));
    assert!(host_get(&s, "t", "user.x").is_err());
    assert_eq!(
        s.listxattr(target.nodeid, 0).unwrap(),
        XattrReply::Size(0),
        "the symlink's target got no attribute"
    );
}

#[test]
fn xattr_operations_are_enosys_without_the_flag() {
    let s = Session::start(&[]);
    let e = s.host_file("f", b"x");
    rustix::fs::setxattr(
        s.path("f"),
        "user.host",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    assert_eq!(
        s.setxattr(e.nodeid, b"user.a", b"v", 0).unwrap_err(),
        libc::ENOSYS
    );
    assert_eq!(
        s.getxattr(e.nodeid, b"user.host", 64).unwrap_err(),
        libc::ENOSYS
    );
    assert_eq!(s.listxattr(e.nodeid, 0).unwrap_err(), libc::ENOSYS);
    assert_eq!(
        s.removexattr(e.nodeid, b"user.host").unwrap_err(),
        libc::ENOSYS
    );
    assert_eq!(host_get(&s, "f", "user.host").unwrap(), b"v");
    assert!(host_get(&s, "f", "user.a").is_err());
    s.assert_serving();
}

#[test]
fn xattr_values_up_to_the_protocol_limit() {
    let s = Session::start(&["--xattr"]);
    let e = s.host_file("f", b"x");
    // ext4 keeps values up to a block in size; 4000 bytes fit anywhere.
    let value: Vec<u8> = (0..4000u32).map(|i| (i % 256) as u8).collect();
    s.setxattr(e.nodeid, b"user.big", &value, 0)
        .expect("big value");
    assert_eq!(host_get(&s, "f", "user.big").unwrap(), value);
    assert_eq!(
        s.getxattr(e.nodeid, b"user.big", XATTR_SIZE_MAX as u32)
            .unwrap(),
        XattrReply::Data(value)
    );
}
