//! The configuration room: the command line ([`cli`], clap), the parsers
//! of its values, and [`Config`], built once from it and checked as a
//! whole. Everything the daemon is told comes through here; the rest of the
//! daemon reads the [`Config`], never the command line.

pub mod cli;
pub mod compat;
pub mod group;
pub mod modcaps;
pub mod refused;
pub mod translate;
pub mod userns;
pub mod xattrmap;

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, FromArgMatches};

use self::cli::Args;
use crate::dax::DaxProtocol;
use crate::fs::idmap::IdMaps;
use crate::fs::passthrough::{CachePolicy, InodeDaxPolicy, InodeFileHandles};
use crate::process::sandbox::caps::ModCaps;
use crate::process::sandbox::{SandboxMode, SeccompMode, UserNsMaps};

/// Why the command line does not make a configuration. The message names
/// the flags involved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// clap refused the command line (its message names the flag).
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// An `-o` option was refused (the message names it).
    #[error(transparent)]
    Compat(#[from] compat::CompatError),
    /// A flag daxfsd cannot honour (the message names it).
    #[error(transparent)]
    Refused(#[from] refused::Refusal),
    /// `--socket-group` names no group.
    #[error(transparent)]
    Group(#[from] group::GroupError),
    /// A `--translate-uid`/`--translate-gid` value (the message names it).
    #[error(transparent)]
    Translate(#[from] translate::TranslateError),
    /// A `--modcaps` value (the message names the flag).
    #[error(transparent)]
    Modcaps(#[from] modcaps::ModcapsError),
    /// A `--uid-map`/`--gid-map` value, or the flag where it cannot apply
    /// (the message names it).
    #[error(transparent)]
    UserNs(#[from] userns::UserNsError),
    /// An `--xattrmap` value (the message names the flag).
    #[error(transparent)]
    Xattrmap(#[from] xattrmap::XattrmapError),
    /// A flag that only matters for the DAX window, without a window.
    #[error("{flag} {purpose}: it needs --cache-size (other than 0)")]
    NeedsWindow {
        /// The flag given.
        flag: &'static str,
        /// What it does, for the message.
        purpose: &'static str,
    },
    /// `--rlimit-nofile` below what the daemon needs.
    #[error("--rlimit-nofile {given} is below the {min} descriptors the daemon needs (0 leaves the limit alone)")]
    RlimitTooLow {
        /// The limit given.
        given: u64,
        /// The least accepted.
        min: u64,
    },
    /// No way to reach the daemon was given.
    #[error("no socket: give --socket-path, --fd or --mount-point")]
    NoTransport,
    /// No shared directory was given.
    #[error("no shared directory: give --shared-dir or -o source=DIR")]
    NoSharedDir,
}

/// Where the vhost-user frontend connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A socket the daemon creates (`--socket-path`, `--socket`).
    Path {
        /// The socket path.
        path: PathBuf,
        /// `--socket-group`: the group (name, id) that owns the socket,
        /// mode 0770.
        group: Option<(String, u32)>,
    },
    /// A listening socket inherited as this descriptor (`--fd`).
    Fd(i32),
}

/// How requests reach the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A vhost-user socket a VMM connects to.
    VhostUser(Listen),
    /// The host kernel's FUSE client, the share mounted on a host
    /// directory (`--mount-point`).
    FuseDev {
        /// The mount point.
        mount_point: PathBuf,
    },
}

/// The DAX window (`--cache-size` other than 0) and the flags that only
/// matter with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaxConfig {
    /// Size of the window in bytes.
    pub window_size: u64,
    /// How the frontend is asked to map (`--dax-protocol`).
    pub protocol: DaxProtocol,
    /// The `--dax-trace` file.
    pub trace: Option<PathBuf>,
    /// Which files a `dax=inode` guest should map (`--inode-dax`).
    pub inode_dax: InodeDaxPolicy,
}

/// What the guest is offered and how its open flags are treated: the
/// behaviour switches virtiofsd has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Switches {
    /// Offer FUSE_WRITEBACK_CACHE (`--writeback`).
    pub writeback: bool,
    /// Offer READDIRPLUS (not `--no-readdirplus`, not `--cache=never`).
    pub readdirplus: bool,
    /// Keep the guest's O_DIRECT (`--allow-direct-io`).
    pub allow_direct_io: bool,
    /// Keep the guest's O_NOATIME (`--preserve-noatime`).
    pub preserve_noatime: bool,
    /// Offer FUSE_HANDLE_KILLPRIV_V2 (`--killpriv-v2`).
    pub killpriv_v2: bool,
    /// Offer FUSE_DIRECT_IO_ALLOW_MMAP (`--allow-mmap`).
    pub allow_mmap: bool,
    /// Offer FUSE_SUBMOUNTS and mark mount points inside the share with
    /// FUSE_ATTR_SUBMOUNT (unless `--no-announce-submounts`).
    pub announce_submounts: bool,
}

/// What the daemon was asked to do, checked as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How requests arrive.
    pub transport: Transport,
    /// The host directory shared.
    pub shared_dir: PathBuf,
    /// The filesystem tag.
    pub tag: String,
    /// Guest caching (`--cache`).
    pub cache: CachePolicy,
    /// The behaviour switches.
    pub switches: Switches,
    /// Request queues (or `/dev/fuse` reader threads).
    pub num_request_queues: u16,
    /// `--thread-pool-size`: worker threads per queue (0: the queue's own
    /// thread serves its requests).
    pub thread_pool_size: usize,
    /// Size of each virtqueue.
    pub queue_size: u16,
    /// The log level or filter (`--log-level`, `-d`; RUST_LOG overrides it).
    pub log_level: String,
    /// Log to syslog instead of standard error.
    pub syslog: bool,
    /// Refuse every modifying operation with EROFS.
    pub readonly: bool,
    /// Serve extended attributes (`--xattr`, or implied by `--xattrmap`).
    pub xattr: bool,
    /// `--xattrmap`: how attribute names are mapped.
    pub xattrmap: Option<crate::fs::xattrmap::XattrMap>,
    /// The DAX window, if any.
    pub dax: Option<DaxConfig>,
    /// The metrics file.
    pub metrics_file: Option<PathBuf>,
    /// Keep serving after the frontend disconnects.
    pub persist: bool,
    /// `--sandbox` as given (`None`: the default for this user).
    pub sandbox: Option<SandboxMode>,
    /// What a system call outside the seccomp allow-list does.
    pub seccomp: SeccompMode,
    /// How inodes are referenced (`--inode-file-handles`).
    pub inode_file_handles: InodeFileHandles,
    /// `--rlimit-nofile` (`None`: the default raise, `Some(0)`: leave it).
    pub rlimit_nofile: Option<u64>,
    /// Warnings about the command line (deprecated spellings), for the log
    /// once it exists.
    pub warnings: Vec<&'static str>,
    /// `--translate-uid`/`--translate-gid`: ids translated by the daemon.
    pub translate: IdMaps,
    /// `--modcaps`: changes to the capabilities the daemon keeps as root.
    pub modcaps: ModCaps,
    /// `--uid-map`/`--gid-map`: the ids of the daemon's user namespace
    /// (empty: its own ids only).
    pub user_ns: UserNsMaps,
}

/// The features `--print-capabilities` lists: only what daxfsd has.
/// `separate-options`: it takes `--shared-dir`, `--cache`, ... as separate
/// flags. Not `migrate-precopy` (no migration), not the ACL and label
/// negotiation modes (refused but `never`).
pub const CAPABILITIES: &[&str] = &["separate-options"];

/// The `--print-capabilities` output (vhost-user.json's format).
pub fn capabilities_json() -> String {
    let features: Vec<String> = CAPABILITIES.iter().map(|f| format!("\"{f}\"")).collect();
    format!(
        "{{\n  \"type\": \"fs\",\n  \"features\": [\n    {}\n  ]\n}}",
        features.join(",\n    ")
    )
}

impl Config {
    /// Builds the configuration from clap's matches of [`Args::command`]
    /// (the matches tell a flag given on the command line from a default).
    pub fn from_matches(matches: &ArgMatches) -> Result<Self, ConfigError> {
        let args = Args::from_arg_matches(matches)?;
        let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        Self::from_args(args, given)
    }

    /// Parses and checks a command line (the first item is the program
    /// name), as `main` does.
    pub fn try_parse_from<I, T>(command_line: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches =
            <Args as clap::CommandFactory>::command().try_get_matches_from(command_line)?;
        Self::from_matches(&matches)
    }

    /// Checks `args` as a whole; `given(id)` says whether the flag with
    /// clap id `id` was on the command line (rather than defaulted).
    fn from_args(mut args: Args, given: impl Fn(&str) -> bool) -> Result<Self, ConfigError> {
        compat::apply(&mut args)?;
        refused::check(&args)?;
        let xattrmap = xattrmap::parse("--xattrmap", args.xattrmap.as_deref())?;
        let mut warnings = xattrmap.as_ref().map_or_else(Vec::new, xattrmap::warnings);
        if args.socket_path.is_none() && args.socket.is_some() {
            warnings.push("--socket is deprecated: use --socket-path");
        }
        if args.debug {
            warnings.push("-d is deprecated: use --log-level=debug");
        }
        if args.foreground {
            warnings.push("-f is deprecated and has no effect: daxfsd never daemonizes");
        }
        let transport = transport(&mut args)?;
        let dax = dax_config(&args, given)?;
        let translate = translate::parse(&args.translate_uid, &args.translate_gid)?;
        let root = rustix::process::geteuid().is_root();
        let modcaps = modcaps::parse(args.modcaps.as_deref(), args.inode_file_handles, root)?;
        let user_ns = userns::parse(&args.uid_map, &args.gid_map, args.sandbox, root)?;
        let shared_dir = args.shared_dir.ok_or(ConfigError::NoSharedDir)?;
        let switches = Switches {
            writeback: args.writeback,
            readdirplus: !args.no_readdirplus && args.cache != CachePolicy::Never,
            allow_direct_io: args.allow_direct_io,
            preserve_noatime: args.preserve_noatime,
            killpriv_v2: args.killpriv_v2,
            allow_mmap: args.allow_mmap,
            announce_submounts: !args.no_announce_submounts,
        };
        let min = crate::process::rlimit::MIN_NOFILE;
        if let Some(given) = args.rlimit_nofile.filter(|&n| n != 0 && n < min) {
            return Err(ConfigError::RlimitTooLow { given, min });
        }
        Ok(Self {
            transport,
            shared_dir,
            tag: args.tag,
            cache: args.cache,
            switches,
            num_request_queues: args.num_request_queues,
            thread_pool_size: args.thread_pool_size,
            queue_size: args.queue_size,
            log_level: if args.debug {
                "debug".to_owned()
            } else {
                args.log_level
            },
            syslog: args.syslog,
            readonly: args.readonly,
            xattr: args.xattr || xattrmap.is_some(),
            xattrmap,
            dax,
            metrics_file: args.metrics_file,
            persist: args.persist,
            sandbox: args.sandbox,
            seccomp: args.seccomp,
            inode_file_handles: args.inode_file_handles,
            rlimit_nofile: args.rlimit_nofile,
            warnings,
            translate,
            modcaps,
            user_ns,
        })
    }

    /// The sandbox mode: `--sandbox`, or the default for this user; with
    /// `--uid-map`/`--gid-map` (only accepted unprivileged) `namespace`,
    /// which they need, although daxfsd's unprivileged default is `none`.
    pub fn sandbox_mode(&self) -> SandboxMode {
        match self.sandbox {
            Some(mode) => mode,
            None if !self.user_ns.is_empty() => SandboxMode::Namespace,
            None => SandboxMode::default_for_euid(),
        }
    }

    /// The per-inode DAX policy the filesystem applies (the default when
    /// there is no window: no guest can negotiate inode DAX then).
    pub fn inode_dax(&self) -> InodeDaxPolicy {
        self.dax
            .as_ref()
            .map_or_else(InodeDaxPolicy::default, |dax| dax.inode_dax)
    }
}

/// The transport: `--mount-point`, `--fd`, or a socket path
/// (`--socket-path`, else the deprecated `--socket`) with its group.
fn transport(args: &mut Args) -> Result<Transport, ConfigError> {
    if let Some(mount_point) = args.mount_point.take() {
        return Ok(Transport::FuseDev { mount_point });
    }
    if let Some(fd) = args.fd {
        return Ok(Transport::VhostUser(Listen::Fd(fd)));
    }
    let path = args
        .socket_path
        .take()
        .or_else(|| args.socket.take())
        .ok_or(ConfigError::NoTransport)?;
    let group = match args.socket_group.take() {
        Some(name) => {
            let gid = group::gid_of(&name)?;
            Some((name, gid))
        }
        None => None,
    };
    Ok(Transport::VhostUser(Listen::Path { path, group }))
}

/// The DAX window, and the refusal of its flags without one.
fn dax_config(args: &Args, given: impl Fn(&str) -> bool) -> Result<Option<DaxConfig>, ConfigError> {
    if args.cache_size != 0 {
        return Ok(Some(DaxConfig {
            window_size: args.cache_size,
            protocol: args.dax_protocol,
            trace: args.dax_trace.clone(),
            inode_dax: args.inode_dax,
        }));
    }
    let window_only = [
        (
            args.dax_trace.is_some(),
            "--dax-trace",
            "traces the DAX window",
        ),
        (
            given("dax_protocol"),
            "--dax-protocol",
            "chooses how the frontend maps the DAX window",
        ),
        (
            given("inode_dax"),
            "--inode-dax",
            "chooses which files use the DAX window",
        ),
    ];
    match window_only.iter().find(|(set, ..)| *set) {
        Some(&(_, flag, purpose)) => Err(ConfigError::NeedsWindow { flag, purpose }),
        None => Ok(None),
    }
}

/// Parses a size with an optional K/M/G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 10),
        Some((i, 'm' | 'M')) => (&t[..i], 20),
        Some((i, 'g' | 'G')) => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size (a number with an optional K, M or G suffix)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Parses `--inode-dax`: `never`, `always` or `min-size=SIZE`.
pub fn parse_inode_dax(s: &str) -> Result<InodeDaxPolicy, String> {
    match s {
        "never" => Ok(InodeDaxPolicy::Never),
        "always" => Ok(InodeDaxPolicy::Always),
        _ => match s.strip_prefix("min-size=") {
            Some(size) => parse_size(size).map(InodeDaxPolicy::MinSize),
            None => Err(format!("'{s}' is not never, always or min-size=SIZE")),
        },
    }
}

#[cfg(test)]
mod tests {
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
            (&["--migration-mode=find-paths"][..], "--migration-mode"),
            (&["--migration-on-error=abort"], "--migration-on-error"),
            (
                &["--migration-verify-handles"],
                "--migration-verify-handles",
            ),
            (&["--migration-confirm-paths"], "--migration-confirm-paths"),
            (&["--posix-acl"], "--posix-acl"),
            (&["--posix-acl=auto"], "--posix-acl"),
            (&["-o", "posix_acl"], "posix_acl"),
            (&["--security-label=always"], "--security-label"),
            (&["-o", "flock"], "-o flock"),
        ] {
            let err = refusal(extra);
            assert!(err.contains(named), "{extra:?}: {err}");
        }
        for accepted in [
            &["--posix-acl=never"][..],
            &[
                "--security-label=never",
                "-o",
                "no_posix_acl,no_security_label",
            ],
            &["--no-announce-submounts", "--announce-submounts"],
            &["-o", "announce_submounts"],
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
        // virtiofsd refuses translation with ACLs; daxfsd refuses ACLs.
        let err = refusal(&["--translate-uid=map:0:1000:1", "--posix-acl=auto"]);
        assert!(err.contains("--posix-acl"), "{err}");
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
        assert!(
            config_of(&["--no-announce-submounts", "-o", "announce_submounts"]).announce_submounts
        );
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
    fn capabilities_are_json_without_migration() {
        let json = capabilities_json();
        assert!(json.contains("\"type\": \"fs\""), "{json}");
        assert!(json.contains("\"separate-options\""), "{json}");
        assert!(!json.contains("migrate"), "{json}");
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
}
