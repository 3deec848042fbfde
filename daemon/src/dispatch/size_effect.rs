//! Which file a request may resize: the one rule behind the DAX repairs
//! the dispatcher makes before a reply.

use daxfsd_protocol::abi::FATTR_SIZE;
use daxfsd_protocol::{Operation, Request};

/// What a request may do to the size of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SizeEffect {
    /// No file changes size.
    Keeps,
    /// The file `nodeid` may have changed size; with `on_failure`, also when
    /// the operation failed (a later step may fail after a truncation).
    MayChange {
        /// The file.
        nodeid: u64,
        /// Repair after a failure too.
        on_failure: bool,
    },
    /// The file CREATE opened may have changed size (O_TRUNC of an existing
    /// file).
    MayChangeCreated,
}

/// The one rule for DAX repairs: which file a request may resize, so that
/// its window mappings are repaired before the reply tells the guest the new
/// size (a window page past a file's end would kill the VMM with SIGBUS).
///
/// - SETATTR with FATTR_SIZE (truncate or extend), even if it failed;
/// - OPEN with O_TRUNC, even if it failed; CREATE with O_TRUNC (an
///   existing file) once it succeeded;
/// - WRITE once it succeeded (past the end, it makes placeholders file
///   pages again);
/// - FALLOCATE without KEEP_SIZE, even if it failed: grow (default mode,
///   ZERO_RANGE, INSERT_RANGE) or shrink (COLLAPSE_RANGE). A hole punch
///   keeps the size: its pages read as zeros through the still valid
///   mapping;
/// - COPY_FILE_RANGE, for its destination, once it succeeded.
pub(super) fn size_effect(req: &Request<'_>) -> SizeEffect {
    let nodeid = req.header.nodeid;
    let truncates = |flags: u32| flags & libc::O_TRUNC as u32 != 0;
    let may_change = |nodeid, on_failure| SizeEffect::MayChange { nodeid, on_failure };
    match &req.op {
        Operation::Setattr(arg) if arg.valid & FATTR_SIZE != 0 => may_change(nodeid, true),
        Operation::Open(arg) if truncates(arg.flags) => may_change(nodeid, true),
        Operation::Create { arg, .. } if truncates(arg.flags) => SizeEffect::MayChangeCreated,
        Operation::Write { .. } => may_change(nodeid, false),
        Operation::Fallocate(arg) if arg.mode & libc::FALLOC_FL_KEEP_SIZE as u32 == 0 => {
            may_change(nodeid, true)
        }
        Operation::CopyFileRange(arg) => may_change(arg.nodeid_out, false),
        _ => SizeEffect::Keeps,
    }
}
