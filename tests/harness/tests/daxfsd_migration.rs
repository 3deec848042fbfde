//! Live migration between two real daxfsd processes on one shared directory,
//! driven as QEMU drives them: the source's queues stop, SET_DEVICE_STATE_FD
//! (save) and the pipe read to its end, CHECK_DEVICE_STATE; then the destination
//! gets the bytes through SET_DEVICE_STATE_FD (load) and reports with
//! CHECK_DEVICE_STATE. The guest's session then continues on the destination
//! with the source's nodeids and fhs, without INIT.
//!
//! The `--migration-*` flags each change what happens, and each is observed:
//! `--migration-on-error` (an inode no path leads to), `--migration-confirm-paths`
//! and `--migration-verify-handles` (a file replaced on the host after the paths
//! were collected), `--migration-mode file-handles` (a file renamed on the host).

mod common;

use std::fs::File;
use std::io::{Read, Write};

use common::*;
use daxfsd_harness::{BackendCommand, HarnessError};
use daxfsd_protocol::abi::*;
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserVirtioFeatures,
};
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;

/// A daxfsd started with `args` on `source`'s shared directory, connected, not
/// initialised: a migration destination.
fn destination(source: &Session, args: &[&str]) -> Session {
    let backend = BackendCommand::daxfsd(daxfsd_bin())
        .args(["--tag", "ops", "--num-request-queues", "1"])
        .args(args.iter().copied())
        .shared_dir(source.dir())
        .spawn()
        .unwrap_or_else(|e| panic!("{}", daxfsd_harness::error_chain(&e)));
    Session::connect(backend, 1)
}

fn pipe() -> (File, File) {
    let (r, w) = rustix::pipe::pipe().expect("pipe");
    (File::from(r), File::from(w))
}

/// The frontend turns dirty logging on: a migration starts (the source collects
/// its paths before SET_FEATURES is acknowledged).
fn start_migration(s: &Session) {
    let features = s.dev.negotiated().features | VhostUserVirtioFeatures::LOG_ALL.bits();
    s.check(
        s.dev
            .vhost_call("SET_FEATURES(LOG_ALL)", |fe| fe.set_features(features)),
    );
}

/// The source's device state, as QEMU takes it at switch-over; `Err` with the
/// daemon's answer to CHECK_DEVICE_STATE if it failed.
fn save(s: &Session) -> Result<Vec<u8>, HarnessError> {
    s.check(s.dev.stop_queue(REQUEST_QUEUE));
    s.check(s.dev.stop_queue(HIPRIO_QUEUE));
    let (mut r, w) = pipe();
    let theirs = s.check(s.dev.vhost_call("SET_DEVICE_STATE_FD(save)", |fe| {
        fe.set_device_state_fd(
            VhostTransferStateDirection::SAVE,
            VhostTransferStatePhase::STOPPED,
            w.into(),
        )
    }));
    assert!(theirs.is_none(), "the daemon writes the frontend's pipe");
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes).expect("reading the state");
    s.dev
        .vhost_call("CHECK_DEVICE_STATE", |fe| fe.check_device_state())?;
    Ok(bytes)
}

/// Hands `state` to the destination; its CHECK_DEVICE_STATE answer.
fn load(d: &Session, state: &[u8]) -> Result<(), HarnessError> {
    let (r, mut w) = pipe();
    d.check(d.dev.vhost_call("SET_DEVICE_STATE_FD(load)", |fe| {
        fe.set_device_state_fd(
            VhostTransferStateDirection::LOAD,
            VhostTransferStatePhase::STOPPED,
            r.into(),
        )
    }));
    w.write_all(state).expect("writing the state");
    drop(w);
    d.dev
        .vhost_call("CHECK_DEVICE_STATE", |fe| fe.check_device_state())
}

/// Saves `s` (which must succeed) and loads it into a new destination started with
/// `args`; the destination and its CHECK_DEVICE_STATE answer.
fn migrate(s: &Session, args: &[&str]) -> (Session, Result<(), HarnessError>) {
    let state = save(s).unwrap_or_else(|e| panic!("save: {e}\n{}", s.backend.diagnostics()));
    let d = destination(s, args);
    let loaded = load(&d, &state);
    (d, loaded)
}

#[test]
fn the_session_continues_on_the_destination_with_its_nodeids_and_handles() {
    let s = Session::start(&[]);
    std::fs::create_dir(s.path("d")).unwrap();
    std::fs::write(s.path("d/f"), b"migrated bytes").unwrap();
    let dir = s.lookup(ROOT_ID, b"d").unwrap().nodeid;
    let file = s.lookup(dir, b"f").unwrap().nodeid;
    let fh = s.open(file, libc::O_RDONLY).unwrap().fh;
    let dir_fh = s.opendir(dir).unwrap().fh;
    let (entry, open) = s.create(dir, b"new", libc::O_RDWR, 0o644).unwrap();
    assert_eq!(s.write(entry.nodeid, open.fh, 0, b"before").unwrap(), 6);

    let (d, loaded) = migrate(&s, &[]);
    loaded.unwrap_or_else(|e| panic!("load: {e}\n{}", d.backend.diagnostics()));
    // No INIT on the destination: the guest's session goes on.
    assert_eq!(d.read(file, fh, 0, 64).unwrap(), b"migrated bytes");
    assert_eq!(d.write(entry.nodeid, open.fh, 6, b" after").unwrap(), 6);
    assert_eq!(
        std::fs::read(s.path("d/new")).unwrap(),
        b"before after",
        "the write through the migrated handle reached the file"
    );
    let names: Vec<Vec<u8>> = d
        .readdir(dir, dir_fh, 0, 4096)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&b"f".to_vec()), "{names:?}");
    // A lookup finds the nodeid the guest already holds, and new ones follow
    // the source's.
    assert_eq!(d.lookup(dir, b"f").unwrap().nodeid, file);
    std::fs::write(s.path("d/later"), b"x").unwrap();
    let later = d.lookup(dir, b"later").unwrap().nodeid;
    assert!(later > entry.nodeid, "nodeid {later} reused");
    assert_eq!(
        d.getattr(dir).unwrap().attr.ino,
        std::fs::metadata(s.path("d"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap()
    );
}

#[test]
fn an_inode_without_a_path_aborts_the_migration_or_answers_eio() {
    for on_error in ["abort", "guest-error"] {
        let s = Session::start(&[]);
        std::fs::write(s.path("gone"), b"unlinked while open").unwrap();
        std::fs::write(s.path("kept"), b"still here").unwrap();
        let gone = s.lookup(ROOT_ID, b"gone").unwrap().nodeid;
        let gone_fh = s.open(gone, libc::O_RDONLY).unwrap().fh;
        let kept = s.lookup(ROOT_ID, b"kept").unwrap().nodeid;
        std::fs::remove_file(s.path("gone")).unwrap();

        let (d, loaded) = migrate(&s, &["--migration-on-error", on_error]);
        if on_error == "abort" {
            let error =
                loaded.expect_err("an inode the destination cannot open must fail the load");
            assert!(
                d.backend.stderr().contains("could not be migrated"),
                "{}",
                d.backend.stderr()
            );
            drop(error);
            continue;
        }
        loaded.unwrap_or_else(|e| panic!("load: {e}\n{}", d.backend.diagnostics()));
        assert_eq!(d.getattr(gone).unwrap_err(), libc::EIO);
        assert_eq!(d.read(gone, gone_fh, 0, 64).unwrap_err(), libc::EIO);
        assert_eq!(d.release(gone, gone_fh), Ok(()));
        let kept_fh = d.open(kept, libc::O_RDONLY).unwrap().fh;
        assert_eq!(d.read(kept, kept_fh, 0, 64).unwrap(), b"still here");
    }
}

/// A file replaced on the host after the migration started (its name now leads
/// to another inode), as each flag treats it.
fn replaced_after_collection(
    source_args: &[&str], destination_args: &[&str],
) -> (Session, Session, u64, u64, Result<(), HarnessError>) {
    let s = Session::start(source_args);
    std::fs::write(s.path("f"), b"the guest's file").unwrap();
    let file = s.lookup(ROOT_ID, b"f").unwrap().nodeid;
    let fh = s.open(file, libc::O_RDONLY).unwrap().fh;
    start_migration(&s);
    std::fs::rename(s.path("f"), s.path("f.old")).unwrap();
    std::fs::write(s.path("f"), b"somebody else's").unwrap();
    let (d, loaded) = migrate(&s, destination_args);
    (s, d, file, fh, loaded)
}

#[test]
fn paths_collected_at_the_start_are_used_unless_confirmed() {
    // Without a check the destination opens what the old path leads to now.
    let (_s, d, file, fh, loaded) = replaced_after_collection(&[], &[]);
    loaded.unwrap_or_else(|e| panic!("load: {e}\n{}", d.backend.diagnostics()));
    assert_eq!(d.read(file, fh, 0, 64).unwrap(), b"somebody else's");

    // --migration-confirm-paths finds the file where it went.
    let (_s, d, file, fh, loaded) = replaced_after_collection(&["--migration-confirm-paths"], &[]);
    loaded.unwrap_or_else(|e| panic!("load: {e}\n{}", d.backend.diagnostics()));
    assert_eq!(d.read(file, fh, 0, 64).unwrap(), b"the guest's file");
}

#[test]
fn verified_handles_refuse_another_inode_at_the_path() {
    let (_s, d, _, _, loaded) = replaced_after_collection(&["--migration-verify-handles"], &[]);
    loaded.expect_err("the destination opened another inode than the source's");
    assert!(
        d.backend.stderr().contains("file handles differ"),
        "{}",
        d.backend.stderr()
    );
}

#[test]
fn file_handles_follow_a_file_renamed_on_the_host() {
    if !is_root() {
        daxfsd_harness::skip("opening file handles needs CAP_DAC_READ_SEARCH (root)");
        return;
    }
    let (_s, d, file, fh, loaded) =
        replaced_after_collection(&["--migration-mode", "file-handles"], &[]);
    loaded.unwrap_or_else(|e| panic!("load: {e}\n{}", d.backend.diagnostics()));
    assert_eq!(d.read(file, fh, 0, 64).unwrap(), b"the guest's file");
    // A destination that does not use file handles refuses them (and is not
    // killed by its seccomp filter for trying).
    let (_s, d, _, _, loaded) = replaced_after_collection(
        &["--migration-mode", "file-handles"],
        &["--inode-file-handles=never"],
    );
    loaded.expect_err("file handles on a destination without them");
    assert!(
        d.backend.stderr().contains("does not use them"),
        "{}",
        d.backend.stderr()
    );
    assert!(
        d.backend.is_running().unwrap(),
        "{}",
        d.backend.diagnostics()
    );
}

#[test]
fn a_guest_rename_after_collection_is_followed() {
    let s = Session::start(&[]);
    std::fs::write(s.path("a"), b"renamed by the guest").unwrap();
    let file = s.lookup(ROOT_ID, b"a").unwrap().nodeid;
    let fh = s.open(file, libc::O_RDONLY).unwrap().fh;
    start_migration(&s);
    s.rename(ROOT_ID, b"a", ROOT_ID, b"b").unwrap();
    let (d, loaded) = migrate(&s, &[]);
    loaded.unwrap_or_else(|e| panic!("load: {e}\n{}", d.backend.diagnostics()));
    assert_eq!(d.read(file, fh, 0, 64).unwrap(), b"renamed by the guest");
}

#[test]
fn a_device_with_a_dax_window_refuses_to_migrate() {
    let s = Session::start(&["--cache-size", "2M"]);
    std::fs::write(s.path("f"), b"x").unwrap();
    s.lookup(ROOT_ID, b"f").unwrap();
    save(&s).expect_err("the window's mappings cannot move");
    let log = s.backend.stderr();
    assert!(
        log.contains("a device with a DAX window (--cache-size) cannot be migrated"),
        "{log}"
    );
    assert!(
        s.backend.is_running().unwrap(),
        "a failed save must not stop the daemon"
    );
}

#[test]
fn an_inode_whose_name_was_removed_is_found_by_its_other_link() {
    let s = Session::start(&[]);
    std::fs::create_dir_all(s.path("x/y")).unwrap();
    std::fs::write(s.path("a"), b"linked twice").unwrap();
    let file = s.lookup(ROOT_ID, b"a").unwrap().nodeid;
    let fh = s.open(file, libc::O_RDONLY).unwrap().fh;
    // /proc now says "a (deleted)": only a search of the share finds it.
    std::fs::hard_link(s.path("a"), s.path("x/y/b")).unwrap();
    std::fs::remove_file(s.path("a")).unwrap();
    let (d, loaded) = migrate(&s, &[]);
    loaded.unwrap_or_else(|e| panic!("load: {e}\n{}", d.backend.diagnostics()));
    assert_eq!(d.read(file, fh, 0, 64).unwrap(), b"linked twice");
    let x = d.lookup(ROOT_ID, b"x").unwrap().nodeid;
    let y = d.lookup(x, b"y").unwrap().nodeid;
    assert_eq!(
        d.lookup(y, b"b").unwrap().nodeid,
        file,
        "the same inode, the same nodeid"
    );
}
