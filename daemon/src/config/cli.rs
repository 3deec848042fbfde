//! Command line: virtiofsd 1.14's flags with virtiofsd's meaning, and
//! daxfsd's own (the DAX window, request queues, ...) as extensions.
//!
//! Only clap's view: the flags and what one flag alone accepts. The `-o`
//! list is applied by [`super::compat`]; flags that need each other, and
//! the values daxfsd cannot honour, are checked by [`super::Config`].

use std::path::PathBuf;

use clap::{ArgAction, Parser};

use super::{parse_inode_dax, parse_size};
use crate::dax::DaxProtocol;
use crate::fs::passthrough::{CachePolicy, InodeDaxPolicy, InodeFileHandles};
use crate::migration::{MigrationMode, OnError};
use crate::process::sandbox::{SandboxMode, SeccompMode};

/// `--posix-acl` and `--security-label`: when the feature is negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NegotiationMode {
    /// Never offered (the default).
    #[default]
    Never,
    /// Offered if the guest offers it.
    Auto,
    /// Required.
    Always,
}

impl NegotiationMode {
    /// The value as spelled on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::Auto => "auto",
            Self::Always => "always",
        }
    }
}

/// daxfsd: a vhost-user-fs daemon that shares a host directory with a VM
/// over virtio-fs and serves the DAX window.
///
/// Start it on a socket, then point QEMU at the same socket:
///   -chardev socket,id=fs0,path=SOCKET
///   -device vhost-user-fs-pci,chardev=fs0,tag=TAG
/// (guest RAM must be shared: -object memory-backend-memfd,id=mem,size=...,share=on
///  -numa node,memdev=mem). In the guest: mount -t virtiofs TAG /mnt
/// It takes virtiofsd's flags (docs/operating.md has the table).
#[derive(Debug, Parser)]
#[command(
    name = "daxfsd",
    version,
    about,
    long_about,
    verbatim_doc_comment,
    args_override_self = true
)]
pub struct Args {
    /// vhost-user socket path to listen on (created, mode 0700; an old
    /// socket file is replaced). One of --socket-path, --fd or --mount-point
    /// is required.
    #[arg(long, value_name = "PATH")]
    pub socket_path: Option<PathBuf>,

    /// Deprecated spelling of --socket-path (--socket-path wins if both
    /// are given).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Serve the listening Unix socket inherited as descriptor FD instead
    /// of creating one (how libvirt starts the daemon).
    #[arg(
        long,
        value_name = "FD",
        value_parser = clap::value_parser!(i32).range(0..),
        conflicts_with_all = ["socket_path", "socket", "mount_point"]
    )]
    pub fd: Option<i32>,

    /// Make the socket group-owned by GROUP, mode 0770 (so that a QEMU
    /// running as a member of GROUP can connect).
    #[arg(
        long,
        value_name = "GROUP",
        conflicts_with_all = ["fd", "print_capabilities", "mount_point"]
    )]
    pub socket_group: Option<String>,

    /// Print the vhost-user backend capabilities as JSON
    /// ({"type": "fs", "features": [...]}) and exit; other flags are ignored.
    #[arg(long)]
    pub print_capabilities: bool,

    /// Instead of a vhost-user socket, mount the share on this host
    /// directory over /dev/fuse (needs root) and serve the host kernel's FUSE
    /// client with the same request path; SIGTERM/SIGINT unmount it. For
    /// testing (pjdfstest, debugging) without a VM. See docs/architecture.md.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with_all = ["socket_path", "socket", "cache_size", "persist", "metrics_file"]
    )]
    pub mount_point: Option<PathBuf>,

    /// Host directory to share with the guest (or -o source=DIR).
    #[arg(long, value_name = "DIR")]
    pub shared_dir: Option<PathBuf>,

    /// Filesystem tag the guest mounts (at most 36 bytes).
    #[arg(long, default_value = "daxfs", value_parser = parse_tag)]
    pub tag: String,

    /// Guest caching: never (no caching, direct I/O, no READDIRPLUS), auto
    /// (1 s timeouts, revalidate on open), always (one-day timeouts, keep
    /// the page cache), metadata (one-day timeouts for names and
    /// attributes, file data not cached). Any case.
    #[arg(long, value_enum, ignore_case = true, default_value_t = CachePolicy::Auto)]
    pub cache: CachePolicy,

    /// With --cache=never or metadata, let the guest mmap files opened for
    /// direct I/O (FUSE_DIRECT_IO_ALLOW_MMAP).
    #[arg(long)]
    pub allow_mmap: bool,

    /// Offer the guest writeback caching (FUSE_WRITEBACK_CACHE).
    #[arg(long)]
    pub writeback: bool,

    /// Honour the guest's O_DIRECT (by default it is dropped and the host
    /// page cache is used).
    #[arg(long)]
    pub allow_direct_io: bool,

    /// Do not offer READDIRPLUS (it is never offered with --cache=never).
    #[arg(long)]
    pub no_readdirplus: bool,

    /// Keep the guest's O_NOATIME (by default it is dropped: opening a file
    /// the daemon does not own with it fails with EPERM).
    #[arg(long)]
    pub preserve_noatime: bool,

    /// Offer FUSE_HANDLE_KILLPRIV_V2: the daemon clears setuid/setgid bits
    /// on write, truncate and chown itself (default: not offered).
    #[arg(long, overrides_with = "no_killpriv_v2")]
    pub killpriv_v2: bool,

    /// Do not offer FUSE_HANDLE_KILLPRIV_V2 (the default; the last of the
    /// two flags wins).
    #[arg(long, overrides_with = "killpriv_v2")]
    pub no_killpriv_v2: bool,

    /// Announce the mount points inside the share (FUSE_ATTR_SUBMOUNT), so
    /// that the guest shows each filesystem mounted there as its own (the
    /// default; the last of the two flags wins).
    #[arg(long, overrides_with = "no_announce_submounts")]
    pub announce_submounts: bool,

    /// Do not announce submounts: a filesystem mounted inside the share
    /// shows in the guest as part of the share's filesystem.
    #[arg(long, overrides_with = "announce_submounts")]
    pub no_announce_submounts: bool,

    /// Number of worker threads serving the requests of each queue; 0: no
    /// pool, each queue's own thread serves its requests (the default).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub thread_pool_size: usize,

    /// Number of request queues offered to the guest; each is served by its
    /// own worker thread so queues progress in parallel.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=63))]
    pub num_request_queues: u16,

    /// Size of each virtqueue (a power of two).
    #[arg(long, default_value_t = 1024, value_parser = parse_queue_size)]
    pub queue_size: u16,

    /// Log level: error, warn, info, debug, trace or off (any case); or, as
    /// a daxfsd extension, a tracing filter directive containing '=' (such
    /// as "daxfsd=debug"). RUST_LOG overrides it.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,

    /// Log to syslog (facility user) instead of standard error.
    #[arg(long)]
    pub syslog: bool,

    /// Deprecated: --log-level=debug.
    #[arg(short = 'd')]
    pub debug: bool,

    /// Deprecated, no effect: daxfsd always stays in the foreground.
    #[arg(short = 'f')]
    pub foreground: bool,

    /// Options in the legacy virtiofsd syntax, comma-separated (repeatable):
    /// source=DIR, cache=auto|always|none|metadata,
    /// loglevel=debug|info|warn|err, sandbox=namespace|chroot, xattr,
    /// no_xattr, readdirplus, no_readdirplus, writeback, no_writeback,
    /// allow_direct_io, no_allow_direct_io, announce_submounts, killpriv_v2,
    /// no_killpriv_v2, posix_acl, no_posix_acl, security_label,
    /// no_security_label, no_posix_lock, no_flock, xattrmap=RULES (no comma
    /// in RULES). They override the flags.
    #[arg(short = 'o', value_name = "OPTIONS", action = ArgAction::Append)]
    pub compat_options: Vec<String>,

    /// Refuse every modifying operation with EROFS.
    #[arg(long)]
    pub readonly: bool,

    /// Serve extended attributes (getxattr, setxattr, listxattr, removexattr).
    #[arg(long)]
    pub xattr: bool,

    /// Enable support for POSIX ACLs (implies --xattr): never (the
    /// default), auto (if the guest offers them), always (the bare flag:
    /// the guest must offer them, or its INIT fails). Not with
    /// --translate-uid/--translate-gid.
    #[arg(long, value_enum, value_name = "MODE", num_args = 0..=1, require_equals = true, default_missing_value = "always")]
    pub posix_acl: Option<NegotiationMode>,

    /// Enable security label support (implies --xattr): the security
    /// context the guest sends with each new file is stored on it. never
    /// (the default), auto (if the guest offers it), always (the bare
    /// flag: required).
    #[arg(long, value_enum, value_name = "MODE", num_args = 0..=1, require_equals = true, default_missing_value = "always")]
    pub security_label: Option<NegotiationMode>,

    /// Map extended-attribute names between guest and host, as virtiofsd:
    /// rules :type:scope:key:prepend: (type prefix, ok, bad or unsupported;
    /// scope client, server or all) or one final :map:key:prepend:, the
    /// first character of each rule its separator; the first matching rule
    /// applies. E.g. :map::user.virtiofs.: keeps every guest attribute under
    /// user.virtiofs. on the host. Implies --xattr.
    #[arg(long, value_name = "RULES")]
    pub xattrmap: Option<String>,

    /// Capabilities the daemon keeps as root, changed: a colon-separated
    /// list of +NAME (add) and -NAME (remove), NAME as libcap-ng spells it
    /// (e.g. +sys_admin:-mknod). dac_read_search cannot be removed unless
    /// --inode-file-handles=never. Not root, only removals are accepted.
    #[arg(long, value_name = "LIST")]
    pub modcaps: Option<String>,

    /// Map host UIDs into the daemon's user namespace, repeatable:
    /// :namespace_uid:host_uid:count: (unprivileged, --sandbox namespace,
    /// which a map chooses when --sandbox is not given). The kernel does the
    /// mapping; newuidmap applies ranges beyond the daemon's own uid, as
    /// /etc/subuid allows. E.g. :0:1000:1: and :1:100000:65536:.
    #[arg(long, value_name = "MAP")]
    pub uid_map: Vec<String>,

    /// Map host GIDs into the daemon's user namespace, repeatable:
    /// :namespace_gid:host_gid:count:, as --uid-map (newgidmap,
    /// /etc/subgid). Without it the daemon's own gid maps to itself.
    #[arg(long, value_name = "MAP")]
    pub gid_map: Vec<String>,

    /// UID translation by the daemon, repeatable: guest:GUEST:HOST:COUNT,
    /// host:HOST:GUEST:COUNT, squash-guest:GUEST:HOST:COUNT,
    /// squash-host:HOST:GUEST:COUNT, forbid-guest:GUEST:COUNT or
    /// map:GUEST:HOST:COUNT (both ways). Unmapped ids stay as they are.
    #[arg(long, value_name = "MAP")]
    pub translate_uid: Vec<String>,

    /// GID translation by the daemon, repeatable; as --translate-uid.
    #[arg(long, value_name = "MAP")]
    pub translate_gid: Vec<String>,

    /// How a live migration represents the guest's inodes to the
    /// destination: find-paths (their paths in the shared directory) or
    /// file-handles (their file handles: the destination shares the very
    /// same filesystem and has CAP_DAC_READ_SEARCH). Ignored on the
    /// destination.
    #[arg(long, value_enum, default_value_t = MigrationMode::FindPaths)]
    pub migration_mode: MigrationMode,

    /// What the migration destination does with an inode it cannot open:
    /// abort (the migration fails, the guest runs on at the source) or
    /// guest-error (the migration completes, the guest gets EIO for that
    /// inode). Ignored on the source.
    #[arg(long, value_enum, default_value_t = OnError::Abort)]
    pub migration_on_error: OnError,

    /// With find-paths: the source sends each inode's file handle too, and
    /// the destination checks it opened the very same inode (source and
    /// destination share the same filesystem).
    #[arg(long)]
    pub migration_verify_handles: bool,

    /// With find-paths: at switch-over, check that each path taken when the
    /// migration started still leads to its inode, and find it again if
    /// not (third parties renaming in the shared directory during the
    /// migration).
    #[arg(long)]
    pub migration_confirm_paths: bool,

    /// Size of the DAX window (suffix K, M or G; a multiple of 2 MiB). The
    /// frontend learns it with GET_SHMEM_CONFIG; the guest then maps file
    /// ranges straight into it (mount -o dax=always). 0 or absent: no DAX.
    /// The frontend must support the vhost-user SHMEM protocol feature.
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_size)]
    pub cache_size: u64,

    /// With --cache-size, how the daemon asks the frontend to map the window:
    /// shmem (standard vhost-user SHMEM_MAP/SHMEM_UNMAP, window size reported
    /// with GET_SHMEM_CONFIG) or legacy (FS_MAP/FS_UNMAP on request ids 6/7,
    /// as alioth and Kata Dragonball speak; the frontend's window must be
    /// exactly --cache-size, and it must negotiate REPLY_ACK).
    #[arg(long, value_enum, default_value_t = DaxProtocol::Shmem)]
    pub dax_protocol: DaxProtocol,

    /// With --cache-size, append one JSON line per DAX event to this file:
    /// every SETUPMAPPING served, every REMOVEMAPPING range, every request
    /// sent to the VMM, repairs and resets (format in docs/operating.md,
    /// "Tracing the window"). For debugging and for replaying a guest's
    /// mapping behaviour in the test harness; costs one write per event.
    #[arg(long, value_name = "FILE", requires = "cache_size")]
    pub dax_trace: Option<PathBuf>,

    /// With --cache-size, which files a guest that mounts with `dax=inode`
    /// should access through the window: never, always, or
    /// min-size=SIZE (regular files of at least SIZE bytes, suffix K/M/G).
    /// Guests mounting with `dax=always` use it for every file regardless.
    #[arg(long, value_name = "POLICY", default_value = "always", value_parser = parse_inode_dax)]
    pub inode_dax: InodeDaxPolicy,

    /// Write the daemon's counters (DAX window occupancy, maps, unmaps,
    /// waits, conflicts, invalidations, thrash; requests) to this file once a
    /// second, in Prometheus text format. See docs/operating.md.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// Keep serving after the frontend disconnects (guest reset, VMM
    /// restart): every inode, handle and mapping of the old session is
    /// released and the next frontend starts fresh. Without it the daemon
    /// exits when the frontend goes, as virtiofsd does.
    #[arg(long)]
    pub persist: bool,

    /// How the daemon isolates itself: namespace (new mount, PID and network
    /// namespaces, the shared directory as `/`), chroot (root only; for
    /// containers that already set up namespaces) or none; any case.
    /// Default: namespace as root, none otherwise (namespace with --uid-map
    /// or --gid-map). See docs/operating.md.
    #[arg(long, value_enum, ignore_case = true, value_name = "MODE")]
    pub sandbox: Option<SandboxMode>,

    /// What a system call outside the daemon's seccomp allow-list does:
    /// kill the daemon, log it (kernel log / audit) and allow it, trap
    /// (SIGSYS to the thread, which kills the daemon and names the call in
    /// the kernel log) or none (no filter).
    #[arg(long, value_enum, value_name = "ACTION", default_value_t = SeccompMode::Kill)]
    pub seccomp: SeccompMode,

    /// How inodes are referenced: never (each keeps an O_PATH descriptor
    /// open), prefer (file handles where the filesystem makes them and the
    /// daemon may open them, CAP_DAC_READ_SEARCH; then descriptors beyond
    /// half of RLIMIT_NOFILE are closed and reopened by handle), fallback
    /// (deprecated name of prefer), mandatory (file handles, or no start).
    /// The `=` is required.
    #[arg(long, value_enum, value_name = "MODE", require_equals = true,
          default_value_t = InodeFileHandles::Prefer)]
    pub inode_file_handles: InodeFileHandles,

    /// Set RLIMIT_NOFILE (soft and hard) to N descriptors, at least 512;
    /// 0 leaves the limit alone. Default: raise the soft limit to
    /// min(1000000, /proc/sys/fs/nr_open), or to the hard limit.
    #[arg(long, value_name = "N")]
    pub rlimit_nofile: Option<u64>,
}

/// The levels `--log-level` takes (as virtiofsd, any case).
const LOG_LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// Parses `--log-level`: a level of [`LOG_LEVELS`] in any case (returned in
/// lower case), or a tracing directive containing `=` (a daxfsd extension,
/// checked by tracing when the logger starts).
pub fn parse_log_level(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    if LOG_LEVELS.contains(&lower.as_str()) {
        return Ok(lower);
    }
    if s.contains('=') {
        return tracing_subscriber::EnvFilter::try_new(s)
            .map(|_| s.to_owned())
            .map_err(|e| format!("'{s}' is not a tracing filter: {e}"));
    }
    Err(format!(
        "'{s}' is not a level ({}), nor a filter directive such as daxfsd=debug",
        LOG_LEVELS.join(", ")
    ))
}

fn parse_tag(tag: &str) -> Result<String, String> {
    if tag.is_empty() {
        return Err("the tag must not be empty".into());
    }
    if tag.len() > 36 {
        return Err(format!(
            "the tag is {} bytes; at most 36 fit the virtio-fs config",
            tag.len()
        ));
    }
    if tag.contains('\0') {
        return Err("the tag must not contain NUL".into());
    }
    Ok(tag.to_owned())
}

fn parse_queue_size(s: &str) -> Result<u16, String> {
    let n: u16 = s.parse().map_err(|e| format!("{e}"))?;
    if !(2..=32768).contains(&n) || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two between 2 and 32768"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, String> {
        Args::try_parse_from(
            ["daxfsd", "--socket-path", "s", "--shared-dir", "d"]
                .iter()
                .chain(extra),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn bad_flags_name_the_flag() {
        for (extra, flag) in [
            (&["--cache-size", "3X"][..], "--cache-size"),
            (&["--tag", &"x".repeat(37)], "--tag"),
            (&["--thread-pool-size=-1"], "--thread-pool-size"),
            (&["--log-level=verbose"], "--log-level"),
            (&["--posix-acl", "always"], "always"),
            (&["--fd=3"], "--fd"),
        ] {
            let err = parse(extra).unwrap_err();
            assert!(err.contains(flag), "{extra:?}: {err}");
        }
    }

    #[test]
    fn values_are_taken_as_virtiofsd_takes_them() {
        let args = parse(&["--cache=Metadata", "--sandbox=NONE", "--log-level=DEBUG"]).unwrap();
        assert_eq!(args.cache, CachePolicy::Metadata);
        assert_eq!(args.sandbox, Some(SandboxMode::None));
        assert_eq!(args.log_level, "debug");
        assert_eq!(
            parse(&["--thread-pool-size", "64"])
                .unwrap()
                .thread_pool_size,
            64
        );
        assert_eq!(parse(&[]).unwrap().thread_pool_size, 0);
        assert_eq!(
            parse(&["--posix-acl"]).unwrap().posix_acl,
            Some(NegotiationMode::Always)
        );
        assert_eq!(
            parse(&["--security-label=never"]).unwrap().security_label,
            Some(NegotiationMode::Never)
        );
        let last = parse(&["--killpriv-v2", "--no-killpriv-v2"]).unwrap();
        assert!(!last.killpriv_v2 && last.no_killpriv_v2);
        let last = parse(&["--no-killpriv-v2", "--killpriv-v2"]).unwrap();
        assert!(last.killpriv_v2 && !last.no_killpriv_v2);
        assert_eq!(
            parse(&["--log-level=daxfsd=trace"]).unwrap().log_level,
            "daxfsd=trace"
        );
        assert_eq!(
            parse(&["--seccomp=trap"]).unwrap().seccomp,
            SeccompMode::Trap
        );
    }

    #[test]
    fn mount_point_replaces_the_socket() {
        let args =
            Args::try_parse_from(["daxfsd", "--shared-dir", "d", "--mount-point", "m"]).unwrap();
        assert_eq!(args.mount_point, Some(PathBuf::from("m")));
        assert_eq!(args.socket_path, None);
        for extra in [
            &["--socket-path", "s"][..],
            &["--fd", "3"][..],
            &["--cache-size", "2M"][..],
            &["--persist"][..],
        ] {
            let err = Args::try_parse_from(
                ["daxfsd", "--shared-dir", "d", "--mount-point", "m"]
                    .iter()
                    .chain(extra),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("cannot be used with"), "{extra:?}: {err}");
        }
    }
}
