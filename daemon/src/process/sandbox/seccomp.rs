//! The seccomp allow-list (`--seccomp kill|log|none`).
//!
//! Installed on every thread (TSYNC) once start-up is over, so everything
//! after it runs under the filter: the frontend-message thread, the queue
//! workers started per connection, the metrics writer, the signal thread.
//! The list holds what those really call, found by running the harness suite
//! and the real-guest tests (basic, DAX in both protocols) under
//! `strace -f` and `--seccomp log` (see docs/operating.md); each group says
//! who needs it. Start-up calls (mount, pivot_root, capset, bind, listen,
//! memfd_create of the window placeholder) happen before and are not in it.
//!
//! A call outside the list kills the whole process (`kill`,
//! `SECCOMP_RET_KILL_PROCESS`: a half-dead daemon with one worker gone
//! would hang the guest) or is allowed and logged by the kernel (`log`).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// What happens to a system call outside the allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SeccompMode {
    /// Kill the daemon (SIGSYS); its supervisor logs how to find the call.
    #[default]
    Kill,
    /// Allow it, and let the kernel log it (dmesg / audit: type=SECCOMP).
    Log,
    /// Send SIGSYS to the thread that made it (which, unhandled, ends the
    /// daemon with a core dump naming the call).
    Trap,
    /// No filter.
    None,
}

/// Why the filter could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter could not be built (an unknown architecture, a bad rule).
    #[error("cannot build the seccomp filter")]
    Build(#[source] seccompiler::BackendError),
    /// The kernel refused it.
    #[error("cannot install the seccomp filter")]
    Install(#[source] seccompiler::Error),
}

/// Every system call the daemon makes after start-up, without conditions.
/// Marked "(unseen)": not observed in the test runs, but a library takes
/// that path under conditions the tests do not create.
#[rustfmt::skip]
const ALLOWED: &[libc::c_long] = &[
    // Memory: the allocator (brk for the main arena, mremap when realloc
    // moves a large block: unseen), thread stacks, guest memory regions
    // mapped on SET_MEM_TABLE / ADD_MEM_REG and unmapped when they go.
    libc::SYS_brk, libc::SYS_mmap, libc::SYS_munmap, libc::SYS_mremap,
    libc::SYS_mprotect, libc::SYS_madvise,
    // Threads: vhost-user-backend starts a frontend-message thread and one
    // worker per queue for every connection. glibc uses clone3 and falls
    // back to clone where clone3 is missing (unseen); sched_yield (unseen)
    // for lock back-off.
    libc::SYS_clone3, libc::SYS_clone, libc::SYS_set_robust_list, libc::SYS_rseq,
    libc::SYS_futex, libc::SYS_sched_yield, libc::SYS_sched_getaffinity,
    libc::SYS_exit, libc::SYS_exit_group, libc::SYS_gettid, libc::SYS_getpid,
    // Signals: the blocked stop signals taken by sigwait; std's stack-overflow
    // handler (sigaltstack, rt_sigaction) in every thread; a signal handler's
    // return and the kernel's restart of an interrupted sleep (unseen).
    libc::SYS_rt_sigaction, libc::SYS_rt_sigprocmask, libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigtimedwait, libc::SYS_sigaltstack, libc::SYS_restart_syscall,
    // Time: the metrics period; clocks and time of day for DAX wait
    // accounting and log timestamps when the vDSO falls back to the system
    // call (unseen).
    libc::SYS_clock_nanosleep, libc::SYS_nanosleep, libc::SYS_clock_gettime,
    libc::SYS_gettimeofday,
    // Randomness for std's HashMap keys (once per thread).
    libc::SYS_getrandom,
    // Credentials: creation runs with the caller's fsuid/fsgid, and with
    // --posix-acl under the caller's umask (on the worker's own filesystem
    // context: unshare(CLONE_FS), allowed below with that argument only).
    libc::SYS_setfsuid, libc::SYS_setfsgid, libc::SYS_geteuid, libc::SYS_getegid,
    libc::SYS_umask,
    // Event loops: vhost-user-backend's epoll per worker (epoll_pwait where
    // there is no epoll_wait), vring kick/call eventfds and exit events.
    libc::SYS_epoll_create1, libc::SYS_epoll_ctl, libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
    // The vhost-user socket: accept, messages with descriptors (memory
    // regions and kick/call fds in; SHMEM_MAP / FS_MAP file fds out), reads
    // of the legacy channel's replies, shutdown on stop; the legacy DAX
    // channel's discovery (getsockname, SO_TYPE, SO_ACCEPTCONN, SO_PEERCRED)
    // and its reply timeout (SO_RCVTIMEO).
    libc::SYS_accept4, libc::SYS_recvmsg, libc::SYS_sendmsg, libc::SYS_recvfrom,
    libc::SYS_shutdown, libc::SYS_getsockname, libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    // Descriptors.
    libc::SYS_close, libc::SYS_dup, libc::SYS_fcntl,
    // Reading and writing: requests (READ with preadv straight into guest
    // memory, pread64 otherwise; WRITE with pwrite64), the metrics relay and
    // file, logs.
    libc::SYS_read, libc::SYS_write, libc::SYS_pread64, libc::SYS_preadv,
    libc::SYS_pwrite64, libc::SYS_lseek, libc::SYS_copy_file_range,
    // The passthrough filesystem: *at calls beneath the shared directory,
    // reopening through /proc/self/fd.
    libc::SYS_openat, libc::SYS_openat2, libc::SYS_newfstatat, libc::SYS_fstat,
    libc::SYS_statx, libc::SYS_readlinkat, libc::SYS_getdents64,
    libc::SYS_mkdirat, libc::SYS_mknodat, libc::SYS_symlinkat, libc::SYS_linkat,
    libc::SYS_unlinkat, libc::SYS_renameat2, libc::SYS_fchmod, libc::SYS_fchmodat,
    libc::SYS_fchownat, libc::SYS_utimensat, libc::SYS_ftruncate,
    libc::SYS_fallocate, libc::SYS_fsync, libc::SYS_fdatasync, libc::SYS_syncfs,
    libc::SYS_fstatfs,
    // Extended attributes (--xattr), by /proc/self/fd path for every file
    // type.
    libc::SYS_getxattr, libc::SYS_setxattr, libc::SYS_listxattr,
    libc::SYS_removexattr,
    // DAX: the window placeholder memfd is hole-punched (fallocate, above)
    // and sent to the VMM (sendmsg, above); mapped files are watched for
    // changes made on the host (inotify_init1 when the watcher starts).
    libc::SYS_inotify_init1, libc::SYS_inotify_add_watch, libc::SYS_inotify_rm_watch,
];

/// Older calls that x86_64 still has and glibc or std use there: epoll_wait
/// (vmm-sys-util), rename and unlink (std::fs, for the metrics file and the
/// socket without a sandbox), time (static glibc builds; unseen).
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
const ALLOWED_X86_64: &[libc::c_long] = &[
    libc::SYS_epoll_wait, libc::SYS_rename, libc::SYS_unlink, libc::SYS_time,
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_X86_64: &[libc::c_long] = &[];

/// Added to the list unless `--inode-file-handles=never`: taking an inode's
/// file handle, and opening an inode by it again.
const FILE_HANDLE_CALLS: &[libc::c_long] =
    &[libc::SYS_name_to_handle_at, libc::SYS_open_by_handle_at];

/// `prctl` options allowed: std names its threads.
const PRCTL_OPTIONS: &[u64] = &[libc::PR_SET_NAME as u64, libc::PR_GET_NAME as u64];

/// `ioctl` requests allowed: std's `set_nonblocking`/`set_cloexec`.
// The request type is c_ulong on glibc and c_int on musl.
#[allow(clippy::unnecessary_cast)]
const IOCTL_REQUESTS: &[u64] = &[libc::FIONBIO as u64, libc::FIOCLEX as u64];

/// Number of entries in the allow-list (for the start-up log and docs).
pub fn allowed_count() -> usize {
    ALLOWED.len() + ALLOWED_X86_64.len() + 4
}

fn eq(arg: u8, value: u64) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, value)
}

/// Builds the filter for `mode` (`None` for [`SeccompMode::None`]), with
/// the file-handle calls when `file_handles`.
pub fn build(mode: SeccompMode, file_handles: bool) -> Result<Option<BpfProgram>, SeccompError> {
    let handle_calls = if file_handles { FILE_HANDLE_CALLS } else { &[] };
    let mismatch = match mode {
        SeccompMode::None => return Ok(None),
        SeccompMode::Kill => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
        SeccompMode::Trap => SeccompAction::Trap,
    };
    let build = || -> Result<BpfProgram, seccompiler::BackendError> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
            .iter()
            .chain(ALLOWED_X86_64)
            .chain(handle_calls)
            .map(|&nr| (nr, Vec::new()))
            .collect();
        let one_of = |arg: u8, values: &[u64]| {
            values
                .iter()
                .map(|&v| SeccompRule::new(vec![eq(arg, v)?]))
                .collect::<Result<Vec<_>, _>>()
        };
        rules.insert(libc::SYS_prctl, one_of(0, PRCTL_OPTIONS)?);
        rules.insert(libc::SYS_ioctl, one_of(1, IOCTL_REQUESTS)?);
        rules.insert(libc::SYS_unshare, one_of(0, &[libc::CLONE_FS as u64])?);
        // abort() and panics signal only this process.
        let pid = u64::try_from(rustix::process::getpid().as_raw_nonzero().get()).unwrap_or(0);
        rules.insert(libc::SYS_tgkill, vec![SeccompRule::new(vec![eq(0, pid)?])?]);
        let arch = std::env::consts::ARCH.try_into().map_err(|_| {
            seccompiler::BackendError::InvalidTargetArch(std::env::consts::ARCH.into())
        })?;
        SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch)?.try_into()
    };
    build().map(Some).map_err(SeccompError::Build)
}

/// Installs the filter for `mode` (with the file-handle calls when
/// `file_handles`) on every thread of the process.
pub fn install(mode: SeccompMode, file_handles: bool) -> Result<(), SeccompError> {
    if let Some(program) = build(mode, file_handles)? {
        seccompiler::apply_filter_all_threads(&program).map_err(SeccompError::Install)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_builds() {
        assert!(build(SeccompMode::None, true).unwrap().is_none());
        let kill = build(SeccompMode::Kill, false).unwrap().unwrap();
        let log = build(SeccompMode::Log, false).unwrap().unwrap();
        assert_eq!(kill.len(), log.len());
        let handles = build(SeccompMode::Kill, true).unwrap().unwrap();
        assert!(handles.len() > kill.len());
        assert!(kill.len() > ALLOWED.len(), "{} instructions", kill.len());
        // --seccomp trap: a call outside the list returns SECCOMP_RET_TRAP
        // (SIGSYS to the thread) where kill returns SECCOMP_RET_KILL_PROCESS.
        let trap = build(SeccompMode::Trap, false).unwrap().unwrap();
        let returns = |program: &BpfProgram, action: u32| {
            program
                .iter()
                .any(|insn| insn.code == (libc::BPF_RET | libc::BPF_K) as u16 && insn.k == action)
        };
        assert!(returns(&trap, libc::SECCOMP_RET_TRAP));
        assert!(!returns(&kill, libc::SECCOMP_RET_TRAP));
        assert!(returns(&kill, libc::SECCOMP_RET_KILL_PROCESS));
    }

    #[test]
    fn no_duplicates() {
        let mut seen = std::collections::BTreeSet::new();
        for nr in ALLOWED.iter().chain(ALLOWED_X86_64) {
            assert!(seen.insert(nr), "system call {nr} listed twice");
        }
    }

    #[test]
    fn process_creation_and_exec_are_not_allowed() {
        for nr in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_chroot,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_bind,
            libc::SYS_kill,
            libc::SYS_capset,
            libc::SYS_open_by_handle_at,
            libc::SYS_memfd_create,
            libc::SYS_sendto,
            libc::SYS_init_module,
            libc::SYS_bpf,
        ] {
            assert!(!ALLOWED.contains(&nr), "{nr} must not be allowed");
        }
    }
}
