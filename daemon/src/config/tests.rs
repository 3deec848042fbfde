//! Tests of the configuration as a whole.

use super::*;

const BASE: [&str; 5] = ["daxfsd", "--socket-path", "s", "--shared-dir", "d"];

fn config(extra: &[&str]) -> Result<Config, ConfigError> {
    Config::try_parse_from(BASE.iter().chain(extra))
}

fn refusal(extra: &[&str]) -> String {
    crate::error_chain(&config(extra).unwrap_err())
}

#[test]
fn window_flags_need_a_window() {
    for (flag, value) in [
        ("--inode-dax", "never"),
        ("--inode-dax", "always"),
        ("--dax-protocol", "legacy"),
        ("--dax-protocol", "shmem"),
    ] {
        let err = refusal(&[flag, value]);
        assert!(
            err.contains(flag) && err.contains("--cache-size"),
            "{flag}: {err}"
        );
        let err = refusal(&[flag, value, "--cache-size", "0"]);
        assert!(
            err.contains(flag) && err.contains("--cache-size"),
            "{flag}: {err}"
        );
        let config = config(&[flag, value, "--cache-size", "2M"]).unwrap();
        assert_eq!(config.dax.map(|dax| dax.window_size), Some(2 << 20));
    }
    let err = refusal(&["--mount-point", "m", "--socket-path", "s2"]);
    assert!(err.contains("cannot be used with"), "{err}");
    let err = Config::try_parse_from([
        "daxfsd",
        "--shared-dir",
        "d",
        "--mount-point",
        "m",
        "--inode-dax",
        "never",
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("--inode-dax"), "{err}");
}

#[test]
fn defaults_of_window_flags_are_not_refused() {
    let config = config(&[]).unwrap();
    assert_eq!(config.dax, None);
    assert_eq!(config.inode_dax(), InodeDaxPolicy::Always);
    assert_eq!(
        config.transport,
        Transport::VhostUser(Listen::Path {
            path: "s".into(),
            group: None
        })
    );
    let config = config_with_window();
    let dax = config.dax.unwrap();
    assert_eq!(dax.protocol, DaxProtocol::Shmem);
    assert_eq!(dax.inode_dax, InodeDaxPolicy::MinSize(1 << 20));
    assert_eq!(dax.trace, Some(PathBuf::from("t")));
}

fn config_with_window() -> Config {
    config(&[
        "--cache-size",
        "4M",
        "--inode-dax",
        "min-size=1M",
        "--dax-trace",
        "t",
    ])
    .unwrap()
}

#[test]
fn dax_trace_needs_a_window() {
    // clap refuses it when --cache-size is absent, Config when it is 0.
    for extra in [
        &["--dax-trace", "t"][..],
        &["--dax-trace", "t", "--cache-size", "0"],
    ] {
        let err = refusal(extra);
        assert!(
            err.contains("--cache-size") && err.contains("--dax-trace"),
            "{err}"
        );
    }
    assert_eq!(
        refusal(&["--dax-trace", "t", "--cache-size", "0"]),
        "--dax-trace traces the DAX window: it needs --cache-size (other than 0)"
    );
}

#[test]
fn one_way_to_listen_and_a_shared_dir_are_needed() {
    let err = Config::try_parse_from(["daxfsd", "--shared-dir", "d"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no socket: give --socket-path, --fd or --mount-point"
    );
    let err = Config::try_parse_from(["daxfsd", "--socket-path", "s"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no shared directory: give --shared-dir or -o source=DIR"
    );
    let inherited = Config::try_parse_from(["daxfsd", "--fd=3", "-o", "source=/srv"]).unwrap();
    assert_eq!(inherited.transport, Transport::VhostUser(Listen::Fd(3)));
    assert_eq!(inherited.shared_dir, PathBuf::from("/srv"));
    let both =
        Config::try_parse_from(["daxfsd", "--socket=a", "--socket-path=b", "--shared-dir=d"])
            .unwrap();
    assert_eq!(
        both.transport,
        Transport::VhostUser(Listen::Path {
            path: "b".into(),
            group: None
        })
    );
    let grouped = config(&["--socket-group=root"]).unwrap();
    assert_eq!(
        grouped.transport,
        Transport::VhostUser(Listen::Path {
            path: "s".into(),
            group: Some(("root".into(), 0))
        })
    );
    assert!(refusal(&["--socket-group=no-such-group-daxfsd"]).contains("--socket-group"));
}

#[test]
fn what_daxfsd_cannot_honour_is_refused_naming_the_flag() {
    for (extra, named) in [
        (
            &[
                "--migration-mode=file-handles",
                "--migration-verify-handles",
            ][..],
            "--migration-verify-handles",
        ),
        (
            &["--migration-mode=file-handles", "--migration-confirm-paths"],
            "--migration-confirm-paths",
        ),
        (&["--migration-mode=bogus"], "--migration-mode"),
        (&["--migration-on-error=ignore"], "--migration-on-error"),
        (&["-o", "flock"], "-o flock"),
    ] {
        let err = refusal(extra);
        assert!(err.contains(named), "{extra:?}: {err}");
    }
    for accepted in [
        &["--posix-acl=never"][..],
        &["--posix-acl", "--security-label=auto"],
        &["-o", "posix_acl,security_label"],
        &[
            "--security-label=never",
            "-o",
            "no_posix_acl,no_security_label",
        ],
        &["--no-announce-submounts", "--announce-submounts"],
        &["-o", "announce_submounts"],
        &["--xattrmap=:map::user.virtiofs.:"],
    ] {
        config(accepted).unwrap();
    }
}

#[test]
fn translation_is_parsed_and_refused_with_acls() {
    let config = config(&[
        "--translate-uid=map:0:1000:1",
        "--translate-uid",
        "forbid-guest:5:1",
        "--translate-gid=squash-guest:0:100:10",
    ])
    .unwrap();
    assert_eq!(config.translate.uid.to_host(0), Some(1000));
    assert_eq!(config.translate.uid.to_host(5), None);
    assert_eq!(config.translate.gid.to_host(9), Some(100));
    assert_eq!(config.translate.gid.to_host(10), Some(10));
    let err = refusal(&["--translate-gid=map:0:1000"]);
    assert!(err.contains("--translate-gid \"map:0:1000\""), "{err}");
    // Translation would break ACLs: refused together, as by virtiofsd.
    for acl in ["--posix-acl=auto", "--posix-acl"] {
        let err = refusal(&["--translate-uid=map:0:1000:1", acl]);
        assert!(err.contains("--posix-acl="), "{err}");
        let err = refusal(&["--translate-gid=guest:0:0:1", "-o", "posix_acl"]);
        assert!(err.contains("--posix-acl=always"), "{err}");
    }
    let never = ["--translate-uid=map:0:1000:1", "--posix-acl=never"];
    assert!(super::tests::config(&never).is_ok());
}

#[test]
fn acl_and_label_modes_are_switches_and_imply_xattr() {
    use NegotiationMode::{Always, Auto, Never};
    for (extra, acl, label, xattr) in [
        (&[][..], Never, Never, false),
        (&["--posix-acl"], Always, Never, true),
        (&["--posix-acl=auto"], Auto, Never, true),
        (&["--security-label"], Never, Always, true),
        (&["--security-label=auto", "--xattr"], Never, Auto, true),
        (
            &["--posix-acl=never", "--security-label=never"],
            Never,
            Never,
            false,
        ),
        (&["-o", "posix_acl,security_label"], Always, Always, true),
        (
            &["--posix-acl=auto", "-o", "no_posix_acl"],
            Never,
            Never,
            false,
        ),
    ] {
        let c = config(extra).unwrap();
        assert_eq!(
            (c.switches.posix_acl, c.switches.security_label, c.xattr),
            (acl, label, xattr),
            "{extra:?}"
        );
    }
}

#[test]
fn switches_follow_the_flags_and_the_cache_policy() {
    let config_of = |extra: &[&str]| config(extra).unwrap().switches;
    let defaults = config_of(&[]);
    assert_eq!(
        defaults,
        Switches {
            readdirplus: true,
            announce_submounts: true,
            ..Switches::default()
        }
    );
    assert!(!config_of(&["--no-announce-submounts"]).announce_submounts);
    assert!(config_of(&["--no-announce-submounts", "--announce-submounts"]).announce_submounts);
    assert!(config_of(&["--no-announce-submounts", "-o", "announce_submounts"]).announce_submounts);
    assert!(!config_of(&["--no-readdirplus"]).readdirplus);
    assert!(!config_of(&["--cache=never"]).readdirplus);
    assert!(!config_of(&["-o", "cache=none"]).readdirplus);
    assert!(config_of(&["--no-readdirplus", "-o", "readdirplus"]).readdirplus);
    let all = config_of(&[
        "--writeback",
        "--allow-direct-io",
        "--preserve-noatime",
        "--killpriv-v2",
        "--allow-mmap",
    ]);
    assert!(
        all.writeback
            && all.allow_direct_io
            && all.preserve_noatime
            && all.killpriv_v2
            && all.allow_mmap
    );
    assert!(!config_of(&["--killpriv-v2", "--no-killpriv-v2"]).killpriv_v2);
    assert!(!config_of(&["--writeback", "-o", "no_writeback"]).writeback);
    let logged = config(&["-d", "--thread-pool-size=0", "-f", "--syslog"]).unwrap();
    assert_eq!(logged.log_level, "debug");
    assert_eq!(logged.warnings.len(), 2, "{:?}", logged.warnings);
    assert_eq!(logged.thread_pool_size, 0);
    assert!(logged.syslog);
}

#[test]
fn capabilities_are_json_with_migration() {
    let json = capabilities_json();
    assert!(json.contains("\"type\": \"fs\""), "{json}");
    assert!(json.contains("\"separate-options\""), "{json}");
    assert!(json.contains("\"posix-acl-negotiation-mode\""), "{json}");
    assert!(
        json.contains("\"security-label-negotiation-mode\""),
        "{json}"
    );
    assert!(json.contains("\"migrate-precopy\""), "{json}");
}

#[test]
fn migration_flags_as_virtiofsd() {
    use crate::migration::{MigrationConfig, MigrationMode, OnError};
    assert_eq!(config(&[]).unwrap().migration, MigrationConfig::default());
    let all = config(&[
        "--migration-mode=find-paths",
        "--migration-on-error=guest-error",
        "--migration-verify-handles",
        "--migration-confirm-paths",
    ])
    .unwrap()
    .migration;
    assert_eq!(
        all,
        MigrationConfig {
            mode: MigrationMode::FindPaths,
            on_error: OnError::GuestError,
            verify_handles: true,
            confirm_paths: true,
        }
    );
    let handles = config(&["--migration-mode", "file-handles"]).unwrap();
    assert_eq!(handles.migration.mode, MigrationMode::FileHandles);
}

#[test]
fn descriptor_flags_as_virtiofsd() {
    assert_eq!(
        config(&[]).unwrap().inode_file_handles,
        InodeFileHandles::Prefer
    );
    assert_eq!(config(&[]).unwrap().rlimit_nofile, None);
    for (value, mode) in [
        ("never", InodeFileHandles::Never),
        ("prefer", InodeFileHandles::Prefer),
        ("fallback", InodeFileHandles::Fallback),
        ("mandatory", InodeFileHandles::Mandatory),
    ] {
        let flag = format!("--inode-file-handles={value}");
        assert_eq!(config(&[&flag]).unwrap().inode_file_handles, mode);
    }
    for bad in [
        &["--inode-file-handles", "never"][..],
        &["--inode-file-handles=sometimes"],
    ] {
        assert!(refusal(bad).contains("--inode-file-handles"), "{bad:?}");
    }
    assert_eq!(
        config(&["--rlimit-nofile", "0"]).unwrap().rlimit_nofile,
        Some(0)
    );
    assert_eq!(
        config(&["--rlimit-nofile=4096"]).unwrap().rlimit_nofile,
        Some(4096)
    );
    assert!(refusal(&["--rlimit-nofile", "lots"]).contains("--rlimit-nofile"));
    assert_eq!(
        refusal(&["--rlimit-nofile", "100"]),
        "--rlimit-nofile 100 is below the 512 descriptors the daemon needs (0 leaves the limit alone)"
    );
}

#[test]
fn sizes_take_suffixes() {
    assert_eq!(parse_size("0"), Ok(0));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("2M"), Ok(2 << 20));
    assert_eq!(parse_size("1g"), Ok(1 << 30));
    assert_eq!(parse_size("64K"), Ok(64 << 10));
    assert!(parse_size("M").is_err());
    assert!(parse_size("2T").is_err());
    assert!(parse_size("99999999999G").is_err());
}

#[test]
fn inode_dax_policies_parse() {
    assert_eq!(parse_inode_dax("never"), Ok(InodeDaxPolicy::Never));
    assert_eq!(parse_inode_dax("always"), Ok(InodeDaxPolicy::Always));
    assert_eq!(
        parse_inode_dax("min-size=1M"),
        Ok(InodeDaxPolicy::MinSize(1 << 20))
    );
    assert!(parse_inode_dax("sometimes").is_err());
    assert!(parse_inode_dax("min-size=lots").is_err());
}
