//! What daxfsd refuses on purpose, naming the flag: virtiofsd's migration
//! flags (daxfsd cannot migrate, so accepting them would be accepting and
//! ignoring them). Every other virtiofsd 1.14 flag has its behaviour.

use super::cli::Args;

/// A flag daxfsd refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A migration flag.
    #[error("{0}: daxfsd cannot migrate (it has no vhost-user device-state transfer)")]
    Migration(&'static str),
}

/// The first flag of `args` daxfsd refuses, if any.
pub fn check(args: &Args) -> Result<(), Refusal> {
    let migration = [
        (args.migration_mode.is_some(), "--migration-mode"),
        (args.migration_on_error.is_some(), "--migration-on-error"),
        (args.migration_verify_handles, "--migration-verify-handles"),
        (args.migration_confirm_paths, "--migration-confirm-paths"),
    ];
    match migration.iter().find(|(given, _)| *given) {
        Some(&(_, flag)) => Err(Refusal::Migration(flag)),
        None => Ok(()),
    }
}
