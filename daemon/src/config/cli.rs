//! Command line, with virtiofsd-compatible names for the common flags.
//!
//! Only clap's view: the flags and what one flag alone accepts. Flags
//! that need each other are checked by [`super::Config`].

use std::path::PathBuf;

use clap::Parser;

use super::{parse_inode_dax, parse_size};
use crate::dax::DaxProtocol;
use crate::fs::passthrough::{CachePolicy, InodeDaxPolicy, InodeFileHandles};
use crate::process::sandbox::{SandboxMode, SeccompMode};

/// daxfsd: a vhost-user-fs daemon that shares a host directory with a VM
/// over virtio-fs and serves the DAX window.
///
/// Start it on a socket, then point QEMU at the same socket:
///   -chardev socket,id=fs0,path=SOCKET
///   -device vhost-user-fs-pci,chardev=fs0,tag=TAG
/// (guest RAM must be shared: -object memory-backend-memfd,id=mem,size=...,share=on
///  -numa node,memdev=mem). In the guest: mount -t virtiofs TAG /mnt
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
    /// vhost-user socket path to listen on (created; an old socket file is replaced).
    #[arg(long, value_name = "PATH", required_unless_present = "mount_point")]
    pub socket_path: Option<PathBuf>,

    /// Instead of a vhost-user socket, mount the share on this host
    /// directory over /dev/fuse (needs root) and serve the host kernel's FUSE
    /// client with the same request path; SIGTERM/SIGINT unmount it. For
    /// testing (pjdfstest, debugging) without a VM. See docs/architecture.md.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with_all = ["socket_path", "cache_size", "persist", "metrics_file"]
    )]
    pub mount_point: Option<PathBuf>,

    /// Host directory to share with the guest.
    #[arg(long, value_name = "DIR")]
    pub shared_dir: PathBuf,

    /// Filesystem tag the guest mounts (at most 36 bytes).
    #[arg(long, default_value = "daxfs", value_parser = parse_tag)]
    pub tag: String,

    /// Guest caching: never (no caching, direct I/O), auto (1 s timeouts,
    /// revalidate on open), always (long timeouts, keep the page cache).
    #[arg(long, value_enum, default_value_t = CachePolicy::Auto)]
    pub cache: CachePolicy,

    /// Number of request queues offered to the guest; each is served by its
    /// own worker thread so queues progress in parallel.
    #[arg(long, alias = "thread-pool-size", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=63))]
    pub num_request_queues: u16,

    /// Size of each virtqueue (a power of two).
    #[arg(long, default_value_t = 1024, value_parser = parse_queue_size)]
    pub queue_size: u16,

    /// Log level or tracing filter (error, warn, info, debug, trace, or a
    /// directive such as "daxfsd=debug"). RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Refuse every modifying operation with EROFS.
    #[arg(long)]
    pub readonly: bool,

    /// Serve extended attributes (getxattr, setxattr, listxattr, removexattr).
    #[arg(long)]
    pub xattr: bool,

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
    /// containers that already set up namespaces) or none. Default:
    /// namespace as root, none otherwise. See docs/operating.md.
    #[arg(long, value_enum, value_name = "MODE")]
    pub sandbox: Option<SandboxMode>,

    /// What a system call outside the daemon's seccomp allow-list does:
    /// kill the daemon, log it (kernel log / audit) and allow it, or none
    /// (no filter).
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

    #[test]
    fn bad_flags_name_the_flag() {
        let err = Args::try_parse_from([
            "daxfsd",
            "--socket-path",
            "s",
            "--shared-dir",
            "d",
            "--cache-size",
            "3X",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--cache-size"), "{err}");
        let err = Args::try_parse_from([
            "daxfsd",
            "--socket-path",
            "s",
            "--shared-dir",
            "d",
            "--tag",
            &"x".repeat(37),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--tag"), "{err}");
        let err = Args::try_parse_from(["daxfsd", "--shared-dir", "d"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--socket-path"), "{err}");
    }

    #[test]
    fn mount_point_replaces_the_socket() {
        let args =
            Args::try_parse_from(["daxfsd", "--shared-dir", "d", "--mount-point", "m"]).unwrap();
        assert_eq!(args.mount_point, Some(PathBuf::from("m")));
        assert_eq!(args.socket_path, None);
        for extra in [
            &["--socket-path", "s"][..],
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
