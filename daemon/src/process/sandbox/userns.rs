//! `--uid-map` and `--gid-map`: the ids of an unprivileged daemon's user
//! namespace (`--sandbox namespace`), as virtiofsd 1.14 sets them up.
//!
//! An unprivileged process may write only a one-line map of its own id
//! into a user namespace it owns; anything more (another host id, a range)
//! needs `newuidmap(1)`/`newgidmap(1)`, the setuid helpers of the `uidmap`
//! package, which check `/etc/subuid` and `/etc/subgid`. They must run
//! outside the new namespace (a set-user-ID binary run inside it gains
//! nothing), on the namespaced process's pid. The daemon unshares its user
//! namespace itself, so before it does, it forks a helper that stays
//! outside:
//!
//! 1. the daemon forks the helper (the process is still single-threaded),
//!    which waits on a pipe;
//! 2. the daemon unshares `CLONE_NEWUSER | CLONE_NEWPID` and writes one
//!    byte to the pipe (or closes it if the unshare failed: the helper then
//!    exits doing nothing);
//! 3. the helper maps the daemon's ids, uid first: a map that is one range
//!    of one id, the helper's own, is written to `/proc/PID/uid_map`
//!    directly (for the gid map after `deny` to `/proc/PID/setgroups`),
//!    anything else is passed to `newuidmap PID INSIDE OUTSIDE COUNT...`
//!    (`newgidmap`). A flag not given maps the daemon's own id to itself;
//! 4. the helper writes what failed, if anything, to a second pipe and
//!    exits; the daemon reads the report, reaps the helper and fails start
//!    naming the flag, the command and its standard error.
//!
//! Then, as virtiofsd does, the daemon becomes uid 0 and gid 0 of its
//! namespace where the maps give it those ids (`setresuid(0, 0, 0)`), so
//! that it acts for the guest with the capabilities it has there; those
//! reach only the files whose owners are mapped into the namespace.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};

use rustix::pipe::PipeFlags;
use rustix::process::{Gid, Pid, Uid, WaitOptions};

use super::{step, SandboxError};

/// One range of a map: `count` ids from `inside` in the namespace are the
/// host's ids from `outside`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id in the namespace.
    pub inside: u32,
    /// First id on the host.
    pub outside: u32,
    /// Number of ids.
    pub count: u32,
}

impl IdRange {
    /// Whether the range maps namespace id `id`.
    pub fn maps_inside(&self, id: u32) -> bool {
        id.checked_sub(self.inside).is_some_and(|k| k < self.count)
    }
}

/// The maps asked for with `--uid-map` and `--gid-map` (empty: not given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserNsMaps {
    /// `--uid-map` ranges, in order.
    pub uid: Vec<IdRange>,
    /// `--gid-map` ranges, in order.
    pub gid: Vec<IdRange>,
}

impl UserNsMaps {
    /// Neither flag was given.
    pub fn is_empty(&self) -> bool {
        self.uid.is_empty() && self.gid.is_empty()
    }
}

/// Which of the two maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The uid map.
    Uid,
    /// The gid map.
    Gid,
}

impl Which {
    /// The flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Uid => "--uid-map",
            Self::Gid => "--gid-map",
        }
    }

    fn tool(self) -> &'static str {
        match self {
            Self::Uid => "newuidmap",
            Self::Gid => "newgidmap",
        }
    }

    fn map_file(self) -> ProcFile {
        match self {
            Self::Uid => ProcFile::UidMap,
            Self::Gid => ProcFile::GidMap,
        }
    }
}

/// A file of `/proc/PID` the helper writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ProcFile {
    /// `uid_map`.
    UidMap = 1,
    /// `gid_map`.
    GidMap = 2,
    /// `setgroups`.
    Setgroups = 3,
}

impl ProcFile {
    fn name(self) -> &'static str {
        match self {
            Self::UidMap => "uid_map",
            Self::GidMap => "gid_map",
            Self::Setgroups => "setgroups",
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        [Self::UidMap, Self::GidMap, Self::Setgroups]
            .into_iter()
            .find(|f| *f as u8 == byte)
    }
}

impl std::fmt::Display for ProcFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the namespace's ids could not be mapped. The message names the flag.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// `newuidmap`/`newgidmap` could not be started.
    #[error("{flag}: cannot run {tool} (install the uidmap package)")]
    Spawn {
        /// The flag.
        flag: &'static str,
        /// The helper program.
        tool: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// `newuidmap`/`newgidmap` refused the map.
    #[error("{flag}: `{command}` failed ({status}){}", stderr_suffix(.stderr))]
    Refused {
        /// The flag.
        flag: &'static str,
        /// The command line run.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// What it wrote to standard error.
        stderr: String,
    },
    /// Writing a map (or `setgroups`) directly failed.
    #[error("{flag}: writing /proc/{pid}/{file}")]
    Write {
        /// The flag.
        flag: &'static str,
        /// The daemon's pid.
        pid: i32,
        /// The file.
        file: ProcFile,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The helper ended without saying what failed.
    #[error("the helper that maps the user namespace's ids ended without a report ({0})")]
    Helper(ExitStatus),
    /// The helper's report does not decode.
    #[error("the helper that maps the user namespace's ids sent an unreadable report")]
    Report,
}

fn stderr_suffix(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// The command line the helper runs for `ranges` of the daemon `pid`.
fn command_line(which: Which, pid: i32, ranges: &[IdRange]) -> Vec<String> {
    let mut line = vec![which.tool().to_owned(), pid.to_string()];
    for r in ranges {
        line.extend([r.inside, r.outside, r.count].map(|n| n.to_string()));
    }
    line
}

/// What the helper reports: which map, and how it failed.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The tool did not start (errno).
    Spawn(Which, i32),
    /// The tool ended with this raw wait status and standard error.
    Refused(Which, i32, Vec<u8>),
    /// Writing the file failed (errno).
    Write(Which, ProcFile, i32),
}

impl Failure {
    /// `[which, tag, file, i32 little-endian, stderr...]`.
    fn encode(&self) -> Vec<u8> {
        let (which, tag, file, value, text): (Which, u8, u8, i32, &[u8]) = match self {
            Self::Spawn(w, errno) => (*w, 1, 0, *errno, &[]),
            Self::Refused(w, status, stderr) => (*w, 2, 0, *status, stderr),
            Self::Write(w, file, errno) => (*w, 3, *file as u8, *errno, &[]),
        };
        let mut out = vec![u8::from(which == Which::Gid), tag, file];
        out.extend(value.to_le_bytes());
        out.extend_from_slice(text);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (&[which, tag, file], rest) = bytes.split_first_chunk::<3>()?;
        let (value, text) = rest.split_first_chunk::<4>()?;
        let value = i32::from_le_bytes(*value);
        let which = match which {
            0 => Which::Uid,
            1 => Which::Gid,
            _ => return None,
        };
        match tag {
            1 => Some(Self::Spawn(which, value)),
            2 => Some(Self::Refused(which, value, text.to_vec())),
            3 => Some(Self::Write(which, ProcFile::from_byte(file)?, value)),
            _ => None,
        }
    }

    fn into_error(self, pid: i32, maps: &UserNsMaps) -> MapError {
        match self {
            Self::Spawn(which, errno) => MapError::Spawn {
                flag: which.flag(),
                tool: which.tool(),
                source: io::Error::from_raw_os_error(errno),
            },
            Self::Refused(which, status, stderr) => {
                let ranges = match which {
                    Which::Uid => &maps.uid,
                    Which::Gid => &maps.gid,
                };
                MapError::Refused {
                    flag: which.flag(),
                    command: command_line(which, pid, ranges).join(" "),
                    status: ExitStatus::from_raw(status),
                    stderr: String::from_utf8_lossy(&stderr).into_owned(),
                }
            }
            Self::Write(which, file, errno) => MapError::Write {
                flag: which.flag(),
                pid,
                file,
                source: io::Error::from_raw_os_error(errno),
            },
        }
    }
}

/// In the helper: writes one map of the daemon `pid`. `own` is the
/// helper's (and the daemon's) id; no ranges maps it to itself.
fn write_map(which: Which, ranges: &[IdRange], own: u32, pid: i32) -> Result<(), Failure> {
    let itself = [IdRange {
        inside: own,
        outside: own,
        count: 1,
    }];
    let ranges = if ranges.is_empty() { &itself } else { ranges };
    let errno = |e: io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    if let [only] = ranges {
        if only.outside == own && only.count == 1 {
            if which == Which::Gid {
                std::fs::write(format!("/proc/{pid}/setgroups"), "deny")
                    .map_err(|e| Failure::Write(which, ProcFile::Setgroups, errno(e)))?;
            }
            let file = which.map_file();
            return std::fs::write(
                format!("/proc/{pid}/{file}"),
                format!("{} {} 1", only.inside, only.outside),
            )
            .map_err(|e| Failure::Write(which, file, errno(e)));
        }
    }
    let line = command_line(which, pid, ranges);
    let output = Command::new(&line[0])
        .args(&line[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Failure::Spawn(which, errno(e)))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Failure::Refused(
            which,
            output.status.into_raw(),
            output.stderr,
        ))
    }
}

/// The helper, after the fork: waits for the daemon's unshare, maps its
/// ids, reports and exits (never returns).
fn run_helper(go: OwnedFd, report: OwnedFd, maps: &UserNsMaps, pid: i32) -> ! {
    let mut byte = [0u8];
    let unshared = loop {
        match rustix::io::read(&go, &mut byte) {
            Err(rustix::io::Errno::INTR) => continue,
            Ok(1) => break true,
            // The daemon gave up before unsharing (its end closed).
            _ => break false,
        }
    };
    let mut code = 0;
    if unshared {
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let mapped = write_map(Which::Uid, &maps.uid, uid, pid)
            .and_then(|()| write_map(Which::Gid, &maps.gid, gid, pid));
        if let Err(failure) = mapped {
            write_all(&report, &failure.encode());
            code = 1;
        }
    }
    // SAFETY: _exit ends this forked copy at once without running the
    // parent's atexit handlers or destructors (which belong to the daemon:
    // its socket file, its buffered logs); it takes an integer and touches
    // no memory.
    unsafe { libc::_exit(code) }
}

/// Writes `bytes` to `fd`, giving up on an error (the reader then sees a
/// short report and says so).
fn write_all(fd: impl AsFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match rustix::io::write(&fd, bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// Reads `fd` to its end.
fn read_to_end(fd: impl AsFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match rustix::io::read(&fd, &mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return out,
        }
    }
}

/// Reaps the helper `pid`.
fn reap(pid: Pid) -> Result<ExitStatus, SandboxError> {
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => return Ok(ExitStatus::from_raw(status.as_raw())),
            Ok(None) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(step("reaping the id-mapping helper")(e)),
        }
    }
}

/// Runs `unshare` (which must create the user namespace) with a helper
/// outside it that maps the ids as `maps` says (see the module's
/// documentation). The process must be single-threaded.
pub fn unshare_mapped(
    maps: &UserNsMaps, unshare: impl FnOnce() -> Result<(), SandboxError>,
) -> Result<(), SandboxError> {
    let pid = rustix::process::getpid();
    let (go_read, go_write) =
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(step("creating a pipe"))?;
    let (report_read, report_write) =
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(step("creating a pipe"))?;
    // SAFETY: the caller guarantees a single thread, so no lock or
    // allocator state is held by another thread at the fork; the child only
    // runs `run_helper`, which ends in _exit.
    let forked = unsafe { libc::fork() };
    if forked == 0 {
        drop(go_write);
        drop(report_read);
        run_helper(go_read, report_write, maps, pid.as_raw_nonzero().get());
    }
    let forking = super::step_io("forking the id-mapping helper");
    if forked < 0 {
        return Err(forking(io::Error::last_os_error()));
    }
    let helper = Pid::from_raw(forked).ok_or_else(|| forking(io::Error::other("pid 0")))?;
    drop(go_read);
    drop(report_write);
    let unshared = unshare();
    if unshared.is_ok() {
        write_all(&go_write, &[1]);
    }
    drop(go_write);
    let report = read_to_end(&report_read);
    let status = reap(helper)?;
    unshared?;
    let map_error = SandboxError::IdMap;
    if !report.is_empty() {
        let failure = Failure::decode(&report).ok_or_else(|| map_error(MapError::Report))?;
        return Err(map_error(
            failure.into_error(pid.as_raw_nonzero().get(), maps),
        ));
    }
    if !status.success() {
        return Err(map_error(MapError::Helper(status)));
    }
    become_namespace_root(maps)
}

/// As virtiofsd: with the ids mapped, the process takes uid 0 and gid 0 of
/// its namespace where the maps give them (it has CAP_SETUID and
/// CAP_SETGID there). Single-threaded, so the thread's ids are the
/// process's.
fn become_namespace_root(maps: &UserNsMaps) -> Result<(), SandboxError> {
    if maps.gid.iter().any(|r| r.maps_inside(0)) {
        let root = Gid::from_raw(0);
        rustix::thread::set_thread_res_gid(root, root, root)
            .map_err(step("setresgid(0, 0, 0) in the user namespace"))?;
    }
    if maps.uid.iter().any(|r| r.maps_inside(0)) {
        let root = Uid::from_raw(0);
        rustix::thread::set_thread_res_uid(root, root, root)
            .map_err(step("setresuid(0, 0, 0) in the user namespace"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_survive_the_pipe() {
        for failure in [
            Failure::Spawn(Which::Uid, libc::ENOENT),
            Failure::Refused(
                Which::Gid,
                256,
                b"newgidmap: gid range not allowed\n".to_vec(),
            ),
            Failure::Write(Which::Gid, ProcFile::Setgroups, libc::EPERM),
        ] {
            assert_eq!(Failure::decode(&failure.encode()), Some(failure));
        }
        assert_eq!(Failure::decode(&[0, 9, 0, 0, 0, 0, 0]), None);
        assert_eq!(Failure::decode(&[0, 1]), None);
    }

    #[test]
    fn errors_name_the_flag_the_command_and_its_stderr() {
        let maps = UserNsMaps {
            uid: vec![
                IdRange {
                    inside: 0,
                    outside: 1000,
                    count: 1,
                },
                IdRange {
                    inside: 1,
                    outside: 100000,
                    count: 65536,
                },
            ],
            gid: Vec::new(),
        };
        let failure = Failure::Refused(Which::Uid, 1 << 8, b"newuidmap: not allowed\n".to_vec());
        assert_eq!(
            failure.into_error(42, &maps).to_string(),
            "--uid-map: `newuidmap 42 0 1000 1 1 100000 65536` failed (exit status: 1): \
             newuidmap: not allowed"
        );
        let error = Failure::Spawn(Which::Gid, libc::ENOENT).into_error(42, &maps);
        assert_eq!(
            error.to_string(),
            "--gid-map: cannot run newgidmap (install the uidmap package)"
        );
        assert!(std::error::Error::source(&error).is_some());
        let error =
            Failure::Write(Which::Gid, ProcFile::Setgroups, libc::EPERM).into_error(7, &maps);
        assert_eq!(error.to_string(), "--gid-map: writing /proc/7/setgroups");
    }

    #[test]
    fn ranges_say_what_they_map() {
        let r = IdRange {
            inside: 1,
            outside: 100000,
            count: 2,
        };
        assert!(!r.maps_inside(0) && r.maps_inside(1) && r.maps_inside(2) && !r.maps_inside(3));
        let max = IdRange {
            inside: u32::MAX,
            outside: 0,
            count: 1,
        };
        assert!(max.maps_inside(u32::MAX));
    }
}
