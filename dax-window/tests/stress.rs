//! Randomized multi-threaded stress of the index with an invariant checker.
//!
//! Bounded for CI (about 1.5 s per test); `DAX_WINDOW_SOAK_SECS=N` runs each
//! test for N seconds instead, `DAX_WINDOW_STRESS_SEED=S` replays a seed.
//! Checked: a consistent cut of the index satisfies its invariants at all
//! times (a checker thread runs alongside); every thread, waiters included,
//! finishes; at the end the in-memory VMM holds exactly what the index says, no
//! VMM call ever broke the SHMEM rules (map over a mapping, unmap of something
//! that is not exactly one mapping), and — with truncations and extensions
//! racing maps and unmaps — no VMM mapping shows a file page past its file's
//! end, and (without injected failures) every page of a mapping below the end
//! shows the file again.
#![cfg(not(loom))]

use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dax_window::memory_mapper::MemoryMapperError;
use dax_window::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SLOTS: u64 = 8;
const INODES: u64 = 4;
const THREADS: usize = 6;
const FILE_SIZE: u64 = 6 * SLOT_SIZE;

fn duration() -> Duration {
    std::env::var("DAX_WINDOW_SOAK_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_millis(1500))
}

fn seed() -> u64 {
    std::env::var("DAX_WINDOW_STRESS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_nanos() as u64)
                .unwrap_or(1)
        })
}

struct Shared {
    window: Window,
    mapper: MemoryMapper,
    /// Per-inode lock a truncation holds while it shrinks the file and
    /// invalidates, as the daemon serialises SETATTR on one inode.
    inode_locks: Vec<Mutex<()>>,
    violations: Mutex<Vec<String>>,
    stop: AtomicBool,
    ops: AtomicU64,
}

/// A random range: whole slots (1 or 2), or a few pages near a slot's start so
/// 4 KiB entries collide often.
fn random_range(rng: &mut StdRng) -> (u64, u64) {
    let slot = rng.random_range(0..SLOTS);
    if rng.random_bool(0.5) {
        let slots = rng.random_range(1..=2).min(SLOTS - slot);
        (slot * SLOT_SIZE, slots * SLOT_SIZE)
    } else {
        let first = rng.random_range(0..24);
        let pages = rng.random_range(1..=8);
        (slot * SLOT_SIZE + first * PAGE_SIZE, pages * PAGE_SIZE)
    }
}

/// Records a VMM rule violation found anywhere in `error`'s source chain.
fn note_violation(shared: &Shared, error: &(dyn Error + 'static)) {
    let mut current: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(
            refused @ (MemoryMapperError::Overlap { .. } | MemoryMapperError::NoSuchMapping { .. }),
        ) = error.downcast_ref::<MemoryMapperError>()
        {
            shared.violations.lock().unwrap().push(refused.to_string());
        }
        current = error.source();
    }
}

/// What a stress run exercises.
#[derive(Clone, Copy, Debug)]
struct Mode {
    /// Files change size (serialised per inode, then repaired); resets too.
    truncations: bool,
    /// Every 13th map (and, without truncations, every 29th unmap) fails.
    failures: bool,
}

/// Records a violation if the VMM maps a page of `inode` past `eof`, or
/// (without injected failures) a page of a mapping of it below `eof` does not
/// show the file.
fn check_conforms(shared: &Shared, inode: InodeId, eof: u64, mode: Mode) {
    let end = file_pages_end(eof);
    let mut found: Vec<String> = shared
        .mapper
        .mappings_past_eof()
        .into_iter()
        .filter(|mapping| mapping.inode == Some(inode))
        .map(|mapping| format!("VMM maps past EOF {eof:#x}: {mapping:?}"))
        .collect();
    if !mode.failures {
        found.extend(
            shared
                .window
                .mappings_of(inode)
                .into_iter()
                .filter(|record| !record.is_live() && record.foffset < end)
                .map(|record| format!("placeholder below EOF {eof:#x}: {record:?}")),
        );
    }
    shared.violations.lock().unwrap().extend(found);
}

/// A new file size: page aligned or not, shrinking or growing.
fn random_size(rng: &mut StdRng) -> u64 {
    let pages = rng.random_range(0..=FILE_SIZE / PAGE_SIZE);
    if rng.random_bool(0.5) {
        pages * PAGE_SIZE
    } else {
        (pages * PAGE_SIZE).saturating_sub(rng.random_range(1..PAGE_SIZE))
    }
}

fn worker(shared: &Shared, seed: u64, mode: Mode) {
    let truncations = mode.truncations;
    let mut rng = StdRng::seed_from_u64(seed);
    let window = &shared.window;
    let mapper = &shared.mapper;
    while !shared.stop.load(Ordering::Relaxed) {
        shared.ops.fetch_add(1, Ordering::Relaxed);
        let inode = InodeId(rng.random_range(1..=INODES));
        let (moffset, len) = random_range(&mut rng);
        match rng.random_range(0..100) {
            0..35 => {
                // Mostly the same file offset for the same window offset, so
                // repeated setups hit the no-op and upgrade paths.
                let foffset = if rng.random_bool(0.7) {
                    moffset % (FILE_SIZE - 2 * SLOT_SIZE)
                } else {
                    rng.random_range(0..FILE_SIZE / PAGE_SIZE) * PAGE_SIZE
                };
                let request = MapRequest {
                    moffset,
                    len,
                    inode,
                    file: &inode,
                    foffset,
                    writable: rng.random_bool(0.5),
                };
                if let Err(error) = window.setup_mapping(mapper, &request) {
                    note_violation(shared, &error);
                }
            }
            35..55 => {
                if let Err(error) = window.remove_mapping(mapper, moffset, len) {
                    note_violation(shared, &error);
                }
            }
            55..65 if truncations => {
                // The file changes size first, then its mappings are repaired.
                let _serialised = shared.inode_locks[inode.0 as usize].lock().unwrap();
                let eof = random_size(&mut rng);
                mapper.set_eof(inode, eof);
                let report = window.repair(mapper, inode, &inode, eof);
                for failure in &report.failures {
                    note_violation(shared, failure);
                }
                // While the size holds still, nothing of the inode may map a
                // page past it: maps in flight were waited for and repaired,
                // later ones read the new size.
                check_conforms(shared, inode, eof, mode);
            }
            55..65 => {
                // A repair for a size the mapper does not report (the file
                // "changed" without telling it): exercises both directions.
                window.repair(mapper, inode, &inode, random_size(&mut rng));
            }
            65..75 => {
                let order = if rng.random_bool(0.5) {
                    Order::Page
                } else {
                    Order::Slot
                };
                if let Ok(guard) = window.grab_at(moffset, len, order) {
                    thread::yield_now();
                    let seen = guard.mappings();
                    assert!(seen.iter().all(|record| record.len > 0));
                }
            }
            75..85 => {
                window.wait_unlocked(moffset, len).unwrap();
            }
            85..99 => {
                let _ = window.lookup(moffset);
                let _ = window.mappings_of(inode);
            }
            _ if truncations && rng.random_bool(0.2) => {
                let report = window.reset(mapper);
                for failure in &report.failures {
                    note_violation(shared, failure);
                }
            }
            _ => {}
        }
    }
}

fn run(name: &str, mode: Mode) {
    let truncations = mode.truncations;
    let seed = seed();
    let limit = duration();
    println!("{name}: seed {seed} (DAX_WINDOW_STRESS_SEED), {limit:?}");
    let window = Window::with_config(
        WindowGeometry::new(SLOTS * SLOT_SIZE).unwrap(),
        WindowConfig {
            slot_shards: Some(2),
            wait_buckets: Some(2),
            ..WindowConfig::default()
        },
    );
    let mapper = MemoryMapper::new().with_placeholders(truncations);
    if mode.failures {
        mapper.fail_every_map(13);
    }
    if mode.failures && !truncations {
        // Unmap failures leave live mappings behind by design, which the EOF
        // check of the truncation run would rightly flag; reset forgets
        // records whose unmap failed, which the VMM comparison would flag.
        mapper.fail_every_unmap(29);
    }
    for inode in 1..=INODES {
        mapper.set_eof(InodeId(inode), FILE_SIZE);
    }
    let shared = Arc::new(Shared {
        window,
        mapper,
        inode_locks: (0..=INODES).map(|_| Mutex::new(())).collect(),
        violations: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
    });

    let (done, finished) = mpsc::channel();
    let workers: Vec<_> = (0..THREADS)
        .map(|index| {
            let (shared, done) = (Arc::clone(&shared), done.clone());
            thread::spawn(move || {
                worker(&shared, seed.wrapping_add(index as u64), mode);
                done.send(index).unwrap();
            })
        })
        .collect();
    let checker = {
        let shared = Arc::clone(&shared);
        thread::spawn(move || {
            let mut checks = 0u64;
            while !shared.stop.load(Ordering::Relaxed) {
                if let Err(violation) = shared.window.check_invariants() {
                    shared
                        .violations
                        .lock()
                        .unwrap()
                        .push(violation.to_string());
                }
                checks += 1;
                thread::sleep(Duration::from_millis(2));
            }
            checks
        })
    };

    thread::sleep(limit);
    shared.stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..THREADS {
        let left = deadline.saturating_duration_since(Instant::now());
        if finished.recv_timeout(left).is_err() {
            eprintln!("index when the workers were stuck: {:#?}", shared.window);
            panic!("a worker did not finish (a waiter was never woken); seed {seed}");
        }
    }
    for worker in workers {
        worker.join().unwrap();
    }
    let checks = checker.join().unwrap();

    let violations = shared.violations.lock().unwrap();
    assert!(violations.is_empty(), "seed {seed}: {violations:#?}");
    shared.window.check_invariants().unwrap();
    if let Err(mismatch) = shared.mapper.check_matches(&shared.window) {
        panic!("seed {seed}: {mismatch}");
    }
    let stats = shared.window.stats();
    if truncations {
        let past_eof = shared.mapper.mappings_past_eof();
        assert!(
            past_eof.is_empty(),
            "seed {seed}: the VMM maps file pages past EOF: {past_eof:#?}"
        );
        for inode in (1..=INODES).map(InodeId) {
            let eof = shared.mapper.eof(inode).unwrap();
            for record in shared.window.mappings_of(inode) {
                assert!(
                    !record.is_live() || record.file_end() <= file_pages_end(eof),
                    "seed {seed}: {record:?} survived past EOF {eof:#x}"
                );
                // Without failures, every page below the end shows the file.
                assert!(
                    mode.failures || record.is_live() || record.foffset >= file_pages_end(eof),
                    "seed {seed}: {record:?} does not show the file below EOF {eof:#x}"
                );
            }
        }
        assert!(
            stats.clips > 0 && stats.restores > 0,
            "seed {seed}: no repair in either direction: {stats:?}"
        );
    }
    println!(
        "{name}: {} ops, {} invariant checks, {stats:?}",
        shared.ops.load(Ordering::Relaxed),
        checks
    );
    assert!(
        stats.grabs > 0 && stats.maps > 0 && stats.waits > 0,
        "{stats:?}"
    );
}

#[test]
fn stress_maps_unmaps_and_repairs_with_failures() {
    run(
        "stress",
        Mode {
            truncations: false,
            failures: true,
        },
    );
}

/// Invalidation races concurrent maps and unmaps of the same slots: every
/// thread finishes and no mapping survives past EOF (failed maps included).
#[test]
fn stress_truncations_race_maps_and_unmaps() {
    run(
        "truncation stress",
        Mode {
            truncations: true,
            failures: true,
        },
    );
}

/// The same without failures: also every page below EOF shows the file, so
/// the head of a mapping cut by a truncation stays mapped and a file that
/// grows shows again through its placeholders.
#[test]
fn stress_resizes_are_page_granular() {
    run(
        "resize stress",
        Mode {
            truncations: true,
            failures: false,
        },
    );
}
