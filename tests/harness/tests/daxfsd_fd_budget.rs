//! Issue 15, the descriptor half: a guest that looks up more files than the daemon may
//! hold descriptors. With file handles (`--inode-file-handles=prefer`, the default) every
//! LOOKUP and GETATTR of thousands of files succeeds, twice, while the daemon's open
//! descriptors stay under `--rlimit-nofile`; with `never` the guest gets EMFILE for what
//! does not fit, the daemon keeps serving, and a retry after FORGET succeeds.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{is_root, Session};
use daxfsd_harness::skip;
use daxfsd_protocol::abi::ROOT_ID;

/// The descriptor limit the daemon is started with (the least `--rlimit-nofile` takes).
const LIMIT: usize = 512;
/// Files looked up: several times the limit.
const FILES: usize = 4000;

/// A daemon limited to [`LIMIT`] descriptors over a share of [`FILES`] files, writing its
/// metrics to `metrics`.
fn limited(handles: &str, metrics: &Path) -> Session {
    let metrics = metrics.to_str().expect("a UTF-8 path");
    let limit = LIMIT.to_string();
    let s = Session::start(&[
        "--rlimit-nofile",
        &limit,
        handles,
        "--metrics-file",
        metrics,
    ]);
    for i in 0..FILES {
        std::fs::write(s.path(&format!("f{i}")), i.to_string()).expect("write a file");
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", s.backend.daemon_pid()))
        .expect("the daemon's /proc/<pid>/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.get(3..5), Some(&["512", "512"][..]), "{line}");
    s
}

/// The value of metric `name` once the metrics file shows one satisfying `ok` (it is
/// written once a second), or the last value seen after 5 s.
fn metric_when(path: &Path, name: &str, ok: impl Fn(u64) -> bool) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = std::fs::read_to_string(path).ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        });
        if value.is_some_and(&ok) || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_within_limit(s: &Session, when: &str) {
    let open = s.fd_count();
    assert!(
        open <= LIMIT,
        "{when}: the daemon holds {open} descriptors, above its limit {LIMIT}"
    );
}

#[test]
fn thousands_of_files_under_a_low_descriptor_limit() {
    if !is_root() {
        // open_by_handle_at needs CAP_DAC_READ_SEARCH.
        return skip("file handles need root (CAP_DAC_READ_SEARCH)");
    }
    let metrics = tempfile::tempdir().expect("tempdir");
    let metrics_file = metrics.path().join("daxfsd.prom");
    let s = limited("--inode-file-handles=prefer", &metrics_file);
    let mut nodeids = vec![0; FILES];
    for round in 0..2 {
        for (i, nodeid) in nodeids.iter_mut().enumerate() {
            let name = format!("f{i}");
            let entry = s
                .lookup(ROOT_ID, name.as_bytes())
                .unwrap_or_else(|e| panic!("round {round}: LOOKUP {name}: errno {e}"));
            assert!(
                round == 0 || entry.nodeid == *nodeid,
                "{name} changed nodeid"
            );
            *nodeid = entry.nodeid;
            let attr = s
                .getattr(entry.nodeid)
                .unwrap_or_else(|e| panic!("round {round}: GETATTR {name}: errno {e}"));
            let host = std::fs::metadata(s.path(&name)).expect("host metadata");
            assert_eq!((attr.attr.ino, attr.attr.size), (host.ino(), host.size()));
            if i % 500 == 0 {
                assert_within_limit(&s, &format!("round {round}, file {i}"));
            }
        }
    }
    assert_within_limit(&s, "after both rounds");
    // The second round found most inodes closed by the budget and reopened them.
    let enough = |n: u64| n as usize >= FILES / 2;
    let reopens = metric_when(&metrics_file, "daxfsd_inode_reopens_total", enough);
    assert!(reopens.is_some_and(enough), "{reopens:?}");
    let fds = metric_when(&metrics_file, "daxfsd_inode_fds", |n| {
        n as usize <= LIMIT / 2
    });
    assert!(fds.is_some_and(|n| n as usize <= LIMIT / 2), "{fds:?}");
    // Every file is still reachable through its nodeid, by handle.
    let open = s
        .open(nodeids[0], libc::O_RDONLY)
        .expect("OPEN of the first file");
    assert_eq!(s.read(nodeids[0], open.fh, 0, 16), Ok(b"0".to_vec()));
    s.assert_serving();
}

#[test]
fn without_handles_the_guest_gets_emfile_and_may_retry() {
    let metrics = tempfile::tempdir().expect("tempdir");
    let s = limited(
        "--inode-file-handles=never",
        &metrics.path().join("daxfsd.prom"),
    );
    let mut known = Vec::new();
    let mut refused = None;
    for i in 0..FILES {
        match s.lookup(ROOT_ID, format!("f{i}").as_bytes()) {
            Ok(entry) => known.push(entry.nodeid),
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (first_refused, errno) = refused.expect("a lookup beyond the limit fails");
    assert_eq!(errno, libc::EMFILE, "file {first_refused}");
    assert_within_limit(&s, "after EMFILE");
    s.assert_serving();
    // The guest forgets some inodes, and the lookup succeeds on retry.
    for &nodeid in &known[..16] {
        s.forget(nodeid, 1);
    }
    s.lookup(ROOT_ID, format!("f{first_refused}").as_bytes())
        .expect("the retried LOOKUP after FORGET");
}
