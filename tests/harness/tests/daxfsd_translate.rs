//! daxfsd over its socket with `--translate-uid`/`--translate-gid`: the guest's ids become
//! the host's when it creates and chowns, the host's become the guest's in every attribute
//! reply, unmapped ids pass unchanged both ways, and a `forbid-guest` caller gets EPERM.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;
use daxfsd_protocol::abi::*;

/// The host uid and gid guest root maps to.
const HOST_UID: u32 = 4321;
const HOST_GID: u32 = 8765;

/// Guest uids 7000..7010 are forbidden.
const FORBIDDEN_UID: u32 = 7005;

/// A root daemon with guest root mapped to `HOST_UID`:`HOST_GID`, on a shared directory the
/// mapped user may write; `None` when not root.
fn translated() -> Option<Session> {
    if !is_root() {
        daxfsd_harness::skip("needs root to create and chown as other ids");
        return None;
    }
    let uid_map = format!("map:0:{HOST_UID}:1");
    let gid_map = format!("map:0:{HOST_GID}:1");
    let s = Session::start(&[
        "--translate-uid",
        &uid_map,
        "--translate-uid",
        "forbid-guest:7000:10",
        "--translate-gid",
        &gid_map,
    ]);
    std::fs::set_permissions(s.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    Some(s)
}

fn host_owner(s: &Session, name: &str) -> (u32, u32) {
    let meta = std::fs::symlink_metadata(s.path(name)).unwrap();
    (meta.uid(), meta.gid())
}

#[test]
fn guest_root_creates_as_the_mapped_host_ids_and_sees_itself() {
    let Some(s) = translated() else { return };
    let (entry, _) = s
        .create(ROOT_ID, b"f", libc::O_RDWR, 0o644)
        .expect("CREATE");
    assert_eq!(host_owner(&s, "f"), (HOST_UID, HOST_GID));
    assert_eq!((entry.attr.uid, entry.attr.gid), (0, 0), "CREATE reply");
    let a = s.getattr(entry.nodeid).expect("GETATTR");
    assert_eq!((a.attr.uid, a.attr.gid), (0, 0), "GETATTR reply");
    let d = s.mkdir(ROOT_ID, b"d", 0o755).expect("MKDIR");
    assert_eq!(host_owner(&s, "d"), (HOST_UID, HOST_GID));
    assert_eq!((d.attr.uid, d.attr.gid), (0, 0), "MKDIR reply");
    let l = s.symlink(ROOT_ID, b"l", b"f").expect("SYMLINK");
    assert_eq!(host_owner(&s, "l"), (HOST_UID, HOST_GID));
    assert_eq!((l.attr.uid, l.attr.gid), (0, 0), "SYMLINK reply");
    let fh = s.opendir(ROOT_ID).unwrap().fh;
    let listed = s.readdirplus(ROOT_ID, fh, 0, 4096).expect("READDIRPLUS");
    let f = listed
        .iter()
        .find(|(_, d)| d.name == b"f")
        .expect("f listed");
    assert_eq!((f.0.attr.uid, f.0.attr.gid), (0, 0), "READDIRPLUS entry");
}

#[test]
fn unmapped_host_ids_show_unchanged() {
    let Some(s) = translated() else { return };
    std::fs::write(s.path("other"), b"x").unwrap();
    std::os::unix::fs::chown(s.path("other"), Some(555), Some(556)).unwrap();
    let e = s.lookup(ROOT_ID, b"other").expect("LOOKUP");
    assert_eq!((e.attr.uid, e.attr.gid), (555, 556));
    // Host root is not in the host-to-guest range of map:0:HOST:1: it stays 0, as in
    // virtiofsd (the map is not a bijection).
    std::fs::write(s.path("root"), b"x").unwrap();
    std::os::unix::fs::chown(s.path("root"), Some(0), Some(0)).unwrap();
    let e = s.lookup(ROOT_ID, b"root").expect("LOOKUP");
    assert_eq!((e.attr.uid, e.attr.gid), (0, 0));
    // An unmapped guest caller creates as itself.
    let (e, _) = s
        .create_as(ROOT_ID, b"mine", libc::O_RDWR, 0o644, 1500, 1600)
        .expect("CREATE as 1500");
    assert_eq!(host_owner(&s, "mine"), (1500, 1600));
    assert_eq!((e.attr.uid, e.attr.gid), (1500, 1600));
}

#[test]
fn setattr_chown_translates_guest_ids() {
    let Some(s) = translated() else { return };
    let e = s.host_file("f", b"x");
    let chown = |uid: u32, gid: u32| {
        s.setattr(
            e.nodeid,
            &SetattrIn {
                uid,
                gid,
                ..setattr_in(FATTR_UID | FATTR_GID)
            },
        )
    };
    let a = chown(0, 0).expect("chown to guest root");
    assert_eq!(host_owner(&s, "f"), (HOST_UID, HOST_GID));
    assert_eq!((a.attr.uid, a.attr.gid), (0, 0));
    let a = chown(1500, 1600).expect("chown to an unmapped id");
    assert_eq!(host_owner(&s, "f"), (1500, 1600));
    assert_eq!((a.attr.uid, a.attr.gid), (1500, 1600));
    assert_eq!(chown(FORBIDDEN_UID, 0).unwrap_err(), libc::EPERM);
    assert_eq!(
        host_owner(&s, "f"),
        (1500, 1600),
        "a refused chown changes nothing"
    );
}

#[test]
fn a_forbidden_guest_id_gets_eperm() {
    let Some(s) = translated() else { return };
    assert_eq!(
        s.create_as(ROOT_ID, b"no", libc::O_RDWR, 0o644, FORBIDDEN_UID, 0)
            .unwrap_err(),
        libc::EPERM
    );
    assert!(!s.path("no").exists());
    let e = s.host_file("f", b"x");
    assert_eq!(
        s.access_as(e.nodeid, libc::R_OK, FORBIDDEN_UID, 0)
            .unwrap_err(),
        libc::EPERM
    );
    // The ids next to the forbidden range are not forbidden.
    s.access_as(e.nodeid, libc::F_OK, 7010, 0)
        .expect("ACCESS as 7010");
    s.assert_serving();
}
