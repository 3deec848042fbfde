//! Routing of the filesystem's operations: each FUSE operation to its
//! [`FileSystem`] method, its reply body into the reply buffer.

use daxfsd_protocol::abi::{LseekOut, WriteOut, FSYNC_FDATASYNC, GETATTR_FH};
use daxfsd_protocol::reply::{DirentWriter, ReplyBuf, OUT_HEADER_LEN};
use daxfsd_protocol::{Operation, SecurityContext};

use super::{push_sized, ReplySpace};
use crate::errno::Errno;
use crate::fs::{Context, FileSystem, NewInode, ReadSink};

/// A request of the filesystem's, and where its reply goes.
pub(super) struct FsRequest<'a, 'r> {
    pub(super) fs: &'a dyn FileSystem,
    pub(super) ctx: Context,
    pub(super) nodeid: u64,
    pub(super) op: &'a Operation<'r>,
    /// The security context a creating request carries.
    pub(super) security_ctx: Option<SecurityContext<'r>>,
    /// The transport's reply space; READ data goes there in place.
    pub(super) space: &'a dyn ReplySpace,
}

/// Serves a filesystem operation, its reply body into `r`. Returns the
/// bytes of READ data placed in the transport's space after the reply
/// header (then `r` holds nothing), or `None`; `created` receives the
/// nodeid of the file a CREATE opened.
pub(super) fn serve(
    req: &FsRequest<'_, '_>, r: &mut ReplyBuf<'_>, created: &mut Option<u64>,
) -> Result<Option<usize>, Errno> {
    if names_and_attributes(req, r)? || directories(req, r)? {
        return Ok(None);
    }
    files(req, r, created)
}

/// Names, attributes, extended attributes, STATFS and ACCESS; `false` for
/// any other operation.
fn names_and_attributes(req: &FsRequest<'_, '_>, r: &mut ReplyBuf<'_>) -> Result<bool, Errno> {
    let FsRequest {
        fs, ctx, nodeid, ..
    } = *req;
    let new = |umask| NewInode {
        umask,
        security_ctx: req.security_ctx,
    };
    match req.op {
        Operation::Lookup { name } => {
            r.push(&fs.lookup(ctx, nodeid, name.as_cstr())?);
        }
        Operation::Getattr(arg) => {
            let fh = (arg.getattr_flags & GETATTR_FH != 0).then_some(arg.fh);
            r.push(&fs.getattr(ctx, nodeid, fh)?);
        }
        Operation::Setattr(arg) => {
            r.push(&fs.setattr(ctx, nodeid, arg)?);
        }
        Operation::Readlink => {
            r.push_bytes(&fs.readlink(ctx, nodeid)?);
        }
        Operation::Symlink { name, target } => {
            r.push(&fs.symlink(ctx, nodeid, name.as_cstr(), target, &new(0))?);
        }
        Operation::Mknod { arg, name } => {
            let new = new(arg.umask);
            r.push(&fs.mknod(ctx, nodeid, name.as_cstr(), arg.mode, arg.rdev, &new)?);
        }
        Operation::Mkdir { arg, name } => {
            r.push(&fs.mkdir(ctx, nodeid, name.as_cstr(), arg.mode, &new(arg.umask))?);
        }
        Operation::Unlink { name } => fs.unlink(ctx, nodeid, name.as_cstr())?,
        Operation::Rmdir { name } => fs.rmdir(ctx, nodeid, name.as_cstr())?,
        Operation::Rename {
            newdir,
            flags,
            old,
            new,
        } => fs.rename(ctx, nodeid, old.as_cstr(), *newdir, new.as_cstr(), *flags)?,
        Operation::Link { oldnodeid, name } => {
            r.push(&fs.link(ctx, *oldnodeid, nodeid, name.as_cstr())?);
        }
        Operation::Statfs => {
            r.push(&fs.statfs(ctx, nodeid)?);
        }
        Operation::Access(arg) => fs.access(ctx, nodeid, arg.mask)?,
        Operation::Setxattr {
            arg,
            setxattr_flags,
            name,
            value,
        } => fs.setxattr(ctx, nodeid, name, value, arg.flags, *setxattr_flags)?,
        Operation::Getxattr { size, name } => {
            let value = fs.getxattr(ctx, nodeid, name)?;
            push_sized(r, &value, *size)?;
        }
        Operation::Listxattr { size } => {
            let list = fs.listxattr(ctx, nodeid)?;
            push_sized(r, &list, *size)?;
        }
        Operation::Removexattr { name } => fs.removexattr(ctx, nodeid, name)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// Directory handles and SYNCFS; `false` for any other operation.
fn directories(req: &FsRequest<'_, '_>, r: &mut ReplyBuf<'_>) -> Result<bool, Errno> {
    let (fs, ctx, nodeid, op) = (req.fs, req.ctx, req.nodeid, req.op);
    match op {
        Operation::Opendir(arg) => {
            r.push(&fs.opendir(ctx, nodeid, arg.flags)?);
        }
        Operation::Readdir(arg) | Operation::Readdirplus(arg) => {
            let plus = matches!(op, Operation::Readdirplus(_));
            let budget = (arg.size as usize).min(req.space.capacity() - OUT_HEADER_LEN);
            let mut out = DirentWriter::new(r, budget);
            fs.readdir(ctx, nodeid, arg.fh, arg.offset, plus, &mut out)?;
        }
        Operation::Releasedir(arg) => fs.releasedir(nodeid, arg.fh)?,
        Operation::Fsyncdir(arg) => {
            fs.fsyncdir(nodeid, arg.fh, arg.fsync_flags & FSYNC_FDATASYNC != 0)?
        }
        Operation::Syncfs => fs.syncfs(nodeid)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// Open files; ENOSYS for any other operation.
fn files(
    req: &FsRequest<'_, '_>, r: &mut ReplyBuf<'_>, created: &mut Option<u64>,
) -> Result<Option<usize>, Errno> {
    let FsRequest {
        fs,
        ctx,
        nodeid,
        op,
        space,
        security_ctx,
    } = *req;
    let capacity = space.capacity();
    match op {
        Operation::Open(arg) => {
            r.push(&fs.open(ctx, nodeid, arg.flags, arg.open_flags)?);
        }
        Operation::Create { arg, name } => {
            let new = NewInode {
                umask: arg.umask,
                security_ctx,
            };
            let (entry, open) = fs.create(ctx, nodeid, name.as_cstr(), arg, &new)?;
            *created = Some(entry.nodeid);
            r.push(&entry).push(&open);
        }
        Operation::Read(arg) => {
            let size = (arg.size as usize).min(capacity - OUT_HEADER_LEN);
            let mut read = |dst: &mut dyn ReadSink| fs.read(ctx, nodeid, arg.fh, arg.offset, dst);
            let n = space.read_into_range(OUT_HEADER_LEN, size, &mut read)?;
            return Ok(Some(n.min(size)));
        }
        Operation::Write { arg, data } => {
            let n = fs.write(ctx, nodeid, arg.fh, arg.offset, data, arg.write_flags)?;
            r.push(&WriteOut {
                size: n as u32,
                padding: 0,
            });
        }
        Operation::Release(arg) => fs.release(nodeid, arg.fh)?,
        Operation::Flush(arg) => fs.flush(nodeid, arg.fh)?,
        Operation::Fsync(arg) => {
            fs.fsync(nodeid, arg.fh, arg.fsync_flags & FSYNC_FDATASYNC != 0)?
        }
        Operation::Fallocate(arg) => {
            fs.fallocate(ctx, nodeid, arg.fh, arg.offset, arg.length, arg.mode)?
        }
        Operation::Lseek(arg) => {
            let offset = fs.lseek(ctx, nodeid, arg.fh, arg.offset, arg.whence)?;
            r.push(&LseekOut { offset });
        }
        Operation::CopyFileRange(arg) => {
            let n = fs.copy_file_range(
                ctx,
                nodeid,
                arg.fh_in,
                arg.off_in,
                arg.nodeid_out,
                arg.fh_out,
                arg.off_out,
                arg.len,
                arg.flags,
            )?;
            r.push(&WriteOut {
                size: u32::try_from(n).unwrap_or(u32::MAX),
                padding: 0,
            });
        }
        _ => return Err(Errno::ENOSYS),
    }
    Ok(None)
}
