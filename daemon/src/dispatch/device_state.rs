//! The dispatcher's part of a live migration: the session INIT agreed and
//! the filesystem's inodes and handles, as one [`DeviceState`].

use crate::migration::{DeviceState, MigrationConfig, MigrationError, OnError, FORMAT_VERSION};

use super::Dispatcher;

impl Dispatcher {
    /// The frontend turned dirty logging on (`true`) or off: a migration
    /// starts or was cancelled.
    pub fn migration_started(&self, started: bool) {
        self.fs.migration_started(started);
    }

    /// The source's state at switch-over. A device with a DAX window is
    /// refused: the window's mappings live in the frontend's process.
    pub fn save_state(&self, config: &MigrationConfig) -> Result<DeviceState, MigrationError> {
        if self.dax.is_some() {
            return Err(MigrationError::DaxWindow);
        }
        let session = self
            .session
            .is_initialized()
            .then(|| self.session.negotiated());
        Ok(DeviceState {
            version: FORMAT_VERSION,
            session,
            fs: self.fs.export_state(config)?,
        })
    }

    /// The destination takes the source's session over: the guest's
    /// nodeids and fhs are valid here from now on, and the guest sends no
    /// INIT.
    pub fn load_state(&self, state: DeviceState, on_error: OnError) -> Result<(), MigrationError> {
        if self.dax.is_some() {
            return Err(MigrationError::DaxWindow);
        }
        if self.session.is_initialized() {
            return Err(MigrationError::SessionActive);
        }
        let summary = self.fs.import_state(state.fs, on_error)?;
        if !summary.failures.is_empty() {
            tracing::warn!(
                failed = summary.failures.len(),
                first = %summary.failures[0],
                "migrated inodes or handles the guest will get EIO for (--migration-on-error guest-error)"
            );
        }
        if let Some(negotiated) = state.session {
            self.session.begin(negotiated);
        }
        tracing::info!(
            inodes = summary.inodes,
            handles = summary.handles,
            session = self.session.is_initialized(),
            "migrated state taken over"
        );
        Ok(())
    }
}
