//! The DAX cycle section: SETUPMAPPING + REMOVEMAPPING of 2 MiB ranges through daxfsd
//! and the harness (which really maps the file into its window), beside the limit
//! measured in the same run: the harness's own MAP_FIXED map and PROT_NONE remap of the
//! same file plus one socket round trip, with nothing else in between.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use daxfsd_harness::client::requests;
use daxfsd_harness::fuse::Uniques;
use daxfsd_harness::{
    BackendProcess, BackendRequestStats, Device, DeviceConfig, FrontendBehaviour, Window,
};
use daxfsd_protocol::abi::{
    ASYNC_READ, BIG_WRITES, HAS_INODE_DAX, MAP_ALIGNMENT, MAX_PAGES, ROOT_ID,
    SETUPMAPPING_FLAG_READ,
};
use zerocopy::FromBytes;

use crate::backends::{self, Binaries, Daemon};
use crate::error::{BenchError, HarnessContext, Result};
use crate::report::{Sample, Table};
use crate::workload::{check, split};

/// The guest's DAX range size.
pub const RANGE: u64 = 2 << 20;
/// Bytes of the round-trip request and reply: a vhost-user header with a SHMEM_MAP body,
/// and a header with a u64 ack.
const PING_LEN: usize = 12 + 40;
const PONG_LEN: usize = 12 + 8;

/// Settings of the DAX section.
#[derive(Debug, Clone)]
pub struct DaxConfig {
    /// Window size (a multiple of 2 MiB); the mapped file is as large.
    pub window: u64,
    /// Thread counts: each thread drives its own request queue and its own part of the
    /// window, one cycle at a time.
    pub threads: Vec<usize>,
    /// A/B pairs of timed runs.
    pub pairs: usize,
    /// Length of one timed run.
    pub run: Duration,
    /// Length of the untimed warm-up.
    pub warmup: Duration,
    /// Extra daxfsd arguments.
    pub daxfsd_args: Vec<String>,
}

pub(crate) struct DaxEnv {
    pub(crate) dev: Device,
    process: BackendProcess,
    uniques: Uniques,
    nodeid: u64,
}

/// How a frontend behaves beside the cycles: which QEMU it plays, and what it sends on
/// its own channel after each map and unmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrontendPlay {
    pub(crate) behaviour: FrontendBehaviour,
    pub(crate) table: crate::dax_table::TableTraffic,
}

impl FrontendPlay {
    /// The patched QEMU: no memory-table traffic.
    pub(crate) const PATCHED: Self = Self {
        behaviour: FrontendBehaviour::Patched,
        table: crate::dax_table::TableTraffic::None,
    };
}

/// Makes the share `shared` holding `mapped`, a file of `len` bytes (sparse) to map;
/// returns both paths.
pub(crate) fn share_with_mapped_file(
    shared: &Path, len: u64,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    std::fs::create_dir_all(shared).map_err(|e| BenchError::io("creating the DAX share", e))?;
    let file_path = shared.join("mapped");
    File::create(&file_path)
        .and_then(|f| f.set_len(len))
        .map_err(|e| BenchError::io("creating the mapped file", e))?;
    Ok((shared.to_path_buf(), file_path))
}

/// Runs the section.
pub fn run(bins: &Binaries, cfg: &DaxConfig, workdir: &Path, table: &mut Table) -> Result<()> {
    let (shared, file_path) = share_with_mapped_file(&workdir.join("dax"), cfg.window)?;
    let slots = usize::try_from(cfg.window / RANGE).unwrap_or(usize::MAX);
    let mut breakdown = None;
    for &threads in &cfg.threads {
        if threads == 0 || slots < threads {
            continue;
        }
        let env = start(bins, cfg, &shared, threads, FrontendPlay::PATCHED)?;
        let (limit_window, file) = limit_setup(cfg.window, &file_path)?;
        let limit = |part, length| run_limit(&limit_window, &file, threads, slots, length, part);
        run_daxfsd(&env, threads, slots, cfg.warmup)?;
        limit(LimitPart::All, cfg.warmup)?;
        let (mut d, mut l) = (Vec::new(), Vec::new());
        let mut parts: [Vec<Sample>; 3] = Default::default();
        for _ in 0..cfg.pairs {
            d.push(run_daxfsd(&env, threads, slots, cfg.run)?);
            l.push(limit(LimitPart::All, cfg.run)?);
            if threads == 1 {
                // The parts of a cycle through daxfsd, each alone, for the breakdown.
                parts[0].push(run_fuse_round_trip(&env, cfg.run)?);
                parts[1].push(limit(LimitPart::RoundTrip, cfg.run)?);
                parts[2].push(limit(LimitPart::MapUnmap, cfg.run)?);
            }
        }
        verify(&env)?;
        let label = if threads == 1 {
            "1 queue, one cycle at a time".to_string()
        } else {
            format!("{threads} queues, one cycle at a time on each")
        };
        table.dax_row(&label, &d, &l);
        if threads == 1 {
            let [fuse, socket, map] = parts;
            breakdown = Some((d, fuse, socket, map));
        }
    }
    if let Some((d, fuse, socket, map)) = breakdown {
        table.dax_breakdown(&d, &fuse, &socket, &map);
    }
    Ok(())
}

/// What the limit's cycles map: a window of `window` bytes reserved in this process, and
/// the mapped file at `file_path` opened read-only.
pub(crate) fn limit_setup(window: u64, file_path: &Path) -> Result<(Window, File)> {
    let reserved = Window::reserve(window).map_err(|source| BenchError::Window {
        what: "reservation",
        source,
    })?;
    let file = File::open(file_path).map_err(|e| BenchError::io("opening the mapped file", e))?;
    Ok((reserved, file))
}

/// One FUSE request at a time through daxfsd (GETATTR of the root), the virtqueue
/// round trip a SETUPMAPPING or REMOVEMAPPING also makes.
pub(crate) fn run_fuse_round_trip(env: &DaxEnv, length: Duration) -> Result<Sample> {
    let until = Instant::now() + length;
    let mut ops = 0u64;
    while Instant::now() < until {
        let req = requests::getattr(env.uniques.next(), ROOT_ID, None).finish();
        let token = env
            .dev
            .submit(1, &split(&req), &[16, 104])
            .during(|| "submitting a GETATTR".to_string())?;
        let done = env
            .dev
            .wait(token)
            .during(|| "waiting for a GETATTR".to_string())?;
        let unique = u64::from_le_bytes(req[8..16].try_into().unwrap_or_default());
        check(&done, unique, Some(104)).map_err(|detail| BenchError::BadReply {
            backend: "daxfsd",
            workload: "GETATTR",
            detail,
        })?;
        ops += 1;
    }
    Ok(Sample::new(ops as f64, length, 0, 0))
}

pub(crate) fn start(
    bins: &Binaries, cfg: &DaxConfig, shared: &Path, threads: usize, play: FrontendPlay,
) -> Result<DaxEnv> {
    let mut extra = vec!["--cache-size".to_string(), cfg.window.to_string()];
    extra.extend(cfg.daxfsd_args.iter().cloned());
    let process = backends::spawn(bins, Daemon::Daxfsd, shared, threads, "auto", &extra)?;
    eprintln!(
        "daxfsd pid {} with a {} MiB window",
        process.pid(),
        cfg.window >> 20
    );
    let config = DeviceConfig {
        request_queues: threads,
        queue_size: backends::QUEUE_SIZE,
        event_idx: true,
        read_config: false,
        cache_size: Some(cfg.window),
        frontend: play.behaviour,
        configure_mem_slots: play.table == crate::dax_table::TableTraffic::AddRemoveRegion,
        ..DeviceConfig::default()
    };
    let dev = Device::connect(process.socket_path(), config)
        .during(|| "connecting to daxfsd with a DAX window".to_string())?;
    let uniques = Uniques::default();
    // A guest mounting dax=always on the patched QEMU; dax=inode on QEMU 11.1, where
    // daxfsd refuses dax=always (11.1 cannot map a file's partial last page).
    let mode = match play.behaviour {
        FrontendBehaviour::Patched => 0,
        FrontendBehaviour::Upstream11_1 => HAS_INODE_DAX,
    };
    dev.fuse_init(
        1,
        uniques.next(),
        ASYNC_READ | BIG_WRITES | MAX_PAGES | MAP_ALIGNMENT | mode,
    )
    .during(|| "INIT of daxfsd".to_string())?;
    let req = requests::lookup(uniques.next(), ROOT_ID, b"mapped").finish();
    let reply = dev
        .fuse(1, &req, 4096)
        .and_then(|r| r.ok())
        .during(|| "LOOKUP of the mapped file".to_string())?;
    let nodeid = daxfsd_protocol::abi::EntryOut::read_from_prefix(&reply.body)
        .map(|(e, _)| e.nodeid)
        .map_err(|_| BenchError::BadReply {
            backend: "daxfsd",
            workload: "DAX setup",
            detail: "short LOOKUP reply".into(),
        })?;
    Ok(DaxEnv {
        dev,
        process,
        uniques,
        nodeid,
    })
}

/// Sends one request on `queue` and checks an empty success reply.
fn call(env: &DaxEnv, queue: usize, req: &[u8], what: &'static str) -> Result<()> {
    let token = env
        .dev
        .submit(queue, &split(req), &[16])
        .during(|| format!("submitting {what}"))?;
    let done = env
        .dev
        .wait(token)
        .during(|| format!("waiting for {what}"))?;
    let unique = u64::from_le_bytes(req[8..16].try_into().unwrap_or_default());
    check(&done, unique, Some(0)).map_err(|detail| BenchError::BadReply {
        backend: "daxfsd",
        workload: what,
        detail,
    })?;
    Ok(())
}

/// Cycles through daxfsd for `length`, `threads` queues in parallel, each on its own
/// slots of the window.
pub(crate) fn run_daxfsd(
    env: &DaxEnv, threads: usize, slots: usize, length: Duration,
) -> Result<Sample> {
    run_cycles(env, threads, slots, length, None)
}

/// Cycles through daxfsd as [`run_daxfsd`]; with `table`, the frontend also updates the
/// vhost memory table after each map and unmap, as upstream QEMU 11.1 does.
pub(crate) fn run_cycles(
    env: &DaxEnv, threads: usize, slots: usize, length: Duration,
    table: Option<&crate::dax_table::TableUpdates>,
) -> Result<Sample> {
    let per_thread = slots / threads;
    let pid = env.process.pid();
    let (cpu0, own0) = (backends::cpu_ns(pid)?, backends::own_cpu_ns()?);
    let until = Instant::now() + length;
    let (cycles, cpu, own) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || -> Result<u64> {
                    let mut cycles = 0u64;
                    while Instant::now() < until {
                        let slot = (t * per_thread + (cycles as usize % per_thread)) as u64;
                        let (unique, at) = (env.uniques.next(), slot * RANGE);
                        let read = SETUPMAPPING_FLAG_READ;
                        let setup = requests::setup_mapping(
                            unique,
                            env.nodeid,
                            u64::MAX,
                            at,
                            RANGE,
                            at,
                            read,
                        )
                        .finish();
                        call(env, t + 1, &setup, "SETUPMAPPING")?;
                        if let Some(table) = table {
                            table.mapped(&env.dev, slot * RANGE)?;
                        }
                        let remove =
                            requests::remove_mapping(env.uniques.next(), ROOT_ID, &[(at, RANGE)])
                                .finish();
                        call(env, t + 1, &remove, "REMOVEMAPPING")?;
                        if let Some(table) = table {
                            table.unmapped(&env.dev, slot * RANGE)?;
                        }
                        cycles += 1;
                    }
                    Ok(cycles)
                })
            })
            .collect();
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        let cpu = backends::cpu_ns(pid);
        let own = backends::own_cpu_ns();
        let mut cycles = 0;
        for h in handles {
            cycles += h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        }
        Ok::<_, BenchError>((cycles, cpu?, own?))
    })?;
    Ok(Sample::new(
        cycles as f64,
        length,
        cpu.saturating_sub(cpu0),
        own.saturating_sub(own0),
    ))
}

/// What one cycle of [`run_limit`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitPart {
    /// Map, unmap and one socket round trip: the limit.
    All,
    /// Only the map and the unmap.
    MapUnmap,
    /// Only the socket round trip.
    RoundTrip,
}

/// The limit: per cycle, the harness window's own exclusive map of the same file range
/// (a fresh descriptor, as one received over the socket would be) and its exact unmap
/// (PROT_NONE remap), plus one request/reply round trip over a Unix socket pair to a
/// thread of this process; or one of those parts alone.
pub(crate) fn run_limit(
    window: &Window, file: &File, threads: usize, slots: usize, length: Duration, part: LimitPart,
) -> Result<Sample> {
    let per_thread = slots / threads;
    let own0 = backends::own_cpu_ns()?;
    let until = Instant::now() + length;
    let (cycles, own) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || -> Result<u64> {
                    let (mut ours, mut peer) = UnixStream::pair()
                        .map_err(|e| BenchError::io("creating a socket pair", e))?;
                    let echo = std::thread::spawn(move || {
                        let (mut ping, pong) = ([0u8; PING_LEN], [0u8; PONG_LEN]);
                        while peer.read_exact(&mut ping).is_ok() {
                            if peer.write_all(&pong).is_err() {
                                break;
                            }
                        }
                    });
                    let (ping, mut pong) = ([0u8; PING_LEN], [0u8; PONG_LEN]);
                    let mut cycles = 0u64;
                    let result = (|| {
                        while Instant::now() < until {
                            let slot = (t * per_thread + (cycles as usize % per_thread)) as u64;
                            if part == LimitPart::RoundTrip {
                                ours.write_all(&ping)
                                    .and_then(|()| ours.read_exact(&mut pong))
                                    .map_err(|e| BenchError::io("the socket round trip", e))?;
                                cycles += 1;
                                continue;
                            }
                            let fd = OwnedFd::from(
                                file.try_clone()
                                    .map_err(|e| BenchError::io("duplicating the file", e))?,
                            );
                            window
                                .map_exclusive(slot * RANGE, RANGE, fd, slot * RANGE, false)
                                .map_err(|source| BenchError::Window {
                                    what: "map",
                                    source,
                                })?;
                            window.unmap_exact(slot * RANGE, RANGE).map_err(|source| {
                                BenchError::Window {
                                    what: "unmap",
                                    source,
                                }
                            })?;
                            if part == LimitPart::All {
                                ours.write_all(&ping)
                                    .and_then(|()| ours.read_exact(&mut pong))
                                    .map_err(|e| BenchError::io("the socket round trip", e))?;
                            }
                            cycles += 1;
                        }
                        Ok(cycles)
                    })();
                    drop(ours);
                    let _ = echo.join();
                    result
                })
            })
            .collect();
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        let own = backends::own_cpu_ns();
        let mut cycles = 0;
        for h in handles {
            cycles += h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        }
        Ok::<_, BenchError>((cycles, own?))
    })?;
    Ok(Sample::new(
        cycles as f64,
        length,
        0,
        own.saturating_sub(own0),
    ))
}

/// A failed check of the DAX cycles.
fn bad_cycle(detail: String) -> BenchError {
    BenchError::BadReply {
        backend: "daxfsd",
        workload: "DAX cycle",
        detail,
    }
}

/// Every map and unmap the daemon sent succeeded, and the window is empty again.
pub(crate) fn verify(env: &DaxEnv) -> Result<()> {
    let stats = verify_empty(env)?;
    if stats.failed != 0 || stats.shmem_map != stats.shmem_unmap {
        return Err(bad_cycle(format!("backend requests {stats:?}")));
    }
    Ok(())
}

/// The window is empty again after the last cycle and the daemon mapped through it (for
/// frontends whose probe at INIT sees refusals, which [`verify`] would count); returns
/// the backend channel's counters.
pub(crate) fn verify_empty(env: &DaxEnv) -> Result<BackendRequestStats> {
    let stats = env
        .dev
        .backend_channel()
        .map(|c| c.stats())
        .ok_or_else(|| bad_cycle("no backend channel".into()))?;
    if stats.shmem_map == 0 {
        return Err(bad_cycle(format!("backend requests {stats:?}")));
    }
    let mapped = env.dev.window().map(|w| w.mapped_bytes()).unwrap_or(0);
    if mapped != 0 {
        return Err(bad_cycle(format!(
            "{mapped} bytes still mapped after the last cycle"
        )));
    }
    Ok(stats)
}
