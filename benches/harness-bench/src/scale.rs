//! The inode-scale section: a guest that looks up and stats every file of a very large
//! directory once (what `ls -l` of it sends), never forgetting any, with the daemons'
//! descriptor limit far below the file count. Each daemon in turn gets a fresh process
//! (an empty inode table) and one pass over every name; the section reports the pass's
//! rate and daemon CPU, the RSS the inode table grew by per 100,000 inodes, and the
//! most descriptors the daemon held while it ran (sampled every 50 ms).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use daxfsd_harness::{Completion, FuseClient};
use daxfsd_protocol::abi::ROOT_ID;

use crate::backends::{self, Binaries, Daemon};
use crate::error::{BenchError, HarnessContext, Result};
use crate::report::rate;
use crate::workload::{self, Slot, Step, Submission};

/// Settings of the section.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    /// Files in the directory.
    pub files: usize,
    /// `--rlimit-nofile` of both daemons.
    pub rlimit_nofile: u64,
    /// Requests in flight (one request queue).
    pub depth: usize,
    /// `--cache` of both daemons.
    pub cache: String,
    /// Extra daxfsd arguments.
    pub daxfsd_args: Vec<String>,
    /// Extra virtiofsd arguments.
    pub virtiofsd_args: Vec<String>,
}

/// What one daemon's pass amounted to.
#[derive(Debug)]
struct Pass {
    seconds: f64,
    daemon_cpu_ns: u64,
    /// VmRSS before the pass and after it, KiB.
    rss_kib: [u64; 2],
    peak_fds: usize,
    fds_after: usize,
}

/// LOOKUP+GETATTR of the names `start..start + count` of the directory, once each.
struct Range {
    inner: workload::LookupGetattr,
    left: u64,
}

impl Slot for Range {
    fn next(&mut self, unique: u64) -> Submission<'_> {
        self.inner.next(unique)
    }

    fn complete(&mut self, c: &Completion) -> std::result::Result<Step, String> {
        let step = self.inner.complete(c)?;
        self.left = self.left.saturating_sub(step.ops);
        Ok(step)
    }

    fn finished(&self) -> bool {
        self.left == 0
    }
}

/// Names of the directory's files.
fn names(files: usize) -> Vec<String> {
    (0..files).map(|i| format!("s{i:07}")).collect()
}

/// Creates `dir/scale` with `files` empty files, unless a previous run left it whole.
fn populate(dir: &Path, files: usize) -> Result<()> {
    let scale = dir.join("scale");
    std::fs::create_dir_all(&scale)
        .map_err(|e| BenchError::io(format!("creating {}", scale.display()), e))?;
    for name in names(files) {
        let path = scale.join(name);
        std::fs::write(&path, b"")
            .map_err(|e| BenchError::io(format!("creating {}", path.display()), e))?;
    }
    Ok(())
}

/// VmRSS of `pid`, KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    backends::status_kib(pid, "VmRSS:")
}

/// One fresh daemon, one pass over every name.
fn pass(bins: &Binaries, daemon: Daemon, shared: &Path, cfg: &ScaleConfig) -> Result<Pass> {
    let mut extra = vec![format!("--rlimit-nofile={}", cfg.rlimit_nofile)];
    extra.extend(
        match daemon {
            Daemon::Daxfsd => &cfg.daxfsd_args,
            Daemon::Virtiofsd => &cfg.virtiofsd_args,
        }
        .iter()
        .cloned(),
    );
    let process = backends::spawn(bins, daemon, shared, 1, &cfg.cache, &extra)?;
    let (dev, uniques) = backends::connect_and_init(&process, daemon, 1, crate::ops::INIT_FLAGS)?;
    let dir = FuseClient::new(&dev, &uniques)
        .lookup(ROOT_ID, b"scale")
        .during(|| format!("LOOKUP scale on {}", daemon.name()))?
        .map_err(|errno| BenchError::BadReply {
            backend: daemon.name(),
            workload: "setup",
            detail: format!("LOOKUP scale: errno {errno}"),
        })?
        .nodeid;
    let pid = process.pid();
    let names = Arc::new(names(cfg.files));
    let per_slot = cfg.files.div_ceil(cfg.depth);
    let mut slots: Vec<Box<dyn Slot>> = (0..cfg.depth)
        .map(|s| {
            let start = s * per_slot;
            let count = per_slot.min(cfg.files.saturating_sub(start));
            Box::new(Range {
                inner: workload::LookupGetattr::new(dir, Arc::clone(&names), start),
                left: count as u64,
            }) as Box<dyn Slot>
        })
        .filter(|slot| !slot.finished())
        .collect();
    let rss_before = rss_kib(pid)?;
    let cpu_before = backends::cpu_ns(pid)?;
    let done = AtomicBool::new(false);
    let peak_fds = AtomicUsize::new(backends::fd_count(pid)?);
    let start = Instant::now();
    let who = (daemon.name(), "LOOKUP+GETATTR, one pass");
    let ops = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if let Ok(n) = backends::fd_count(pid) {
                    peak_fds.fetch_max(n, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let far = start + Duration::from_secs(24 * 3600);
        let ops = workload::drive(&dev, &uniques, 1, &mut slots, far, who);
        done.store(true, Ordering::Relaxed);
        ops
    })?;
    let seconds = start.elapsed().as_secs_f64();
    if ops != cfg.files as u64 {
        return Err(BenchError::BadReply {
            backend: daemon.name(),
            workload: who.1,
            detail: format!("{ops} pairs answered of {}", cfg.files),
        });
    }
    let fds_after = backends::fd_count(pid)?;
    Ok(Pass {
        seconds,
        daemon_cpu_ns: backends::cpu_ns(pid)?.saturating_sub(cpu_before),
        rss_kib: [rss_before, rss_kib(pid)?],
        peak_fds: peak_fds.load(Ordering::Relaxed).max(fds_after),
        fds_after,
    })
}

/// Runs the section: daxfsd's pass, then virtiofsd's, and prints their table.
pub fn run(bins: &Binaries, cfg: &ScaleConfig, workdir: &Path) -> Result<()> {
    let shared = workdir.join("shared");
    let made = Instant::now();
    populate(&shared, cfg.files)?;
    println!(
        "\ninode scale: {} files created in {:.0} s; one request queue, {} in flight, \
         --rlimit-nofile={} for both daemons",
        rate(cfg.files as f64),
        made.elapsed().as_secs_f64(),
        cfg.depth,
        cfg.rlimit_nofile
    );
    let mut passes = Vec::new();
    for daemon in Daemon::AB {
        let p = pass(bins, daemon, &shared, cfg)?;
        eprintln!("{}: {p:?}", daemon.name());
        passes.push(p);
    }
    print_table(cfg, &passes);
    Ok(())
}

/// A row of the table: its label, the value of a pass, how a value prints, and whether
/// its ratio is a headline (bold).
type TableRow<'a> = (
    &'a str,
    &'a dyn Fn(&Pass) -> f64,
    &'a dyn Fn(f64) -> String,
    bool,
);

fn print_table(cfg: &ScaleConfig, passes: &[Pass]) {
    let files = cfg.files as f64;
    let per_100k = |p: &Pass| (p.rss_kib[1].saturating_sub(p.rss_kib[0])) as f64 * 1e5 / files;
    let pairs_per_s = |p: &Pass| files / p.seconds;
    let cpu_us = |p: &Pass| p.daemon_cpu_ns as f64 / 1e3 / files;
    let rss_after = |p: &Pass| p.rss_kib[1] as f64;
    let (d, v) = (&passes[0], &passes[1]);
    println!("\n| LOOKUP+GETATTR of every file once | daxfsd | virtiofsd | ratio d/v |");
    println!("| --- | ---: | ---: | ---: |");
    let rows: [TableRow<'_>; 4] = [
        ("pairs/s (whole pass)", &pairs_per_s, &|x| rate(x), true),
        (
            "daemon CPU µs per pair",
            &cpu_us,
            &|x| format!("{x:.1}"),
            false,
        ),
        (
            "RSS grown per 100,000 inodes",
            &per_100k,
            &|x| format!("{} KiB", rate(x)),
            true,
        ),
        (
            "RSS after the pass",
            &rss_after,
            &|x| format!("{} KiB", rate(x)),
            false,
        ),
    ];
    for (label, value, show, headline) in rows {
        let ratio = format!("{:.2}×", value(d) / value(v));
        let ratio = if headline {
            format!("**{ratio}**")
        } else {
            ratio
        };
        println!(
            "| {label} | {} | {} | {ratio} |",
            show(value(d)),
            show(value(v))
        );
    }
    println!(
        "| most descriptors held (after the pass) | {} ({}) | {} ({}) | |",
        rate(d.peak_fds as f64),
        d.fds_after,
        rate(v.peak_fds as f64),
        v.fds_after
    );
}
