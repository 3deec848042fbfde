//! Tests of the passthrough filesystem on a temporary directory.

use std::ffi::CString;
use std::path::Path;

use daxfsd_protocol::abi::{CreateIn, EntryOut, SetattrIn};
use daxfsd_protocol::reply::{DirentWriter, ReplyBuf, OUT_HEADER_LEN};

use super::{CachePolicy, Context, FsConfig, InodeDaxPolicy, InodeFileHandles, PassthroughFs};
use crate::fs::{AttrOps, DirOps, EntryOps, FileOps, NewInode, XattrOps};

mod entries;
mod fd_budget;
mod files;
mod inode_dax;
mod setattr;

/// A filesystem over a fresh temporary directory.
struct Fixture {
    dir: tempfile::TempDir,
    fs: PassthroughFs,
}

fn fixture_with(readonly: bool, xattr: bool, cache: CachePolicy) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = PassthroughFs::new(FsConfig {
        shared_dir: dir.path().to_owned(),
        cache,
        readonly,
        xattr,
        xattrmap: None,
        allow_direct_io: false,
        preserve_noatime: false,
        announce_submounts: true,
        inode_dax: InodeDaxPolicy::MinSize(8192),
        inode_file_handles: InodeFileHandles::Prefer,
        handle_calls: true,
        ids: Default::default(),
    })
    .expect("open shared dir");
    Fixture { dir, fs }
}

fn fixture() -> Fixture {
    fixture_with(false, true, CachePolicy::Auto)
}

impl Fixture {
    /// MKNOD of `name` in `parent` as `ctx`, without a umask or a label.
    fn mknod(
        &self, ctx: Context, parent: u64, name: &str, mode: u32, rdev: u32,
    ) -> Result<EntryOut, crate::errno::Errno> {
        self.fs.mknod(ctx, parent, &cs(name), mode, rdev, &PLAIN)
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }
}

/// The test process's own identity, so tests pass with or without root.
fn me() -> Context {
    Context {
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        pid: std::process::id(),
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn cs(s: &str) -> CString {
    CString::new(s).expect("no NUL in test names")
}

const ROOT: u64 = 1;

/// A creation without umask or security context.
const PLAIN: NewInode<'static> = NewInode {
    umask: 0,
    security_ctx: None,
};

fn create_in(flags: i32, mode: u32) -> CreateIn {
    CreateIn {
        flags: flags as u32,
        mode: libc::S_IFREG | mode,
        umask: 0,
        open_flags: 0,
    }
}

/// CREATE `name` in the root, read-write; returns (nodeid, fh).
fn create_file(fs: &PassthroughFs, name: &str) -> (u64, u64) {
    let (entry, open) = fs
        .create(
            me(),
            ROOT,
            &cs(name),
            &create_in(libc::O_RDWR, 0o644),
            &PLAIN,
        )
        .expect("create");
    (entry.nodeid, open.fh)
}

fn setattr_in(valid: u32) -> SetattrIn {
    SetattrIn {
        valid,
        ..SetattrIn::default()
    }
}

fn host_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
}

/// One parsed READDIR(PLUS) entry.
#[derive(Debug, Clone)]
struct Listed {
    /// The lookup entry (READDIRPLUS only).
    entry: Option<EntryOut>,
    ino: u64,
    off: u64,
    typ: u32,
    name: String,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Runs one READDIR(PLUS) with a reply budget of `budget` bytes and parses
/// what it wrote.
fn readdir_once(
    fs: &PassthroughFs, nodeid: u64, fh: u64, offset: u64, plus: bool, budget: usize,
) -> Vec<Listed> {
    let mut buf = Vec::new();
    let mut reply = ReplyBuf::new(&mut buf, 1);
    {
        let mut writer = DirentWriter::new(&mut reply, budget);
        fs.readdir(me(), nodeid, fh, offset, plus, &mut writer)
            .expect("readdir");
    }
    let out = reply.finish();
    let mut body = &out[OUT_HEADER_LEN..];
    let mut listed = Vec::new();
    let entry_len = std::mem::size_of::<EntryOut>();
    while !body.is_empty() {
        let entry = if plus {
            let e = &body[..entry_len];
            body = &body[entry_len..];
            Some(EntryOut {
                nodeid: u64_at(e, 0),
                attr: daxfsd_protocol::abi::Attr {
                    ino: u64_at(e, 40),
                    ..Default::default()
                },
                ..EntryOut::default()
            })
        } else {
            None
        };
        let namelen = u32_at(body, 16) as usize;
        let name = String::from_utf8(body[24..24 + namelen].to_vec()).expect("utf-8 name");
        listed.push(Listed {
            entry,
            ino: u64_at(body, 0),
            off: u64_at(body, 8),
            typ: u32_at(body, 20),
            name,
        });
        let padded = (24 + namelen).div_ceil(8) * 8;
        body = &body[padded..];
    }
    listed
}

/// Reads a whole directory in replies of `budget` bytes, resuming from
/// each reply's last cookie.
fn readdir_all(fs: &PassthroughFs, nodeid: u64, plus: bool, budget: usize) -> Vec<Listed> {
    let fh = fs.opendir(me(), nodeid, 0).expect("opendir").fh;
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let batch = readdir_once(fs, nodeid, fh, offset, plus, budget);
        let Some(last) = batch.last() else { break };
        offset = last.off;
        all.extend(batch);
    }
    fs.releasedir(nodeid, fh).expect("releasedir");
    all
}
