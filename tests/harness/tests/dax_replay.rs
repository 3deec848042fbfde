//! DAX trace replays against the real daemon (see `daxfsd_harness::dax_replay`): a
//! synthetic trace shaped like the Linux guest reclaiming a small window, over the
//! standard and the legacy protocol; the daemon's own `--dax-trace` of a replay, read back
//! and compared with what was replayed; every trace checked into `tests/data/dax-traces/`;
//! repeated SETUPMAPPINGs of one range; and the checker failing when its model is wrong.
//!
//! `DAXFSD_REPLAY_SEED=N` generates another synthetic trace (the seed is printed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use daxfsd_harness::dax_replay::{
    self, replay_with_daxfsd, Depth, PageState, Protocol, RemoveEvent, ReplayError, ReplayOptions,
    ReplayReport, ReplaySession, Replayer, SetupEvent, Trace, TraceEvent, PAGE,
};
use daxfsd_protocol::abi::{SETUPMAPPING_FLAG_READ, SETUPMAPPING_FLAG_WRITE};

const MIB: u64 = 1 << 20;
const SLOT: u64 = 2 * MIB;
/// A small window: 16 ranges for about 45 ranges of files, so the guest reclaims all along.
const WINDOW_SLOTS: u64 = 16;
const FILES: u64 = 20;
const EVENTS: usize = 2500;
const DEFAULT_SEED: u64 = 0x5eed_da0f_2025;

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

fn seed() -> u64 {
    let seed = std::env::var("DAXFSD_REPLAY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    eprintln!("DAXFSD_REPLAY_SEED={seed}");
    seed
}

struct GuestFile {
    path: String,
    nodeid: u64,
    size: u64,
}

impl GuestFile {
    /// 2 MiB ranges holding file bytes.
    fn ranges(&self) -> u64 {
        self.size.div_ceil(SLOT).max(1)
    }
}

#[derive(Clone, Copy)]
struct Held {
    file: usize,
    range: u64,
    writable: bool,
    last_use: u64,
}

/// The guest's side of fs/fuse/dax.c, reduced to what the daemon sees: 2 MiB ranges
/// (dmaps) handed out from a free list, SETUPMAPPING on a fault, the same request with
/// WRITE on a write fault of a read-only range, reclaim of the least recently used range
/// (REMOVEMAPPING of it alone, then SETUPMAPPING of the same moffset for the new file
/// range; now and then a range is taken over without the removal), background reclaim when
/// fewer than 20% of the ranges are free, and inode eviction removing all of a file's
/// ranges in one REMOVEMAPPING.
struct Guest {
    rng: Rng,
    files: Vec<GuestFile>,
    slots: Vec<Option<Held>>,
    by_range: HashMap<(usize, u64), u64>,
    events: Vec<TraceEvent>,
    unique: u64,
    tick: u64,
}

impl Guest {
    fn new(seed: u64) -> Guest {
        let mut rng = Rng(seed);
        let files = (0..FILES)
            .map(|i| {
                let size = match i % 5 {
                    // A whole number of ranges: page multiples.
                    0 => (1 + rng.below(3)) * SLOT,
                    // Less than one range, not a page multiple.
                    1 => SLOT / 2 + rng.below(SLOT / 2 - 1) + 1,
                    // A few pages, or less than one.
                    2 => 1 + rng.below(5 * PAGE),
                    // Several ranges, the last one partial.
                    _ => SLOT + rng.below(5 * SLOT),
                };
                GuestFile {
                    path: format!("dir{}/file-{i}", i % 3),
                    nodeid: 100 + i,
                    size,
                }
            })
            .collect();
        Guest {
            rng,
            files,
            slots: vec![None; WINDOW_SLOTS as usize],
            by_range: HashMap::new(),
            events: Vec::new(),
            unique: 1000,
            tick: 0,
        }
    }

    fn next_unique(&mut self) -> u64 {
        self.unique += 2;
        self.unique
    }

    fn setup(&mut self, file: usize, range: u64, slot: u64, writable: bool) {
        let f = &self.files[file];
        let flags = SETUPMAPPING_FLAG_READ | if writable { SETUPMAPPING_FLAG_WRITE } else { 0 };
        let (nodeid, path, size) = (f.nodeid, f.path.clone(), f.size);
        let unique = self.next_unique();
        self.events.push(TraceEvent::Setup(SetupEvent {
            line: 0,
            unique: Some(unique),
            nodeid,
            foffset: range * SLOT,
            len: SLOT,
            flags,
            moffset: slot * SLOT,
            path: Some(path),
            size: Some(size),
            result: "ok".to_string(),
        }));
    }

    fn remove(&mut self, slots: &[u64]) {
        let unique = self.next_unique();
        for &slot in slots {
            self.events.push(TraceEvent::Remove(RemoveEvent {
                line: 0,
                unique: Some(unique),
                moffset: slot * SLOT,
                len: SLOT,
                result: "ok".to_string(),
            }));
            if let Some(held) = self.slots[slot as usize].take() {
                self.by_range.remove(&(held.file, held.range));
            }
        }
    }

    fn lru(&self) -> Option<u64> {
        (0..WINDOW_SLOTS)
            .filter_map(|s| self.slots[s as usize].map(|h| (h.last_use, s)))
            .min()
            .map(|(_, s)| s)
    }

    fn free_slot(&mut self) -> Option<u64> {
        let free: Vec<u64> = (0..WINDOW_SLOTS)
            .filter(|&s| self.slots[s as usize].is_none())
            .collect();
        (!free.is_empty()).then(|| free[self.rng.below(free.len() as u64) as usize])
    }

    fn step(&mut self) {
        self.tick += 1;
        let free = self.slots.iter().filter(|s| s.is_none()).count() as u64;
        if self.rng.percent(3) {
            // Inode eviction: every range of one file, in one request.
            let file = self.rng.below(FILES) as usize;
            let mut held: Vec<u64> = (0..WINDOW_SLOTS)
                .filter(|&s| self.slots[s as usize].is_some_and(|h| h.file == file))
                .collect();
            if !held.is_empty() {
                // In the order the guest's interval tree gives: by file offset.
                held.sort_by_key(|&s| self.slots[s as usize].map(|h| h.range));
                self.remove(&held);
            }
            return;
        }
        if free * 5 < WINDOW_SLOTS && self.rng.percent(10) {
            // The background worker frees one range at a time.
            for _ in 0..1 + self.rng.below(2) {
                if let Some(victim) = self.lru() {
                    self.remove(&[victim]);
                }
            }
            return;
        }
        // A fault or read at a file range, skewed towards the first files.
        let file = self.rng.below(FILES).min(self.rng.below(FILES)) as usize;
        let ranges = self.files[file].ranges();
        let extending = self.rng.percent(3);
        let range = if extending {
            ranges
        } else {
            self.rng.below(ranges)
        };
        let writable = extending || self.rng.percent(25);
        if let Some(&slot) = self.by_range.get(&(file, range)) {
            let held = self.slots[slot as usize].as_mut().expect("held slot");
            held.last_use = self.tick;
            if writable && !held.writable {
                held.writable = true;
                self.setup(file, range, slot, true);
            } else if self.rng.percent(10) {
                // The same request again, as when two request queues fault on one range
                // (the guest never asks for less access than its range has).
                let held_writable = held.writable;
                self.setup(file, range, slot, held_writable);
            }
            return;
        }
        let slot = match self.free_slot() {
            Some(slot) => slot,
            None => {
                let victim = self.lru().expect("a full window has a mapped range");
                if self.rng.percent(90) {
                    self.remove(&[victim]);
                } else if let Some(held) = self.slots[victim as usize].take() {
                    // Taken over by the next SETUPMAPPING without a removal.
                    self.by_range.remove(&(held.file, held.range));
                }
                victim
            }
        };
        self.slots[slot as usize] = Some(Held {
            file,
            range,
            writable,
            last_use: self.tick,
        });
        self.by_range.insert((file, range), slot);
        self.setup(file, range, slot, writable);
    }
}

/// A synthetic trace of at least `events` events.
fn synthetic(seed: u64, events: usize) -> Trace {
    let mut guest = Guest::new(seed);
    while guest.events.len() < events {
        guest.step();
    }
    // Through the text format, as a trace file would come.
    Trace::parse(
        &Trace {
            events: guest.events,
            other: Vec::new(),
        }
        .to_jsonl(),
    )
    .expect("the synthetic trace parses")
}

fn summary(what: &str, trace: &Trace, report: &ReplayReport) {
    eprintln!(
        "{what}: {} events ({} SETUPMAPPING, {} REMOVEMAPPING with {} ranges) over {} files \
         in a {} MiB window: {:?}; VMM requests {:?}",
        report.events,
        report.setups,
        report.removes,
        report.remove_ranges,
        report.files,
        report.window_size / MIB,
        report.elapsed,
        report.vmm,
    );
    assert_eq!(report.events, trace.events.len());
    assert_eq!(report.vmm.failed, 0, "{what}: {report:?}");
}

fn replay(what: &str, trace: &Trace, options: &ReplayOptions) -> ReplayReport {
    let report = replay_with_daxfsd(trace, options).unwrap_or_else(|f| panic!("{what}: {f}"));
    summary(what, trace, &report);
    report
}

/// The shape of a trace's requests: (setup fields) or (remove ranges of one request).
fn requests(trace: &Trace) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut last_unique = None;
    for event in &trace.events {
        match event {
            TraceEvent::Setup(e) => {
                last_unique = None;
                out.push(format!(
                    "setup {:#x}+{:#x} flags {} at {:#x}: {}",
                    e.foffset, e.len, e.flags, e.moffset, e.result
                ));
            }
            TraceEvent::Remove(r) => {
                let range = format!(" {:#x}+{:#x}: {}", r.moffset, r.len, r.result);
                match out.last_mut() {
                    Some(prev) if last_unique.is_some() && last_unique == r.unique => {
                        prev.push_str(&range)
                    }
                    _ => out.push(format!("remove{range}")),
                }
                last_unique = r.unique;
            }
        }
    }
    out
}

/// Replays `trace` over the standard protocol in a window of `window` bytes
/// with the daemon tracing too; fails on any result that differs from the
/// trace's. Returns the report, the daemon's own trace and its text.
fn replay_traced(label: &str, trace: &Trace, window: u64) -> (ReplayReport, Trace, String) {
    let dir = tempfile::tempdir().unwrap();
    let captured_path = dir.path().join("daemon.jsonl");
    let mut options = ReplayOptions::new(Protocol::Shmem);
    options.window_size = Some(window);
    options.daemon_args = vec![
        "--dax-trace".to_string(),
        captured_path.to_string_lossy().into_owned(),
    ];
    let report = replay(label, trace, &options);
    assert!(
        report.differing_results.is_empty(),
        "{:#?}",
        report.differing_results
    );
    let text = std::fs::read_to_string(&captured_path).unwrap();
    (report, Trace::load(&captured_path).unwrap(), text)
}

#[test]
fn a_synthetic_reclaim_trace_replays_over_the_standard_protocol_and_the_daemon_traces_it() {
    let trace = synthetic(seed(), EVENTS);
    let (report, captured, text) = replay_traced("standard protocol", &trace, WINDOW_SLOTS * SLOT);

    // The daemon's own trace of that replay: the same requests in the same order, each
    // naming the replay file (by its path in the shared directory) and its size.
    assert_eq!(requests(&captured), requests(&trace));
    let mut names: HashMap<&str, String> = HashMap::new();
    for (ours, theirs) in trace.events.iter().zip(&captured.events) {
        if let (TraceEvent::Setup(ours), TraceEvent::Setup(theirs)) = (ours, theirs) {
            let next = format!("replay-{:04}", names.len());
            let name = names.entry(ours.path.as_deref().unwrap()).or_insert(next);
            assert_eq!(theirs.path.as_deref(), Some(name.as_str()), "{theirs:?}");
            assert_eq!(theirs.size, ours.size, "{theirs:?}");
            assert_eq!(theirs.result, "ok");
        }
    }
    assert_eq!(
        captured.other_count("vmm_map") as u64,
        report.vmm.shmem_map,
        "one vmm_map line per SHMEM_MAP"
    );
    assert_eq!(
        captured.other_count("vmm_unmap") as u64,
        report.vmm.shmem_unmap
    );
    for needle in [
        "\"outcome\":\"mapped\"",
        "\"outcome\":\"upgraded\"",
        "\"outcome\":\"already\"",
        "\"placeholder\":true",
        "\"req\":\"SHMEM_MAP\"",
    ] {
        assert!(text.contains(needle), "no {needle} in the daemon's trace");
    }
}

#[test]
fn a_synthetic_reclaim_trace_replays_over_the_legacy_protocol() {
    let trace = synthetic(seed(), EVENTS);
    let mut options = ReplayOptions::new(Protocol::Legacy);
    options.window_size = Some(WINDOW_SLOTS * SLOT);
    let report = replay("legacy protocol", &trace, &options);
    assert!(
        report.differing_results.is_empty(),
        "{:#?}",
        report.differing_results
    );
    assert!(
        report.vmm.legacy_map > 0 && report.vmm.shmem_map == 0,
        "{report:?}"
    );
}

/// SETUPMAPPING of one range of a file of `size` bytes at window slot 0: read, write
/// (the upgrade), write again, read again. Checks what the daemon sends the VMM for each
/// and the window after it; returns the first surprise.
fn repeated_setups(protocol: Protocol, size: u64) -> Result<(), String> {
    let setup = |flags| {
        TraceEvent::Setup(SetupEvent {
            line: 0,
            unique: None,
            nodeid: 2,
            foffset: 0,
            len: SLOT,
            flags,
            moffset: 0,
            path: Some("f".to_string()),
            size: Some(size),
            result: "ok".to_string(),
        })
    };
    let read = SETUPMAPPING_FLAG_READ;
    let write = SETUPMAPPING_FLAG_READ | SETUPMAPPING_FLAG_WRITE;
    let trace = Trace {
        events: vec![setup(read), setup(write), setup(write), setup(read)],
        other: Vec::new(),
    };
    let session = ReplaySession::start(protocol, 2 * SLOT, &[]).map_err(|e| e.to_string())?;
    let mut replayer = Replayer::new(&session, &trace).map_err(|e| e.to_string())?;
    let mut sent = |what: &str| -> Result<Vec<String>, String> {
        let before = session.channel().log().len();
        replayer
            .step()
            .map_err(|e| format!("{protocol:?}, {size} bytes, {what}: {e}"))?;
        Ok(session.channel().log()[before..]
            .iter()
            .map(|r| format!("{:?}", r.request))
            .collect())
    };
    sent("the read")?;
    let upgrade = sent("the upgrade")?;
    if protocol == Protocol::Legacy && upgrade.iter().any(|r| r.starts_with("LegacyUnmap")) {
        return Err(format!(
            "{protocol:?}, {size} bytes: the upgrade unmapped first (a gap a replacing map \
             avoids): {upgrade:?}"
        ));
    }
    for what in [
        "the same write setup again",
        "a read setup of the writable range",
    ] {
        let again = sent(what)?;
        if !again.is_empty() {
            return Err(format!(
                "{protocol:?}, {size} bytes: {what} sent the VMM {again:?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn a_whole_range_is_upgraded_in_place_and_left_alone_when_asked_again() {
    for protocol in [Protocol::Shmem, Protocol::Legacy] {
        repeated_setups(protocol, SLOT).unwrap();
    }
}

/// The range holding a file's end is a file mapping plus a placeholder (docs/dax-window.md,
/// "Page-granular placement"): it must be recognised as the range asked for, upgraded in
/// place (one replacing map under the legacy protocol: no gap) and left alone when asked
/// again. Linux upgrades the last range of nearly every file it writes.
#[test]
fn a_range_holding_a_files_end_is_upgraded_in_place_and_left_alone_when_asked_again() {
    for protocol in [Protocol::Shmem, Protocol::Legacy] {
        repeated_setups(protocol, SLOT - 99_191).unwrap();
    }
}

#[test]
fn refused_requests_are_traced_and_replay_with_the_same_errors() {
    let setup = |foffset, result: &str| {
        TraceEvent::Setup(SetupEvent {
            line: 0,
            unique: Some(1),
            nodeid: 2,
            foffset,
            len: SLOT,
            flags: SETUPMAPPING_FLAG_READ,
            moffset: 0,
            path: Some("f".to_string()),
            size: Some(SLOT),
            result: result.to_string(),
        })
    };
    let remove = |moffset, result: &str| {
        TraceEvent::Remove(RemoveEvent {
            line: 0,
            unique: Some(2),
            moffset,
            len: SLOT,
            result: result.to_string(),
        })
    };
    // A misaligned file offset; then a batch whose second range lies outside the window,
    // refused whole.
    let trace = Trace {
        events: vec![
            setup(0, "ok"),
            setup(100, "EINVAL"),
            remove(0, "skipped"),
            remove(4 * SLOT, "EINVAL"),
        ],
        other: Vec::new(),
    };
    let (_, captured, text) = replay_traced("refusals", &trace, 2 * SLOT);
    assert_eq!(requests(&captured), requests(&trace));
    let TraceEvent::Setup(refused) = &captured.events[1] else {
        panic!("{captured:?}");
    };
    // Refused before the file was opened: neither its path nor its size is known.
    assert_eq!((refused.path.as_deref(), refused.size), (None, None));
    assert!(
        text.contains("\"result\":\"EINVAL\",\"outcome\":null"),
        "{text}"
    );
}

fn checked_in_traces() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dax-traces")
}

#[test]
fn every_checked_in_trace_replays_over_both_protocols() {
    let files = dax_replay::trace_files(&checked_in_traces()).unwrap();
    if files.is_empty() {
        eprintln!("no traces in {}", checked_in_traces().display());
    }
    for path in files {
        let trace = Trace::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for protocol in [Protocol::Shmem, Protocol::Legacy] {
            let what = format!("{} ({protocol:?})", path.display());
            let report = replay(&what, &trace, &ReplayOptions::new(protocol));
            // A real guest may have seen errors the replay does not reproduce (or the
            // reverse, for requests it saw fail); they are listed, not failed.
            for line in &report.differing_results {
                eprintln!("{what}: {line}");
            }
        }
    }
}

#[test]
fn the_checker_fails_when_its_model_differs_from_the_window() {
    let trace = synthetic(seed(), 300);
    let session = ReplaySession::start(Protocol::Shmem, WINDOW_SLOTS * SLOT, &[]).unwrap();
    let mut replayer = Replayer::new(&session, &trace).unwrap();
    while replayer
        .step()
        .unwrap_or_else(|e| panic!("{}", session.backend().report(&e)))
    {}
    replayer.check_all(Depth::Full).unwrap();

    // A mapped page whose model says the next file page: the bytes (and the table) differ.
    let size = replayer.model().size();
    let (page, state) = (0..size / PAGE)
        .map(|p| (p * PAGE, replayer.model().page(p * PAGE)))
        .find(|(_, s)| {
            matches!(s, PageState::Mapped { file, foffset, .. }
                if *foffset + PAGE < replayer.files()[*file].size)
        })
        .expect("a page mapping file bytes");
    let PageState::Mapped {
        file,
        foffset,
        writable,
    } = state
    else {
        unreachable!()
    };
    replayer.model_mut().set_page(
        page,
        PageState::Mapped {
            file,
            foffset: foffset + PAGE,
            writable,
        },
    );
    let err = replayer.check_all(Depth::Full).unwrap_err();
    let ReplayError::Final(mismatch) = &err else {
        panic!("{err}");
    };
    assert_eq!(mismatch.page, page, "{err}");
    assert!(
        mismatch
            .expected
            .contains(&format!("{:#x}", foffset + PAGE)),
        "{err}"
    );
    assert!(mismatch.found.contains(&format!("{foffset:#x}")), "{err}");
    replayer.model_mut().set_page(page, state);
    replayer.check_all(Depth::Full).unwrap();

    // A page the model says was removed, but the window maps.
    replayer.model_mut().set_page(page, PageState::Unmapped);
    let err = replayer.check_all(Depth::Structure).unwrap_err();
    assert!(
        matches!(&err, ReplayError::Final(m) if m.page == page && m.expected.starts_with("unmapped")),
        "{err}"
    );
}
