//! The capabilities the daemon keeps.
//!
//! As root the daemon keeps exactly what passthrough needs to act for any
//! guest user, like virtiofsd's default set:
//!
//! | capability | why |
//! | --- | --- |
//! | `CHOWN` | SETATTR uid/gid; giving created files the caller's owner |
//! | `DAC_OVERRIDE` | opening and searching files whatever their mode (the guest kernel already checked its caller's permissions) |
//! | `FOWNER` | chmod, utimes, xattrs and `O_NOATIME` on files the daemon does not own |
//! | `FSETID` | chmod keeps set-group-ID when the group is not the daemon's; writes do not strip the bits the guest manages itself |
//! | `SETUID`, `SETGID` | `setfsuid`/`setfsgid` to create files as the caller |
//! | `MKNOD` | MKNOD of device nodes by the guest's root |
//! | `SETFCAP` | setting `security.capability` (file capabilities) with `--xattr` |
//! | `DAC_READ_SEARCH` | `open_by_handle_at`, unless `--inode-file-handles=never` |
//! | what `--modcaps` adds (`+NAME`) | the operator's choice; `-NAME` removes any of the above but `DAC_READ_SEARCH` while file handles are used |
//!
//! `--modcaps` changes the first eight as virtiofsd's does ([`ModCaps`]):
//! `+NAME` adds a capability, `-NAME` removes one (the last mention wins);
//! `DAC_READ_SEARCH` is added after, and cannot be removed while file
//! handles are used (the configuration refuses that). A capability added
//! that the process was not given (not in its permitted set) stops the
//! start; the default ones missing are left out quietly, as in containers
//! that withhold them.
//!
//! Everything else goes, from the effective, permitted, inheritable and
//! ambient sets and from the bounding set, so that nothing can regain it
//! (no `CAP_SYS_ADMIN` to undo the mounts, no `CAP_SYS_PTRACE` or
//! `CAP_SYS_CHROOT` to leave the sandbox, unless `--modcaps` adds them). Not
//! root (then in a user namespace with `--sandbox namespace`), the daemon
//! keeps nothing: it acts as its own user (and `--modcaps` may only
//! remove).
//!
//! "Root" is uid 0 of the daemon's own user namespace: started
//! unprivileged with a `--uid-map` that maps namespace uid 0, the daemon is
//! root there and keeps the same set, whose capabilities the kernel grants
//! only over that namespace, that is over files whose owner and group are
//! mapped into it (and `open_by_handle_at` needs `CAP_DAC_READ_SEARCH` of
//! the host, so `--inode-file-handles=prefer` falls back to descriptors).
//!
//! Capabilities belong to threads: this runs before the daemon starts any.

use rustix::thread::{CapabilitySet, CapabilitySets};

use super::{step, SandboxError};

/// What the daemon keeps as root.
pub const DAEMON_CAPS: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::FSETID)
    .union(CapabilitySet::SETUID)
    .union(CapabilitySet::SETGID)
    .union(CapabilitySet::MKNOD)
    .union(CapabilitySet::SETFCAP);

/// `--modcaps`: capabilities added to and removed from [`DAEMON_CAPS`]. A
/// capability is in at most one of the two sets: the last mention wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModCaps {
    /// Kept besides [`DAEMON_CAPS`] (`+NAME`).
    pub add: CapabilitySet,
    /// Dropped from [`DAEMON_CAPS`] (`-NAME`).
    pub remove: CapabilitySet,
}

impl ModCaps {
    /// No change (no `--modcaps`).
    pub const NONE: Self = Self {
        add: CapabilitySet::empty(),
        remove: CapabilitySet::empty(),
    };

    /// `+cap`: keep it, whatever came before.
    pub fn add(&mut self, cap: CapabilitySet) {
        self.add |= cap;
        self.remove -= cap;
    }

    /// `-cap`: drop it, whatever came before.
    pub fn remove(&mut self, cap: CapabilitySet) {
        self.remove |= cap;
        self.add -= cap;
    }
}

impl Default for ModCaps {
    fn default() -> Self {
        Self::NONE
    }
}

/// What the daemon keeps as root: [`DAEMON_CAPS`] changed by `modcaps`,
/// and `CAP_DAC_READ_SEARCH`, which `open_by_handle_at` needs, when inodes
/// may be referenced by file handles (`--inode-file-handles` other than
/// never).
pub fn daemon_caps(file_handles: bool, modcaps: ModCaps) -> CapabilitySet {
    let kept = (DAEMON_CAPS | modcaps.add) - modcaps.remove;
    if file_handles {
        kept | CapabilitySet::DAC_READ_SEARCH
    } else {
        kept
    }
}

/// The names of `caps` as libcap-ng spells them (`sys_admin, mknod`).
pub fn names(caps: CapabilitySet) -> String {
    let names: Vec<String> = caps
        .iter_names()
        .map(|(name, _)| name.to_lowercase())
        .collect();
    names.join(", ")
}

/// What the supervisor keeps as root: writing the metrics file and removing
/// the socket file wherever the operator put them.
pub const SUPERVISOR_CAPS: CapabilitySet = CapabilitySet::DAC_OVERRIDE;

/// Reduces the calling thread's capabilities to `keep` (nothing when not
/// root in the daemon's user namespace), clearing the bounding and ambient
/// sets of everything else. Those of `required` (the ones `--modcaps` adds)
/// the thread must end up with: if it was not given one, nothing changes
/// and the error names it.
pub fn restrict_to(keep: CapabilitySet, required: CapabilitySet) -> Result<(), SandboxError> {
    let current =
        rustix::thread::capabilities(None).map_err(step("reading the capability sets"))?;
    let keep = if rustix::process::geteuid().is_root() {
        keep
    } else {
        CapabilitySet::empty()
    };
    let missing = required - (keep & current.permitted);
    if !missing.is_empty() {
        return Err(SandboxError::NotPermitted(names(missing)));
    }
    if current.permitted.is_empty() && current.effective.is_empty() {
        return Ok(());
    }
    // The bounding set first, while CAP_SETPCAP is still effective. Numbers
    // the kernel does not know fail with EINVAL, which ends the walk.
    if current.effective.contains(CapabilitySet::SETPCAP) {
        for bit in 0..64 {
            let cap = CapabilitySet::from_bits_retain(1 << bit);
            if keep.contains(cap) {
                continue;
            }
            match rustix::thread::remove_capability_from_bounding_set(cap) {
                Ok(()) => {}
                Err(rustix::io::Errno::INVAL) => break,
                Err(e) => return Err(step("dropping from the bounding set")(e)),
            }
        }
    }
    rustix::thread::clear_ambient_capability_set().map_err(step("clearing the ambient set"))?;
    let keep = keep & current.permitted;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: keep,
            permitted: keep,
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(step("capset"))
}

/// The effective set of the calling thread, for the start-up log.
pub fn effective() -> CapabilitySet {
    rustix::thread::capabilities(None)
        .map(|c| c.effective)
        .unwrap_or(CapabilitySet::empty())
}
