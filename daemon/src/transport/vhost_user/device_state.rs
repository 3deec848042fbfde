//! Live migration on the vhost-user side: dirty logging turned on or off
//! (SET_FEATURES with or without `VHOST_F_LOG_ALL`) starts or cancels a
//! migration; SET_DEVICE_STATE_FD starts moving the device state through
//! the frontend's pipe; CHECK_DEVICE_STATE reports how it went (see
//! `crate::migration`).

use std::fs::File;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserVirtioFeatures,
};

use super::FsDevice;
use crate::migration::MigrationError;

impl FsDevice {
    /// SET_FEATURES: a change of `VHOST_F_LOG_ALL` starts or cancels a
    /// migration.
    pub(super) fn features_acked(&self, features: u64) {
        let logging = features & VhostUserVirtioFeatures::LOG_ALL.bits() != 0;
        if self.logging.swap(logging, Ordering::Relaxed) != logging {
            tracing::info!(
                logging,
                "dirty logging turned {}",
                if logging {
                    "on: a migration starts"
                } else {
                    "off"
                }
            );
            self.dispatcher.migration_started(logging);
        }
    }

    /// SET_DEVICE_STATE_FD: the device state goes out through (or comes in
    /// from) `pipe`, on a thread of its own; the answer does not wait.
    pub(super) fn start_state_transfer(
        &self, direction: VhostTransferStateDirection, phase: VhostTransferStatePhase, pipe: File,
    ) -> io::Result<Option<File>> {
        if phase != VhostTransferStatePhase::STOPPED {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "device state is transferred only with the device stopped",
            ));
        }
        let dispatcher = Arc::clone(&self.dispatcher);
        let migration = self.config.migration;
        let started = match direction {
            VhostTransferStateDirection::SAVE => {
                tracing::info!("saving the device state for the migration destination");
                self.transfer
                    .save(pipe, move || dispatcher.save_state(&migration))
            }
            VhostTransferStateDirection::LOAD => {
                tracing::info!("loading the device state of the migration source");
                self.transfer.load(pipe, move |state| {
                    dispatcher.load_state(state, migration.on_error)
                })
            }
        };
        started.map_err(io::Error::other)?;
        Ok(None)
    }

    /// CHECK_DEVICE_STATE: the transfer's outcome (an error fails the
    /// migration in the frontend).
    pub(super) fn finish_state_transfer(&self) -> io::Result<()> {
        match self.transfer.check() {
            Ok(()) => {
                tracing::info!("device state transfer succeeded");
                Ok(())
            }
            Err(error) => {
                tracing::error!(error = %crate::error_chain(&error), "device state transfer failed: the migration fails");
                Err(io::Error::other(MigrationFailed(error)))
            }
        }
    }
}

/// The error CHECK_DEVICE_STATE answers with.
#[derive(Debug, thiserror::Error)]
#[error("migration failed")]
struct MigrationFailed(#[source] MigrationError);
