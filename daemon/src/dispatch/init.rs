//! FUSE_INIT negotiation.

use daxfsd_protocol::abi::{self, InitOut};

use crate::config::cli::NegotiationMode;
use crate::fs::passthrough::{CachePolicy, Negotiated};
use crate::session::FrontendMapCaps;

/// Largest WRITE payload, READ size and READDIR buffer the daemon accepts.
pub const MAX_TRANSFER: u32 = 1 << 20;
/// `MAX_TRANSFER` in 4 KiB pages, as INIT announces it.
const MAX_PAGES: u16 = (MAX_TRANSFER / 4096) as u16;
/// log2 of the DAX mapping alignment announced with MAP_ALIGNMENT (4 KiB pages).
pub const MAP_ALIGNMENT_SHIFT: u16 = 12;
/// The map_alignment of an INIT reply that refuses DAX: larger than the
/// guest's 2 MiB DAX ranges (log2 21), so Linux logs "FUSE: map_alignment 63
/// incompatible with dax mem range size 2097152" and fails the connection
/// (`fuse_dax_check_alignment` in fs/fuse/dax.c, called from
/// `process_init_reply`): every request of that mount then fails with
/// ECONNREFUSED instead of EIO in the middle of a workload.
pub const REFUSED_MAP_ALIGNMENT: u16 = 63;

/// What the daemon offers in INIT, fixed at start-up.
#[derive(Debug, Clone, Copy)]
pub struct InitPolicy {
    /// The guest's cache policy (`--cache`).
    pub cache: CachePolicy,
    /// The DAX window exists: announce MAP_ALIGNMENT.
    pub dax_window: bool,
    /// Per-inode DAX policy is active: announce HAS_INODE_DAX.
    pub inode_dax: bool,
    /// What the flags offer (`--writeback`, `--no-readdirplus`,
    /// `--killpriv-v2`, `--allow-mmap`).
    pub offers: Offers,
}

/// The INIT flags a command-line switch turns on; by default none (as
/// virtiofsd: READDIRPLUS is on unless `--no-readdirplus` or
/// `--cache=never`, which the configuration settles). `posix_acl` and
/// `security_label` are negotiated as virtiofsd does (see
/// [`negotiate`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offers {
    /// FUSE_WRITEBACK_CACHE.
    pub writeback: bool,
    /// FUSE_DO_READDIRPLUS and FUSE_READDIRPLUS_AUTO.
    pub readdirplus: bool,
    /// FUSE_HANDLE_KILLPRIV_V2.
    pub killpriv_v2: bool,
    /// FUSE_DIRECT_IO_ALLOW_MMAP.
    pub allow_mmap: bool,
    /// FUSE_SUBMOUNTS (mount points in the share carry ATTR_SUBMOUNT).
    pub submounts: bool,
    /// FUSE_POSIX_ACL with DONT_MASK and SETXATTR_EXT (`--posix-acl`).
    pub posix_acl: NegotiationMode,
    /// FUSE_SECURITY_CTX (`--security-label`).
    pub security_label: NegotiationMode,
}

/// What POSIX ACLs need the guest to offer: all three, or none is taken.
const ACL_FLAGS: u64 = abi::POSIX_ACL | abi::DONT_MASK | abi::SETXATTR_EXT;

/// A feature `always` requires that the guest does not offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MissingFeature {
    /// `--posix-acl=always` without POSIX_ACL, DONT_MASK and SETXATTR_EXT.
    #[error("--posix-acl=always, but the guest does not offer POSIX ACLs (FUSE_POSIX_ACL, FUSE_DONT_MASK, FUSE_SETXATTR_EXT)")]
    PosixAcl,
    /// `--security-label=always` without SECURITY_CTX.
    #[error(
        "--security-label=always, but the guest does not offer security labels (FUSE_SECURITY_CTX)"
    )]
    SecurityLabel,
}

/// The flags `mode` adds to the reply when the guest offers all of
/// `flags`: all of them (never, auto: none when not offered, with a
/// warning; always: `missing` when not offered).
fn mode_flags(
    mode: NegotiationMode, kernel_flags: u64, flags: u64, missing: MissingFeature,
) -> Result<u64, MissingFeature> {
    match mode {
        NegotiationMode::Never => Ok(0),
        _ if kernel_flags & flags == flags => Ok(flags),
        NegotiationMode::Always => Err(missing),
        NegotiationMode::Auto => {
            tracing::warn!("{missing}; continuing without (auto)");
            Ok(0)
        }
    }
}

impl Offers {
    /// The INIT flags these switches offer.
    pub fn flags(self) -> u64 {
        let mut flags = 0;
        if self.writeback {
            flags |= abi::WRITEBACK_CACHE;
        }
        if self.readdirplus {
            flags |= abi::DO_READDIRPLUS | abi::READDIRPLUS_AUTO;
        }
        if self.killpriv_v2 {
            flags |= abi::HANDLE_KILLPRIV_V2;
        }
        if self.allow_mmap {
            flags |= abi::DIRECT_IO_ALLOW_MMAP;
        }
        if self.submounts {
            flags |= abi::SUBMOUNTS;
        }
        flags
    }
}

/// The flags `--posix-acl` and `--security-label` add to what is wanted.
fn mode_offers(offers: Offers, kernel_flags: u64) -> Result<u64, MissingFeature> {
    let acl = mode_flags(
        offers.posix_acl,
        kernel_flags,
        ACL_FLAGS,
        MissingFeature::PosixAcl,
    )?;
    let label = mode_flags(
        offers.security_label,
        kernel_flags,
        abi::SECURITY_CTX,
        MissingFeature::SecurityLabel,
    )?;
    Ok(acl | label)
}

/// Result of negotiating INIT with a guest.
#[derive(Debug, Clone, Copy)]
pub enum InitOutcome {
    /// The session starts with this reply and these features.
    Accepted(InitOut, Negotiated),
    /// The guest speaks a newer major version: answer with ours only, so it
    /// can retry (no session starts).
    RetryWithMajor(InitOut),
    /// The guest's protocol is too old to serve.
    Unsupported,
    /// The guest does not offer a feature `always` requires (EPROTO, as
    /// virtiofsd).
    Missing(MissingFeature),
}

/// Negotiates INIT: the reply carries the intersection of what the guest
/// offers and what this daemon implements.
pub fn negotiate(
    policy: &InitPolicy, major: u32, minor: u32, max_readahead: u32, kernel_flags: u64,
) -> InitOutcome {
    if major > abi::KERNEL_VERSION {
        let reply = InitOut {
            major: abi::KERNEL_VERSION,
            minor: abi::KERNEL_MINOR_VERSION,
            ..InitOut::default()
        };
        return InitOutcome::RetryWithMajor(reply);
    }
    if major < abi::KERNEL_VERSION || minor < abi::MIN_KERNEL_MINOR_VERSION {
        return InitOutcome::Unsupported;
    }
    let mut wanted = abi::ASYNC_READ
        | abi::ATOMIC_O_TRUNC
        | abi::BIG_WRITES
        | abi::AUTO_INVAL_DATA
        | abi::ASYNC_DIO
        | abi::PARALLEL_DIROPS
        | abi::MAX_PAGES
        | abi::INIT_EXT
        | policy.offers.flags();
    if policy.cache != CachePolicy::Never {
        wanted |= abi::CACHE_SYMLINKS;
    }
    if policy.dax_window {
        wanted |= abi::MAP_ALIGNMENT;
    }
    if policy.inode_dax {
        wanted |= abi::HAS_INODE_DAX;
    }
    match mode_offers(policy.offers, kernel_flags) {
        Ok(flags) => wanted |= flags,
        Err(missing) => return InitOutcome::Missing(missing),
    }
    let agreed = kernel_flags & wanted;
    let negotiated = Negotiated {
        writeback: agreed & abi::WRITEBACK_CACHE != 0,
        killpriv_v2: agreed & abi::HANDLE_KILLPRIV_V2 != 0,
        inode_dax: agreed & abi::HAS_INODE_DAX != 0,
        posix_acl: agreed & abi::POSIX_ACL != 0,
        setxattr_ext: agreed & abi::SETXATTR_EXT != 0,
        security_ctx: agreed & abi::SECURITY_CTX != 0,
        dax_caps: FrontendMapCaps::ASSUMED,
    };
    let reply = InitOut {
        major: abi::KERNEL_VERSION,
        minor: minor.min(abi::KERNEL_MINOR_VERSION),
        max_readahead,
        flags: agreed as u32,
        max_background: 64,
        congestion_threshold: 48,
        max_write: MAX_TRANSFER,
        time_gran: 1,
        max_pages: MAX_PAGES,
        map_alignment: if agreed & abi::MAP_ALIGNMENT != 0 {
            MAP_ALIGNMENT_SHIFT
        } else {
            0
        },
        flags2: (agreed >> 32) as u32,
        ..InitOut::default()
    };
    InitOutcome::Accepted(reply, negotiated)
}

/// Whether the guest asks for something the frontend cannot serve: every
/// file through the window (dax=always: the guest offers MAP_ALIGNMENT, as
/// it does whenever it has a window, without HAS_INODE_DAX, which it offers
/// for dax=inode and the default mode) on a frontend that cannot map the
/// partial last page of a file. Under dax=inode the daemon keeps such files
/// out of the window instead (see `passthrough::attr`).
pub fn dax_always_unservable(kernel_flags: u64, caps: FrontendMapCaps) -> bool {
    kernel_flags & abi::MAP_ALIGNMENT != 0
        && kernel_flags & abi::HAS_INODE_DAX == 0
        && !caps.partial_tail
}

/// Turns an accepted INIT reply into one the guest's DAX mount rejects
/// (see [`REFUSED_MAP_ALIGNMENT`]).
pub fn refuse_dax(out: &mut InitOut) {
    out.flags |= abi::MAP_ALIGNMENT as u32;
    out.map_alignment = REFUSED_MAP_ALIGNMENT;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(dax: bool) -> InitPolicy {
        InitPolicy {
            cache: CachePolicy::Auto,
            dax_window: dax,
            inode_dax: false,
            offers: Offers::default(),
        }
    }

    fn agreed(policy: &InitPolicy, kernel: u64) -> u64 {
        let InitOutcome::Accepted(out, _) = negotiate(policy, 7, 41, 0, kernel) else {
            panic!("INIT 7.41 must be accepted");
        };
        u64::from(out.flags) | (u64::from(out.flags2) << 32)
    }

    #[test]
    fn switches_offer_their_flags_and_only_them() {
        let switched = abi::WRITEBACK_CACHE
            | abi::DO_READDIRPLUS
            | abi::READDIRPLUS_AUTO
            | abi::HANDLE_KILLPRIV_V2
            | abi::DIRECT_IO_ALLOW_MMAP
            | abi::SUBMOUNTS;
        let kernel = switched | abi::INIT_EXT;
        assert_eq!(agreed(&policy(false), kernel) & switched, 0);
        let mut all = policy(false);
        all.offers = Offers {
            writeback: true,
            readdirplus: true,
            killpriv_v2: true,
            allow_mmap: true,
            submounts: true,
            ..Offers::default()
        };
        assert_eq!(agreed(&all, kernel) & switched, switched);
        all.offers.readdirplus = false;
        assert_eq!(
            agreed(&all, kernel) & (abi::DO_READDIRPLUS | abi::READDIRPLUS_AUTO),
            0
        );
    }

    #[test]
    fn reply_carries_only_flags_both_sides_have() {
        let kernel = abi::ASYNC_READ
            | abi::WRITEBACK_CACHE
            | abi::POSIX_LOCKS
            | abi::MAP_ALIGNMENT
            | abi::INIT_EXT;
        let InitOutcome::Accepted(out, neg) = negotiate(&policy(false), 7, 41, 65536, kernel)
        else {
            panic!("INIT 7.41 must be accepted");
        };
        let agreed = u64::from(out.flags) | (u64::from(out.flags2) << 32);
        assert_eq!(agreed, abi::ASYNC_READ | abi::INIT_EXT);
        assert_eq!((out.major, out.minor, out.max_readahead), (7, 41, 65536));
        assert_eq!(out.map_alignment, 0);
        assert!(!neg.writeback);
    }

    #[test]
    fn dax_announces_page_alignment() {
        let kernel = abi::MAP_ALIGNMENT | abi::INIT_EXT;
        let InitOutcome::Accepted(out, _) = negotiate(&policy(true), 7, 41, 0, kernel) else {
            panic!("accepted");
        };
        assert_ne!(out.flags as u64 & abi::MAP_ALIGNMENT, 0);
        assert_eq!(out.map_alignment, 12);
    }

    #[test]
    fn only_dax_always_on_a_frontend_without_partial_pages_is_refused() {
        let upstream = FrontendMapCaps {
            partial_tail: false,
            read_only_fd: false,
        };
        let patched = FrontendMapCaps::ASSUMED;
        let always = abi::MAP_ALIGNMENT | abi::INIT_EXT;
        let inode = always | abi::HAS_INODE_DAX;
        assert!(dax_always_unservable(always, upstream));
        assert!(!dax_always_unservable(always, patched));
        assert!(!dax_always_unservable(inode, upstream));
        // A guest without DAX (no window, or dax=never) offers no MAP_ALIGNMENT.
        assert!(!dax_always_unservable(abi::INIT_EXT, upstream));
        let InitOutcome::Accepted(mut out, _) = negotiate(&policy(true), 7, 41, 0, always) else {
            panic!("accepted");
        };
        refuse_dax(&mut out);
        assert_ne!(u64::from(out.flags) & abi::MAP_ALIGNMENT, 0);
        // Linux's fuse_dax_check_alignment fails anything above FUSE_DAX_SHIFT (21).
        assert!(out.map_alignment > 21);
    }

    #[test]
    fn acl_and_label_modes_negotiate_as_virtiofsd() {
        use NegotiationMode::{Always, Auto, Never};
        let with = |posix_acl, security_label| InitPolicy {
            offers: Offers {
                posix_acl,
                security_label,
                ..Offers::default()
            },
            ..policy(false)
        };
        let both = ACL_FLAGS | abi::SECURITY_CTX | abi::INIT_EXT;
        let modes = ACL_FLAGS | abi::SECURITY_CTX;
        assert_eq!(agreed(&with(Never, Never), both) & modes, 0);
        assert_eq!(agreed(&with(Auto, Auto), both) & modes, modes);
        assert_eq!(agreed(&with(Always, Always), both) & modes, modes);
        // ACLs need all three flags; without one, none is taken.
        let partial = abi::POSIX_ACL | abi::DONT_MASK | abi::INIT_EXT;
        assert_eq!(agreed(&with(Auto, Never), partial) & modes, 0);
        assert!(matches!(
            negotiate(&with(Always, Never), 7, 41, 0, partial),
            InitOutcome::Missing(MissingFeature::PosixAcl)
        ));
        assert!(matches!(
            negotiate(&with(Never, Always), 7, 41, 0, ACL_FLAGS | abi::INIT_EXT),
            InitOutcome::Missing(MissingFeature::SecurityLabel)
        ));
        let InitOutcome::Accepted(_, neg) = negotiate(&with(Auto, Auto), 7, 41, 0, both) else {
            panic!("accepted");
        };
        assert!(neg.posix_acl && neg.setxattr_ext && neg.security_ctx);
        assert!(neg.layout().setxattr_ext && neg.layout().security_ctx);
    }

    #[test]
    fn versions_are_checked() {
        assert!(
            matches!(negotiate(&policy(false), 8, 0, 0, 0), InitOutcome::RetryWithMajor(o) if o.major == 7)
        );
        assert!(matches!(
            negotiate(&policy(false), 6, 99, 0, 0),
            InitOutcome::Unsupported
        ));
        assert!(matches!(
            negotiate(&policy(false), 7, 20, 0, 0),
            InitOutcome::Unsupported
        ));
        assert!(
            matches!(negotiate(&policy(false), 7, 50, 0, 0), InitOutcome::Accepted(o, _) if o.minor == 41)
        );
    }
}
