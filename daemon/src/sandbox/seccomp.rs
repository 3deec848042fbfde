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
#[rustfmt::skip]
const ALLOWED: &[libc::c_long] = &[
    // Memory: the allocator, thread stacks, guest memory regions mapped on
    // SET_MEM_TABLE / ADD_MEM_REG and unmapped when they go.
    libc::SYS_brk, libc::SYS_mmap, libc::SYS_munmap, libc::SYS_mremap,
    libc::SYS_mprotect, libc::SYS_madvise,
    // Threads: vhost-user-backend starts a frontend-message thread and one
    // worker per queue for every connection; std's thread start and exit.
    libc::SYS_clone, libc::SYS_clone3, libc::SYS_set_robust_list, libc::SYS_rseq,
    libc::SYS_futex, libc::SYS_sched_yield, libc::SYS_sched_getaffinity,
    libc::SYS_exit, libc::SYS_exit_group, libc::SYS_gettid, libc::SYS_getpid,
    // Signals: the blocked stop signals taken by sigwait; std's stack-overflow
    // handler (sigaltstack) in every thread.
    libc::SYS_rt_sigaction, libc::SYS_rt_sigprocmask, libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigtimedwait, libc::SYS_sigaltstack, libc::SYS_restart_syscall,
    // Time: the metrics period, DAX wait accounting, log timestamps (when the
    // vDSO falls back to the system call).
    libc::SYS_clock_gettime, libc::SYS_clock_nanosleep, libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    // Randomness for std's HashMap keys.
    libc::SYS_getrandom,
    // Credentials: creation runs with the caller's fsuid/fsgid.
    libc::SYS_setfsuid, libc::SYS_setfsgid, libc::SYS_geteuid, libc::SYS_getegid,
    libc::SYS_getuid, libc::SYS_getgid,
    // Event loops: vhost-user-backend's epoll per worker, vring kick/call
    // eventfds, exit events; poll in the legacy DAX channel.
    libc::SYS_epoll_create1, libc::SYS_epoll_ctl, libc::SYS_epoll_pwait,
    libc::SYS_eventfd2, libc::SYS_ppoll,
    // The vhost-user socket: accept, messages with descriptors (memory
    // regions, kick/call fds in; SHMEM_MAP / FS_MAP file fds out), shutdown
    // on stop; the legacy DAX channel's discovery and reply timeout.
    libc::SYS_accept4, libc::SYS_recvmsg, libc::SYS_sendmsg, libc::SYS_recvfrom,
    libc::SYS_sendto, libc::SYS_shutdown, libc::SYS_getsockname,
    libc::SYS_getsockopt, libc::SYS_setsockopt,
    // Descriptors.
    libc::SYS_close, libc::SYS_dup, libc::SYS_dup3, libc::SYS_fcntl,
    // Reading and writing: requests, metrics, logs.
    libc::SYS_read, libc::SYS_readv, libc::SYS_write, libc::SYS_writev,
    libc::SYS_pread64, libc::SYS_preadv, libc::SYS_preadv2,
    libc::SYS_pwrite64, libc::SYS_pwritev, libc::SYS_pwritev2,
    libc::SYS_lseek, libc::SYS_copy_file_range,
    // The passthrough filesystem: *at calls beneath the shared directory,
    // reopening through /proc/self/fd.
    libc::SYS_openat, libc::SYS_openat2, libc::SYS_newfstatat, libc::SYS_fstat,
    libc::SYS_statx, libc::SYS_readlinkat, libc::SYS_getdents64,
    libc::SYS_mkdirat, libc::SYS_mknodat, libc::SYS_symlinkat, libc::SYS_linkat,
    libc::SYS_unlinkat, libc::SYS_renameat2,
    libc::SYS_fchmod, libc::SYS_fchmodat, libc::SYS_fchown, libc::SYS_fchownat,
    libc::SYS_utimensat, libc::SYS_ftruncate, libc::SYS_fallocate,
    libc::SYS_fsync, libc::SYS_fdatasync, libc::SYS_syncfs,
    libc::SYS_fstatfs, libc::SYS_statfs, libc::SYS_flock,
    // Extended attributes (--xattr): through /proc/self/fd paths and on fds.
    libc::SYS_getxattr, libc::SYS_setxattr, libc::SYS_listxattr,
    libc::SYS_removexattr, libc::SYS_lgetxattr, libc::SYS_lsetxattr,
    libc::SYS_llistxattr, libc::SYS_lremovexattr, libc::SYS_fgetxattr,
    libc::SYS_fsetxattr, libc::SYS_flistxattr, libc::SYS_fremovexattr,
    // DAX: the placeholder memfd is hole-punched (fallocate, above) and sent
    // to the VMM (sendmsg, above); a new session recreates nothing.
    libc::SYS_memfd_create,
    // DAX: mapped files are watched for changes made on the host.
    libc::SYS_inotify_init1, libc::SYS_inotify_add_watch, libc::SYS_inotify_rm_watch,
];

/// Older calls that x86_64 still has and glibc or std use there.
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
const ALLOWED_X86_64: &[libc::c_long] = &[
    libc::SYS_epoll_wait, libc::SYS_poll, libc::SYS_rename, libc::SYS_renameat,
    libc::SYS_unlink, libc::SYS_getdents, libc::SYS_time,
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_X86_64: &[libc::c_long] = &[];

/// `prctl` options allowed: std names its threads.
const PRCTL_OPTIONS: &[u64] = &[libc::PR_SET_NAME as u64, libc::PR_GET_NAME as u64];

/// `ioctl` requests allowed: std's `set_nonblocking`/`set_cloexec`.
// The request type is c_ulong on glibc and c_int on musl.
#[allow(clippy::unnecessary_cast)]
const IOCTL_REQUESTS: &[u64] = &[libc::FIONBIO as u64, libc::FIOCLEX as u64];

/// Number of entries in the allow-list (for the start-up log and docs).
pub fn allowed_count() -> usize {
    ALLOWED.len() + ALLOWED_X86_64.len() + 3
}

fn eq(arg: u8, value: u64) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, value)
}

/// Builds the filter for `mode` (`None` for [`SeccompMode::None`]).
pub fn build(mode: SeccompMode) -> Result<Option<BpfProgram>, SeccompError> {
    let mismatch = match mode {
        SeccompMode::None => return Ok(None),
        SeccompMode::Kill => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
    };
    let build = || -> Result<BpfProgram, seccompiler::BackendError> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
            .iter()
            .chain(ALLOWED_X86_64)
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

/// Installs the filter for `mode` on every thread of the process.
pub fn install(mode: SeccompMode) -> Result<(), SeccompError> {
    if let Some(program) = build(mode)? {
        seccompiler::apply_filter_all_threads(&program).map_err(SeccompError::Install)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_builds() {
        assert!(build(SeccompMode::None).unwrap().is_none());
        let kill = build(SeccompMode::Kill).unwrap().unwrap();
        let log = build(SeccompMode::Log).unwrap().unwrap();
        assert_eq!(kill.len(), log.len());
        assert!(kill.len() > ALLOWED.len(), "{} instructions", kill.len());
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
            libc::SYS_init_module,
            libc::SYS_bpf,
        ] {
            assert!(!ALLOWED.contains(&nr), "{nr} must not be allowed");
        }
    }
}
