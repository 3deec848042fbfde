//! ATTR_DAX follows the per-inode DAX policy once HAS_INODE_DAX is agreed.

use daxfsd_protocol::abi::{ATTR_DAX, ROOT_ID};

use super::*;
use crate::passthrough::{InodeDaxPolicy, Negotiated};

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

    f.fs.init(Negotiated {
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
fn policy_parses_and_applies() {
    assert_eq!("never".parse::<InodeDaxPolicy>(), Ok(InodeDaxPolicy::Never));
    assert_eq!(
        "always".parse::<InodeDaxPolicy>(),
        Ok(InodeDaxPolicy::Always)
    );
    assert_eq!(
        "min-size=1M".parse::<InodeDaxPolicy>(),
        Ok(InodeDaxPolicy::MinSize(1 << 20))
    );
    assert!("sometimes".parse::<InodeDaxPolicy>().is_err());
    assert!("min-size=lots".parse::<InodeDaxPolicy>().is_err());
    assert!(!InodeDaxPolicy::Never.applies(u64::MAX));
    assert!(InodeDaxPolicy::Always.applies(0));
    assert!(InodeDaxPolicy::MinSize(10).applies(10));
    assert!(!InodeDaxPolicy::MinSize(10).applies(9));
}
