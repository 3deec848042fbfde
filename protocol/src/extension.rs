//! What INIT agreed that changes how requests are laid out ([`Layout`]),
//! and the request extensions Linux appends after a request's arguments
//! (`total_extlen` 8-byte units in the header; `get_create_ext` in Linux's
//! `fs/fuse/dir.c`).
//!
//! Once SECURITY_CTX is agreed, every CREATE, MKNOD, MKDIR and SYMLINK
//! carries a security context extension: a `fuse_secctx_header` (its
//! `nr_secctx` where other extensions have their type) naming zero
//! contexts (no LSM labels new files) or one: a `fuse_secctx` with the
//! value's size, the xattr name with its NUL, the value, zeros up to a
//! multiple of 8 bytes. Before that nothing is agreed that could be sent,
//! and the extension bytes are ignored, as they always were.

use core::ffi::CStr;
use core::mem::size_of;

use zerocopy::FromBytes;

use crate::abi::{ExtHeader, Opcode, Secctx, EXT_GROUPS, MAX_NR_SECCTX, NAME_MAX, XATTR_SIZE_MAX};

/// What INIT agreed that changes the layout of requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layout {
    /// SETXATTR_EXT: SETXATTR carries the 16-byte `fuse_setxattr_in` with
    /// `setxattr_flags`.
    pub setxattr_ext: bool,
    /// SECURITY_CTX: CREATE, MKNOD, MKDIR and SYMLINK carry a security
    /// context extension.
    pub security_ctx: bool,
}

/// The security context a creating request carries: the extended
/// attribute to set on the new inode (`security.selinux` for SELinux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecurityContext<'a> {
    /// The attribute's name: 1 to [`NAME_MAX`] bytes.
    pub name: &'a CStr,
    /// Its value: 1 to [`XATTR_SIZE_MAX`] bytes.
    pub value: &'a [u8],
}

/// Why a request's extensions are refused (all EINVAL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    /// Fewer bytes left than an extension header.
    #[error("{left} bytes of extensions left, fewer than an 8-byte header")]
    Truncated {
        /// Bytes left.
        left: usize,
    },
    /// The header's size is below 8, not a multiple of 8, or beyond the
    /// bytes left.
    #[error("extension of {size} bytes does not fit the {left} bytes left in 8-byte units")]
    BadSize {
        /// Size claimed.
        size: u32,
        /// Bytes left, this extension's included.
        left: usize,
    },
    /// No extension has this type.
    #[error("unknown extension type {0}")]
    UnknownType(u32),
    /// An extension the operation does not carry, or one not agreed.
    #[error("{opcode:?} does not carry an extension of type {ext_type}")]
    Unexpected {
        /// The operation.
        opcode: Opcode,
        /// The extension's type.
        ext_type: u32,
    },
    /// A second security context extension.
    #[error("a second security context extension")]
    Duplicate,
    /// More than the one security context Linux sends.
    #[error("{0} security contexts, at most 1 is sent")]
    TooManyContexts(u32),
    /// A context value of 0 bytes or beyond XATTR_SIZE_MAX.
    #[error("security context value of {0} bytes")]
    BadValueSize(u32),
    /// The context's name is not 1 to NAME_MAX bytes ending in a NUL.
    #[error("security context name is not 1 to 255 bytes ending in a NUL")]
    BadName,
    /// The record's length is not what its name and value take, padded.
    #[error("security context record of {got} bytes, its name and value take {need}")]
    BadLength {
        /// Bytes of the record after its header.
        got: usize,
        /// Bytes its contents take, padded to 8.
        need: usize,
    },
    /// A creating request without the security context extension.
    #[error("{0:?} without the security context extension")]
    MissingSecurityContext(Opcode),
}

/// Whether `opcode` creates an inode (and carries a security context once
/// SECURITY_CTX is agreed).
fn creates(opcode: Opcode) -> bool {
    matches!(
        opcode,
        Opcode::Create | Opcode::Mknod | Opcode::Mkdir | Opcode::Symlink | Opcode::Tmpfile
    )
}

/// Parses the extension bytes `ext` of an `opcode` request under `layout`:
/// the security context it carries, if any.
pub(crate) fn parse<'a>(
    ext: &'a [u8], opcode: Opcode, layout: &Layout,
) -> Result<Option<SecurityContext<'a>>, ExtensionError> {
    if !layout.security_ctx {
        return Ok(None);
    }
    let mut rest = ext;
    let mut seen = false;
    let mut context = None;
    while !rest.is_empty() {
        let (header, _) = ExtHeader::read_from_prefix(rest)
            .map_err(|_| ExtensionError::Truncated { left: rest.len() })?;
        let size = header.size as usize;
        if size < size_of::<ExtHeader>() || size % 8 != 0 || size > rest.len() {
            return Err(ExtensionError::BadSize {
                size: header.size,
                left: rest.len(),
            });
        }
        let (record, after) = rest.split_at(size);
        rest = after;
        let body = &record[size_of::<ExtHeader>()..];
        match header.ext_type {
            nr if nr <= MAX_NR_SECCTX && creates(opcode) => {
                if seen {
                    return Err(ExtensionError::Duplicate);
                }
                seen = true;
                context = security_context(nr, body)?;
            }
            ext_type if ext_type <= MAX_NR_SECCTX || ext_type == EXT_GROUPS => {
                // Supplementary groups are never agreed (CREATE_SUPP_GROUP).
                return Err(ExtensionError::Unexpected { opcode, ext_type });
            }
            other => return Err(ExtensionError::UnknownType(other)),
        }
    }
    if creates(opcode) && !seen {
        return Err(ExtensionError::MissingSecurityContext(opcode));
    }
    Ok(context)
}

/// The `nr` security contexts in `body` (a record after its header).
fn security_context(nr: u32, body: &[u8]) -> Result<Option<SecurityContext<'_>>, ExtensionError> {
    match nr {
        0 if body.is_empty() => return Ok(None),
        0 => {
            return Err(ExtensionError::BadLength {
                got: body.len(),
                need: 0,
            })
        }
        1 => {}
        more => return Err(ExtensionError::TooManyContexts(more)),
    }
    let (secctx, after) =
        Secctx::read_from_prefix(body).map_err(|_| ExtensionError::BadLength {
            got: body.len(),
            need: size_of::<Secctx>(),
        })?;
    let value_size = secctx.size as usize;
    if value_size == 0 || value_size > XATTR_SIZE_MAX {
        return Err(ExtensionError::BadValueSize(secctx.size));
    }
    let nul = after
        .iter()
        .position(|&b| b == 0)
        .filter(|&n| (1..=NAME_MAX).contains(&n))
        .ok_or(ExtensionError::BadName)?;
    let name = CStr::from_bytes_with_nul(&after[..=nul]).map_err(|_| ExtensionError::BadName)?;
    let unpadded = size_of::<Secctx>() + nul + 1 + value_size;
    let need = unpadded.next_multiple_of(8);
    if body.len() != need {
        return Err(ExtensionError::BadLength {
            got: body.len(),
            need,
        });
    }
    let value = &body[size_of::<Secctx>() + nul + 1..unpadded];
    Ok(Some(SecurityContext { name, value }))
}

#[cfg(test)]
#[path = "extension_tests.rs"]
mod tests;
