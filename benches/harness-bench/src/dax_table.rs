//! What upstream QEMU 11.1's memory-table traffic costs a DAX cycle. QEMU 11.1 puts each
//! window mapping into the vhost memory table: after every SHMEM_MAP and SHMEM_UNMAP it
//! sends the backend the changed table, as one ADD_MEM_REG / REM_MEM_REG when
//! CONFIGURE_MEM_SLOTS was negotiated (daxfsd offers it) or as a whole SET_MEM_TABLE
//! otherwise. Each updates vhost-user-backend's guest memory map: an mmap (or munmap) of
//! the 2 MiB region, or every region afresh. This section runs the same one-queue cycle
//! through four frontends side by side, rounds alternating, and reports each against the
//! patched QEMU's (which sends no table update).
//!
//! The frontend sends the update right after the SETUPMAPPING (REMOVEMAPPING) reply,
//! before the next request: QEMU sends it from its main loop once it has acked the map,
//! while the guest already goes on, so in a guest the update overlaps the next request;
//! here it is counted whole, an upper bound of what it costs.
//!
//! Each frontend's protocol floor is measured in the same rounds, part by part as in the
//! DAX section (two FUSE round trips through that frontend's daxfsd, two socket round
//! trips, the map and unmap), plus what that frontend's protocol adds: its table update
//! after the map and after the unmap, sent alone to the same daxfsd (ADD_MEM_REG then
//! REM_MEM_REG, or two SET_MEM_TABLEs), one pair at a time.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::time::{Duration, Instant};

use daxfsd_harness::{Device, FrontendBehaviour};
use vhost::vhost_user::VhostUserFrontend as _;
use vhost::{VhostBackend as _, VhostUserMemoryRegionInfo};

use crate::backends::Binaries;
use crate::dax::{self, DaxConfig, FrontendPlay, LimitPart, RANGE};
use crate::error::{BenchError, HarnessContext, Result};
use crate::report::{cycle_floor, median, rate, spread, us_per_op, Sample};

/// Where the frontend places window mappings in guest-physical space: above the harness's
/// guest RAM, as a PCI BAR would be.
const WINDOW_GPA: u64 = 1 << 32;

/// What the frontend sends on its own channel after each map and unmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableTraffic {
    /// Nothing (the patched QEMU; or 11.1 if it kept mappings out of the table).
    None,
    /// ADD_MEM_REG after a map, REM_MEM_REG after an unmap (CONFIGURE_MEM_SLOTS).
    AddRemoveRegion,
    /// SET_MEM_TABLE with guest RAM plus the live mappings, after each map and unmap.
    WholeTable,
}

/// The table updates of one frontend driving one queue (one live mapping at a time).
pub struct TableUpdates {
    traffic: TableTraffic,
    /// The file every cycle maps (the region's descriptor).
    file: File,
    /// Guest RAM, the table without mappings.
    ram: Vec<VhostUserMemoryRegionInfo>,
}

impl TableUpdates {
    fn new(dev: &Device, file: File, traffic: TableTraffic) -> Result<Self> {
        let ram = dev
            .memory()
            .region_infos()
            .during(|| "describing guest RAM".to_string())?;
        Ok(Self { traffic, file, ram })
    }

    /// The region a mapping of the window slot at `moffset` (file offset the same) adds.
    fn region(&self, moffset: u64) -> VhostUserMemoryRegionInfo {
        VhostUserMemoryRegionInfo {
            guest_phys_addr: WINDOW_GPA + moffset,
            memory_size: RANGE,
            // The frontend's own address of the mapping; only a label to the backend.
            userspace_addr: 0x7000_0000_0000 + moffset,
            mmap_offset: moffset,
            mmap_handle: self.file.as_raw_fd(),
        }
    }

    /// After the SETUPMAPPING of the slot at `moffset` succeeded.
    pub fn mapped(&self, dev: &Device, moffset: u64) -> Result<()> {
        let region = self.region(moffset);
        match self.traffic {
            TableTraffic::None => Ok(()),
            TableTraffic::AddRemoveRegion => dev
                .vhost_call("ADD_MEM_REG", |fe| fe.add_mem_region(&region))
                .during(|| "adding a window mapping to the memory table".to_string())
                .map(|_| ()),
            TableTraffic::WholeTable => {
                let mut table = self.ram.clone();
                table.push(region);
                dev.vhost_call("SET_MEM_TABLE", |fe| fe.set_mem_table(&table))
                    .during(|| "sending the memory table with a mapping".to_string())
                    .map(|_| ())
            }
        }
    }

    /// After the REMOVEMAPPING of the slot at `moffset` succeeded.
    pub fn unmapped(&self, dev: &Device, moffset: u64) -> Result<()> {
        let region = self.region(moffset);
        match self.traffic {
            TableTraffic::None => Ok(()),
            TableTraffic::AddRemoveRegion => dev
                .vhost_call("REM_MEM_REG", |fe| fe.remove_mem_region(&region))
                .during(|| "removing a window mapping from the memory table".to_string()),
            TableTraffic::WholeTable => dev
                .vhost_call("SET_MEM_TABLE", |fe| fe.set_mem_table(&self.ram))
                .during(|| "sending the memory table without the mapping".to_string())
                .map(|_| ()),
        }
    }
}

/// The table updates alone, one map's and one unmap's at a time, for `length`: what the
/// frontend's protocol adds to a cycle (no FUSE request, nothing mapped in the window).
fn run_updates_alone(dev: &Device, updates: &TableUpdates, length: Duration) -> Result<Sample> {
    let until = Instant::now() + length;
    let mut pairs = 0u64;
    while Instant::now() < until {
        updates.mapped(dev, 0)?;
        updates.unmapped(dev, 0)?;
        pairs += 1;
    }
    Ok(Sample::new(pairs as f64, length, 0, 0))
}

/// Samples of one frontend: its cycles, and the parts of its floor measured through it.
#[derive(Default)]
struct Rounds {
    cycles: Vec<Sample>,
    fuse: Vec<Sample>,
    updates: Vec<Sample>,
}

/// The frontends compared, the first being the reference.
const PLAYS: [(&str, FrontendPlay); 4] = [
    ("patched QEMU (no table traffic)", FrontendPlay::PATCHED),
    (
        "QEMU 11.1 behaviour, mappings kept out of the table",
        FrontendPlay {
            behaviour: FrontendBehaviour::Upstream11_1,
            table: TableTraffic::None,
        },
    ),
    (
        "QEMU 11.1 behaviour + ADD_MEM_REG / REM_MEM_REG per mapping",
        FrontendPlay {
            behaviour: FrontendBehaviour::Upstream11_1,
            table: TableTraffic::AddRemoveRegion,
        },
    ),
    (
        "QEMU 11.1 behaviour + SET_MEM_TABLE per mapping",
        FrontendPlay {
            behaviour: FrontendBehaviour::Upstream11_1,
            table: TableTraffic::WholeTable,
        },
    ),
];

/// Runs the section: one queue, one cycle at a time, each frontend against its own daxfsd.
pub fn run(bins: &Binaries, cfg: &DaxConfig, workdir: &Path) -> Result<()> {
    let (shared, file_path) = dax::share_with_mapped_file(&workdir.join("dax-table"), cfg.window)?;
    let slots = usize::try_from(cfg.window / RANGE).unwrap_or(usize::MAX);
    let (limit_window, limit_file) = dax::limit_setup(cfg.window, &file_path)?;
    let limit = |part, length| dax::run_limit(&limit_window, &limit_file, 1, slots, length, part);
    let mut frontends = Vec::new();
    for (label, play) in PLAYS {
        let env = dax::start(bins, cfg, &shared, 1, play)?;
        // Read-write, like the descriptor QEMU 11.1 received with the SHMEM_MAP (the
        // backend maps table regions read-write).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file_path)
            .map_err(|e| BenchError::io("opening the mapped file", e))?;
        let updates = TableUpdates::new(&env.dev, file, play.table)?;
        dax::run_cycles(&env, 1, slots, cfg.warmup, Some(&updates))?;
        frontends.push((label, env, updates, Rounds::default()));
    }
    let (mut socket, mut map) = (Vec::new(), Vec::new());
    for _ in 0..cfg.pairs {
        for (_, env, updates, rounds) in &mut frontends {
            rounds
                .cycles
                .push(dax::run_cycles(env, 1, slots, cfg.run, Some(updates))?);
            rounds.fuse.push(dax::run_fuse_round_trip(env, cfg.run)?);
            if updates.traffic != TableTraffic::None {
                rounds
                    .updates
                    .push(run_updates_alone(&env.dev, updates, cfg.run)?);
            }
        }
        socket.push(limit(LimitPart::RoundTrip, cfg.run)?);
        map.push(limit(LimitPart::MapUnmap, cfg.run)?);
    }
    for (label, env, _, _) in &frontends {
        dax::verify_empty(env).map_err(|e| match e {
            BenchError::BadReply { detail, .. } => BenchError::BadReply {
                backend: "daxfsd",
                workload: "DAX cycle with table traffic",
                detail: format!("{label}: {detail}"),
            },
            other => other,
        })?;
    }
    print(&frontends, &socket, &map);
    Ok(())
}

fn print<E, U>(frontends: &[(&str, E, U, Rounds)], socket: &[Sample], map: &[Sample]) {
    let Some((_, _, _, reference)) = frontends.first() else {
        return;
    };
    let (socket, map) = (us_per_op(socket), us_per_op(map));
    println!();
    println!(
        "| DAX cycle, 1 queue: frontend | daxfsd cycles/s | vs patched QEMU (rounds min–max) \
         | daxfsd CPU µs/cycle | harness CPU µs/cycle | FUSE round trip µs | table updates \
         alone µs | floor µs | **floor / cycle** |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (label, _, _, rounds) in frontends {
        let samples = &rounds.cycles;
        let ratios = samples
            .iter()
            .zip(&reference.cycles)
            .map(|(a, b)| a.rate / b.rate);
        let (lo, hi) = spread(ratios.clone());
        let (fuse, updates) = (us_per_op(&rounds.fuse), us_per_op(&rounds.updates));
        let floor = cycle_floor(fuse, socket, map) + updates;
        println!(
            "| {label} | {} | **{:.2}×** ({:.2}–{:.2}) | {:.1} | {:.1} | {fuse:.1} | {updates:.1} \
             | {floor:.1} | **{:.2}×** |",
            rate(median(samples.iter().map(|s| s.rate))),
            median(ratios),
            lo,
            hi,
            median(samples.iter().map(|s| s.daemon_us)),
            median(samples.iter().map(|s| s.harness_us)),
            floor / us_per_op(samples),
        );
    }
    println!(
        "\nfloor = 2 FUSE round trips (through that frontend's daxfsd) + 2 socket round trips \
         ({socket:.1} µs) + map and unmap ({map:.1} µs) + the frontend's table updates alone"
    );
}
