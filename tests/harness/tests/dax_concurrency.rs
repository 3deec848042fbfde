//! Two request queues hammering overlapping SETUPMAPPING / REMOVEMAPPING on a small
//! window. Afterwards the daemon's index must match the window the harness holds: the
//! frontend never refused a request (no map over a mapping, no unmap of a non-mapping),
//! the daemon's metrics count exactly the harness's mappings, no two mappings overlap,
//! every mapping shows its file's bytes, and one REMOVEMAPPING of the whole window
//! empties both sides.
//!
//! `DAXFSD_DAX_SEED=N` replays a run (the seed is printed).

mod dax_common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dax_common::{pattern, DaxDaemon, Session, FH_BY_NODEID, MIB, PAGE, READ, READ_WRITE, SLOT};

const WINDOW: u64 = 16 * MIB;
const SLOTS: u64 = WINDOW / SLOT;
const OPS_PER_QUEUE: usize = 300;

/// splitmix64: small, seedable, good enough to pick offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A host file the queues map from.
struct HostFile {
    path: PathBuf,
    nodeid: u64,
    len: u64,
    /// Its bytes start at this offset of the common pattern.
    shift: u64,
}

impl HostFile {
    fn expected(&self, foffset: u64, len: u64) -> Vec<u8> {
        pattern(self.shift + foffset, len)
    }
}

/// What one queue did.
#[derive(Debug, Default)]
struct Tally {
    setups_ok: u64,
    setups_einval: u64,
    removes_ok: u64,
    removes_einval: u64,
    /// Replies that were neither success nor EINVAL.
    unexpected: Vec<String>,
}

/// A random request shape: (moffset, len) inside the window, page aligned.
fn random_range(rng: &mut Rng) -> (u64, u64) {
    let slot = rng.below(SLOTS);
    match rng.below(10) {
        // The guest's shape: one whole 2 MiB range.
        0..=4 => (slot * SLOT, SLOT),
        // A few pages inside one slot.
        5..=7 => {
            let pages = 1 + rng.below(64);
            let first = rng.below(SLOT / PAGE - pages + 1);
            (slot * SLOT + first * PAGE, pages * PAGE)
        }
        // Two whole slots.
        8 => {
            let slot = rng.below(SLOTS - 1);
            (slot * SLOT, 2 * SLOT)
        }
        // A range crossing a slot boundary at page granularity.
        _ => {
            let slot = rng.below(SLOTS - 1);
            let before = 1 + rng.below(16);
            let after = 1 + rng.below(16);
            (slot * SLOT + SLOT - before * PAGE, (before + after) * PAGE)
        }
    }
}

fn hammer(s: &Session<'_>, queue: usize, files: &[HostFile], seed: u64) -> Tally {
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    for op in 0..OPS_PER_QUEUE {
        let (moffset, len) = random_range(&mut rng);
        if rng.below(10) < 6 {
            let file = &files[rng.below(files.len() as u64) as usize];
            // Slot-aligned file offsets as the guest sends, or any page.
            let max_page = (file.len - len) / PAGE;
            let foffset = if rng.below(2) == 0 {
                rng.below(max_page / (SLOT / PAGE) + 1) * SLOT
            } else {
                rng.below(max_page + 1) * PAGE
            };
            let flags = if rng.below(2) == 0 { READ } else { READ_WRITE };
            match s.setup_on(
                queue,
                file.nodeid,
                FH_BY_NODEID,
                foffset,
                len,
                moffset,
                flags,
            ) {
                0 => tally.setups_ok += 1,
                libc::EINVAL => tally.setups_einval += 1,
                errno => tally.unexpected.push(format!(
                    "queue {queue} op {op}: SETUPMAPPING {moffset:#x}+{len:#x} foffset \
                     {foffset:#x} flags {flags}: errno {errno}"
                )),
            }
        } else {
            let mut ranges = vec![(moffset, len)];
            if rng.below(4) == 0 {
                ranges.push(random_range(&mut rng));
            }
            if rng.below(50) == 0 {
                ranges = vec![(0, WINDOW)];
            }
            match s.remove_on(queue, &ranges) {
                0 => tally.removes_ok += 1,
                libc::EINVAL => tally.removes_einval += 1,
                errno => tally.unexpected.push(format!(
                    "queue {queue} op {op}: REMOVEMAPPING {ranges:x?}: errno {errno}"
                )),
            }
        }
    }
    tally
}

#[test]
fn two_queues_hammering_overlapping_mappings_leave_the_index_matching_the_window() {
    let seed = std::env::var("DAXFSD_DAX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("DAXFSD_DAX_SEED={seed}");

    let daemon = DaxDaemon::start(WINDOW, 2, &[]);
    let specs = [("a", 16 * MIB, 0), ("b", 8 * MIB, 7 * PAGE + 13)];
    for (name, len, shift) in specs {
        std::fs::write(daemon.backend.shared_dir().join(name), pattern(shift, len)).unwrap();
    }
    let s = daemon.connect();
    let files: Vec<HostFile> = specs
        .iter()
        .map(|&(name, len, shift)| HostFile {
            path: daemon.backend.shared_dir().join(name),
            nodeid: s.lookup(name),
            len,
            shift,
        })
        .collect();
    let fds_before = daemon.open_shared_files();
    // The inode table holds each looked-up file: the count sees them.
    assert!(fds_before >= files.len(), "{fds_before}");
    // Widen the window between a request's effect and its reply.
    s.channel().set_reply_delay(Duration::from_micros(50));

    let started = Instant::now();
    let (t1, t2) = std::thread::scope(|scope| {
        let one = scope.spawn(|| hammer(&s, 1, &files, seed));
        let two = scope.spawn(|| hammer(&s, 2, &files, seed ^ 0xDEAD_BEEF_CAFE_F00D));
        (one.join().unwrap(), two.join().unwrap())
    });
    let elapsed = started.elapsed();
    s.channel().set_reply_delay(Duration::ZERO);
    eprintln!(
        "{} requests in {elapsed:?} ({:?} per request per queue); queue 1 {t1:?}; queue 2 {t2:?}; \
         backend channel {:?}",
        2 * OPS_PER_QUEUE,
        elapsed / OPS_PER_QUEUE as u32,
        s.channel().stats()
    );
    let unexpected: Vec<_> = t1.unexpected.iter().chain(&t2.unexpected).collect();
    assert!(
        unexpected.is_empty(),
        "seed {seed}: {unexpected:#?}\n{}",
        daemon.backend.diagnostics()
    );
    // The hammering did something on both queues.
    for t in [&t1, &t2] {
        assert!(t.setups_ok > 20 && t.removes_ok > 10, "seed {seed}: {t:?}");
    }

    // The frontend never refused a request: every map landed on free space, every unmap
    // named an existing mapping.
    let refused: Vec<_> = s
        .channel()
        .log()
        .into_iter()
        .filter(|r| r.errno != 0)
        .collect();
    assert!(
        refused.is_empty(),
        "seed {seed}: frontend refused {refused:#?}"
    );

    let maps = s.window().mappings();
    for pair in maps.windows(2) {
        assert!(
            pair[0].offset + pair[0].len <= pair[1].offset,
            "seed {seed}: overlapping mappings {pair:?}"
        );
    }
    for m in &maps {
        assert!(m.offset + m.len <= WINDOW, "seed {seed}: {m:?}");
        assert!(
            m.offset / SLOT == (m.offset + m.len - 1) / SLOT,
            "seed {seed}: a VMM mapping crosses a slot: {m:?}"
        );
        let file = files
            .iter()
            .find(|f| dax_common::same_file(&f.path, &m.source))
            .unwrap_or_else(|| panic!("seed {seed}: mapping of an unknown file {m:?}"));
        let got = s.window().read(m.offset, m.len as usize).unwrap();
        assert!(
            got == file.expected(m.fd_offset, m.len),
            "seed {seed}: bytes at {:#x} differ from {} at {:#x}",
            m.offset,
            file.path.display(),
            m.fd_offset
        );
    }

    let metrics = daemon.fresh_metrics();
    assert_eq!(
        metrics.get("daxfsd_dax_live_mappings"),
        maps.len() as u64,
        "seed {seed}: the daemon's live mappings vs the harness's {maps:#?}"
    );
    assert_eq!(
        metrics.get("daxfsd_dax_window_mapped_bytes"),
        s.window().mapped_bytes(),
        "seed {seed}"
    );
    assert_eq!(metrics.get("daxfsd_dax_vmm_map_failures_total"), 0);
    assert_eq!(metrics.get("daxfsd_dax_vmm_unmap_failures_total"), 0);
    assert_eq!(
        metrics.get("daxfsd_dax_refusals_total"),
        t1.setups_einval + t1.removes_einval + t2.setups_einval + t2.removes_einval
    );

    // One request empties the window; the daemon unmaps exactly what is there.
    let unmaps_before = s.channel().stats().shmem_unmap;
    assert_eq!(s.remove(&[(0, WINDOW)]), 0, "seed {seed}");
    assert!(s.window().mappings().is_empty(), "seed {seed}");
    assert_eq!(
        s.channel().stats().shmem_unmap - unmaps_before,
        maps.len() as u64,
        "seed {seed}"
    );
    assert_eq!(s.channel().stats().failed, 0, "seed {seed}");
    let metrics = daemon.fresh_metrics();
    assert_eq!(metrics.get("daxfsd_dax_live_mappings"), 0);
    assert_eq!(metrics.get("daxfsd_dax_window_mapped_bytes"), 0);
    // Every descriptor opened for a mapping was closed again.
    assert_eq!(daemon.open_shared_files(), fds_before, "seed {seed}");
}

/// The guest's write fault on a read mapping, raced from two queues: both ask for the
/// same range writable at once. One upgrades (UNMAP + MAP), the other finds it done.
#[test]
fn concurrent_upgrades_of_one_range_upgrade_once() {
    const ROUNDS: u64 = 20;
    let daemon = DaxDaemon::start(8 * MIB, 2, &[]);
    daemon.patterned_file("data", 8 * MIB);
    let s = daemon.connect();
    let nodeid = s.lookup("data");
    s.channel().set_reply_delay(Duration::from_micros(200));
    for round in 0..ROUNDS {
        let moffset = (round % 4) * SLOT;
        let foffset = (round % 3) * SLOT;
        assert_eq!(
            s.setup(nodeid, FH_BY_NODEID, foffset, SLOT, moffset, READ),
            0
        );
        let upgrade = |queue| {
            let arg = daxfsd_protocol::abi::SetupMappingIn {
                fh: FH_BY_NODEID,
                foffset,
                len: SLOT,
                flags: READ_WRITE,
                moffset,
            };
            let req = s.setup_request(nodeid, arg);
            let token = dax_common::check(
                s.backend(),
                s.dev
                    .fuse_submit(queue, &req, daxfsd_harness::fuse::DEFAULT_REPLY_CAPACITY),
            );
            (token, req)
        };
        let (a, b) = (upgrade(1), upgrade(2));
        for (token, req) in [a, b] {
            let reply = dax_common::check(s.backend(), s.dev.fuse_wait(token, &req));
            assert_eq!(reply.errno(), 0, "round {round}");
        }
        let maps = s.window().mappings();
        assert_eq!(maps.len(), 1, "round {round}: {maps:?}");
        assert!(maps[0].writable, "round {round}");
        assert_eq!((maps[0].offset, maps[0].fd_offset), (moffset, foffset));
        assert_eq!(s.remove(&[(moffset, SLOT)]), 0, "round {round}");
    }
    assert_eq!(s.channel().stats().failed, 0, "{:?}", s.channel().log());
    // Per round: MAP (read), UNMAP + MAP (upgrade), UNMAP (remove).
    assert_eq!(s.channel().stats().shmem_map, 2 * ROUNDS);
    assert_eq!(s.channel().stats().shmem_unmap, 2 * ROUNDS);
    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_upgrades_total"), ROUNDS);
    assert_eq!(m.get("daxfsd_dax_already_mapped_total"), ROUNDS);
    assert_eq!(m.get("daxfsd_dax_live_mappings"), 0);
}
