//! The session room: what one FUSE session negotiated, in one place.
//!
//! A session starts with a successful INIT and ends with DESTROY, a device
//! reset, a new INIT without DESTROY, or the frontend's disconnect. What it
//! agreed — that INIT was seen, the feature bits that change how
//! operations behave, what this frontend maps into the DAX window — is
//! one [`Session`], written by the dispatcher at INIT and at the session's
//! end and read by the filesystem while it serves requests.
//!
//! The DAX window's own state (its mappings, and whether they are stale
//! because the previous session ended without the backend channel) belongs
//! to the window, which outlives sessions: see `dax::Dax::begin_session`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

/// What the frontend maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FrontendMapCaps {
    /// A mapping may end in the partial last page of a file (its
    /// page-rounded length passes the file's end).
    pub partial_tail: bool,
    /// A read-only mapping may be made from a descriptor open `O_RDONLY`.
    pub read_only_fd: bool,
}

impl FrontendMapCaps {
    /// What a frontend that was not (or could not be) probed is assumed to
    /// map: everything, as the patched QEMU and legacy frontends do.
    pub const ASSUMED: Self = Self {
        partial_tail: true,
        read_only_fd: true,
    };

    /// The log line's wording.
    pub(crate) fn describe(self) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        format!(
            "frontend maps partial last pages: {}; read-only descriptors: {}",
            yes_no(self.partial_tail),
            yes_no(self.read_only_fd)
        )
    }
}

impl Default for FrontendMapCaps {
    fn default() -> Self {
        Self::ASSUMED
    }
}

/// Feature bits agreed in INIT that change how operations behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Negotiated {
    /// The guest uses writeback caching (WRITEBACK_CACHE).
    pub writeback: bool,
    /// The guest asks the server to kill suid/sgid (HANDLE_KILLPRIV_V2).
    pub killpriv_v2: bool,
    /// Per-inode DAX (HAS_INODE_DAX) was negotiated.
    pub inode_dax: bool,
    /// POSIX ACLs (POSIX_ACL, with DONT_MASK and SETXATTR_EXT): the guest
    /// sends modes unmasked and the umask apart, which the daemon applies
    /// unless the parent's default ACL replaces it; ACL_KILL_SGID is
    /// honoured.
    pub posix_acl: bool,
    /// SETXATTR carries `setxattr_flags` (SETXATTR_EXT).
    pub setxattr_ext: bool,
    /// Creating requests carry the new inode's security context
    /// (SECURITY_CTX).
    pub security_ctx: bool,
    /// What the frontend of this session maps into the DAX window (probed
    /// at INIT; everything when there is no window): decides which files
    /// get ATTR_DAX under dax=inode.
    pub dax_caps: FrontendMapCaps,
}

impl Negotiated {
    /// How requests are laid out in this session.
    pub fn layout(&self) -> daxfsd_protocol::Layout {
        daxfsd_protocol::Layout {
            setxattr_ext: self.setxattr_ext,
            security_ctx: self.security_ctx,
        }
    }
}

/// The state of the current FUSE session.
///
/// Locking: `initialized` is an atomic flag (Acquire/Release, so the
/// features written before it is set are seen by every queue that finds it
/// set); `negotiated` is its own `RwLock`, written only at INIT and at the
/// session's end, read once per operation that depends on it. No other
/// lock is taken while either is held.
#[derive(Debug, Default)]
pub struct Session {
    /// Set by a successful INIT, cleared when the session ends.
    initialized: AtomicBool,
    /// The features agreed in INIT (the defaults outside a session).
    negotiated: RwLock<Negotiated>,
}

impl Session {
    /// No session yet: only INIT is served.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether INIT started a session that has not ended.
    pub fn is_initialized(&self) -> bool {
        self.initialized.load(Ordering::Acquire)
    }

    /// INIT succeeded: the session starts with these features.
    pub fn begin(&self, negotiated: Negotiated) {
        self.set_negotiated(negotiated);
        self.initialized.store(true, Ordering::Release);
    }

    /// The session ends: only INIT is served until the next one begins.
    pub fn end(&self) {
        self.initialized.store(false, Ordering::Release);
    }

    /// Forgets the features (the next session negotiates anew).
    pub fn forget_features(&self) {
        self.set_negotiated(Negotiated::default());
    }

    /// The features agreed in INIT.
    pub fn negotiated(&self) -> Negotiated {
        *self
            .negotiated
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn set_negotiated(&self, negotiated: Negotiated) {
        *self
            .negotiated
            .write()
            .unwrap_or_else(PoisonError::into_inner) = negotiated;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_begins_at_init_and_ends() {
        let session = Session::new();
        assert!(!session.is_initialized());
        let writeback = Negotiated {
            writeback: true,
            ..Negotiated::default()
        };
        session.begin(writeback);
        assert!(session.is_initialized());
        assert_eq!(session.negotiated(), writeback);
        session.end();
        session.forget_features();
        assert!(!session.is_initialized());
        assert_eq!(session.negotiated(), Negotiated::default());
    }
}
