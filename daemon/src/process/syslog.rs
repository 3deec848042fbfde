//! `--syslog`: log lines sent to the local syslog daemon (`/dev/log`,
//! facility user), as virtiofsd does.
//!
//! Hand-written rather than the `syslog` crate or glibc's `syslog(3)`: both
//! send with `send(2)`, which is `sendto` on Linux, a call the seccomp
//! filter refuses (the daemon has no business addressing sockets). This
//! writer connects once at start-up, before the sandbox hides `/dev/log`,
//! and sends every line with `sendmsg` on that connection. With no syslog
//! daemon listening the lines are dropped, as glibc drops them (virtiofsd
//! too starts without one).

use std::io::{self, IoSlice, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use rustix::net::{SendAncillaryBuffer, SendFlags};
use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

/// Facility `user` (1), shifted as syslog priorities carry it.
const FACILITY_USER: u8 = 1 << 3;

/// The connection to the syslog daemon, and the tag lines carry.
#[derive(Debug)]
pub struct Syslog {
    socket: Option<UnixDatagram>,
    tag: String,
}

impl Syslog {
    /// Connects to `/dev/log` (no connection: lines are dropped).
    pub fn connect() -> Self {
        Self::connect_to(Path::new("/dev/log"))
    }

    /// Connects to the syslog socket at `path`.
    pub fn connect_to(path: &Path) -> Self {
        let socket = UnixDatagram::unbound()
            .and_then(|socket| socket.connect(path).map(|()| socket))
            .ok();
        Self {
            socket,
            // The pid outside the sandbox: inside its PID namespace the
            // daemon is 1.
            tag: format!("daxfsd[{}]", std::process::id()),
        }
    }

    /// Whether a syslog daemon was found.
    pub fn connected(&self) -> bool {
        self.socket.is_some()
    }

    fn send(&self, severity: u8, line: &[u8]) {
        let Some(socket) = &self.socket else { return };
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let mut message = format!("<{}>{}: ", FACILITY_USER | severity, self.tag).into_bytes();
        message.extend_from_slice(line);
        // A syslog daemon that went away loses the line; logging must not
        // stop the daemon.
        let _ = rustix::net::sendmsg(
            socket,
            &[IoSlice::new(&message)],
            &mut SendAncillaryBuffer::default(),
            SendFlags::DONTWAIT,
        );
    }
}

/// One log line being formatted; sent when dropped.
#[derive(Debug)]
pub struct SyslogLine<'a> {
    syslog: &'a Syslog,
    severity: u8,
    buf: Vec<u8>,
}

impl Write for SyslogLine<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.syslog.send(self.severity, &self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        self.line(Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        self.line(*meta.level())
    }
}

impl Syslog {
    fn line(&self, level: Level) -> SyslogLine<'_> {
        // err 3, warning 4, info 6, debug 7.
        let severity = match level {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        SyslogLine {
            syslog: self,
            severity,
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_socket_with_priority_and_tag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let syslog = Syslog::connect_to(&path);
        assert!(syslog.connected());
        writeln!(syslog.line(Level::ERROR), "it broke").unwrap();
        write!(syslog.line(Level::DEBUG), "detail").unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let pid = std::process::id();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            format!("<11>daxfsd[{pid}]: it broke")
        );
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            format!("<15>daxfsd[{pid}]: detail")
        );
        let nowhere = Syslog::connect_to(&dir.path().join("none"));
        assert!(!nowhere.connected());
        write!(nowhere.line(Level::ERROR), "dropped").unwrap();
    }
}
