//! `daxfsd-bench`: daxfsd against upstream virtiofsd through the frontend harness, and
//! the DAX map/unmap cycle against its measured limit. Not part of the test suite; see
//! docs/benchmarks.md.
//!
//! ```sh
//! cargo run --release -p daxfsd-bench              # full run (a few minutes)
//! cargo run --release -p daxfsd-bench -- --quick   # smoke run
//! ```

mod backends;
mod dax;
mod dax_table;
mod error;
mod ops;
mod report;
mod scale;
mod workload;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::backends::Binaries;
use crate::error::{BenchError, Result};
use crate::ops::Workload;
use crate::report::Table;

/// Parts of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// FUSE operations, daxfsd vs virtiofsd, plus peak RSS.
    Ops,
    /// DAX SETUPMAPPING + REMOVEMAPPING cycles vs the measured limit.
    Dax,
    /// DAX cycles through frontends that do and do not update the vhost memory table
    /// per mapping (upstream QEMU 11.1 does), against the patched QEMU's.
    DaxTable,
    /// LOOKUP+GETATTR of every file of a very large directory once (`--scale-files`),
    /// never forgotten, under a descriptor limit: rate, RSS per 100,000 inodes and the
    /// descriptors each daemon held; not in the default set.
    Scale,
    /// Real TCG guests reading a 64 MiB file (tests/guest/bench-guest.sh: patched
    /// QEMU, DAX and page-cache configurations); root, slow, not in the default set.
    Guest,
}

/// Side-by-side benchmark of daxfsd and upstream virtiofsd over the vhost-user frontend
/// harness (identical request streams, runs alternating A B A B, medians and ratios),
/// and of daxfsd's DAX map/unmap cycle against the limit measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "daxfsd-bench")]
struct Args {
    /// Smoke run: 2 pairs of 0.2 s runs.
    #[arg(long)]
    quick: bool,
    /// Sections to run.
    #[arg(long, value_delimiter = ',', default_values = ["ops", "dax", "dax-table"])]
    sections: Vec<Section>,
    /// A/B pairs of timed runs per row (default 5, --quick 2); for the guest section,
    /// runs per configuration (default 3, --quick 1).
    #[arg(long)]
    pairs: Option<usize>,
    /// Seconds per timed run (default 1, --quick 0.2).
    #[arg(long)]
    seconds: Option<f64>,
    /// Requests in flight per request queue.
    #[arg(long, default_value_t = 16)]
    depth: usize,
    /// Request-queue counts of the operations section.
    #[arg(long, value_delimiter = ',', default_values = ["1", "2"])]
    queues: Vec<usize>,
    /// Only these workloads of the operations section (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Workload>,
    /// `--cache` mode of both daemons.
    #[arg(long, default_value = "auto")]
    cache: String,
    /// Directory in which to create the shared tree (default: the system temporary
    /// directory). Its filesystem is what CREATE+UNLINK mostly measures.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// DAX window size in MiB (a multiple of 2).
    #[arg(long, default_value_t = 64)]
    window_mib: u64,
    /// Files of the scale section's directory.
    #[arg(long, default_value_t = 1_000_000)]
    scale_files: usize,
    /// `--rlimit-nofile` of both daemons in the scale section.
    #[arg(long, default_value_t = 4096)]
    scale_rlimit_nofile: u64,
    /// Extra argument for daxfsd (repeatable).
    #[arg(long = "daxfsd-arg", allow_hyphen_values = true)]
    daxfsd_args: Vec<String>,
    /// Extra argument for virtiofsd (repeatable), e.g. --thread-pool-size=2.
    #[arg(long = "virtiofsd-arg", allow_hyphen_values = true)]
    virtiofsd_args: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daxfsd-bench: {}", daxfsd_harness::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: daxfsd-bench is a debug build; the harness's own cost distorts the ratios (use --release)");
    }
    let pairs = args.pairs.unwrap_or(if args.quick { 2 } else { 5 });
    let run = Duration::from_secs_f64(args.seconds.unwrap_or(if args.quick { 0.2 } else { 1.0 }));
    let warmup = if args.quick {
        Duration::from_millis(50)
    } else {
        Duration::from_millis(300)
    };
    if args.sections == [Section::Guest] {
        return run_guest(args);
    }
    let need_virtiofsd =
        args.sections.contains(&Section::Ops) || args.sections.contains(&Section::Scale);
    let bins = Binaries::locate(need_virtiofsd)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix("daxfsd-bench-");
    let workdir = match &args.dir {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .map_err(|e| BenchError::io("creating the benchmark directory", e))?;

    print_machine(&bins, need_virtiofsd);
    println!(
        "shared directory: {} ({})",
        workdir.path().display(),
        filesystem_of(workdir.path())
    );
    println!(
        "\nruns: {pairs} A/B pairs of {:.1} s per row (daxfsd first), warm-up {:.2} s per daemon; cache={}",
        run.as_secs_f64(),
        warmup.as_secs_f64(),
        args.cache
    );
    let mut table = Table::default();
    if args.sections.contains(&Section::Ops) {
        let cfg = ops::OpsConfig {
            queue_counts: args.queues.clone(),
            depth: args.depth,
            pairs,
            run,
            warmup,
            workloads: if args.only.is_empty() {
                Workload::ALL.to_vec()
            } else {
                args.only.clone()
            },
            cache: args.cache.clone(),
            daxfsd_args: args.daxfsd_args.clone(),
            virtiofsd_args: args.virtiofsd_args.clone(),
        };
        ops::run(&bins, &cfg, workdir.path(), &mut table)?;
    }
    if args.sections.contains(&Section::Dax) {
        let cfg = dax::DaxConfig {
            window: args.window_mib << 20,
            threads: vec![1, 2],
            pairs,
            run,
            warmup,
            daxfsd_args: args.daxfsd_args.clone(),
        };
        dax::run(&bins, &cfg, workdir.path(), &mut table)?;
    }
    if args.sections.contains(&Section::DaxTable) {
        let cfg = dax::DaxConfig {
            window: args.window_mib << 20,
            threads: vec![1],
            pairs,
            run,
            warmup,
            daxfsd_args: args.daxfsd_args.clone(),
        };
        dax_table::run(&bins, &cfg, workdir.path())?;
    }
    if args.sections.contains(&Section::Scale) {
        let cfg = scale::ScaleConfig {
            files: args.scale_files,
            rlimit_nofile: args.scale_rlimit_nofile,
            depth: args.depth,
            cache: args.cache.clone(),
            daxfsd_args: args.daxfsd_args.clone(),
            virtiofsd_args: args.virtiofsd_args.clone(),
        };
        scale::run(&bins, &cfg, workdir.path())?;
    }
    println!("\nload average at the end: {}", loadavg());
    if args.sections.contains(&Section::Guest) {
        run_guest(args)?;
    }
    Ok(())
}

/// The real-guest section: runs tests/guest/bench-guest.sh (which builds what it needs)
/// with `--runs` = the number of pairs (default 3, the best of which it keeps).
fn run_guest(args: &Args) -> Result<()> {
    let script = backends::repo_root().join("tests/guest/bench-guest.sh");
    let runs = args.pairs.unwrap_or(if args.quick { 1 } else { 3 });
    println!("\nreal-guest section: {} --runs {runs}", script.display());
    let status = std::process::Command::new("bash")
        .arg(&script)
        .args(["--runs", &runs.to_string()])
        .status()
        .map_err(|e| BenchError::io(format!("running {}", script.display()), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(BenchError::Binary(format!(
            "{} failed ({status})",
            script.display()
        )))
    }
}

/// The machine and the binaries, for the record.
fn print_machine(bins: &Binaries, virtiofsd: bool) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {nproc} CPUs, {cpu}, Linux {kernel}");
    println!("load average at the start: {}", loadavg());
    println!(
        "daxfsd: {} ({})",
        bins.daxfsd.display(),
        backends::version(&bins.daxfsd)
    );
    if virtiofsd {
        println!(
            "virtiofsd: {} ({})",
            bins.virtiofsd.display(),
            backends::version(&bins.virtiofsd)
        );
    }
}

/// The type of the filesystem holding `path`, from /proc/self/mounts (the longest
/// mount point that prefixes it).
fn filesystem_of(path: &std::path::Path) -> String {
    let Ok(path) = path.canonicalize() else {
        return "unknown".into();
    };
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, mount_point, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount_point)
                .then(|| (mount_point.len(), fs_type.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, fs_type)| fs_type)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
