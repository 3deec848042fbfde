//! daxfsd over its socket: virtiofsd's behaviour switches (`--writeback`,
//! `--no-readdirplus`, `--cache=never|metadata`, `--killpriv-v2`,
//! `--allow-mmap`, `--no-announce-submounts`, `--allow-direct-io`, `--preserve-noatime`, and `-o`'s
//! spellings of them) change what INIT offers and how the guest's open flags
//! reach the host.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;
use daxfsd_protocol::abi::*;

/// The INIT flags a daemon started with `args` agrees to with a Linux guest.
fn agreed(args: &[&str]) -> u64 {
    let s = Session::start_uninit(args);
    let out = s.init(LINUX_INIT_FLAGS).expect("INIT");
    u64::from(out.flags) | (u64::from(out.flags2) << 32)
}

#[test]
fn init_offers_follow_the_switches() {
    let default = agreed(&[]);
    for (flag, bit) in [
        ("--writeback", WRITEBACK_CACHE),
        ("--killpriv-v2", HANDLE_KILLPRIV_V2),
        ("--allow-mmap", DIRECT_IO_ALLOW_MMAP),
    ] {
        assert_eq!(default & bit, 0, "{flag}'s {bit:#x} agreed by default");
        assert_eq!(agreed(&[flag]) & bit, bit, "{flag} did not offer {bit:#x}");
    }
    assert_eq!(
        agreed(&["-o", "writeback"]) & WRITEBACK_CACHE,
        WRITEBACK_CACHE
    );
    assert_eq!(
        agreed(&["--killpriv-v2", "--no-killpriv-v2"]) & HANDLE_KILLPRIV_V2,
        0,
        "the last of --killpriv-v2 / --no-killpriv-v2 wins"
    );
    let readdirplus = DO_READDIRPLUS | READDIRPLUS_AUTO;
    assert_eq!(default & readdirplus, readdirplus);
    for off in [
        &["--no-readdirplus"][..],
        &["--cache=never"],
        &["-o", "cache=none"],
        &["-o", "no_readdirplus"],
    ] {
        assert_eq!(agreed(off) & readdirplus, 0, "{off:?} offered READDIRPLUS");
    }
    assert_eq!(agreed(&["--cache=metadata"]) & readdirplus, readdirplus);
    // Submounts are announced by default, as virtiofsd does.
    assert_eq!(default & SUBMOUNTS, SUBMOUNTS);
    assert_eq!(agreed(&["--no-announce-submounts"]) & SUBMOUNTS, 0);
    assert_eq!(
        agreed(&["--no-announce-submounts", "--announce-submounts"]) & SUBMOUNTS,
        SUBMOUNTS
    );
}

/// The open(2) flags of the daemon's (non-O_PATH) descriptors of `path`.
fn host_open_flags(s: &Session, path: &std::path::Path) -> Vec<i32> {
    let ino = std::fs::metadata(path).unwrap().ino();
    let pid = s.backend.daemon_pid();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let entry = entry.unwrap();
        if std::fs::metadata(entry.path()).map(|m| m.ino()).ok() != Some(ino) {
            continue;
        }
        let fd = entry.file_name().into_string().unwrap();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| i32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        if flags & libc::O_PATH == 0 {
            found.push(flags);
        }
    }
    found
}

/// Opens `f` with `flags` in a daemon started with `args` (no sandbox, so
/// its descriptors are this process's view); the host flags of that open,
/// or the errno.
fn open_on_host(args: &[&str], flags: i32) -> Result<i32, i32> {
    let mut all = vec!["--sandbox=none"];
    all.extend_from_slice(args);
    let s = Session::start(&all);
    std::fs::write(s.path("f"), b"0123").unwrap();
    let entry = s.lookup(ROOT_ID, b"f").expect("lookup f");
    let open = s.open_with(entry.nodeid, flags, 0)?;
    let found = host_open_flags(&s, &s.path("f"));
    assert_eq!(found.len(), 1, "one open descriptor of f: {found:?}");
    s.release(entry.nodeid, open.fh).unwrap();
    Ok(found[0])
}

#[test]
fn o_noatime_is_dropped_unless_preserve_noatime() {
    let flags = libc::O_RDONLY | libc::O_NOATIME;
    assert_eq!(open_on_host(&[], flags).unwrap() & libc::O_NOATIME, 0);
    assert_ne!(
        open_on_host(&["--preserve-noatime"], flags).unwrap() & libc::O_NOATIME,
        0
    );
}

#[test]
fn o_direct_is_dropped_unless_allow_direct_io() {
    let flags = libc::O_RDONLY | libc::O_DIRECT;
    assert_eq!(open_on_host(&[], flags).unwrap() & libc::O_DIRECT, 0);
    for args in [&["--allow-direct-io"][..], &["-o", "allow_direct_io"]] {
        // A filesystem without O_DIRECT refuses it: that, too, shows it
        // reached the host.
        match open_on_host(args, flags) {
            Ok(host) => assert_ne!(host & libc::O_DIRECT, 0, "{args:?}"),
            Err(errno) => assert_eq!(errno, libc::EINVAL, "{args:?}"),
        }
    }
}

#[test]
fn cache_metadata_caches_names_but_not_data() {
    let s = Session::start(&["--cache=Metadata"]);
    std::fs::write(s.path("f"), b"x").unwrap();
    let entry = s.lookup(ROOT_ID, b"f").expect("lookup f");
    assert_eq!(entry.entry_valid, 86_400, "names cached for a day");
    assert_eq!(entry.attr_valid, 86_400, "attributes cached for a day");
    let open = s.open_with(entry.nodeid, libc::O_RDONLY, 0).unwrap();
    assert_eq!(
        open.open_flags & FOPEN_DIRECT_IO,
        FOPEN_DIRECT_IO,
        "data not cached"
    );
    s.release(entry.nodeid, open.fh).unwrap();
}
