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
//!
//! Once POSIX ACLs are agreed the guest leaves its umask to the daemon
//! (DONT_MASK), and creation runs under the caller's umask too
//! ([`ThreadUmask`]), as virtiofsd does: the host kernel then applies it
//! exactly where Linux would, only when the parent has no default ACL. The
//! umask belongs to the process's filesystem context, shared by every
//! thread, so a worker first takes a context of its own
//! (`unshare(CLONE_FS)`, once per thread) and sets the umask only there.

use std::cell::Cell;

use rustix::fs::Mode;
use rustix::thread::UnshareFlags;

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

thread_local! {
    /// Whether this thread has its own filesystem context (umask, cwd,
    /// root), unshared from the other threads'.
    static OWN_FS_CONTEXT: Cell<bool> = const { Cell::new(false) };
}

/// Gives the calling thread a filesystem context of its own (once), so
/// that a umask set on it does not reach the other workers.
fn own_fs_context() -> Result<(), Errno> {
    if OWN_FS_CONTEXT.get() {
        return Ok(());
    }
    // SAFETY: CLONE_FS copies this thread's cwd, root and umask into a
    // context of its own; no descriptor, memory or credential changes, so
    // nothing the process holds is invalidated. The copy is taken after
    // the sandbox set the root and cwd, so it is the same view of the
    // filesystem. (unshare_unsafe is unsafe for CLONE_FILES and friends,
    // which are not asked for.)
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS) }?;
    OWN_FS_CONTEXT.set(true);
    Ok(())
}

/// The caller's umask on this thread while the guard lives.
#[derive(Debug)]
#[must_use = "the umask applies only while the guard lives"]
pub(super) struct ThreadUmask {
    /// The umask to restore.
    previous: Mode,
}

impl ThreadUmask {
    /// Sets `umask` (its permission bits) on this thread's own filesystem
    /// context.
    pub fn set(umask: u32) -> Result<Self, Errno> {
        own_fs_context()?;
        let previous = rustix::process::umask(Mode::from_raw_mode(umask & 0o777));
        Ok(Self { previous })
    }
}

impl Drop for ThreadUmask {
    fn drop(&mut self) {
        rustix::process::umask(self.previous);
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
    fn a_thread_umask_stays_on_its_thread() {
        let read_umask = || {
            let seen = rustix::process::umask(Mode::empty());
            rustix::process::umask(seen);
            seen
        };
        let process = read_umask();
        let (set_tx, set_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            let guard = ThreadUmask::set(0o7077).expect("umask");
            set_tx.send(read_umask()).unwrap();
            done_rx.recv().unwrap();
            drop(guard);
            read_umask()
        });
        // Only the permission bits, and only on the worker's thread.
        assert_eq!(set_rx.recv().unwrap(), Mode::from_raw_mode(0o077));
        assert_eq!(read_umask(), process);
        done_tx.send(()).unwrap();
        assert_eq!(worker.join().unwrap(), process);
    }

    #[test]
    fn the_invalid_id_is_refused_when_switching() {
        assert_eq!(
            CallerCreds::switch(ctx(u32::MAX, 0), true).err(),
            Some(Errno::EPERM)
        );
    }
}
