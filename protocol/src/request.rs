//! Typed, validated parsing of FUSE requests.
//!
//! [`parse`] takes the readable bytes of one descriptor chain and returns a
//! [`Request`] whose [`Operation`] borrows names and data from those bytes.
//! Every length is checked against the bytes actually present, every name is
//! checked for a terminating NUL, emptiness, `/`, `.`/`..` and `NAME_MAX`, and
//! every count against both its payload and a fixed bound. Anything else is a
//! [`ParseError`], which carries the errno the server should reply with.

use core::ffi::CStr;
use core::marker::PhantomData;
use core::mem::size_of;

use zerocopy::FromBytes;

use crate::abi::*;
pub use crate::extension::{ExtensionError, Layout, SecurityContext};
pub use crate::parse_error::ParseError;

/// Bounds a server puts on request sizes; requests beyond them are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest WRITE payload accepted (the `max_write` announced in INIT).
    pub max_write: u32,
    /// Largest READ / READDIR size accepted.
    pub max_read: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_write: 1 << 20,
            max_read: 1 << 20,
        }
    }
}

/// A directory entry name: non-empty, at most `NAME_MAX` bytes, no `/`, not
/// `.` or `..`, NUL-terminated in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name<'a>(&'a CStr);

impl<'a> Name<'a> {
    /// The name as a C string, ready for `*at` system calls.
    pub fn as_cstr(&self) -> &'a CStr {
        self.0
    }

    /// The name's bytes, without the NUL.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0.to_bytes()
    }
}

/// Fixed-size records following a request's fixed part (BATCH_FORGET,
/// REMOVEMAPPING), read one at a time so the buffer needs no alignment.
#[derive(Debug, Clone, Copy)]
pub struct Records<'a, T> {
    bytes: &'a [u8],
    _record: PhantomData<T>,
}

impl<'a, T: FromBytes> Records<'a, T> {
    fn new(bytes: &'a [u8]) -> Self {
        debug_assert_eq!(bytes.len() % size_of::<T>(), 0);
        Self {
            bytes,
            _record: PhantomData,
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.bytes.len() / size_of::<T>()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl<T: FromBytes> Iterator for Records<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        let (record, rest) = T::read_from_prefix(self.bytes).ok()?;
        self.bytes = rest;
        Some(record)
    }
}

/// One parsed request.
#[derive(Debug)]
pub struct Request<'a> {
    /// The header, as sent.
    pub header: InHeader,
    /// The operation and its arguments.
    pub op: Operation<'a>,
    /// The security context a creating request carries (only once
    /// SECURITY_CTX is agreed, and not when the guest has no label).
    pub security_ctx: Option<SecurityContext<'a>>,
}

/// The operations a server handles, with validated arguments.
#[derive(Debug)]
#[allow(missing_docs)]
pub enum Operation<'a> {
    Init {
        major: u32,
        minor: u32,
        max_readahead: u32,
        /// Both flag words combined: `flags | flags2 << 32`.
        flags: u64,
    },
    Destroy,
    Lookup {
        name: Name<'a>,
    },
    Forget {
        nlookup: u64,
    },
    BatchForget {
        entries: Records<'a, ForgetOne>,
    },
    Getattr(GetattrIn),
    Setattr(SetattrIn),
    Readlink,
    Symlink {
        name: Name<'a>,
        target: &'a CStr,
    },
    Mknod {
        arg: MknodIn,
        name: Name<'a>,
    },
    Mkdir {
        arg: MkdirIn,
        name: Name<'a>,
    },
    Unlink {
        name: Name<'a>,
    },
    Rmdir {
        name: Name<'a>,
    },
    /// RENAME and RENAME2 (`flags` is 0 for RENAME).
    Rename {
        newdir: u64,
        flags: u32,
        old: Name<'a>,
        new: Name<'a>,
    },
    Link {
        oldnodeid: u64,
        name: Name<'a>,
    },
    Open(OpenIn),
    Create {
        arg: CreateIn,
        name: Name<'a>,
    },
    Read(ReadIn),
    Write {
        arg: WriteIn,
        data: &'a [u8],
    },
    Statfs,
    Release(ReleaseIn),
    Flush(FlushIn),
    Fsync(FsyncIn),
    Opendir(OpenIn),
    Readdir(ReadIn),
    Readdirplus(ReadIn),
    Releasedir(ReleaseIn),
    Fsyncdir(FsyncIn),
    Access(AccessIn),
    Setxattr {
        arg: SetxattrIn,
        /// `SETXATTR_*` flags (0 unless SETXATTR_EXT is agreed).
        setxattr_flags: u32,
        name: &'a CStr,
        value: &'a [u8],
    },
    Getxattr {
        size: u32,
        name: &'a CStr,
    },
    Listxattr {
        size: u32,
    },
    Removexattr {
        name: &'a CStr,
    },
    Interrupt {
        unique: u64,
    },
    Fallocate(FallocateIn),
    Lseek(LseekIn),
    CopyFileRange(CopyFileRangeIn),
    Syncfs,
    SetupMapping(SetupMappingIn),
    RemoveMapping {
        ranges: Records<'a, RemoveMappingOne>,
    },
    /// A defined operation this server does not implement: reply ENOSYS.
    Unsupported(Opcode),
}

/// A cursor over a request body that hands out validated pieces.
struct Body<'a> {
    opcode: Opcode,
    bytes: &'a [u8],
}

impl<'a> Body<'a> {
    fn fixed<T: FromBytes>(&mut self) -> Result<T, ParseError> {
        let (value, rest) = T::read_from_prefix(self.bytes).map_err(|_| ParseError::ShortBody {
            opcode: self.opcode,
            got: self.bytes.len(),
            need: size_of::<T>(),
        })?;
        self.bytes = rest;
        Ok(value)
    }

    /// A NUL-terminated string of 1..=`max` bytes.
    fn cstr(&mut self, max: usize) -> Result<&'a CStr, ParseError> {
        let nul = self
            .bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or(ParseError::UnterminatedName)?;
        let (with_nul, rest) = self.bytes.split_at(nul + 1);
        self.bytes = rest;
        if nul == 0 {
            return Err(ParseError::EmptyName);
        }
        if nul > max {
            return Err(ParseError::NameTooLong { len: nul, max });
        }
        CStr::from_bytes_with_nul(with_nul).map_err(|_| ParseError::UnterminatedName)
    }

    fn name(&mut self) -> Result<Name<'a>, ParseError> {
        let name = self.cstr(NAME_MAX)?;
        let bytes = name.to_bytes();
        if bytes.contains(&b'/') {
            return Err(ParseError::NameWithSlash);
        }
        if bytes == b"." || bytes == b".." {
            return Err(ParseError::DotName);
        }
        Ok(Name(name))
    }

    fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.bytes)
    }

    /// Requires that nothing is left.
    fn end(self) -> Result<(), ParseError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(ParseError::TrailingBytes {
                opcode: self.opcode,
                extra: self.bytes.len(),
            })
        }
    }

    fn records<T: FromBytes>(
        &mut self, count: u32, max: u32,
    ) -> Result<Records<'a, T>, ParseError> {
        let available = self.bytes.len();
        let bad = || ParseError::BadCount {
            opcode: self.opcode,
            count,
            available,
            max,
        };
        if count > max {
            return Err(bad());
        }
        let need = (count as usize)
            .checked_mul(size_of::<T>())
            .ok_or_else(bad)?;
        if need > available {
            return Err(bad());
        }
        let (records, rest) = self.bytes.split_at(need);
        self.bytes = rest;
        Ok(Records::new(records))
    }
}

fn check_size(opcode: Opcode, size: u32, max: u32) -> Result<(), ParseError> {
    if size > max {
        return Err(ParseError::TooLarge {
            opcode,
            size: u64::from(size),
            max: u64::from(max),
        });
    }
    Ok(())
}

/// Parses the readable bytes of one descriptor chain, before INIT agreed
/// anything that changes the layout (see [`parse_with`]).
pub fn parse<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Request<'a>, ParseError> {
    parse_with(bytes, limits, &Layout::default())
}

/// Parses the readable bytes of one descriptor chain laid out as `layout`
/// says.
///
/// The header's `len` must not exceed `bytes` (a truncated chain) and must
/// cover at least the header; bytes after `len` are ignored.
pub fn parse_with<'a>(
    bytes: &'a [u8], limits: &Limits, layout: &Layout,
) -> Result<Request<'a>, ParseError> {
    let (header, _) = InHeader::read_from_prefix(bytes)
        .map_err(|_| ParseError::ShortHeader { got: bytes.len() })?;
    let claimed = header.len as usize;
    if claimed < size_of::<InHeader>() || claimed > bytes.len() {
        return Err(ParseError::LengthMismatch {
            claimed: header.len,
            available: bytes.len(),
        });
    }
    let body = &bytes[size_of::<InHeader>()..claimed];
    let extlen = usize::from(header.total_extlen) * 8;
    if extlen > body.len() {
        return Err(ParseError::BadExtensionLength {
            extlen,
            body: body.len(),
        });
    }
    // Extensions trail the arguments (see `extension`).
    let (body, ext) = body.split_at(body.len() - extlen);
    let opcode = Opcode::from_u32(header.opcode).ok_or(ParseError::UnknownOpcode(header.opcode))?;
    let op = parse_operation(
        Body {
            opcode,
            bytes: body,
        },
        limits,
        layout,
    )?;
    let security_ctx = crate::extension::parse(ext, opcode, layout)?;
    Ok(Request {
        header,
        op,
        security_ctx,
    })
}

/// SETXATTR's fixed part: the compat layout, or SETXATTR_EXT's with its
/// `setxattr_flags` (undefined bits refused).
fn setxattr_in(b: &mut Body<'_>, layout: &Layout) -> Result<(SetxattrIn, u32), ParseError> {
    if !layout.setxattr_ext {
        return Ok((b.fixed()?, 0));
    }
    let ext: SetxattrInExt = b.fixed()?;
    let unknown = ext.setxattr_flags & !SETXATTR_ACL_KILL_SGID;
    if unknown != 0 {
        return Err(ParseError::UnknownFlags {
            opcode: b.opcode,
            flags: u64::from(unknown),
        });
    }
    let arg = SetxattrIn {
        size: ext.size,
        flags: ext.flags,
    };
    Ok((arg, ext.setxattr_flags))
}

fn parse_operation<'a>(
    mut b: Body<'a>, limits: &Limits, layout: &Layout,
) -> Result<Operation<'a>, ParseError> {
    use Operation as O;
    let opcode = b.opcode;
    let op = match opcode {
        Opcode::Init => {
            let compat: InitInCompat = b.fixed()?;
            // Minor 36 and later send the extended struct; older ones do not.
            let flags2 = if b.bytes.is_empty() {
                0
            } else {
                b.fixed::<InitInExt>()?.flags2
            };
            O::Init {
                major: compat.major,
                minor: compat.minor,
                max_readahead: compat.max_readahead,
                flags: u64::from(compat.flags) | (u64::from(flags2) << 32),
            }
        }
        Opcode::Destroy => O::Destroy,
        Opcode::Lookup => O::Lookup { name: b.name()? },
        Opcode::Forget => O::Forget {
            nlookup: b.fixed::<ForgetIn>()?.nlookup,
        },
        Opcode::BatchForget => {
            let arg: BatchForgetIn = b.fixed()?;
            O::BatchForget {
                entries: b.records(arg.count, BATCH_FORGET_MAX_ENTRIES)?,
            }
        }
        Opcode::Getattr => O::Getattr(b.fixed()?),
        Opcode::Setattr => O::Setattr(b.fixed()?),
        Opcode::Readlink => O::Readlink,
        Opcode::Symlink => {
            let name = b.name()?;
            let target = b.cstr(PATH_MAX)?;
            O::Symlink { name, target }
        }
        Opcode::Mknod => {
            let arg = b.fixed()?;
            O::Mknod {
                arg,
                name: b.name()?,
            }
        }
        Opcode::Mkdir => {
            let arg = b.fixed()?;
            O::Mkdir {
                arg,
                name: b.name()?,
            }
        }
        Opcode::Unlink => O::Unlink { name: b.name()? },
        Opcode::Rmdir => O::Rmdir { name: b.name()? },
        Opcode::Rename => {
            let arg: RenameIn = b.fixed()?;
            O::Rename {
                newdir: arg.newdir,
                flags: 0,
                old: b.name()?,
                new: b.name()?,
            }
        }
        Opcode::Rename2 => {
            let arg: Rename2In = b.fixed()?;
            let known = RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT;
            if arg.flags & !known != 0 {
                return Err(ParseError::UnknownFlags {
                    opcode,
                    flags: u64::from(arg.flags & !known),
                });
            }
            O::Rename {
                newdir: arg.newdir,
                flags: arg.flags,
                old: b.name()?,
                new: b.name()?,
            }
        }
        Opcode::Link => {
            let arg: LinkIn = b.fixed()?;
            O::Link {
                oldnodeid: arg.oldnodeid,
                name: b.name()?,
            }
        }
        Opcode::Open => O::Open(b.fixed()?),
        Opcode::Create => {
            let arg = b.fixed()?;
            O::Create {
                arg,
                name: b.name()?,
            }
        }
        Opcode::Read => {
            let arg: ReadIn = b.fixed()?;
            check_size(opcode, arg.size, limits.max_read)?;
            O::Read(arg)
        }
        Opcode::Write => {
            let arg: WriteIn = b.fixed()?;
            check_size(opcode, arg.size, limits.max_write)?;
            let data = b.rest();
            if data.len() != arg.size as usize {
                return Err(ParseError::DataSizeMismatch {
                    opcode,
                    declared: arg.size,
                    actual: data.len(),
                });
            }
            O::Write { arg, data }
        }
        Opcode::Statfs => O::Statfs,
        Opcode::Release => O::Release(b.fixed()?),
        Opcode::Flush => O::Flush(b.fixed()?),
        Opcode::Fsync => O::Fsync(b.fixed()?),
        Opcode::Opendir => O::Opendir(b.fixed()?),
        Opcode::Readdir | Opcode::Readdirplus => {
            let arg: ReadIn = b.fixed()?;
            check_size(opcode, arg.size, limits.max_read)?;
            if opcode == Opcode::Readdir {
                O::Readdir(arg)
            } else {
                O::Readdirplus(arg)
            }
        }
        Opcode::Releasedir => O::Releasedir(b.fixed()?),
        Opcode::Fsyncdir => O::Fsyncdir(b.fixed()?),
        Opcode::Access => O::Access(b.fixed()?),
        Opcode::Setxattr => {
            let (arg, setxattr_flags) = setxattr_in(&mut b, layout)?;
            check_size(opcode, arg.size, XATTR_SIZE_MAX as u32)?;
            let name = b.cstr(NAME_MAX)?;
            let value = b.rest();
            if value.len() != arg.size as usize {
                return Err(ParseError::DataSizeMismatch {
                    opcode,
                    declared: arg.size,
                    actual: value.len(),
                });
            }
            O::Setxattr {
                arg,
                setxattr_flags,
                name,
                value,
            }
        }
        Opcode::Getxattr => {
            let arg: GetxattrIn = b.fixed()?;
            check_size(opcode, arg.size, XATTR_SIZE_MAX as u32)?;
            O::Getxattr {
                size: arg.size,
                name: b.cstr(NAME_MAX)?,
            }
        }
        Opcode::Listxattr => {
            let arg: GetxattrIn = b.fixed()?;
            check_size(opcode, arg.size, XATTR_LIST_MAX as u32)?;
            O::Listxattr { size: arg.size }
        }
        Opcode::Removexattr => O::Removexattr {
            name: b.cstr(NAME_MAX)?,
        },
        Opcode::Interrupt => O::Interrupt {
            unique: b.fixed::<InterruptIn>()?.unique,
        },
        Opcode::Fallocate => O::Fallocate(b.fixed()?),
        Opcode::Lseek => O::Lseek(b.fixed()?),
        Opcode::CopyFileRange => O::CopyFileRange(b.fixed()?),
        Opcode::Syncfs => {
            let _: SyncfsIn = b.fixed()?;
            O::Syncfs
        }
        Opcode::SetupMapping => {
            let arg: SetupMappingIn = b.fixed()?;
            let known = SETUPMAPPING_FLAG_READ | SETUPMAPPING_FLAG_WRITE;
            if arg.flags & !known != 0 {
                return Err(ParseError::UnknownFlags {
                    opcode,
                    flags: arg.flags & !known,
                });
            }
            O::SetupMapping(arg)
        }
        Opcode::RemoveMapping => {
            let arg: RemoveMappingIn = b.fixed()?;
            let ranges = b.records(arg.count, REMOVEMAPPING_MAX_ENTRIES)?;
            O::RemoveMapping { ranges }
        }
        other => return Ok(O::Unsupported(other)),
    };
    // Names and records must account for the whole body; data-carrying
    // operations consumed theirs with `rest`. INIT and a few others carry
    // fields newer than this crate (reserved words); tolerate those.
    match opcode {
        Opcode::Init | Opcode::Open | Opcode::Opendir | Opcode::Getattr | Opcode::Setattr => {}
        _ => b.end()?,
    }
    Ok(op)
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
