//! What daxfsd cannot honour, refused at start naming the flag: virtiofsd's
//! migration flags (daxfsd cannot migrate) and the flags whose behaviour
//! daxfsd does not have yet. Never accepted and ignored.

use super::cli::Args;

/// A flag (or value) daxfsd refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A migration flag.
    #[error("{0}: daxfsd cannot migrate (it has no vhost-user device-state transfer)")]
    Migration(&'static str),
    /// A behaviour daxfsd does not have.
    #[error("{flag} is not supported by daxfsd yet{what_is}")]
    NotYet {
        /// The flag (and value) given.
        flag: &'static str,
        /// What daxfsd does instead, for the message (may be empty).
        what_is: &'static str,
    },
}

/// The first flag of `args` daxfsd refuses, if any.
pub fn check(args: &Args) -> Result<(), Refusal> {
    let migration = [
        (args.migration_mode.is_some(), "--migration-mode"),
        (args.migration_on_error.is_some(), "--migration-on-error"),
        (args.migration_verify_handles, "--migration-verify-handles"),
        (args.migration_confirm_paths, "--migration-confirm-paths"),
    ];
    if let Some(&(_, flag)) = migration.iter().find(|(given, _)| *given) {
        return Err(Refusal::Migration(flag));
    }
    let not_yet = [(args.xattrmap.is_some(), "--xattrmap (or -o xattrmap)", "")];
    match not_yet.iter().find(|(given, ..)| *given) {
        Some(&(_, flag, what_is)) => Err(Refusal::NotYet { flag, what_is }),
        None => Ok(()),
    }
}
