//! The configuration room: the command line ([`cli`], clap), the parsers
//! of its values, and [`Config`], built once from it and checked as a
//! whole. Everything the daemon is told comes through here; the rest of the
//! daemon reads the [`Config`], never the command line.

pub mod cli;
pub mod compat;
pub mod group;
pub mod id;
pub mod migration;
pub mod modcaps;
pub mod translate;
pub mod userns;
pub mod xattrmap;

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, FromArgMatches};

use self::cli::{Args, NegotiationMode};
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
    /// Migration flags that do not go together (the message names them).
    #[error(transparent)]
    Migration(#[from] migration::PathCheckWithHandles),
    /// `--socket-group` names no group.
    #[error(transparent)]
    Group(#[from] group::GroupError),
    /// A `--translate-uid`/`--translate-gid` value (the message names it).
    #[error(transparent)]
    Translate(#[from] translate::TranslateError),
    /// Id translation with POSIX ACLs.
    #[error(transparent)]
    TranslateWithAcl(#[from] translate::WithPosixAcl),
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
    /// When POSIX ACLs are negotiated (`--posix-acl`, `-o posix_acl`).
    pub posix_acl: NegotiationMode,
    /// When security labels are negotiated (`--security-label`, `-o
    /// security_label`).
    pub security_label: NegotiationMode,
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
    /// `--migration-*`: how a live migration carries the guest's session.
    pub migration: crate::migration::MigrationConfig,
}

/// The features `--print-capabilities` lists: only what daxfsd has.
/// `migrate-precopy`: the device state travels with QEMU's precopy
/// migration (`--migration-*`); the ACL and label negotiation modes
/// (`--posix-acl=`, `--security-label=` take never, auto, always);
/// `separate-options`: it takes `--shared-dir`, `--cache`, ... as separate
/// flags.
pub const CAPABILITIES: &[&str] = &[
    "migrate-precopy",
    "posix-acl-negotiation-mode",
    "security-label-negotiation-mode",
    "separate-options",
];

/// The `--print-capabilities` output (vhost-user.json's format).
pub fn capabilities_json() -> String {
    let features: Vec<String> = CAPABILITIES.iter().map(|f| format!("\"{f}\"")).collect();
    format!(
        "{{\n  \"type\": \"fs\",\n  \"features\": [\n    {}\n  ]\n}}",
        features.join(",\n    ")
    )
}

impl Config {
    /// Whether the daemon takes and opens file handles at all (the
    /// sandbox then lets it: the two system calls in the seccomp list,
    /// CAP_DAC_READ_SEARCH kept): for its inodes (`--inode-file-handles`
    /// other than never) or for a migration that carries or checks them.
    pub fn file_handle_calls(&self) -> bool {
        use crate::fs::passthrough::InodeFileHandles;
        use crate::migration::MigrationMode;
        self.inode_file_handles != InodeFileHandles::Never
            || self.migration.mode == MigrationMode::FileHandles
            || self.migration.verify_handles
    }

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
        let migration = migration::parse(&args)?;
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
        let posix_acl = args.posix_acl.unwrap_or_default();
        let security_label = args.security_label.unwrap_or_default();
        let translating = !(args.translate_uid.is_empty() && args.translate_gid.is_empty());
        if posix_acl != NegotiationMode::Never && translating {
            let mode = posix_acl.name();
            return Err(translate::WithPosixAcl { mode }.into());
        }
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
            posix_acl,
            security_label,
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
            // ACLs and labels are extended attributes (as virtiofsd), and
            // so are the names --xattrmap maps.
            xattr: args.xattr
                || xattrmap.is_some()
                || posix_acl != NegotiationMode::Never
                || security_label != NegotiationMode::Never,
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
            migration,
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
mod tests;
