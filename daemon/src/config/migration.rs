//! `--migration-mode`, `--migration-on-error`, `--migration-verify-handles`
//! and `--migration-confirm-paths`, as virtiofsd 1.14 takes them: the two
//! checks of paths only make sense when inodes travel as paths.

use super::cli::Args;
use crate::migration::{MigrationConfig, MigrationMode};

/// A migration flag that does not go with `--migration-mode=file-handles`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} cannot be used with --migration-mode=file-handles: it checks paths, and file handles name inodes without them")]
pub struct PathCheckWithHandles {
    /// The flag given.
    pub flag: &'static str,
}

/// The migration configuration of `args`.
pub fn parse(args: &Args) -> Result<MigrationConfig, PathCheckWithHandles> {
    let config = MigrationConfig {
        mode: args.migration_mode,
        on_error: args.migration_on_error,
        verify_handles: args.migration_verify_handles,
        confirm_paths: args.migration_confirm_paths,
    };
    if config.mode == MigrationMode::FileHandles {
        let checks = [
            (config.verify_handles, "--migration-verify-handles"),
            (config.confirm_paths, "--migration-confirm-paths"),
        ];
        if let Some(&(_, flag)) = checks.iter().find(|(given, _)| *given) {
            return Err(PathCheckWithHandles { flag });
        }
    }
    Ok(config)
}
