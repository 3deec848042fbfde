//! daxfsd over its socket with `--xattrmap`: the guest's attribute names are mapped to host
//! names (checked on the host file), the host's list is mapped back, names a rule refuses
//! never reach the host, and a renamed `security.capability` is removed on write and
//! truncate as the host kernel would remove the real one. `--xattrmap` implies `--xattr`.

mod common;

use common::*;
use daxfsd_protocol::abi::*;
use rustix::fs::XattrFlags;

/// virtiofsd's example 1: every guest name under `user.virtiofs.` on the host, every other
/// host name hidden.
const PREFIX_ALL: &str = "--xattrmap=:prefix:all::user.virtiofs.::bad:all:::";

fn host_get(s: &Session, rel: &str, name: &str) -> Result<Vec<u8>, rustix::io::Errno> {
    s.host_xattr(rel, name)
}

fn host_set(s: &Session, rel: &str, name: &str, value: &[u8]) {
    rustix::fs::setxattr(s.path(rel), name, value, XattrFlags::empty()).unwrap();
}

/// The guest's LISTXATTR, sorted; the size query must agree with the list.
fn guest_list(s: &Session, nodeid: u64) -> Vec<String> {
    let XattrReply::Size(len) = s.listxattr(nodeid, 0).expect("size query") else {
        panic!("size query");
    };
    if len == 0 {
        return Vec::new();
    }
    let XattrReply::Data(list) = s.listxattr(nodeid, len).expect("LISTXATTR") else {
        panic!("list");
    };
    assert_eq!(
        list.len(),
        len as usize,
        "the size query gives the mapped size"
    );
    let mut names: Vec<String> = list
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn guest_names_live_under_the_prefix_on_the_host() {
    let s = Session::start(&[PREFIX_ALL]);
    let e = s.host_file("f", b"x");
    s.setxattr(e.nodeid, b"user.foo", b"bar", 0)
        .expect("SETXATTR without --xattr: the map implies it");
    assert_eq!(host_get(&s, "f", "user.virtiofs.user.foo").unwrap(), b"bar");
    assert_eq!(
        host_get(&s, "f", "user.foo").unwrap_err(),
        rustix::io::Errno::NODATA,
        "the guest's name itself is not set on the host"
    );
    assert_eq!(
        s.getxattr(e.nodeid, b"user.foo", 64).unwrap(),
        XattrReply::Data(b"bar".to_vec())
    );
    assert_eq!(guest_list(&s, e.nodeid), ["user.foo"]);

    // A host attribute outside the prefix is hidden and out of the guest's reach.
    host_set(&s, "f", "user.host", b"secret");
    assert_eq!(guest_list(&s, e.nodeid), ["user.foo"]);
    assert_eq!(
        s.getxattr(e.nodeid, b"user.host", 64).unwrap_err(),
        libc::ENODATA
    );
    assert_eq!(
        s.removexattr(e.nodeid, b"user.host").unwrap_err(),
        libc::ENODATA
    );
    assert_eq!(host_get(&s, "f", "user.host").unwrap(), b"secret");

    // One set on the host under the prefix shows, stripped.
    host_set(&s, "f", "user.virtiofs.trusted.t", b"t");
    assert_eq!(guest_list(&s, e.nodeid), ["trusted.t", "user.foo"]);
    assert_eq!(
        s.getxattr(e.nodeid, b"trusted.t", 64).unwrap(),
        XattrReply::Data(b"t".to_vec())
    );

    s.removexattr(e.nodeid, b"user.foo").expect("REMOVEXATTR");
    assert_eq!(
        host_get(&s, "f", "user.virtiofs.user.foo").unwrap_err(),
        rustix::io::Errno::NODATA
    );
    assert_eq!(guest_list(&s, e.nodeid), ["trusted.t"]);
}

#[test]
fn bad_unsupported_and_the_map_shorthand() {
    let s = Session::start(&[
        "--xattr",
        "--xattrmap=/bad/client/user.secret.// /unsupported/all/user.nope./user.nope./ \
         /map/trusted./user.virtiofs./",
    ]);
    let e = s.host_file("f", b"x");
    for (name, set_errno) in [
        (&b"user.secret.a"[..], libc::EPERM),
        (b"user.nope.a", libc::EOPNOTSUPP),
        // map's second rule guards the prefix from the guest.
        (b"user.virtiofs.trusted.t", libc::EPERM),
    ] {
        assert_eq!(s.setxattr(e.nodeid, name, b"v", 0).unwrap_err(), set_errno);
        assert_eq!(s.removexattr(e.nodeid, name).unwrap_err(), set_errno);
        // virtiofsd answers a `bad` name's GETXATTR as absent.
        let get_errno = if set_errno == libc::EPERM {
            libc::ENODATA
        } else {
            set_errno
        };
        assert_eq!(s.getxattr(e.nodeid, name, 64).unwrap_err(), get_errno);
    }
    assert_eq!(guest_list(&s, e.nodeid), Vec::<String>::new());

    s.setxattr(e.nodeid, b"trusted.t", b"1", 0).expect("mapped");
    s.setxattr(e.nodeid, b"user.plain", b"2", 0)
        .expect("unchanged");
    assert_eq!(host_get(&s, "f", "user.virtiofs.trusted.t").unwrap(), b"1");
    assert_eq!(host_get(&s, "f", "user.plain").unwrap(), b"2");
    host_set(&s, "f", "user.nope.h", b"hidden");
    assert_eq!(guest_list(&s, e.nodeid), ["trusted.t", "user.plain"]);
}

#[test]
fn a_renamed_capability_is_removed_on_write_and_truncate() {
    let s = Session::start(&["--xattrmap=:map::user.virtiofs.:"]);
    let e = s.host_file("f", b"0123");
    let cap = "user.virtiofs.security.capability";
    host_set(&s, "f", cap, b"caps");
    host_set(&s, "f", "user.virtiofs.user.keep", b"k");
    let fh = s.open(e.nodeid, libc::O_RDWR).expect("OPEN").fh;
    assert_eq!(host_get(&s, "f", cap).unwrap(), b"caps", "OPEN keeps it");
    s.write(e.nodeid, fh, 0, b"ab").expect("WRITE");
    assert_eq!(
        host_get(&s, "f", cap).unwrap_err(),
        rustix::io::Errno::NODATA
    );
    assert_eq!(host_get(&s, "f", "user.virtiofs.user.keep").unwrap(), b"k");
    host_set(&s, "f", cap, b"caps");
    s.setattr(
        e.nodeid,
        &SetattrIn {
            size: 1,
            ..setattr_in(FATTR_SIZE)
        },
    )
    .expect("truncate");
    assert_eq!(
        host_get(&s, "f", cap).unwrap_err(),
        rustix::io::Errno::NODATA
    );
    // The guest sees and sets it by its own name.
    s.setxattr(e.nodeid, b"security.capability", b"new", 0)
        .expect("SETXATTR");
    assert_eq!(host_get(&s, "f", cap).unwrap(), b"new");
}
