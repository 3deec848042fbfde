//! ATTR_DAX follows the per-inode DAX policy once HAS_INODE_DAX is agreed.

use daxfsd_protocol::abi::{ATTR_DAX, ROOT_ID};

use super::*;
use crate::errno::Errno;
use crate::fs::passthrough::{InodeDaxPolicy, MapAccess, Negotiated};
use crate::fs::{AttrOps, EntryOps, FileOps, FileSystem};

#[test]
fn attr_dax_marks_files_the_policy_selects() {
    // The fixture's policy is min-size=8192.
    let f = fixture();
    std::fs::write(f.path("small"), vec![1u8; 100]).unwrap();
    std::fs::write(f.path("large"), vec![1u8; 8192]).unwrap();
    std::fs::create_dir(f.path("dir")).unwrap();
    let flags = |name: &str| f.fs.lookup(me(), ROOT_ID, &cs(name)).unwrap().attr.flags & ATTR_DAX;

    // Before the guest negotiates HAS_INODE_DAX nothing is marked.
    assert_eq!(flags("large"), 0);

    f.fs.session().begin(Negotiated {
        inode_dax: true,
        ..Negotiated::default()
    });
    assert_eq!(flags("small"), 0, "below min-size");
    assert_eq!(flags("large"), ATTR_DAX, "at min-size");
    assert_eq!(flags("dir"), 0, "directories never use the window");
    let nodeid = f.fs.lookup(me(), ROOT_ID, &cs("large")).unwrap().nodeid;
    let attr = f.fs.getattr(me(), nodeid, None).unwrap().attr;
    assert_eq!(
        attr.flags & ATTR_DAX,
        ATTR_DAX,
        "GETATTR agrees with LOOKUP"
    );
}

#[test]
fn policy_applies() {
    assert!(!InodeDaxPolicy::Never.applies(u64::MAX));
    assert!(InodeDaxPolicy::Always.applies(0));
    assert!(InodeDaxPolicy::MinSize(10).applies(10));
    assert!(!InodeDaxPolicy::MinSize(10).applies(9));
}

/// A frontend like QEMU 11.1: no partial last pages, no read-only descriptors.
fn upstream_caps() -> crate::session::FrontendMapCaps {
    crate::session::FrontendMapCaps {
        partial_tail: false,
        read_only_fd: false,
    }
}

/// Another caller than the file's owner (uid/gid of nobody).
fn stranger() -> Context {
    Context {
        uid: 65534,
        gid: 65534,
        pid: 1,
    }
}

#[test]
fn a_frontend_without_partial_pages_gets_only_whole_page_files() {
    let f = fixture_with(false, false, CachePolicy::Auto);
    let sizes = [0usize, 20, 8192, 8200, 12288];
    for size in sizes {
        std::fs::write(f.path(&format!("f{size}")), vec![7u8; size]).unwrap();
    }
    f.fs.session().begin(Negotiated {
        inode_dax: true,
        dax_caps: crate::session::FrontendMapCaps {
            partial_tail: false,
            read_only_fd: true,
        },
        ..Negotiated::default()
    });
    // The fixture's policy is min-size=8192; 0 and 20 are below it anyway,
    // so check them with a policy that takes every file too.
    let dax = |fs: &PassthroughFs, name: &str| {
        fs.lookup(me(), ROOT_ID, &cs(name)).unwrap().attr.flags & ATTR_DAX != 0
    };
    assert!(dax(&f.fs, "f8192"));
    assert!(!dax(&f.fs, "f8200"), "ends inside a page");
    assert!(dax(&f.fs, "f12288"));

    // The fixture's configuration, but every file is a DAX candidate.
    let every = PassthroughFs::new(FsConfig {
        inode_dax: InodeDaxPolicy::Always,
        ..f.fs.config().clone()
    })
    .unwrap();
    every.session().begin(Negotiated {
        inode_dax: true,
        dax_caps: upstream_caps(),
        ..Negotiated::default()
    });
    assert!(
        !dax(&every, "f0"),
        "empty: would end inside a page once written"
    );
    assert!(!dax(&every, "f20"));
    assert!(dax(&every, "f8192"));

    // Re-evaluated on every attribute reply: a size change turns it off and on.
    let nodeid = every.lookup(me(), ROOT_ID, &cs("f8192")).unwrap().nodeid;
    std::fs::write(f.path("f8192"), vec![7u8; 8193]).unwrap();
    let attr = every.getattr(me(), nodeid, None).unwrap().attr;
    assert_eq!(attr.flags & ATTR_DAX, 0);
    std::fs::write(f.path("f8192"), vec![7u8; 4096]).unwrap();
    let attr = every.getattr(me(), nodeid, None).unwrap().attr;
    assert_eq!(attr.flags & ATTR_DAX, ATTR_DAX);
}

#[test]
fn a_frontend_without_read_only_descriptors_gets_only_files_the_caller_may_write() {
    let f = fixture_with(false, false, CachePolicy::Auto);
    std::fs::write(f.path("mine"), vec![1u8; 8192]).unwrap();
    std::fs::write(f.path("locked"), vec![1u8; 8192]).unwrap();
    std::fs::set_permissions(
        f.path("locked"),
        std::os::unix::fs::PermissionsExt::from_mode(0o444),
    )
    .unwrap();
    f.fs.session().begin(Negotiated {
        inode_dax: true,
        dax_caps: upstream_caps(),
        ..Negotiated::default()
    });
    let dax = |ctx: Context, name: &str| {
        f.fs.lookup(ctx, ROOT_ID, &cs(name)).unwrap().attr.flags & ATTR_DAX != 0
    };
    if is_root() {
        // Root may write anything (mode bits do not bind it).
        assert!(dax(me(), "locked"));
    } else {
        assert!(!dax(me(), "locked"), "0444: the owner may not write it");
    }
    assert!(dax(me(), "mine"), "the owner may write 0644");
    assert!(!dax(stranger(), "mine"), "others may not write 0644");

    // SETUPMAPPING of a read mapping: a read-write descriptor for the owner,
    // EACCES for a caller who may not write the file.
    let node = f.fs.lookup(me(), ROOT_ID, &cs("mine")).unwrap().nodeid;
    let file =
        f.fs.open_for_mapping(me(), node, u64::MAX, MapAccess::ReadWithWritableFd)
            .unwrap();
    assert_eq!(
        rustix::fs::fcntl_getfl(&file).unwrap() & rustix::fs::OFlags::RWMODE,
        rustix::fs::OFlags::RDWR
    );
    assert_eq!(
        f.fs.open_for_mapping(stranger(), node, u64::MAX, MapAccess::ReadWithWritableFd)
            .err(),
        Some(Errno::EACCES)
    );

    // On a read-only share nobody may write: EACCES, and no ATTR_DAX.
    let ro = fixture_with(true, false, CachePolicy::Auto);
    std::fs::write(ro.path("mine"), vec![1u8; 8192]).unwrap();
    ro.fs.session().begin(Negotiated {
        inode_dax: true,
        dax_caps: upstream_caps(),
        ..Negotiated::default()
    });
    let entry = ro.fs.lookup(me(), ROOT_ID, &cs("mine")).unwrap();
    assert_eq!(entry.attr.flags & ATTR_DAX, 0);
    assert_eq!(
        ro.fs
            .open_for_mapping(me(), entry.nodeid, u64::MAX, MapAccess::ReadWithWritableFd)
            .err(),
        Some(Errno::EACCES)
    );
}
