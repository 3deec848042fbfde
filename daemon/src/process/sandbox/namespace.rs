//! `--sandbox namespace`: new PID, mount and network namespaces, with the
//! shared directory as the root of the mount namespace.
//!
//! Before the fork (in the parent): `unshare(CLONE_NEWPID)`, so that the
//! child is PID 1 of a namespace that sees no other process. Not root: the
//! same call creates a user namespace first, whose ids are
//! - without `--uid-map`/`--gid-map`: only the daemon's own uid and gid,
//!   mapped to themselves (written by the process itself to
//!   `/proc/self/{setgroups,uid_map,gid_map}`), which gives the child the
//!   capabilities it needs for the mounts inside it and nothing over any
//!   other owner's files: it creates every file as itself;
//! - with them (virtiofsd's `:namespace_id:host_id:count:`, repeatable),
//!   the ranges given, written by a helper left outside the namespace,
//!   with `newuidmap`/`newgidmap` where the kernel does not let the
//!   daemon write them itself ([`super::userns`]). The daemon then takes
//!   uid and gid 0 of the namespace where mapped, and acts for the guest
//!   as a root daemon does (keeps the capabilities of [`super::caps`],
//!   creates as the caller with `setfsuid`): a guest id inside a range
//!   creates files owned by the host id it maps to, a guest id outside
//!   every range is refused (EPERM) at creation, and host owners outside
//!   every range show as the overflow id (65534). This is libvirt's
//!   session mode, e.g. `--uid-map=:0:1000:1: --uid-map=:1:100000:65536:`
//!   for a user 1000 with `1000:100000:65536` in `/etc/subuid`.
//!
//! In the child:
//! 1. `unshare(CLONE_NEWNS | CLONE_NEWNET)`: its own mount table (the
//!    supervisor keeps the host's) and no network at all;
//! 2. every mount becomes a slave (`MS_SLAVE | MS_REC`): nothing done here
//!    propagates back to the host;
//! 3. a fresh procfs of the new PID namespace is mounted on /proc, and its
//!    `/proc/self/fd` bind-mounted over /proc itself, then opened: the
//!    descriptor reaches the daemon's own descriptors and nothing above
//!    them (`..` of a bind mount's root stays there once detached);
//! 4. the shared directory is bind-mounted onto itself (recursively, so its
//!    submounts come along) to make it a mount point, and `pivot_root`
//!    makes it `/`; the old root is made a slave and lazily unmounted, so
//!    no path leads out of the shared directory any more.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::thread::UnshareFlags;

use super::userns::{self, UserNsMaps};
use super::{step, step_io, SandboxError};

/// In the parent, before the fork: the new PID namespace (and, not root,
/// the user namespace with `maps`) the child will start in.
pub fn unshare_before_fork(root: bool, maps: &UserNsMaps) -> Result<(), SandboxError> {
    let flags = if root {
        UnshareFlags::NEWPID
    } else {
        UnshareFlags::NEWUSER | UnshareFlags::NEWPID
    };
    let unshare = || {
        // SAFETY: CLONE_FILES is not among the flags, so no thread is left
        // with a descriptor table others do not share; and the process is
        // single-threaded (checked by the caller) as NEWUSER requires.
        unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(step("unshare(CLONE_NEWPID)"))
    };
    if root {
        return unshare();
    }
    if !maps.is_empty() {
        // The process is single-threaded (checked by the caller), as the
        // helper's fork needs.
        return userns::unshare_mapped(maps, unshare);
    }
    let uid = rustix::process::geteuid();
    let gid = rustix::process::getegid();
    unshare()?;
    // Only the daemon's own ids, mapped to themselves: files keep their
    // owners, and setgroups must be denied before an unprivileged process
    // may write gid_map.
    std::fs::write("/proc/self/setgroups", "deny")
        .map_err(step_io("writing /proc/self/setgroups"))?;
    std::fs::write("/proc/self/uid_map", format!("{0} {0} 1", uid.as_raw()))
        .map_err(step_io("writing /proc/self/uid_map"))?;
    std::fs::write("/proc/self/gid_map", format!("{0} {0} 1", gid.as_raw()))
        .map_err(step_io("writing /proc/self/gid_map"))?;
    Ok(())
}

/// In the child: the mount and network namespaces, /proc/self/fd, and the
/// shared directory as `/`. Returns the `/proc/self/fd` descriptor.
pub fn enter_in_child(shared_dir: &Path) -> Result<OwnedFd, SandboxError> {
    // SAFETY: no CLONE_FILES, and the child is single-threaded (the fork
    // copied only the forking thread).
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS | UnshareFlags::NEWNET) }
        .map_err(step("unshare(CLONE_NEWNS | CLONE_NEWNET)"))?;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .map_err(step("making every mount a slave"))?;
    rustix::mount::mount(
        "proc",
        "/proc",
        "proc",
        MountFlags::NODEV | MountFlags::NOEXEC | MountFlags::NOSUID | MountFlags::RELATIME,
        None,
    )
    .map_err(step("mounting a new /proc"))?;
    rustix::mount::mount_bind("/proc/self/fd", "/proc")
        .map_err(step("bind-mounting /proc/self/fd on /proc"))?;
    let proc_fd = rustix::fs::open(
        "/proc",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(step("opening /proc/self/fd"))?;

    let shared =
        std::fs::canonicalize(shared_dir).map_err(step_io("resolving the shared directory"))?;
    if shared == Path::new("/") {
        // Sharing the root: the mount namespace already has it as `/`.
        return Ok(proc_fd);
    }
    rustix::mount::mount_bind_recursive(&shared, &shared)
        .map_err(step("bind-mounting the shared directory onto itself"))?;
    let old_root = rustix::fs::open(
        "/",
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(step("opening the old root"))?;
    let new_root = rustix::fs::open(
        &shared,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(step("opening the shared directory"))?;
    rustix::process::fchdir(&new_root).map_err(step("entering the shared directory"))?;
    // pivot_root(".", "."): the old root ends up mounted on top of the new
    // one, where it is detached from below.
    rustix::process::pivot_root(".", ".").map_err(step("pivot_root"))?;
    rustix::process::fchdir(&old_root).map_err(step("entering the old root"))?;
    rustix::mount::mount_change(
        ".",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .map_err(step("making the old root a slave"))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).map_err(step("unmounting the old root"))?;
    rustix::process::chdir("/").map_err(step("chdir /"))?;
    Ok(proc_fd)
}
