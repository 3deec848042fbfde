//! Fuzzing harness for daxfsd's request path.
//!
//! [`run_input`] feeds one fuzz input to a fresh [`Dispatcher`] over a
//! scratch share, with a DAX window whose VMM is a thread answering the
//! backend channel in-process, and checks what every transport relies on:
//!
//! - a reply never exceeds the writable capacity, its header's `len` is the
//!   reply's size, it echoes the request's `unique`, and an error reply is a
//!   bare header with a negative errno;
//! - only FORGET, BATCH_FORGET and INTERRUPT (or a chain too short for any
//!   header) go unanswered;
//! - when the session ends, every descriptor the input made the daemon open
//!   is closed again (the count in `/proc/self/fd` is back to its baseline).
//!
//! # Input format
//! Byte 0 picks the reply capacity from [`CAPACITIES`]; the rest is a run of
//! requests, each as long as its header's `len` says (a `len` below the
//! header size or beyond the input makes the rest one request). Before them
//! the harness sends a valid INIT, so inputs start inside a session; at most
//! [`MAX_REQUESTS`] are served. [`seeds`] builds real request sequences in
//! this format with `RequestEncoder`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once, OnceLock};

use daxfsd::dax::{Dax, DaxProtocol};
use daxfsd::dispatch::{
    reply_header, DaemonReplySpace, Dispatcher, InitPolicy, Offers, Reply, SessionEnd,
};
use daxfsd::fs::passthrough::{
    CachePolicy, FsConfig, InodeDaxPolicy, InodeFileHandles, PassthroughFs,
};
use daxfsd_protocol::abi::{self, InHeader, InitInCompat, InitInExt, Opcode};
use daxfsd_protocol::encode::RequestEncoder;

mod seeds;
mod vmm;

pub use seeds::seeds;

/// Reply capacities byte 0 chooses from: none, less than a header, a bare
/// header, an entry reply, a page, and what the queue worker gives a full
/// READ.
pub const CAPACITIES: [usize; 8] = [0, 8, 16, 100, 160, 4096, 65536, (1 << 20) + 16];

/// Requests served per input at most.
pub const MAX_REQUESTS: usize = 64;

/// DAX window size: four 2 MiB slots, so reclaim and conflicts are reached.
pub const WINDOW_SIZE: u64 = 8 << 20;

/// Bytes the scratch share may hold in total (tmpfs) or per file (RLIMIT_FSIZE).
const SCRATCH_LIMIT: u64 = 64 << 20;

/// What lives for the whole fuzzing process.
struct World {
    /// The scratch share, emptied and refilled before every input.
    share: PathBuf,
    dax: Arc<Dax>,
}

static WORLD: OnceLock<World> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());
static IGNORE_XFSZ: Once = Once::new();

/// Sets the process up; call it before any thread exists (libFuzzer's
/// initialisation hook) so that, as root, the scratch share can be a private
/// tmpfs capped at [`SCRATCH_LIMIT`].
pub fn init() {
    WORLD.get_or_init(World::new);
}

impl World {
    fn new() -> Self {
        let limit = rustix::process::Rlimit {
            current: Some(SCRATCH_LIMIT),
            maximum: Some(SCRATCH_LIMIT),
        };
        rustix::process::setrlimit(rustix::process::Resource::Fsize, limit).expect("RLIMIT_FSIZE");
        let share = std::env::temp_dir().join(format!("daxfsd-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&share).expect("scratch dir");
        private_tmpfs(&share);
        let dax = Arc::new(
            Dax::new(WINDOW_SIZE, DaxProtocol::Shmem, PathBuf::new()).expect("DAX window"),
        );
        dax.set_channel(Some(vmm::spawn()));
        // The daemon keeps one process-wide /proc/self/fd descriptor, opened
        // by the first share; open it before any input counts descriptors.
        drop(open_share(&share));
        Self { share, dax }
    }
}

/// As root, mounts a size-capped tmpfs on `dir` in a private mount namespace
/// (only possible while single-threaded); otherwise `dir` stays as it is.
fn private_tmpfs(dir: &Path) {
    use rustix::mount::{mount, mount_change, MountFlags, MountPropagationFlags};
    if !rustix::process::geteuid().is_root() {
        return;
    }
    // SAFETY: rustix marks unshare unsafe because some flags (CLONE_FILES,
    // CLONE_FS) change what other threads of the process share. NEWNS only
    // gives this process its own copy of the mount table, touching no
    // memory; with other threads running the kernel refuses it (EINVAL) and
    // the scratch dir simply stays on the host filesystem.
    let unshared = unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) };
    if unshared.is_err() {
        return;
    }
    let private = mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    );
    let data = format!("size={SCRATCH_LIMIT},mode=0755");
    let data = std::ffi::CString::new(data).expect("no NUL");
    let mounted = private.is_ok()
        && mount(
            "daxfsd-fuzz",
            dir,
            "tmpfs",
            MountFlags::NODEV | MountFlags::NOSUID | MountFlags::NOEXEC,
            data.as_c_str(),
        )
        .is_ok();
    if mounted {
        eprintln!(
            "daxfsd-fuzz: scratch share {} on a private {SCRATCH_LIMIT}-byte tmpfs",
            dir.display()
        );
    }
}

/// What each open descriptor refers to.
fn describe_fds() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!("{}: {}", e.file_name().to_string_lossy(), target.display())
        })
        .collect()
}

/// Number of open descriptors of this process, pipes aside: the daemon
/// makes none, and libFuzzer's symbolizer opens and closes some between
/// inputs.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|target| !target.to_string_lossy().starts_with("pipe:"))
        })
        .count()
}

/// Empties `share` and lays out the fixture the seeds refer to:
/// `file` (8 KiB), `dir/inner`, `link -> file`, `big` (4 MiB, sparse).
fn reset_share(share: &Path) {
    for entry in std::fs::read_dir(share).expect("read share") {
        let path = entry.expect("entry").path();
        // Whatever a previous input left: modes may forbid traversal.
        let _ =
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        if path.is_dir() && !path.is_symlink() {
            make_removable(&path);
            std::fs::remove_dir_all(&path).expect("remove dir");
        } else {
            std::fs::remove_file(&path).expect("remove file");
        }
    }
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(share.join("file"), data).expect("file");
    std::fs::create_dir(share.join("dir")).expect("dir");
    std::fs::write(share.join("dir/inner"), b"inner\n").expect("inner");
    std::os::unix::fs::symlink("file", share.join("link")).expect("link");
    let big = std::fs::File::create(share.join("big")).expect("big");
    big.set_len(4 << 20).expect("big size");
}

/// Gives every directory under `dir` rwx for its owner so it can be removed.
fn make_removable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
            make_removable(&path);
        }
    }
}

/// The passthrough filesystem over `share`, xattrs on.
fn open_share(share: &Path) -> PassthroughFs {
    PassthroughFs::new(FsConfig {
        shared_dir: share.to_owned(),
        cache: CachePolicy::Auto,
        readonly: false,
        xattr: true,
        xattrmap: None,
        allow_direct_io: false,
        preserve_noatime: false,
        announce_submounts: true,
        inode_dax: InodeDaxPolicy::Always,
        inode_file_handles: InodeFileHandles::Prefer,
        handle_calls: true,
        ids: Default::default(),
    })
    .expect("open the scratch share")
}

/// The INIT every input starts with: protocol 7.41, every flag offered.
pub fn init_request() -> Vec<u8> {
    RequestEncoder::new(Opcode::Init, 1, 0)
        .push(&InitInCompat {
            major: abi::KERNEL_VERSION,
            minor: abi::KERNEL_MINOR_VERSION,
            max_readahead: 1 << 20,
            flags: u32::MAX,
        })
        .push(&InitInExt {
            flags2: u32::MAX,
            unused: [0; 11],
        })
        .finish()
}

/// Splits the request run of an input (after byte 0).
pub fn split_requests(mut rest: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !rest.is_empty() && out.len() < MAX_REQUESTS {
        let claimed = rest
            .get(..4)
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let take = if (size_of::<InHeader>()..=rest.len()).contains(&claimed) {
            claimed
        } else {
            rest.len()
        };
        let (request, tail) = rest.split_at(take);
        out.push(request);
        rest = tail;
    }
    out
}

/// Serves one fuzz input and panics if an invariant breaks.
pub fn run_input(data: &[u8]) {
    run_input_traced(data);
}

/// What one request of an input got: its opcode number and the reply's
/// error (0 for success), or `None` when it had no reply.
pub type Trace = Vec<(u32, Option<i32>)>;

/// As [`run_input`], returning what each request got.
pub fn run_input_traced(data: &[u8]) -> Trace {
    let world = WORLD.get_or_init(World::new);
    // A file past the limit fails with EFBIG instead of raising SIGXFSZ.
    // Done here, not in `init`: libFuzzer installs its own SIGXFSZ handler
    // after its initialisation hook.
    IGNORE_XFSZ.call_once(|| {
        // SAFETY: SIG_IGN is a valid disposition for SIGXFSZ; no handler runs.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    });
    // One input at a time (tests run in threads): they share the scratch
    // directory, the window and the descriptor count.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut trace = Vec::new();
    let Some((&selector, rest)) = data.split_first() else {
        return trace;
    };
    let capacity = CAPACITIES[usize::from(selector) % CAPACITIES.len()];
    reset_share(&world.share);
    let baseline_fds = open_fds();
    let fs = open_share(&world.share);
    let policy = InitPolicy {
        cache: CachePolicy::Auto,
        dax_window: true,
        inode_dax: true,
        offers: Offers {
            readdirplus: true,
            killpriv_v2: true,
            ..Offers::default()
        },
    };
    let dispatcher = Dispatcher::new(Arc::new(fs), policy, Some(Arc::clone(&world.dax)));
    let mut reply = Vec::new();
    let mut space = DaemonReplySpace::new(4096);
    let init = dispatcher.dispatch(&init_request(), &mut reply, &space);
    assert!(matches!(init, Reply::Buffer(_)), "INIT unanswered");
    assert_eq!(
        reply_header(&reply).map(|h| h.error),
        Some(0),
        "INIT refused"
    );
    for request in split_requests(rest) {
        space.set_capacity(capacity);
        let answer = dispatcher.dispatch(request, &mut reply, &space);
        // The reply as the guest would see it: head, then READ data.
        let outcome = space
            .assemble(&mut reply, answer)
            .head_and_data()
            .map(|(len, _)| len);
        check_outcome(request, capacity, outcome, &reply);
        let opcode = request
            .get(4..8)
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        let error = outcome.and_then(|_| reply_header(&reply).map(|h| h.error));
        trace.push((opcode, error));
    }
    dispatcher.end_session(SessionEnd::Destroy);
    drop(dispatcher);
    // The DAX host watcher may hold a mapped file for a moment while it
    // handles an event the scratch reset caused; a leak stays.
    let mut fds = open_fds();
    for _ in 0..50 {
        if fds == baseline_fds {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        fds = open_fds();
    }
    assert!(
        fds == baseline_fds,
        "{fds} descriptors open after the session ended, {baseline_fds} before: {:?}",
        describe_fds()
    );
    trace
}

fn check_outcome(request: &[u8], capacity: usize, outcome: Option<usize>, reply: &[u8]) {
    let opcode = request
        .get(4..8)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match outcome {
        None => {
            let silent =
                [Opcode::Forget, Opcode::BatchForget, Opcode::Interrupt].map(|op| Some(op as u32));
            assert!(
                capacity < size_of::<abi::OutHeader>() || silent.contains(&opcode),
                "opcode {opcode:?} went unanswered with capacity {capacity}"
            );
        }
        Some(len) => {
            assert!(len <= capacity, "reply of {len} bytes, capacity {capacity}");
            assert!(
                len <= reply.len(),
                "reply of {len} bytes from a {}-byte buffer",
                reply.len()
            );
            let header = reply_header(reply).expect("a reply header");
            assert_eq!(header.len as usize, len, "header len vs reply size");
            let unique = request
                .get(8..16)
                .map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8 bytes")));
            assert_eq!(header.unique, unique, "unique not echoed");
            assert!(
                (-4095..=0).contains(&header.error),
                "error {} is not a negative errno",
                header.error
            );
            if header.error != 0 {
                assert_eq!(len, size_of::<abi::OutHeader>(), "error reply with a body");
            }
        }
    }
}
