//! The committed seed corpus matches `seeds()`, and every seed (and every
//! input kept under `regressions/`) runs through the harness with its
//! invariants holding. `DAXFSD_WRITE_SEEDS=1 cargo test` rewrites the seeds.

use std::path::Path;

#[test]
fn committed_seeds_are_current_and_replay_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/dispatch");
    let seeds = daxfsd_fuzz::seeds();
    if std::env::var_os("DAXFSD_WRITE_SEEDS").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let mut committed: Vec<String> = std::fs::read_dir(&dir)
        .expect("seeds/dispatch (DAXFSD_WRITE_SEEDS=1 cargo test writes it)")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    committed.sort();
    let mut names: Vec<String> = seeds.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(committed, names, "seed files vs seeds()");
    for (name, bytes) in &seeds {
        assert_eq!(
            &std::fs::read(dir.join(name)).unwrap(),
            bytes,
            "seed {name} is stale"
        );
    }
    // Inputs that once broke an invariant, kept after the fix.
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut inputs: Vec<(String, Vec<u8>)> =
        seeds.into_iter().map(|(n, b)| (n.to_string(), b)).collect();
    if let Ok(entries) = std::fs::read_dir(regressions) {
        for e in entries {
            let path = e.unwrap().path();
            inputs.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    daxfsd_fuzz::init();
    for (name, input) in &inputs {
        eprintln!("replaying {name}");
        daxfsd_fuzz::run_input(input);
    }
    seeds_reach_their_operations();
}

/// The seeds reach what they are named after: the nodeids and handles they
/// use are the ones a fresh session hands out, so the requests succeed.
/// (Part of the test above: one test function, so no other test thread
/// opens descriptors while the harness counts them.)
fn seeds_reach_their_operations() {
    use daxfsd_protocol::Opcode;
    let seeds = daxfsd_fuzz::seeds();
    // Every request of the seed succeeds (or has no reply), except those
    // listed: (index in the seed, errno) — refusals the seed is built to hit.
    let expect = |name: &str, refusals: &[(usize, i32)]| {
        let seed = &seeds.iter().find(|(n, _)| *n == name).expect(name).1;
        let trace = daxfsd_fuzz::run_input_traced(seed);
        for (i, (op, error)) in trace.iter().enumerate() {
            let want = refusals
                .iter()
                .find(|(j, _)| *j == i)
                .map_or(0, |(_, e)| -e);
            assert!(
                error.is_none() || *error == Some(want),
                "{name}: request {i} (opcode {op}) got {error:?}, expected {want}: {trace:?}"
            );
        }
        trace
    };
    for name in [
        "getattr",
        "setattr",
        "readlink",
        "symlink",
        "mkdir",
        "rename",
        "link",
        "open_read",
        "statfs",
        "fsync",
        "flush",
        "dir",
        "access",
        "create",
        "fallocate",
        "lseek",
        "copy_file_range",
        "syncfs",
        "dax_thrash",
        "batch_forget",
        "interrupt",
    ] {
        expect(name, &[]);
    }
    let mapped = expect("setupmapping", &[]);
    let setups = mapped
        .iter()
        .filter(|(op, _)| *op == Opcode::SetupMapping as u32)
        .count();
    assert_eq!(setups, 3);
    // The harness caps files at 64 MiB (RLIMIT_FSIZE): EFBIG, not a signal.
    expect("write", &[(3, libc::EFBIG)]);
    expect("xattr", &[(4, libc::ERANGE)]);
    expect("rename2", &[(2, libc::EEXIST)]);
    expect("getlk", &[(0, libc::ENOSYS)]);
    expect("destroy", &[(1, libc::EIO)]);
    expect("lookup", &[(3, libc::ENOENT)]);
    // A range outside the 8 MiB window.
    expect("removemapping", &[(5, libc::EINVAL)]);
    expect("unlink", &[]);
    expect("mknod", &[(1, libc::ENXIO)]);
    expect("forget", &[(2, libc::EBADF)]);
    expect("release", &[(3, libc::EBADF)]);
}
