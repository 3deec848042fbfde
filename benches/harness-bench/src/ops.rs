//! The operations section: daxfsd and virtiofsd side by side on identical request
//! streams, runs alternating A B A B, medians and ratios, and each daemon's peak RSS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use daxfsd_harness::fuse::Uniques;
use daxfsd_harness::{BackendProcess, Device, FuseClient, FuseResult};
use daxfsd_protocol::abi::{
    ASYNC_DIO, ASYNC_READ, ATOMIC_O_TRUNC, AUTO_INVAL_DATA, BIG_WRITES, DO_READDIRPLUS,
    EXPLICIT_INVAL_DATA, MAX_PAGES, PARALLEL_DIROPS, READDIRPLUS_AUTO, ROOT_ID,
};

use crate::backends::{self, Binaries, Daemon};
use crate::error::{BenchError, HarnessContext, Result};
use crate::report::{Sample, Table};
use crate::workload::{self, Slot};

/// Size of the files read and written.
pub const DATA_LEN: u64 = 16 << 20;
/// Entries of the listed directory.
pub const DIR_ENTRIES: usize = 1000;
/// Files of the directory LOOKUP+GETATTR cycles through: more than a daemon at
/// `--rlimit-nofile 4096` can hold one descriptor each for.
pub const MANY_FILES: usize = 20_000;

/// What a Linux 6.12 guest offers in INIT, minus the bits that change request layouts
/// (the streams here use the plain ones) and WRITEBACK_CACHE (virtiofsd refuses it
/// without --writeback). Both daemons get the same.
pub(crate) const INIT_FLAGS: u64 = ASYNC_READ
    | ATOMIC_O_TRUNC
    | BIG_WRITES
    | AUTO_INVAL_DATA
    | DO_READDIRPLUS
    | READDIRPLUS_AUTO
    | ASYNC_DIO
    | PARALLEL_DIROPS
    | MAX_PAGES
    | EXPLICIT_INVAL_DATA;

/// The operations measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// GETATTR of a file.
    Getattr,
    /// LOOKUP of existing names in a 1,000-entry directory.
    Lookup,
    /// 4 KiB READ from the host page cache.
    Read4k,
    /// 4 KiB WRITE overwriting a cached file.
    Write4k,
    /// 128 KiB READ (32 page descriptors).
    Read128k,
    /// Whole READDIRPLUS listings of a 1,000-entry directory.
    Readdirplus,
    /// CREATE, RELEASE, UNLINK, FORGET of a new file.
    CreateUnlink,
    /// LOOKUP then GETATTR, cycling through a 20,000-file directory.
    LookupGetattr,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 8] = [
        Workload::Getattr,
        Workload::Lookup,
        Workload::Read4k,
        Workload::Write4k,
        Workload::Read128k,
        Workload::Readdirplus,
        Workload::CreateUnlink,
        Workload::LookupGetattr,
    ];

    /// Name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Workload::Getattr => "GETATTR",
            Workload::Lookup => "LOOKUP",
            Workload::Read4k => "READ 4 KiB",
            Workload::Write4k => "WRITE 4 KiB",
            Workload::Read128k => "READ 128 KiB",
            Workload::Readdirplus => "READDIRPLUS 1,000 entries",
            Workload::CreateUnlink => "CREATE+UNLINK",
            Workload::LookupGetattr => "LOOKUP+GETATTR of 20,000 files",
        }
    }

    /// Units of work ([`workload::Step::ops`]) per reported operation.
    fn units_per_op(self) -> f64 {
        match self {
            Workload::Readdirplus => DIR_ENTRIES as f64,
            _ => 1.0,
        }
    }

    /// What one counted operation is.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Readdirplus => "listings/s",
            Workload::CreateUnlink => "cycles/s",
            _ => "ops/s",
        }
    }

    /// The slots of driver `index` (of `drivers`), `per_driver` of them.
    fn slots(self, fx: &Fixture, index: usize, per_driver: usize) -> Vec<Box<dyn Slot>> {
        (0..per_driver)
            .map(|s| {
                let n = index * per_driver + s;
                let slot: Box<dyn Slot> = match self {
                    Workload::Getattr => Box::new(workload::Getattr::new(fx.data)),
                    Workload::Lookup => {
                        Box::new(workload::Lookup::new(fx.dir, Arc::clone(&fx.names), n * 61))
                    }
                    Workload::Read4k => Box::new(workload::Read::new(
                        fx.data,
                        fx.data_fh,
                        workload::PAGE,
                        DATA_LEN,
                        n as u64 * 37 * 4096,
                    )),
                    Workload::Write4k => Box::new(workload::Write::new(
                        fx.wdata,
                        fx.wdata_fh,
                        DATA_LEN,
                        n as u64 * 37 * 4096,
                    )),
                    Workload::Read128k => Box::new(workload::Read::new(
                        fx.data,
                        fx.data_fh,
                        128 << 10,
                        DATA_LEN,
                        n as u64 * 3 * (128 << 10),
                    )),
                    Workload::Readdirplus => Box::new(workload::Readdirplus::new(
                        fx.dir,
                        fx.dir_fhs[n],
                        DIR_ENTRIES,
                    )),
                    Workload::CreateUnlink => Box::new(workload::CreateUnlink::new(
                        fx.create_dir,
                        format!("{}-d{index}s{s}", fx.prefix),
                    )),
                    Workload::LookupGetattr => Box::new(workload::LookupGetattr::new(
                        fx.many,
                        Arc::clone(&fx.many_names),
                        n * (MANY_FILES / 16 + 1),
                    )),
                };
                slot
            })
            .collect()
    }
}

/// Settings of the operations section.
#[derive(Debug, Clone)]
pub struct OpsConfig {
    /// Request-queue counts to measure (rows per workload).
    pub queue_counts: Vec<usize>,
    /// Requests in flight per request queue.
    pub depth: usize,
    /// A/B pairs of timed runs per row.
    pub pairs: usize,
    /// Length of one timed run.
    pub run: Duration,
    /// Length of the untimed warm-up run of each daemon before a row.
    pub warmup: Duration,
    /// Workloads to measure.
    pub workloads: Vec<Workload>,
    /// `--cache` of both daemons.
    pub cache: String,
    /// Extra daxfsd arguments.
    pub daxfsd_args: Vec<String>,
    /// Extra virtiofsd arguments.
    pub virtiofsd_args: Vec<String>,
}

/// Results of one (workload, queue count) row.
#[derive(Debug)]
pub struct Row {
    /// The workload.
    pub workload: Workload,
    /// Request queues daxfsd used (virtiofsd offers one and gets all requests on it).
    pub queues: usize,
    /// Requests in flight per queue of daxfsd.
    pub depth: usize,
    /// Samples of daxfsd, then virtiofsd.
    pub samples: [Vec<Sample>; 2],
}

/// Peak RSS and open descriptors of both daemons after all workloads at one queue count.
#[derive(Debug)]
pub struct Rss {
    /// Request queues.
    pub queues: usize,
    /// VmHWM of daxfsd and virtiofsd, KiB.
    pub kib: [u64; 2],
    /// Descriptors daxfsd and virtiofsd hold (`/proc/<pid>/fd`).
    pub fds: [usize; 2],
}

/// Everything the section measured.
#[derive(Debug, Default)]
pub struct OpsReport {
    /// Rows in order.
    pub rows: Vec<Row>,
    /// Peak RSS per queue count.
    pub rss: Vec<Rss>,
}

/// Nodeids and handles a workload needs, the same names on both daemons.
struct Fixture {
    data: u64,
    data_fh: u64,
    wdata: u64,
    wdata_fh: u64,
    dir: u64,
    dir_fhs: Vec<u64>,
    create_dir: u64,
    names: Arc<Vec<String>>,
    many: u64,
    many_names: Arc<Vec<String>>,
    /// Prefix of created names, so the two daemons never share one.
    prefix: &'static str,
}

/// One running daemon with its connected device.
struct Env {
    daemon: Daemon,
    // Device before process: the connection closes before the daemon is killed.
    dev: Device,
    process: BackendProcess,
    uniques: Uniques,
    fx: Fixture,
    /// Driver threads (= request queues used).
    drivers: usize,
}

/// Creates the shared tree both daemons serve.
pub fn populate(dir: &Path) -> Result<()> {
    let io = |what: &str, e| BenchError::io(format!("{what} in {}", dir.display()), e);
    std::fs::create_dir_all(dir.join("dir")).map_err(|e| io("creating dir/", e))?;
    std::fs::create_dir_all(dir.join("c")).map_err(|e| io("creating c/", e))?;
    let data: Vec<u8> = (0..DATA_LEN).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.join("data"), &data).map_err(|e| io("writing data", e))?;
    std::fs::write(dir.join("wdata"), &data).map_err(|e| io("writing wdata", e))?;
    for name in entry_names() {
        std::fs::write(dir.join("dir").join(&name), b"").map_err(|e| io("creating entries", e))?;
    }
    std::fs::create_dir_all(dir.join("many")).map_err(|e| io("creating many/", e))?;
    for name in many_names() {
        std::fs::write(dir.join("many").join(&name), b"").map_err(|e| io("creating many/", e))?;
    }
    Ok(())
}

fn entry_names() -> Vec<String> {
    (0..DIR_ENTRIES).map(|i| format!("f{i:04}")).collect()
}

fn many_names() -> Vec<String> {
    (0..MANY_FILES).map(|i| format!("m{i:05}")).collect()
}

impl Env {
    fn start(
        bins: &Binaries, daemon: Daemon, shared: &Path, queues: usize, cfg: &OpsConfig,
    ) -> Result<Env> {
        let (drivers, extra) = match daemon {
            Daemon::Daxfsd => (queues, &cfg.daxfsd_args),
            Daemon::Virtiofsd => (1, &cfg.virtiofsd_args),
        };
        let process = backends::spawn(bins, daemon, shared, queues, &cfg.cache, extra)?;
        let (dev, uniques) = backends::connect_and_init(&process, daemon, drivers, INIT_FLAGS)?;
        let mut env = Env {
            daemon,
            dev,
            process,
            uniques,
            fx: Fixture {
                data: 0,
                data_fh: 0,
                wdata: 0,
                wdata_fh: 0,
                dir: 0,
                dir_fhs: Vec::new(),
                create_dir: 0,
                names: Arc::new(entry_names()),
                many: 0,
                many_names: Arc::new(many_names()),
                prefix: daemon.name(),
            },
            drivers,
        };
        env.fx.data = env.lookup(ROOT_ID, "data")?;
        env.fx.wdata = env.lookup(ROOT_ID, "wdata")?;
        env.fx.dir = env.lookup(ROOT_ID, "dir")?;
        env.fx.create_dir = env.lookup(ROOT_ID, "c")?;
        env.fx.many = env.lookup(ROOT_ID, "many")?;
        let client = FuseClient::new(&env.dev, &env.uniques);
        let (daemon, fx) = (env.daemon, &mut env.fx);
        fx.data_fh = setup_reply(daemon, "OPEN", client.open(fx.data, libc::O_RDONLY))?.fh;
        fx.wdata_fh = setup_reply(daemon, "OPEN", client.open(fx.wdata, libc::O_RDWR))?.fh;
        for _ in 0..queues * cfg.depth {
            let fh = setup_reply(daemon, "OPENDIR", client.opendir(fx.dir))?.fh;
            fx.dir_fhs.push(fh);
        }
        Ok(env)
    }

    fn client(&self) -> FuseClient<'_> {
        FuseClient::new(&self.dev, &self.uniques)
    }

    fn lookup(&self, parent: u64, name: &str) -> Result<u64> {
        let what = format!("LOOKUP {name}");
        let entry = setup_reply(
            self.daemon,
            &what,
            self.client().lookup(parent, name.as_bytes()),
        )?;
        Ok(entry.nodeid)
    }

    /// One timed run: `total_slots` requests in flight over this daemon's queues for
    /// `length`. The daemon's and this process's CPU time are read at the start and at
    /// the deadline, so requests drained afterwards do not count.
    fn run(&self, workload: Workload, total_slots: usize, length: Duration) -> Result<Sample> {
        let per_driver = total_slots / self.drivers;
        let mut slot_sets: Vec<Vec<Box<dyn Slot>>> = (0..self.drivers)
            .map(|d| workload.slots(&self.fx, d, per_driver))
            .collect();
        let pid = self.process.pid();
        let who = (self.daemon.name(), workload.label());
        let (daemon_cpu0, own_cpu0) = (backends::cpu_ns(pid)?, backends::own_cpu_ns()?);
        let start = Instant::now();
        let until = start + length;
        let (ops, daemon_cpu, own_cpu) = std::thread::scope(|scope| {
            let handles: Vec<_> = slot_sets
                .iter_mut()
                .enumerate()
                .map(|(d, slots)| {
                    let (dev, uniques) = (&self.dev, &self.uniques);
                    scope.spawn(move || workload::drive(dev, uniques, d + 1, slots, until, who))
                })
                .collect();
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            let daemon_cpu = backends::cpu_ns(pid);
            let own_cpu = backends::own_cpu_ns();
            let mut ops = 0;
            for h in handles {
                ops += h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            }
            Ok::<_, BenchError>((ops, daemon_cpu?, own_cpu?))
        })?;
        Ok(Sample::new(
            ops as f64 / workload.units_per_op(),
            length,
            daemon_cpu.saturating_sub(daemon_cpu0),
            own_cpu.saturating_sub(own_cpu0),
        ))
    }
}

/// The answer of a setup request: a transport failure or an errno is an error.
fn setup_reply<T>(
    daemon: Daemon, what: &str, reply: daxfsd_harness::Result<FuseResult<T>>,
) -> Result<T> {
    reply
        .during(|| format!("{what} on {}", daemon.name()))?
        .map_err(|errno| BenchError::BadReply {
            backend: daemon.name(),
            workload: "setup",
            detail: format!("{what}: errno {errno}"),
        })
}

/// Runs the section: for each queue count, both daemons side by side.
pub fn run(
    bins: &Binaries, cfg: &OpsConfig, workdir: &Path, table: &mut Table,
) -> Result<OpsReport> {
    let mut report = OpsReport::default();
    // One directory for both daemons: the same files in the same page cache, new files
    // in the same ext4 block group (whose inode allocation dominates CREATE).
    let shared: PathBuf = workdir.join("shared");
    populate(&shared)?;
    for &queues in &cfg.queue_counts {
        let mut envs = Vec::new();
        for daemon in Daemon::AB {
            let env = Env::start(bins, daemon, &shared, queues, cfg)?;
            eprintln!(
                "{} pid {} serving {} ({} request queue(s))",
                daemon.name(),
                env.process.pid(),
                shared.display(),
                env.drivers
            );
            envs.push(env);
        }
        let total_slots = queues * cfg.depth;
        for &workload in &cfg.workloads {
            for env in &envs {
                env.run(workload, total_slots, cfg.warmup)?;
            }
            let mut samples: [Vec<Sample>; 2] = Default::default();
            for _ in 0..cfg.pairs {
                for (i, env) in envs.iter().enumerate() {
                    samples[i].push(env.run(workload, total_slots, cfg.run)?);
                }
            }
            let row = Row {
                workload,
                queues,
                depth: cfg.depth,
                samples,
            };
            table.ops_row(&row);
            report.rows.push(row);
        }
        let (mut kib, mut fds) = ([0; 2], [0; 2]);
        for (i, env) in envs.iter().enumerate() {
            kib[i] = backends::peak_rss_kib(env.process.pid())?;
            fds[i] = backends::fd_count(env.process.pid())?;
        }
        report.rss.push(Rss { queues, kib, fds });
    }
    for rss in &report.rss {
        table.rss_row(rss);
    }
    Ok(report)
}
