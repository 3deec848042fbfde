//! Loom models of the entry locks and wake rules.
//!
//! Run with (see docs/dax-window.md):
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p dax-window --release --test loom_models`
//!
//! Each model runs twice: with the real wake rules, where loom must find no
//! deadlock and no broken invariant in any interleaving it explores, and with
//! a deliberately wrong rule ([`InjectedFault`]), where loom must find the
//! deadlock (or the broken invariant) — so every model is shown able to fail.
#![cfg(loom)]

use dax_window::sync::{thread, Arc};
use dax_window::*;

const SLOT: u64 = SLOT_SIZE;
const X: InodeId = InodeId(1);

/// Loom's explorer, bounded to `LOOM_MAX_PREEMPTIONS` (default 3) preemptions.
fn builder() -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder
}

/// A one-slot window with one shard and a one-bucket wait table, so every key
/// shares a queue and wakeups for other keys must be ignored.
fn one_slot(fault: Option<InjectedFault>) -> Window {
    Window::with_config(
        WindowGeometry::new(SLOT).unwrap(),
        WindowConfig {
            slot_shards: Some(1),
            inode_shards: Some(1),
            wait_buckets: Some(1),
            fault,
            ..WindowConfig::default()
        },
    )
}

fn map_request(writable: bool, foffset: u64) -> MapRequest<'static, InodeId> {
    MapRequest {
        moffset: 0,
        len: SLOT,
        inode: X,
        file: &X,
        foffset,
        writable,
    }
}

fn assert_consistent(window: &Window, mapper: &MemoryMapper) {
    if let Err(violation) = window.check_invariants() {
        panic!("{violation}");
    }
    if let Err(mismatch) = mapper.check_matches(window) {
        panic!("{mismatch}");
    }
}

/// Set in the child process that runs a model with an injected fault.
const CHILD: &str = "DAX_WINDOW_LOOM_FAULT_CHILD";

/// Requires loom to find the injected bug in `model`: a deadlock report, or
/// (when `deadlock` is false) any failed assertion.
///
/// The model runs in a child process (this test binary re-run on `test` alone):
/// when loom reports a deadlock it unwinds through threads that are still
/// parked inside loom primitives, which can abort the process instead of
/// unwinding to a `catch_unwind`.
fn expect_failure<F>(test: &str, deadlock: bool, model: F)
where
    F: Fn() + Sync + Send + 'static,
{
    if std::env::var_os(CHILD).is_some() {
        // Returning normally makes the child pass, which the parent rejects.
        builder().check(model);
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "loom explored every interleaving without finding the injected bug:\n{text}"
    );
    let evidence = if deadlock { "deadlock;" } else { "panicked at" };
    let Some(line) = text.lines().find(|line| line.contains(evidence)) else {
        panic!("the model failed, but not with {evidence:?}:\n{text}");
    };
    let detail = text
        .lines()
        .skip_while(|l| !l.contains(evidence))
        .nth(usize::from(!deadlock))
        .unwrap_or(line);
    eprintln!("{test}: loom found the injected bug: {detail}");
}

// ---- Model 1: a 2 MiB grab against a locked 4 KiB entry in the same slot.

fn grab_against_locked_page(fault: Option<InjectedFault>) {
    let window = Arc::new(one_slot(fault));
    let page_holder = {
        let window = window.clone();
        thread::spawn(move || {
            // Page 5, so its key differs from the slot's (page 0) key.
            let guard = window
                .grab_at(5 * PAGE_SIZE, PAGE_SIZE, Order::Page)
                .unwrap();
            drop(guard);
        })
    };
    match window.grab_at(0, SLOT, Order::Slot) {
        Ok(guard) => drop(guard),
        Err(GrabError::Conflict(GrabConflict::LockedPage { moffset, .. })) => {
            assert_eq!(moffset, 5 * PAGE_SIZE)
        }
        Err(other) => panic!("unexpected grab error {other}"),
    }
    page_holder.join().unwrap();
    window.check_invariants().unwrap();
}

#[test]
fn model1_slot_grab_against_locked_page_never_blocks() {
    builder().check(|| grab_against_locked_page(None));
}

#[test]
fn model1_fails_when_waiting_on_a_smaller_entry() {
    expect_failure("model1_fails_when_waiting_on_a_smaller_entry", true, || {
        grab_against_locked_page(Some(InjectedFault::WaitOnSmallerOrder))
    });
}

/// Three 4 KiB grabs wait on a locked 2 MiB entry; the first to get it splits
/// the slot, and the 2 MiB key disappears: every other waiter of that key must
/// be woken, since nobody will ever unlock it again.
fn split_while_page_grabs_wait(fault: Option<InjectedFault>) {
    let window = Arc::new(one_slot(fault));
    let mapper = Arc::new(MemoryMapper::new());
    window
        .setup_mapping(&*mapper, &map_request(false, 0))
        .unwrap();
    let whole = window.grab_at(0, SLOT, Order::Slot).unwrap();
    let grabbers: Vec<_> = [3, 7, 9]
        .into_iter()
        .map(|page| {
            let window = window.clone();
            thread::spawn(move || {
                drop(
                    window
                        .grab_at(page * PAGE_SIZE, PAGE_SIZE, Order::Page)
                        .unwrap(),
                );
            })
        })
        .collect();
    drop(whole);
    for grabber in grabbers {
        grabber.join().unwrap();
    }
    assert_consistent(&window, &mapper);
}

#[test]
fn model1_split_wakes_every_waiter() {
    builder().check(|| split_while_page_grabs_wait(None));
}

#[test]
fn model1_fails_when_split_wakes_only_one() {
    expect_failure("model1_fails_when_split_wakes_only_one", true, || {
        split_while_page_grabs_wait(Some(InjectedFault::RemovalWakesNext))
    });
}

// ---- Model 2: three invalidators and one mapper on one entry.

fn invalidators_and_mapper(fault: Option<InjectedFault>) {
    let window = Arc::new(one_slot(fault));
    let mapper = Arc::new(MemoryMapper::new());
    window
        .setup_mapping(&*mapper, &map_request(false, 0))
        .unwrap();
    // One invalidator zaps the mapping (from 0); two truncate beyond it and
    // find nothing to do, but must still wait for, and hand on, the entry.
    let invalidators: Vec<_> = [0, SLOT, SLOT]
        .into_iter()
        .map(|from| {
            let (window, mapper) = (window.clone(), mapper.clone());
            thread::spawn(move || {
                window.repair(&*mapper, X, &X, from);
            })
        })
        .collect();
    // The mapper upgrades the mapping to writable (unmap + map under the lock),
    // or re-maps it if it was zapped first.
    let outcome = window
        .setup_mapping(&*mapper, &map_request(true, 0))
        .unwrap();
    assert!(
        matches!(
            outcome,
            SetupOutcome::Upgraded { .. } | SetupOutcome::Mapped { .. }
        ),
        "{outcome:?}"
    );
    for invalidator in invalidators {
        invalidator.join().unwrap();
    }
    assert_consistent(&window, &mapper);
}

#[test]
fn model2_three_invalidators_and_a_mapper_all_finish() {
    builder().check(|| invalidators_and_mapper(None));
}

#[test]
fn model2_fails_when_a_declining_waiter_wakes_nobody() {
    expect_failure(
        "model2_fails_when_a_declining_waiter_wakes_nobody",
        true,
        || invalidators_and_mapper(Some(InjectedFault::DeclineWakesNobody)),
    );
}

// ---- Model 3: map vs unmap vs invalidate on one slot.

fn map_unmap_invalidate(fault: Option<InjectedFault>) {
    let window = Arc::new(one_slot(fault));
    let mapper = Arc::new(MemoryMapper::new());
    window
        .setup_mapping(&*mapper, &map_request(false, 0))
        .unwrap();
    let unmapper = {
        let (window, mapper) = (window.clone(), mapper.clone());
        thread::spawn(move || {
            window.remove_mapping(&*mapper, 0, SLOT).unwrap();
        })
    };
    let invalidator = {
        let (window, mapper) = (window.clone(), mapper.clone());
        thread::spawn(move || {
            window.repair(&*mapper, X, &X, 0);
        })
    };
    let outcome = window
        .setup_mapping(&*mapper, &map_request(false, SLOT))
        .unwrap();
    assert!(
        matches!(outcome, SetupOutcome::Mapped { .. }),
        "{outcome:?}"
    );
    unmapper.join().unwrap();
    invalidator.join().unwrap();
    assert_consistent(&window, &mapper);
}

#[test]
fn model3_map_unmap_invalidate_all_finish() {
    builder().check(|| map_unmap_invalidate(None));
}

#[test]
fn model3_fails_when_removal_wakes_only_one() {
    expect_failure("model3_fails_when_removal_wakes_only_one", true, || {
        map_unmap_invalidate(Some(InjectedFault::RemovalWakesNext))
    });
}

// ---- Model 4: reset while threads wait.

fn reset_while_waiting(fault: Option<InjectedFault>) {
    let window = Arc::new(one_slot(fault));
    let mapper = Arc::new(MemoryMapper::new());
    window
        .setup_mapping(&*mapper, &map_request(false, 0))
        .unwrap();
    let upgrader = {
        let (window, mapper) = (window.clone(), mapper.clone());
        thread::spawn(move || {
            window
                .setup_mapping(&*mapper, &map_request(true, 0))
                .unwrap();
        })
    };
    let invalidator = {
        let (window, mapper) = (window.clone(), mapper.clone());
        thread::spawn(move || {
            window.repair(&*mapper, X, &X, 0);
        })
    };
    let report = window.reset(&*mapper);
    assert!(report.failures.is_empty());
    upgrader.join().unwrap();
    invalidator.join().unwrap();
    assert_consistent(&window, &mapper);
}

#[test]
fn model4_reset_while_threads_wait_all_finish() {
    builder().check(|| reset_while_waiting(None));
}

#[test]
fn model4_fails_when_reset_wakes_only_one() {
    expect_failure("model4_fails_when_reset_wakes_only_one", true, || {
        reset_while_waiting(Some(InjectedFault::RemovalWakesNext))
    });
}

fn reset_with_observer(fault: Option<InjectedFault>) {
    let window = Arc::new(one_slot(fault));
    let mapper = Arc::new(MemoryMapper::new());
    let holder = {
        let (window, mapper) = (window.clone(), mapper.clone());
        thread::spawn(move || {
            window
                .setup_mapping(&*mapper, &map_request(false, 0))
                .unwrap();
        })
    };
    let observer = {
        let window = window.clone();
        thread::spawn(move || {
            window.wait_unlocked(0, SLOT).unwrap();
        })
    };
    window.reset(&*mapper);
    holder.join().unwrap();
    observer.join().unwrap();
    assert_consistent(&window, &mapper);
}

#[test]
fn model4_reset_with_an_observer_all_finish() {
    builder().check(|| reset_with_observer(None));
}

#[test]
fn model4_fails_when_the_observer_waits_exclusively() {
    expect_failure(
        "model4_fails_when_the_observer_waits_exclusively",
        true,
        || reset_with_observer(Some(InjectedFault::SharedPathWaitsExclusive)),
    );
}

/// Reset meets a 4 KiB grab that holds pages 0..5 while it waits for page 5:
/// a reset woken for page 5 that then waits on page 0 must hand page 5 on, or
/// the grab (and so the reset) waits forever. Found by the stress test.
fn reset_with_incremental_page_grab(fault: Option<InjectedFault>) {
    let window = Arc::new(one_slot(fault));
    let mapper = Arc::new(MemoryMapper::new());
    // A 2 MiB mapping, so every page entry is present (an unlock of a present
    // entry hands off to one waiter; of an empty one, wakes all).
    window
        .setup_mapping(&*mapper, &map_request(false, 0))
        .unwrap();
    let page5 = window
        .grab_at(5 * PAGE_SIZE, PAGE_SIZE, Order::Page)
        .unwrap();
    let grabber = {
        let window = window.clone();
        thread::spawn(move || {
            drop(window.grab_at(0, 6 * PAGE_SIZE, Order::Page).unwrap());
        })
    };
    let resetter = {
        let (window, mapper) = (window.clone(), mapper.clone());
        thread::spawn(move || {
            window.reset(&*mapper);
        })
    };
    drop(page5);
    grabber.join().unwrap();
    resetter.join().unwrap();
    assert_consistent(&window, &mapper);
}

#[test]
fn model4_reset_with_an_incremental_page_grab_all_finish() {
    builder().check(|| reset_with_incremental_page_grab(None));
}

#[test]
fn model4_fails_when_reset_keeps_a_hand_off() {
    expect_failure("model4_fails_when_reset_keeps_a_hand_off", true, || {
        reset_with_incremental_page_grab(Some(InjectedFault::DeclineWakesNobody))
    });
}

// ---- Model 5: truncation races a map and an unmap of the same slot.

/// The file is cut 5 pages and 7 bytes in: 6 pages stay file pages.
const NEW_EOF: u64 = 5 * PAGE_SIZE + 7;
const KEPT: u64 = 6 * PAGE_SIZE;

/// A one-slot window holding a 2 MiB mapping of file offset 0 of a 4 MiB file,
/// with placeholders.
fn mapped_slot(fault: Option<InjectedFault>) -> (Arc<Window>, Arc<MemoryMapper>) {
    let window = Arc::new(one_slot(fault));
    let mapper = Arc::new(MemoryMapper::new().with_placeholders(true));
    mapper.set_eof(X, 2 * SLOT);
    window
        .setup_mapping(&*mapper, &map_request(false, 0))
        .unwrap();
    (window, mapper)
}

/// Shrinks the file, then repairs (as the daemon does after a truncation).
fn truncator(window: &Arc<Window>, mapper: &Arc<MemoryMapper>) -> thread::JoinHandle<()> {
    let (window, mapper) = (window.clone(), mapper.clone());
    thread::spawn(move || {
        mapper.set_eof(X, NEW_EOF);
        let report = window.repair(&*mapper, X, &X, NEW_EOF);
        assert!(report.failures.is_empty(), "{:?}", report.failures);
    })
}

/// After everything: index = VMM, nothing maps a page past the new end, and
/// a surviving mapping of file offset 0 still shows its first 6 pages — the
/// head of a mapping cut by the truncation stays mapped, the rest is the
/// placeholder.
fn assert_page_granular(window: &Window, mapper: &MemoryMapper) {
    assert_consistent(window, mapper);
    assert_eq!(mapper.mappings_past_eof(), Vec::new(), "a page past EOF");
    let records: Vec<_> = window
        .mappings_of(X)
        .iter()
        .map(|r| (r.moffset, r.len, r.foffset, r.state))
        .collect();
    if !records.is_empty() {
        assert_eq!(
            records,
            vec![
                (0, KEPT, 0, MappingState::Live),
                (
                    KEPT,
                    SLOT - KEPT,
                    KEPT,
                    MappingState::Zapped { placeholder: true }
                )
            ]
        );
    }
}

fn truncate_races_map_and_unmap(fault: Option<InjectedFault>) {
    let (window, mapper) = mapped_slot(fault);
    let truncator = truncator(&window, &mapper);
    let unmapper = {
        let (window, mapper) = (window.clone(), mapper.clone());
        thread::spawn(move || {
            window.remove_mapping(&*mapper, 0, SLOT).unwrap();
        })
    };
    // Maps (or upgrades) file offset 0 writable: whole before the truncation,
    // 6 pages + placeholder after.
    window
        .setup_mapping(&*mapper, &map_request(true, 0))
        .unwrap();
    truncator.join().unwrap();
    unmapper.join().unwrap();
    assert_page_granular(&window, &mapper);
}

#[test]
fn model5_no_mapping_survives_past_eof() {
    builder().check(|| truncate_races_map_and_unmap(None));
}

#[test]
fn model5_fails_when_a_map_registers_late() {
    expect_failure("model5_fails_when_a_map_registers_late", false, || {
        truncate_races_map_and_unmap(Some(InjectedFault::RegisterAfterMap))
    });
}

// ---- Model 6: a repair turns the 2 MiB entry into 4 KiB entries under waiters.

/// The repair of a 2 MiB mapping cut by the truncation stores two records, so
/// it turns its locked 2 MiB entry into 4 KiB entries: the 2 MiB key
/// disappears while a remover and a re-mapper sleep on it, and every one of
/// them must be woken.
fn repair_splits_under_waiters(fault: Option<InjectedFault>) {
    let (window, mapper) = mapped_slot(fault);
    let truncator = truncator(&window, &mapper);
    let remover = {
        let (window, mapper) = (window.clone(), mapper.clone());
        thread::spawn(move || {
            window.remove_mapping(&*mapper, 0, SLOT).unwrap();
        })
    };
    let observer = {
        let window = window.clone();
        thread::spawn(move || {
            window.wait_unlocked(0, SLOT).unwrap();
        })
    };
    window
        .setup_mapping(&*mapper, &map_request(false, 0))
        .unwrap();
    truncator.join().unwrap();
    remover.join().unwrap();
    observer.join().unwrap();
    assert_page_granular(&window, &mapper);
}

#[test]
fn model6_repair_split_wakes_every_waiter() {
    builder().check(|| repair_splits_under_waiters(None));
}

#[test]
fn model6_fails_when_the_repair_split_wakes_only_one() {
    expect_failure(
        "model6_fails_when_the_repair_split_wakes_only_one",
        true,
        || repair_splits_under_waiters(Some(InjectedFault::RemovalWakesNext)),
    );
}
