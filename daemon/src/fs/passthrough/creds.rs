//! Running a creation operation as the guest caller.
//!
//! MKNOD, MKDIR, SYMLINK, CREATE and LINK switch the worker thread's
//! filesystem uid/gid to the caller's, so the kernel checks the caller's
//! permissions on the parent directory and new inodes are owned by the
//! caller (group inherited from a setgid parent as usual).
//!
//! `setfsuid`/`setfsgid` as raw system calls change only the calling thread
//! (unlike glibc's `setuid`, which broadcasts to every thread), and the
//! workers that call us are long-lived threads, one per queue, so the switch
//! is scoped with an RAII guard that restores the previous ids on every path
//! out. While fsuid is non-zero the kernel masks the filesystem capabilities
//! (CAP_CHOWN, CAP_DAC_*, CAP_FOWNER, CAP_FSETID, CAP_MKNOD) out of the
//! effective set, and raises them again when fsuid returns to 0, so a
//! non-root guest caller cannot make device nodes or bypass modes.
//!
//! Supplementary groups are not switched: FUSE does not carry them (without
//! CREATE_SUPP_GROUP), and the guest has already checked permissions itself.
//!
//! Only a root daemon can switch (and only it needs to: an unprivileged
//! daemon creates everything as itself whatever it does). Root includes
//! uid 0 of the daemon's own user namespace (`--uid-map`): the ids are
//! then the namespace's, which the kernel maps to the host's, and a caller
//! whose id is not mapped cannot be switched to (EPERM).

use crate::errno::Errno;

use super::Context;

/// Restores the thread's previous fsuid/fsgid when dropped.
#[derive(Debug)]
#[must_use = "the caller's credentials apply only while the guard lives"]
pub(super) struct CallerCreds {
    /// The fsuid/fsgid to restore, or `None` if nothing was switched.
    saved: Option<(u32, u32)>,
}

/// `setfsuid(2)` on the calling thread; returns the previous fsuid. An
/// invalid id (`u32::MAX`) changes nothing and returns the current one.
fn set_fsuid(uid: u32) -> u32 {
    // SAFETY: setfsuid takes one integer, touches no memory of ours, and
    // changes only this thread's credentials; it cannot fail in a way that
    // breaks memory safety (its return value is the previous fsuid).
    let prev = unsafe { libc::syscall(libc::SYS_setfsuid, libc::c_long::from(uid)) };
    prev as u32
}

/// `setfsgid(2)` on the calling thread; as [`set_fsuid`].
fn set_fsgid(gid: u32) -> u32 {
    // SAFETY: as in `set_fsuid`: one integer argument, thread-local effect.
    let prev = unsafe { libc::syscall(libc::SYS_setfsgid, libc::c_long::from(gid)) };
    prev as u32
}

/// The thread's current fsuid (a no-op switch reports it).
fn current_fsuid() -> u32 {
    set_fsuid(u32::MAX)
}

/// The thread's current fsgid.
fn current_fsgid() -> u32 {
    set_fsgid(u32::MAX)
}

impl CallerCreds {
    /// Switches to `ctx`'s uid/gid if `enabled` (the daemon is root) and they
    /// differ from the current ones. EPERM if the kernel refuses.
    pub fn switch(ctx: Context, enabled: bool) -> Result<Self, Errno> {
        if !enabled || ctx.uid == u32::MAX || ctx.gid == u32::MAX {
            // u32::MAX is not an id (it means "unchanged" to the kernel):
            // with it we would silently keep root's identity, so refuse.
            if enabled {
                return Err(Errno::EPERM);
            }
            return Ok(Self { saved: None });
        }
        let (cur_uid, cur_gid) = (current_fsuid(), current_fsgid());
        if (cur_uid, cur_gid) == (ctx.uid, ctx.gid) {
            return Ok(Self { saved: None });
        }
        // Group first: once fsuid is non-root the thread would still be
        // allowed to change fsgid (CAP_SETGID is not a filesystem
        // capability), but doing it first keeps the failure path simple.
        set_fsgid(ctx.gid);
        if current_fsgid() != ctx.gid {
            set_fsgid(cur_gid);
            return Err(Errno::EPERM);
        }
        set_fsuid(ctx.uid);
        if current_fsuid() != ctx.uid {
            set_fsuid(cur_uid);
            set_fsgid(cur_gid);
            return Err(Errno::EPERM);
        }
        Ok(Self {
            saved: Some((cur_uid, cur_gid)),
        })
    }
}

impl Drop for CallerCreds {
    fn drop(&mut self) {
        if let Some((uid, gid)) = self.saved {
            // uid first: returning fsuid to 0 restores the filesystem
            // capabilities before anything else runs on this thread.
            set_fsuid(uid);
            set_fsgid(gid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(uid: u32, gid: u32) -> Context {
        Context { uid, gid, pid: 1 }
    }

    #[test]
    fn switch_is_scoped_to_the_guard() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let before = (current_fsuid(), current_fsgid());
        {
            let _guard = CallerCreds::switch(ctx(1234, 5678), true).expect("switch");
            assert_eq!((current_fsuid(), current_fsgid()), (1234, 5678));
        }
        assert_eq!((current_fsuid(), current_fsgid()), before);
    }

    #[test]
    fn disabled_switch_changes_nothing() {
        let before = (current_fsuid(), current_fsgid());
        let _guard = CallerCreds::switch(ctx(1234, 5678), false).expect("no-op");
        assert_eq!((current_fsuid(), current_fsgid()), before);
    }

    #[test]
    fn the_invalid_id_is_refused_when_switching() {
        assert_eq!(
            CallerCreds::switch(ctx(u32::MAX, 0), true).err(),
            Some(Errno::EPERM)
        );
    }
}
