//! Shared fixture of the DAX tests: daxfsd with a window (`--cache-size`) and a metrics
//! file, a harness device that plays a standard SHMEM frontend, and FUSE helpers for
//! LOOKUP / OPEN / SETUPMAPPING / REMOVEMAPPING.
//!
//! Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use daxfsd_harness::backend_channel::BackendRequestRecord;
use daxfsd_harness::client::requests;
use daxfsd_harness::fuse::{FuseReply, Uniques, DEFAULT_REPLY_CAPACITY};
use daxfsd_harness::{
    locate_daxfsd, BackendChannel, BackendCommand, BackendProcess, BackendRequest, Device,
    DeviceConfig, HarnessError, Window,
};
use daxfsd_protocol::abi::{
    EntryOut, InitOut, OpenOut, RemoveMappingIn, RemoveMappingOne, SetupMappingIn, ASYNC_READ,
    BIG_WRITES, MAP_ALIGNMENT, MAX_PAGES, ROOT_ID, SETUPMAPPING_FLAG_READ, SETUPMAPPING_FLAG_WRITE,
};
use daxfsd_protocol::encode::RequestEncoder;
use daxfsd_protocol::Opcode;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
/// The guest's DAX range size (and the index's slot size).
pub const SLOT: u64 = 2 * MIB;
pub const PAGE: u64 = 4 * KIB;
/// `fh` of a SETUPMAPPING that asks the daemon to open the nodeid's file.
pub const FH_BY_NODEID: u64 = u64::MAX;
/// SETUPMAPPING flags of a read-only and of a writable mapping.
pub const READ: u64 = SETUPMAPPING_FLAG_READ;
pub const READ_WRITE: u64 = SETUPMAPPING_FLAG_READ | SETUPMAPPING_FLAG_WRITE;

/// How long to wait for the metrics file to be rewritten (the daemon writes it once a
/// second).
const METRICS_WAIT: Duration = Duration::from_secs(10);

/// Byte `i` of a patterned file: varies with the offset within a page and with the page,
/// so a mapping at the wrong file offset shows.
pub fn pattern_byte(i: u64) -> u8 {
    ((i % 251) ^ (i / PAGE).wrapping_mul(17)) as u8
}

/// Bytes `[from, from + len)` of a patterned file.
pub fn pattern(from: u64, len: u64) -> Vec<u8> {
    (from..from + len).map(pattern_byte).collect()
}

/// Panics with the chain and the daemon's logs.
pub fn check<T>(backend: &BackendProcess, r: Result<T, HarnessError>) -> T {
    r.unwrap_or_else(|e| panic!("{}", backend.report(&e)))
}

/// A daxfsd with a DAX window of `window` bytes and a metrics file.
pub struct DaxDaemon {
    pub backend: BackendProcess,
    pub window: u64,
    pub request_queues: usize,
    pub metrics_path: PathBuf,
}

impl DaxDaemon {
    /// Starts daxfsd with `--cache-size window`, `request_queues` request queues, a
    /// metrics file in its work directory and `extra` arguments.
    pub fn start(window: u64, request_queues: usize, extra: &[&str]) -> DaxDaemon {
        let bin = locate_daxfsd().unwrap_or_else(|e| panic!("{}", daxfsd_harness::error_chain(&e)));
        // The metrics file goes into a directory of its own next to the backend's: the
        // backend's work directory only exists once it is spawned.
        let metrics_dir = tempfile::Builder::new()
            .prefix("daxfsd-dax-metrics-")
            .tempdir()
            .unwrap()
            .keep();
        let metrics_path = metrics_dir.join("metrics.prom");
        let backend = BackendCommand::daxfsd(bin)
            .args(["--tag", "dax", "--num-request-queues"])
            .arg(request_queues.to_string())
            .arg("--cache-size")
            .arg(window.to_string())
            .arg("--metrics-file")
            .arg(metrics_path.to_string_lossy().into_owned())
            .args(extra.iter().copied())
            .spawn()
            .unwrap_or_else(|e| panic!("{}", daxfsd_harness::error_chain(&e)));
        DaxDaemon {
            backend,
            window,
            request_queues,
            metrics_path,
        }
    }

    /// Creates `name` in the shared directory with `len` patterned bytes.
    pub fn patterned_file(&self, name: &str, len: u64) -> PathBuf {
        let path = self.backend.shared_dir().join(name);
        std::fs::write(&path, pattern(0, len)).unwrap();
        path
    }

    /// A harness device playing a standard (SHMEM, exclusive-map) frontend with the
    /// window, INIT done with MAP_ALIGNMENT offered. The backend requests INIT caused (the
    /// daemon's probe of the frontend) are cleared from the channel's log and counters.
    pub fn connect(&self) -> Session<'_> {
        self.connect_with(|_| {})
    }

    /// Like [`Self::connect`] with the device config adjusted by `tweak`.
    pub fn connect_with(&self, tweak: impl FnOnce(&mut DeviceConfig)) -> Session<'_> {
        let s =
            self.connect_keeping_probe(tweak, ASYNC_READ | BIG_WRITES | MAX_PAGES | MAP_ALIGNMENT);
        if let Some(channel) = s.dev.backend_channel() {
            channel.clear_history();
        }
        s
    }

    /// Like [`Self::connect_with`] with INIT offering `init_flags`, and the channel's
    /// history (the probe's requests) kept.
    pub fn connect_keeping_probe(
        &self, tweak: impl FnOnce(&mut DeviceConfig), init_flags: u64,
    ) -> Session<'_> {
        let mut config = DeviceConfig {
            request_queues: self.request_queues,
            cache_size: Some(self.window),
            ..DeviceConfig::default()
        };
        tweak(&mut config);
        let dev = check(
            &self.backend,
            Device::connect_when_ready(self.backend.socket_path(), config, Duration::from_secs(10)),
        );
        let uniques = Uniques::default();
        let init = check(&self.backend, dev.fuse_init(1, uniques.next(), init_flags));
        Session {
            daemon: self,
            dev,
            uniques,
            init,
        }
    }

    /// The daemon's counters, from a metrics file rendered after this call began (waits
    /// for two rewrites: the first may have been rendered before the call).
    pub fn fresh_metrics(&self) -> Metrics {
        let deadline = Instant::now() + METRICS_WAIT;
        // Holding the current file open keeps its inode from being reused, so a new
        // inode number means a new rewrite.
        let mut held: Option<File> = None;
        let mut rewrites = 0;
        loop {
            if let Ok(file) = File::open(&self.metrics_path) {
                let ino = file.metadata().map(|m| m.ino()).ok();
                let previous = held
                    .as_ref()
                    .and_then(|f| f.metadata().ok())
                    .map(|m| m.ino());
                if ino.is_some() && ino != previous {
                    if held.is_some() {
                        rewrites += 1;
                    }
                    held = Some(file);
                    if rewrites == 2 {
                        let text = std::io::read_to_string(held.as_ref().unwrap()).unwrap();
                        return Metrics::parse(&text);
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "the metrics file {} was not rewritten twice within {METRICS_WAIT:?}\n{}",
                self.metrics_path.display(),
                self.backend.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many of the daemon's open descriptors refer to files under the shared
    /// directory (the inode table's O_PATH descriptors included).
    pub fn open_shared_files(&self) -> usize {
        let shared = self.backend.shared_dir().canonicalize().unwrap();
        let dir = format!("/proc/{}/fd", self.backend.daemon_pid());
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| target.starts_with(&shared) && *target != shared)
            .count()
    }

    /// Whether the daemon is still running.
    pub fn is_running(&self) -> bool {
        check(&self.backend, self.backend.is_running())
    }
}

impl Drop for DaxDaemon {
    fn drop(&mut self) {
        // Stop the writer first: a rewrite racing the removal would leave the directory.
        let _ = self.backend.kill();
        if let Some(dir) = self.metrics_path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Values of the metrics file, by metric name.
#[derive(Debug, Clone)]
pub struct Metrics(pub HashMap<String, u64>);

impl Metrics {
    /// Parses Prometheus text (`name value` lines; comments skipped).
    pub fn parse(text: &str) -> Metrics {
        let mut values = HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (name, value) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("metrics line without a value: {line:?}"));
            let value: u64 = value
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("metrics line with a non-integer value: {line:?}"));
            values.insert(name.to_string(), value);
        }
        Metrics(values)
    }

    /// A metric's value; panics if the daemon does not export it.
    pub fn get(&self, name: &str) -> u64 {
        *self
            .0
            .get(name)
            .unwrap_or_else(|| panic!("metric {name} missing from {:?}", self.0))
    }
}

/// One connected frontend session (device + INIT).
pub struct Session<'a> {
    pub daemon: &'a DaxDaemon,
    pub dev: Device,
    pub uniques: Uniques,
    pub init: InitOut,
}

impl Session<'_> {
    pub fn backend(&self) -> &BackendProcess {
        &self.daemon.backend
    }

    pub fn window(&self) -> &Window {
        self.dev.window().expect("the device has a window")
    }

    pub fn channel(&self) -> &BackendChannel {
        self.dev
            .backend_channel()
            .expect("the device has a backend channel")
    }

    /// Sends `request` on `queue` and returns the checked reply.
    pub fn fuse(&self, queue: usize, request: &[u8]) -> FuseReply {
        check(
            self.backend(),
            self.dev.fuse(queue, request, DEFAULT_REPLY_CAPACITY),
        )
    }

    /// LOOKUP of `name` in the root; returns the nodeid.
    pub fn lookup(&self, name: &str) -> u64 {
        let req = requests::lookup(self.uniques.next(), ROOT_ID, name.as_bytes()).finish();
        let reply = self.fuse(1, &req);
        let entry: EntryOut = check(self.backend(), reply.ok().and_then(|r| r.body_as()));
        assert_ne!(entry.nodeid, 0, "lookup of {name} found nothing");
        entry.nodeid
    }

    /// OPEN of `nodeid` with open(2) `flags`; returns the handle.
    pub fn open(&self, nodeid: u64, flags: i32) -> u64 {
        let req = requests::open(self.uniques.next(), nodeid, flags as u32).finish();
        let reply = self.fuse(1, &req);
        let out: OpenOut = check(self.backend(), reply.ok().and_then(|r| r.body_as()));
        out.fh
    }

    /// The bytes of a SETUPMAPPING request.
    pub fn setup_request(&self, nodeid: u64, arg: SetupMappingIn) -> Vec<u8> {
        RequestEncoder::new(Opcode::SetupMapping, self.uniques.next(), nodeid)
            .push(&arg)
            .finish()
    }

    /// SETUPMAPPING on `queue`; returns the errno (0 on success).
    #[allow(clippy::too_many_arguments)]
    pub fn setup_on(
        &self, queue: usize, nodeid: u64, fh: u64, foffset: u64, len: u64, moffset: u64, flags: u64,
    ) -> i32 {
        let unique = self.uniques.next();
        let req = requests::setup_mapping(unique, nodeid, fh, foffset, len, moffset, flags);
        self.fuse(queue, &req.finish()).errno()
    }

    /// SETUPMAPPING on queue 1; returns the errno (0 on success).
    pub fn setup(
        &self, nodeid: u64, fh: u64, foffset: u64, len: u64, moffset: u64, flags: u64,
    ) -> i32 {
        self.setup_on(1, nodeid, fh, foffset, len, moffset, flags)
    }

    /// A REMOVEMAPPING whose header claims `count` entries and whose body carries
    /// `ranges`.
    pub fn remove_request(&self, count: u32, ranges: &[(u64, u64)]) -> Vec<u8> {
        let mut enc = RequestEncoder::new(Opcode::RemoveMapping, self.uniques.next(), ROOT_ID)
            .push(&RemoveMappingIn { count });
        for &(moffset, len) in ranges {
            enc = enc.push(&RemoveMappingOne { moffset, len });
        }
        enc.finish()
    }

    /// REMOVEMAPPING of `ranges` on `queue`; returns the errno.
    pub fn remove_on(&self, queue: usize, ranges: &[(u64, u64)]) -> i32 {
        let count = u32::try_from(ranges.len()).unwrap();
        let req = self.remove_request(count, ranges);
        self.fuse(queue, &req).errno()
    }

    /// REMOVEMAPPING of `ranges` on queue 1; returns the errno.
    pub fn remove(&self, ranges: &[(u64, u64)]) -> i32 {
        self.remove_on(1, ranges)
    }

    /// Backend requests logged since index `since` of the channel's log.
    pub fn requests_since(&self, since: usize) -> Vec<BackendRequestRecord> {
        self.channel().log().split_off(since)
    }
}

/// A compact description of a backend request for assertions:
/// ("MAP", shm_offset, len, fd_offset, writable) or ("UNMAP", shm_offset, len, 0, false).
pub fn summary(record: &BackendRequestRecord) -> (&'static str, u64, u64, u64, bool) {
    match record.request {
        BackendRequest::ShmemMap {
            shm_offset,
            len,
            fd_offset,
            flags,
            ..
        } => ("MAP", shm_offset, len, fd_offset, flags & 1 != 0),
        BackendRequest::ShmemUnmap {
            shm_offset, len, ..
        } => ("UNMAP", shm_offset, len, 0, false),
        _ => ("OTHER", 0, 0, 0, false),
    }
}

/// The file behind a harness mapping, for comparing its bytes.
pub fn same_file(a: &Path, b: &Path) -> bool {
    a.canonicalize().ok() == b.canonicalize().ok()
}

/// The permissions column of /proc/self/maps for window offset `offset` ("---p" for the
/// PROT_NONE reservation, "rw-s" / "r--s" for a shared file mapping).
pub fn protection_at(window: &Window, offset: u64) -> String {
    let addr = window.host_base() + offset as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let lo = usize::from_str_radix(lo, 16).unwrap();
        let hi = usize::from_str_radix(hi, 16).unwrap();
        if (lo..hi).contains(&addr) {
            return perms.to_string();
        }
    }
    panic!("window offset {offset:#x} ({addr:#x}) is not mapped at all");
}
