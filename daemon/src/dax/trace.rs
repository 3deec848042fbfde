//! `--dax-trace FILE`: one JSON object per line for every DAX event — each
//! SETUPMAPPING served, each REMOVEMAPPING range, each request sent to the
//! VMM, repairs and resets — so a guest's mapping behaviour can be studied
//! and replayed (`tests/harness/src/dax_replay`). The format is documented
//! in docs/operating.md ("Tracing the window").
//!
//! Each line is formatted into a reusable buffer and written with one
//! `write(2)` on a file opened with `O_APPEND`, under a mutex: lines never
//! interleave, and a reader sees whole lines. Write errors are logged
//! (rate-limited) and never fail the request being traced.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::errno::Errno;
use crate::ratelimit::RateLimit;

/// Why the trace file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the DAX trace file {path}")]
pub struct TraceOpenError {
    /// The file.
    pub path: PathBuf,
    /// Cause.
    #[source]
    pub source: std::io::Error,
}

/// A JSON value of one field.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// An unsigned number.
    U64(u64),
    /// `true` / `false`.
    Bool(bool),
    /// A string (escaped on output).
    Str(&'a str),
    /// `null`.
    Null,
}

impl From<u64> for Value<'_> {
    fn from(v: u64) -> Self {
        Value::U64(v)
    }
}

impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Str(v)
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// What the writer keeps between lines.
#[derive(Debug)]
struct Sink {
    file: File,
    line: String,
}

/// The trace writer shared by the request paths, the mapper and the host
/// watcher.
#[derive(Debug)]
pub struct DaxTrace {
    sink: Mutex<Sink>,
    /// The shared directory as this process sees it (`/` inside a sandbox),
    /// canonical; mapped files' paths are written relative to it.
    root: PathBuf,
    error_log: RateLimit,
}

impl DaxTrace {
    /// Opens (creating, appending to) `path`. Call before entering the
    /// sandbox: the file usually lies outside the shared directory.
    pub fn open_file(path: &Path) -> Result<File, TraceOpenError> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(path)
            .map_err(|source| TraceOpenError {
                path: path.to_owned(),
                source,
            })
    }

    /// A writer appending to `file`; `root` is the shared directory as the
    /// daemon opens it (`/` inside a sandbox).
    pub fn new(file: File, root: &Path) -> Self {
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
        Self {
            sink: Mutex::new(Sink {
                file,
                line: String::with_capacity(512),
            }),
            root,
            error_log: RateLimit::per_second(1),
        }
    }

    /// Writes one event: `{"ev":EV,field:value,...}` and a newline.
    pub fn event(&self, ev: &str, fields: &[(&str, Value<'_>)]) {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let Sink { file, line } = &mut *sink;
        line.clear();
        line.push_str("{\"ev\":");
        push_str(line, ev);
        for (name, value) in fields {
            line.push(',');
            push_str(line, name);
            line.push(':');
            match value {
                Value::U64(v) => {
                    let _ = write!(line, "{v}");
                }
                Value::Bool(v) => line.push_str(if *v { "true" } else { "false" }),
                Value::Str(s) => push_str(line, s),
                Value::Null => line.push_str("null"),
            }
        }
        line.push_str("}\n");
        if let Err(error) = file.write_all(line.as_bytes()) {
            if let Some(suppressed) = self.error_log.check() {
                tracing::warn!(%error, suppressed, "cannot write the DAX trace");
            }
        }
    }

    /// The path of `file` relative to the shared directory, if it lies
    /// inside it (read from the daemon's /proc/self/fd).
    pub fn relative_path(&self, file: &File) -> Option<String> {
        let dir = crate::process::fds::proc_self_fd().ok()?;
        let name = file.as_fd().as_raw_fd().to_string();
        let target = rustix::fs::readlinkat(dir, name.as_str(), Vec::new()).ok()?;
        let target = Path::new(std::ffi::OsStr::from_bytes(target.as_bytes()));
        let relative = target.strip_prefix(&self.root).ok()?;
        Some(relative.to_string_lossy().into_owned())
    }
}

/// Appends `s` as a JSON string literal.
fn push_str(line: &mut String, s: &str) {
    line.push('"');
    for c in s.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(line, "\\u{:04x}", u32::from(c));
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

/// `"ok"` or the errno's name (`"EINVAL"`), for the `result` field.
pub fn result_name(result: Result<(), Errno>) -> Cow<'static, str> {
    match result {
        Ok(()) => Cow::Borrowed("ok"),
        Err(errno) => errno_name(errno.0),
    }
}

/// The symbolic name of an errno (`"EINVAL"`), or `"errno N"` for one
/// the DAX paths do not expect.
pub fn errno_name(errno: i32) -> Cow<'static, str> {
    Cow::Borrowed(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EPIPE => "EPIPE",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ETXTBSY => "ETXTBSY",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return Cow::Owned(format!("errno {errno}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn lines_are_json_objects_with_escaped_strings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.jsonl");
        let trace = DaxTrace::new(DaxTrace::open_file(&path).unwrap(), dir.path());
        trace.event(
            "setup",
            &[
                ("unique", 7u64.into()),
                ("path", Some("a \"b\"\\c\n\u{1}").into()),
                ("size", Value::Null),
                ("placeholder", true.into()),
                ("missing", Option::<u64>::None.into()),
            ],
        );
        trace.event("reset", &[]);
        assert_eq!(
            read_back(&path),
            "{\"ev\":\"setup\",\"unique\":7,\"path\":\"a \\\"b\\\"\\\\c\\n\\u0001\",\
             \"size\":null,\"placeholder\":true,\"missing\":null}\n{\"ev\":\"reset\"}\n"
        );
    }

    #[test]
    fn an_existing_file_is_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.jsonl");
        std::fs::write(&path, "{\"ev\":\"earlier\"}\n").unwrap();
        let trace = DaxTrace::new(DaxTrace::open_file(&path).unwrap(), dir.path());
        trace.event("reset", &[]);
        assert_eq!(
            read_back(&path),
            "{\"ev\":\"earlier\"}\n{\"ev\":\"reset\"}\n"
        );
    }

    #[test]
    fn paths_are_relative_to_the_shared_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f"), b"x").unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        let trace = DaxTrace::new(
            DaxTrace::open_file(&dir.path().join("t")).unwrap(),
            dir.path(),
        );
        let inside = File::open(dir.path().join("sub/f")).unwrap();
        assert_eq!(trace.relative_path(&inside).as_deref(), Some("sub/f"));
        assert_eq!(trace.relative_path(outside.as_file()), None);
    }

    #[test]
    fn errnos_have_names() {
        assert_eq!(result_name(Ok(())), "ok");
        assert_eq!(result_name(Err(Errno::EINVAL)), "EINVAL");
        assert_eq!(result_name(Err(Errno::EIO)), "EIO");
        assert_eq!(errno_name(100_000), "errno 100000");
    }
}
