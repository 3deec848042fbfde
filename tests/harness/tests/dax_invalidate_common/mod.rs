//! Shared by the `dax_invalidate_*` tests: a daxfsd whose DAX repair can be switched
//! off, FUSE helpers for the operations that change a file's size, raw access to the
//! window as a vCPU has it (no safety net: a page past the end of a mapped file raises
//! SIGBUS and kills the process), and the child-process runner that proves it.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use daxfsd_harness::client::requests;
use daxfsd_harness::{locate_daxfsd, BackendCommand, Window};
use daxfsd_protocol::abi::{AttrOut, EntryOut, OpenOut, SetattrIn, WriteOut, FATTR_SIZE, ROOT_ID};

use crate::dax_common::{check, DaxDaemon, Session, MIB, PAGE};

/// The daemon's test switch (debug builds only) that turns the repair off.
pub const NO_REPAIR_ENV: &str = "DAXFSD_TEST_NO_DAX_REPAIR";
/// What daxfsd logs when it honours [`NO_REPAIR_ENV`].
pub const NO_REPAIR_LOG: &str = "DAX repair switched off";
/// Set in a child process: "on" or "off", the repair setting it runs with.
pub const CHILD_ROLE: &str = "DAXFSD_TEST_DAX_REPAIR_CHILD";
/// The placeholder memfd's name, as `/proc/self/fd` shows it.
pub const PLACEHOLDER: &str = "daxfsd-window-placeholder";

/// Starts daxfsd like [`DaxDaemon::start`]; with `repair` false, with the repair
/// switched off (and checks that the daemon says so).
pub fn start(window: u64, repair: bool) -> DaxDaemon {
    let bin = locate_daxfsd().unwrap_or_else(|e| panic!("{}", daxfsd_harness::error_chain(&e)));
    let metrics_dir = tempfile::Builder::new()
        .prefix("daxfsd-dax-invalidate-")
        .tempdir()
        .unwrap()
        .keep();
    let metrics_path = metrics_dir.join("metrics.prom");
    let mut command = BackendCommand::daxfsd(bin)
        .args(["--tag", "dax", "--num-request-queues", "1", "--cache-size"])
        .arg(window.to_string())
        .arg("--metrics-file")
        .arg(metrics_path.to_string_lossy().into_owned());
    if !repair {
        command = command.env(NO_REPAIR_ENV, "1");
    }
    let backend = command
        .spawn()
        .unwrap_or_else(|e| panic!("{}", daxfsd_harness::error_chain(&e)));
    let daemon = DaxDaemon {
        backend,
        window,
        request_queues: 1,
        metrics_path,
    };
    if !repair {
        wait_for(
            Duration::from_secs(10),
            "daxfsd to acknowledge the test switch",
            || daemon.backend.stderr().contains(NO_REPAIR_LOG),
        );
    }
    daemon
}

/// Polls `done` every 100 µs until it holds; panics after `timeout`.
pub fn wait_for(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(100));
    }
    started.elapsed()
}

/// Whether window offset `offset` is mapped to the zero placeholder.
pub fn is_placeholder(s: &Session<'_>, offset: u64) -> bool {
    s.window()
        .mapping_at(offset)
        .is_some_and(|m| m.source.to_string_lossy().contains(PLACEHOLDER))
}

/// Whether window offset `offset` is mapped to the file at `path` (compared by device
/// and inode: a sandboxed daemon's descriptors show paths of its own mount).
pub fn is_file(s: &Session<'_>, offset: u64, path: &Path) -> bool {
    let file = std::fs::metadata(path).unwrap();
    s.window()
        .mapping_at(offset)
        .is_some_and(|m| (m.dev, m.ino) == (file.dev(), file.ino()))
}

/// SETATTR of the size; returns the errno.
pub fn setattr_size(s: &Session<'_>, nodeid: u64, size: u64) -> i32 {
    let arg = SetattrIn {
        valid: FATTR_SIZE,
        size,
        ..SetattrIn::default()
    };
    let req = requests::setattr(s.uniques.next(), nodeid, &arg).finish();
    let reply = s.fuse(1, &req);
    let errno = reply.errno();
    if errno == 0 {
        let out: AttrOut = check(s.backend(), reply.ok().and_then(|r| r.body_as()));
        assert_eq!(out.attr.size, size, "SETATTR replied another size");
    }
    errno
}

/// OPEN with `flags`; returns the handle.
pub fn open(s: &Session<'_>, nodeid: u64, flags: i32) -> u64 {
    let req = requests::open(s.uniques.next(), nodeid, flags as u32).finish();
    let reply = s.fuse(1, &req);
    let out: OpenOut = check(s.backend(), reply.ok().and_then(|r| r.body_as()));
    out.fh
}

/// CREATE of `name` in the root with `flags` (no O_EXCL: an existing file is opened);
/// returns the nodeid.
pub fn create(s: &Session<'_>, name: &str, flags: i32) -> u64 {
    let flags = (flags | libc::O_CREAT) as u32;
    let req =
        requests::create(s.uniques.next(), ROOT_ID, name.as_bytes(), flags, 0o644, 0).finish();
    let reply = s.fuse(1, &req);
    let entry: EntryOut = check(s.backend(), reply.ok().and_then(|r| r.body_as()));
    entry.nodeid
}

/// FALLOCATE through handle `fh`; returns the errno.
pub fn fallocate(
    s: &Session<'_>, nodeid: u64, fh: u64, offset: u64, length: u64, mode: i32,
) -> i32 {
    let unique = s.uniques.next();
    let req = requests::fallocate(unique, nodeid, fh, offset, length, mode as u32).finish();
    s.fuse(1, &req).errno()
}

/// WRITE of `data` at `offset` through handle `fh`.
pub fn write(s: &Session<'_>, nodeid: u64, fh: u64, offset: u64, data: &[u8]) {
    let req = requests::write(s.uniques.next(), nodeid, fh, offset, data, 0).finish();
    let reply = s.fuse(1, &req);
    let out: WriteOut = check(s.backend(), reply.ok().and_then(|r| r.body_as()));
    assert_eq!(out.size as usize, data.len());
}

/// Copies page `page` of the window out with volatile reads, as a vCPU would read it:
/// nothing checks that it is mapped or inside its file.
pub fn raw_read_page(window: &Window, page: u64) -> Vec<u8> {
    assert!(
        (page + 1) * PAGE <= window.size(),
        "page {page} outside the window"
    );
    let base = (window.host_base() as u64 + page * PAGE) as *const u64;
    (0..PAGE / 8)
        .flat_map(|i| {
            let word = base.wrapping_add(i as usize);
            // SAFETY: the word lies inside the window's reservation, which `window`
            // keeps mapped (it is only ever re-mapped in place, never unmapped, while
            // the window lives); nothing else in this process holds a reference into
            // it. A page mapping a file page past the end of the file raises SIGBUS
            // here, which is what these tests are about.
            unsafe { word.read_volatile() }.to_ne_bytes()
        })
        .collect()
}

/// Writes `byte` at the start of page `page` of the window with a volatile store.
pub fn raw_write(window: &Window, page: u64, byte: u8) {
    assert!(
        (page + 1) * PAGE <= window.size(),
        "page {page} outside the window"
    );
    let ptr = (window.host_base() as u64 + page * PAGE) as *mut u8;
    // SAFETY: as in `raw_read_page`; the page must be mapped writable, which the
    // caller checked through the harness's table (a read-only page would raise
    // SIGSEGV).
    unsafe { ptr.write_volatile(byte) }
}

/// The byte a guest should read at file offset `f` of a file whose bytes are `file`:
/// the file's byte below its end, zero past it.
fn expected(file: &[u8], f: u64) -> u8 {
    file.get(f as usize).copied().unwrap_or(0)
}

/// Reads and then writes every page of the extent `[moffset, moffset + len)`, which
/// the guest mapped writable at file offset `foffset` of the file at `path`, straight
/// through the window memory: every page must show the file below its current end and
/// zeros past it; afterwards the writes below the end are in the file, whose size is
/// unchanged. With the repair off, the first page past the end raises SIGBUS.
pub fn touch_every_page(s: &Session<'_>, path: &Path, moffset: u64, len: u64, foffset: u64) {
    let window = s.window();
    let file = std::fs::read(path).unwrap();
    let size = file.len() as u64;
    let pages = moffset / PAGE..(moffset + len) / PAGE;
    for page in pages.clone() {
        let mapping = window
            .mapping_at(page * PAGE)
            .unwrap_or_else(|| panic!("window page {page:#x} is not mapped (PROT_NONE)"));
        assert!(
            mapping.writable,
            "window page {page:#x} is read-only: {mapping:?}"
        );
        let bytes = raw_read_page(window, page);
        let f = foffset + (page * PAGE - moffset);
        if let Some(at) = (0..PAGE).find(|i| bytes[*i as usize] != expected(&file, f + i)) {
            panic!(
                "window offset {:#x} (file offset {:#x}, file size {size:#x}) shows {:#x}, expected {:#x} ({mapping:?})",
                page * PAGE + at,
                f + at,
                bytes[at as usize],
                expected(&file, f + at)
            );
        }
    }
    for page in pages.clone() {
        raw_write(window, page, 0xA5);
    }
    let after = std::fs::read(path).unwrap();
    assert_eq!(
        after.len() as u64,
        size,
        "writes through the window changed the size"
    );
    for page in pages {
        let f = foffset + (page * PAGE - moffset);
        if f < size {
            assert_eq!(after[f as usize], 0xA5, "write at file offset {f:#x} lost");
        }
    }
}

/// Runs `test` (this binary's test of that name) in a child process with
/// [`CHILD_ROLE`] set to the repair setting; returns its status and output. The child
/// cannot dump core.
pub fn run_child(test: &str, repair: bool) -> (ExitStatus, String) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, if repair { "on" } else { "off" })
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

/// In a child process: the repair setting it runs with, after making sure a crash
/// leaves no core file. `None` in the parent.
pub fn child_role() -> Option<bool> {
    let role = std::env::var(CHILD_ROLE).ok()?;
    let no_core = rustix::process::Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    let _ = rustix::process::setrlimit(rustix::process::Resource::Core, no_core);
    Some(role == "on")
}

/// The parent's half: the scenario `test` must survive with the repair on and die of
/// SIGBUS with it off.
pub fn assert_repair_is_what_keeps_the_harness_alive(test: &str) {
    use std::os::unix::process::ExitStatusExt;
    let (status, output) = run_child(test, true);
    assert!(
        status.success(),
        "with the repair on, the harness did not survive ({status}):\n{output}"
    );
    let (status, output) = run_child(test, false);
    assert_eq!(
        status.signal(),
        Some(libc::SIGBUS),
        "with the repair off, the harness should die of SIGBUS, but: {status}\n{output}"
    );
    eprintln!("{test}: repair on survives, repair off dies of SIGBUS");
}

/// A file of `len` patterned bytes in the shared directory.
pub fn patterned(daemon: &DaxDaemon, name: &str, len: u64) -> PathBuf {
    assert!(len <= 64 * MIB);
    daemon.patterned_file(name, len)
}

/// Both halves of a SIGBUS test named `test`: in a child process, the repair setting it
/// runs the scenario with ([`child_role`]); in the parent, runs the two children
/// ([`assert_repair_is_what_keeps_the_harness_alive`]) and returns `None`, which ends
/// the parent's test.
pub fn child_role_or_run_children(test: &str) -> Option<bool> {
    let role = child_role();
    if role.is_none() {
        assert_repair_is_what_keeps_the_harness_alive(test);
    }
    role
}

/// Starts daxfsd with an 8 MiB window like [`start`] (with the repair on or off as
/// `repair` says) and puts a file `data` of `len` patterned bytes in its shared
/// directory; returns the daemon and the file's host path.
pub fn start_with_data(repair: bool, len: u64) -> (DaxDaemon, PathBuf) {
    let daemon = start(8 * MIB, repair);
    let path = patterned(&daemon, "data", len);
    (daemon, path)
}
