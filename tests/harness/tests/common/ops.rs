//! One typed helper per FUSE operation, on [`Session`]: each sends the request the
//! Linux driver would and returns the reply body or the errno.

use daxfsd_protocol::abi::*;
use daxfsd_protocol::Opcode;

use super::*;

impl Session {
    pub fn init(&self, flags: u64) -> FuseResult<InitOut> {
        exact(self.send(&daxfsd_harness::fuse::init_request(self.unique(), flags)))
    }

    pub fn destroy(&self) -> FuseResult<()> {
        empty(self.send(&self.req(Opcode::Destroy, 0).finish()))
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> FuseResult<EntryOut> {
        exact(self.send(&self.req(Opcode::Lookup, parent).name(name).finish()))
    }

    /// FORGET on the hiprio queue; returns once the daemon processed it.
    pub fn forget(&self, nodeid: u64, nlookup: u64) {
        let req = self
            .req(Opcode::Forget, nodeid)
            .push(&ForgetIn { nlookup })
            .finish();
        self.send_no_reply(HIPRIO_QUEUE, &req);
    }

    /// BATCH_FORGET of `(nodeid, nlookup)` pairs on the hiprio queue.
    pub fn batch_forget(&self, entries: &[(u64, u64)]) {
        let mut enc = self.req(Opcode::BatchForget, 0).push(&BatchForgetIn {
            count: entries.len() as u32,
            dummy: 0,
        });
        for &(nodeid, nlookup) in entries {
            enc = enc.push(&ForgetOne { nodeid, nlookup });
        }
        self.send_no_reply(HIPRIO_QUEUE, &enc.finish());
    }

    pub fn getattr(&self, nodeid: u64) -> FuseResult<AttrOut> {
        let req = self
            .req(Opcode::Getattr, nodeid)
            .push(&GetattrIn::default())
            .finish();
        exact(self.send(&req))
    }

    /// GETATTR through an open handle (GETATTR_FH).
    pub fn getattr_fh(&self, nodeid: u64, fh: u64) -> FuseResult<AttrOut> {
        let req = self
            .req(Opcode::Getattr, nodeid)
            .push(&GetattrIn {
                getattr_flags: GETATTR_FH,
                dummy: 0,
                fh,
            })
            .finish();
        exact(self.send(&req))
    }

    pub fn setattr(&self, nodeid: u64, arg: &SetattrIn) -> FuseResult<AttrOut> {
        exact(self.send(&self.req(Opcode::Setattr, nodeid).push(arg).finish()))
    }

    /// READLINK with the room Linux gives it: a header and one page less one byte.
    pub fn readlink(&self, nodeid: u64) -> FuseResult<Vec<u8>> {
        let req = self.req(Opcode::Readlink, nodeid).finish();
        bytes(self.send_cap(&req, 16 + 4095))
    }

    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8]) -> FuseResult<EntryOut> {
        let req = self
            .req(Opcode::Symlink, parent)
            .name(name)
            .name(target)
            .finish();
        exact(self.send(&req))
    }

    pub fn mknod(&self, parent: u64, name: &[u8], mode: u32, rdev: u32) -> FuseResult<EntryOut> {
        let req = self
            .req(Opcode::Mknod, parent)
            .push(&MknodIn {
                mode,
                rdev,
                umask: 0o022,
                padding: 0,
            })
            .name(name)
            .finish();
        exact(self.send(&req))
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32) -> FuseResult<EntryOut> {
        let req = self
            .req(Opcode::Mkdir, parent)
            .push(&MkdirIn { mode, umask: 0o022 })
            .name(name)
            .finish();
        exact(self.send(&req))
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> FuseResult<()> {
        empty(self.send(&self.req(Opcode::Unlink, parent).name(name).finish()))
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FuseResult<()> {
        empty(self.send(&self.req(Opcode::Rmdir, parent).name(name).finish()))
    }

    /// Plain RENAME.
    pub fn rename(&self, olddir: u64, old: &[u8], newdir: u64, new: &[u8]) -> FuseResult<()> {
        let req = self
            .req(Opcode::Rename, olddir)
            .push(&RenameIn { newdir })
            .name(old)
            .name(new)
            .finish();
        empty(self.send(&req))
    }

    /// RENAME2 with `RENAME_*` flags.
    pub fn rename2(
        &self,
        olddir: u64,
        old: &[u8],
        newdir: u64,
        new: &[u8],
        flags: u32,
    ) -> FuseResult<()> {
        let req = self
            .req(Opcode::Rename2, olddir)
            .push(&Rename2In {
                newdir,
                flags,
                padding: 0,
            })
            .name(old)
            .name(new)
            .finish();
        empty(self.send(&req))
    }

    pub fn link(&self, nodeid: u64, newparent: u64, name: &[u8]) -> FuseResult<EntryOut> {
        let req = self
            .req(Opcode::Link, newparent)
            .push(&LinkIn { oldnodeid: nodeid })
            .name(name)
            .finish();
        exact(self.send(&req))
    }

    pub fn open(&self, nodeid: u64, flags: i32) -> FuseResult<OpenOut> {
        self.open_with(nodeid, flags, 0)
    }

    /// OPEN with `OPEN_*` flags.
    pub fn open_with(&self, nodeid: u64, flags: i32, open_flags: u32) -> FuseResult<OpenOut> {
        let req = self
            .req(Opcode::Open, nodeid)
            .push(&OpenIn {
                flags: flags as u32,
                open_flags,
            })
            .finish();
        exact(self.send(&req))
    }

    /// CREATE as root with `mode` permission bits.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        flags: i32,
        mode: u32,
    ) -> FuseResult<(EntryOut, OpenOut)> {
        self.create_as(parent, name, flags, mode, 0, 0)
    }

    /// CREATE as caller `uid`/`gid`.
    pub fn create_as(
        &self,
        parent: u64,
        name: &[u8],
        flags: i32,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FuseResult<(EntryOut, OpenOut)> {
        let req = self
            .req(Opcode::Create, parent)
            .caller(uid, gid, 4242)
            .push(&CreateIn {
                flags: (flags | libc::O_CREAT) as u32,
                mode: libc::S_IFREG | mode,
                umask: 0o022,
                open_flags: 0,
            })
            .name(name)
            .finish();
        let reply = self.send(&req);
        if reply.errno() != 0 {
            return Err(reply.errno());
        }
        assert_eq!(
            reply.body.len(),
            size_of::<EntryOut>() + size_of::<OpenOut>(),
            "CREATE reply body"
        );
        let (entry, rest) = EntryOut::read_from_prefix(&reply.body).expect("entry");
        let (open, _) = OpenOut::read_from_prefix(rest).expect("open");
        Ok((entry, open))
    }

    /// CREATE `name` in the root read-write; returns (nodeid, fh).
    pub fn create_file(&self, name: &str) -> (u64, u64) {
        let (entry, open) = self
            .create(ROOT_ID, name.as_bytes(), libc::O_RDWR, 0o644)
            .unwrap_or_else(|e| panic!("CREATE {name}: errno {e}"));
        (entry.nodeid, open.fh)
    }

    /// A file written on the host, then looked up: its entry.
    pub fn host_file(&self, name: &str, content: &[u8]) -> EntryOut {
        std::fs::write(self.path(name), content).expect("host write");
        self.lookup(ROOT_ID, name.as_bytes())
            .unwrap_or_else(|e| panic!("LOOKUP {name}: errno {e}"))
    }

    pub fn read(&self, nodeid: u64, fh: u64, offset: u64, size: u32) -> FuseResult<Vec<u8>> {
        self.read_cap(nodeid, fh, offset, size, size.saturating_add(16))
    }

    /// READ with `capacity` bytes of reply room.
    pub fn read_cap(
        &self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        size: u32,
        capacity: u32,
    ) -> FuseResult<Vec<u8>> {
        bytes(self.send_cap(
            &read_request(self.unique(), nodeid, fh, offset, size),
            capacity,
        ))
    }

    pub fn write(&self, nodeid: u64, fh: u64, offset: u64, data: &[u8]) -> FuseResult<u32> {
        self.write_flags(nodeid, fh, offset, data, 0)
    }

    /// WRITE with `WRITE_*` flags.
    pub fn write_flags(
        &self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        write_flags: u32,
    ) -> FuseResult<u32> {
        let req = self
            .req(Opcode::Write, nodeid)
            .push(&WriteIn {
                fh,
                offset,
                size: data.len() as u32,
                write_flags,
                ..WriteIn::default()
            })
            .bytes(data)
            .finish();
        exact::<WriteOut>(self.send(&req)).map(|w| w.size)
    }

    pub fn statfs(&self, nodeid: u64) -> FuseResult<StatfsOut> {
        exact(self.send(&self.req(Opcode::Statfs, nodeid).finish()))
    }

    pub fn release(&self, nodeid: u64, fh: u64) -> FuseResult<()> {
        self.release_op(Opcode::Release, nodeid, fh)
    }

    pub fn releasedir(&self, nodeid: u64, fh: u64) -> FuseResult<()> {
        self.release_op(Opcode::Releasedir, nodeid, fh)
    }

    fn release_op(&self, opcode: Opcode, nodeid: u64, fh: u64) -> FuseResult<()> {
        let req = self
            .req(opcode, nodeid)
            .push(&ReleaseIn {
                fh,
                ..ReleaseIn::default()
            })
            .finish();
        empty(self.send(&req))
    }

    pub fn flush(&self, nodeid: u64, fh: u64) -> FuseResult<()> {
        let req = self
            .req(Opcode::Flush, nodeid)
            .push(&FlushIn {
                fh,
                ..FlushIn::default()
            })
            .finish();
        empty(self.send(&req))
    }

    pub fn fsync(&self, nodeid: u64, fh: u64, datasync: bool) -> FuseResult<()> {
        self.fsync_op(Opcode::Fsync, nodeid, fh, datasync)
    }

    pub fn fsyncdir(&self, nodeid: u64, fh: u64, datasync: bool) -> FuseResult<()> {
        self.fsync_op(Opcode::Fsyncdir, nodeid, fh, datasync)
    }

    fn fsync_op(&self, opcode: Opcode, nodeid: u64, fh: u64, datasync: bool) -> FuseResult<()> {
        let req = self
            .req(opcode, nodeid)
            .push(&FsyncIn {
                fh,
                fsync_flags: if datasync { FSYNC_FDATASYNC } else { 0 },
                padding: 0,
            })
            .finish();
        empty(self.send(&req))
    }

    pub fn opendir(&self, nodeid: u64) -> FuseResult<OpenOut> {
        let req = self
            .req(Opcode::Opendir, nodeid)
            .push(&OpenIn {
                flags: libc::O_RDONLY as u32,
                open_flags: 0,
            })
            .finish();
        exact(self.send(&req))
    }

    pub fn readdir(
        &self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> FuseResult<Vec<DirEntry>> {
        let req = self
            .req(Opcode::Readdir, nodeid)
            .push(&ReadIn {
                fh,
                offset,
                size,
                ..ReadIn::default()
            })
            .finish();
        let body = bytes(self.send_cap(&req, size.saturating_add(16)))?;
        assert!(body.len() <= size as usize, "READDIR reply over its size");
        Ok(parse_dirents(&body, false)
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    pub fn readdirplus(
        &self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> FuseResult<Vec<(EntryOut, DirEntry)>> {
        let req = self
            .req(Opcode::Readdirplus, nodeid)
            .push(&ReadIn {
                fh,
                offset,
                size,
                ..ReadIn::default()
            })
            .finish();
        let body = bytes(self.send_cap(&req, size.saturating_add(16)))?;
        assert!(
            body.len() <= size as usize,
            "READDIRPLUS reply over its size"
        );
        Ok(parse_dirents(&body, true)
            .into_iter()
            .map(|(e, d)| (e.expect("plus entry"), d))
            .collect())
    }

    /// ACCESS as root.
    pub fn access(&self, nodeid: u64, mask: i32) -> FuseResult<()> {
        self.access_as(nodeid, mask, 0, 0)
    }

    pub fn access_as(&self, nodeid: u64, mask: i32, uid: u32, gid: u32) -> FuseResult<()> {
        let req = self
            .req(Opcode::Access, nodeid)
            .caller(uid, gid, 4242)
            .push(&AccessIn {
                mask: mask as u32,
                padding: 0,
            })
            .finish();
        empty(self.send(&req))
    }

    pub fn fallocate(
        &self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> FuseResult<()> {
        let req = self
            .req(Opcode::Fallocate, nodeid)
            .push(&FallocateIn {
                fh,
                offset,
                length,
                mode: mode as u32,
                padding: 0,
            })
            .finish();
        empty(self.send(&req))
    }

    pub fn lseek(&self, nodeid: u64, fh: u64, offset: u64, whence: i32) -> FuseResult<u64> {
        let req = self
            .req(Opcode::Lseek, nodeid)
            .push(&LseekIn {
                fh,
                offset,
                whence: whence as u32,
                padding: 0,
            })
            .finish();
        exact::<LseekOut>(self.send(&req)).map(|o| o.offset)
    }

    /// COPY_FILE_RANGE from `(nodeid, fh, offset)` to `(nodeid, fh, offset)`.
    pub fn copy_file_range(
        &self,
        src: (u64, u64, u64),
        dst: (u64, u64, u64),
        len: u64,
        flags: u64,
    ) -> FuseResult<u32> {
        let req = self
            .req(Opcode::CopyFileRange, src.0)
            .push(&CopyFileRangeIn {
                fh_in: src.1,
                off_in: src.2,
                nodeid_out: dst.0,
                fh_out: dst.1,
                off_out: dst.2,
                len,
                flags,
            })
            .finish();
        exact::<WriteOut>(self.send(&req)).map(|w| w.size)
    }

    pub fn syncfs(&self, nodeid: u64) -> FuseResult<()> {
        let req = self
            .req(Opcode::Syncfs, nodeid)
            .push(&SyncfsIn::default())
            .finish();
        empty(self.send(&req))
    }

    pub fn setxattr(&self, nodeid: u64, name: &[u8], value: &[u8], flags: i32) -> FuseResult<()> {
        let req = self
            .req(Opcode::Setxattr, nodeid)
            .push(&SetxattrIn {
                size: value.len() as u32,
                flags: flags as u32,
            })
            .name(name)
            .bytes(value)
            .finish();
        empty(self.send(&req))
    }

    pub fn getxattr(&self, nodeid: u64, name: &[u8], size: u32) -> FuseResult<XattrReply> {
        let req = self
            .req(Opcode::Getxattr, nodeid)
            .push(&GetxattrIn { size, padding: 0 })
            .name(name)
            .finish();
        xattr_reply(self.send_cap(&req, xattr_room(size)), size)
    }

    pub fn listxattr(&self, nodeid: u64, size: u32) -> FuseResult<XattrReply> {
        let req = self
            .req(Opcode::Listxattr, nodeid)
            .push(&GetxattrIn { size, padding: 0 })
            .finish();
        xattr_reply(self.send_cap(&req, xattr_room(size)), size)
    }

    pub fn removexattr(&self, nodeid: u64, name: &[u8]) -> FuseResult<()> {
        empty(self.send(&self.req(Opcode::Removexattr, nodeid).name(name).finish()))
    }
}
