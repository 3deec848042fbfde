//! `--socket-group`: a group name resolved to its id (through NSS, as
//! virtiofsd does, so LDAP or systemd groups work too).

use std::ffi::CString;

/// Why `--socket-group` names no group.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// No group has that name.
    #[error("--socket-group {0}: no such group")]
    NotFound(String),
    /// The name cannot be a C string.
    #[error("--socket-group: the name contains NUL")]
    Nul,
    /// The lookup itself failed.
    #[error("--socket-group {name}: cannot look the group up")]
    Lookup {
        /// The name.
        name: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The id of the group named `name`.
pub fn gid_of(name: &str) -> Result<u32, GroupError> {
    let c_name = CString::new(name).map_err(|_| GroupError::Nul)?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `group` is plain data that getgrnam_r fills in; its
        // pointers point into `buf`, which outlives every read of them
        // (only gr_gid, a number, is read).
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `c_name` is a
        // NUL-terminated string, `group` and `found` are exclusively
        // borrowed, and `buf` is writable for `buf.len()` bytes.
        let rc = unsafe {
            libc::getgrnam_r(
                c_name.as_ptr(),
                &mut group,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        match rc {
            0 if found.is_null() => return Err(GroupError::NotFound(name.to_owned())),
            0 => return Ok(group.gr_gid),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            // glibc reports a missing group with these too.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => {
                return Err(GroupError::NotFound(name.to_owned()))
            }
            errno => {
                return Err(GroupError::Lookup {
                    name: name.to_owned(),
                    source: std::io::Error::from_raw_os_error(errno),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_group_zero_and_nonsense_is_no_group() {
        assert_eq!(gid_of("root").unwrap(), 0);
        let err = gid_of("no-such-group-daxfsd").unwrap_err().to_string();
        assert_eq!(err, "--socket-group no-such-group-daxfsd: no such group");
    }
}
