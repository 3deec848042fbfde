//! Moving a [`DeviceState`]'s bytes through the pipe the frontend hands
//! over with SET_DEVICE_STATE_FD, and reporting the outcome at
//! CHECK_DEVICE_STATE.
//!
//! The frontend reads (or writes) the pipe only after the daemon answered
//! SET_DEVICE_STATE_FD, so the bytes cannot be moved inside that answer: a
//! state larger than the pipe's buffer would block the daemon while the
//! frontend waits for its reply. Each transfer runs on a thread of its
//! own; CHECK_DEVICE_STATE joins it and reports what it returned.

use std::fs::File;
use std::io::{Read, Write};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;

use super::{DeviceState, MigrationError};

type Job = JoinHandle<Result<(), MigrationError>>;

/// The device-state transfer of one device, at most one at a time.
///
/// Locking: one `Mutex` guards the running transfer's thread; it is held to
/// start one and to take it for joining, never while joining.
#[derive(Debug, Default)]
pub struct Transfer {
    running: Mutex<Option<Job>>,
}

impl Transfer {
    /// No transfer yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts saving: `build` makes the state on the transfer's thread,
    /// which writes it to `pipe` and closes it (the end of the stream).
    pub fn save(
        &self, pipe: File,
        build: impl FnOnce() -> Result<DeviceState, MigrationError> + Send + 'static,
    ) -> Result<(), MigrationError> {
        self.start("device-state save", move || {
            let mut pipe = pipe;
            let bytes = build()?.to_bytes()?;
            pipe.write_all(&bytes).map_err(MigrationError::Pipe)?;
            tracing::info!(bytes = bytes.len(), "device state sent");
            Ok(())
        })
    }

    /// Starts loading: the transfer's thread reads `pipe` to its end and
    /// gives the state to `apply`.
    pub fn load(
        &self, pipe: File,
        apply: impl FnOnce(DeviceState) -> Result<(), MigrationError> + Send + 'static,
    ) -> Result<(), MigrationError> {
        self.start("device-state load", move || {
            let mut pipe = pipe;
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).map_err(MigrationError::Pipe)?;
            tracing::info!(bytes = bytes.len(), "device state received");
            apply(DeviceState::from_bytes(&bytes)?)
        })
    }

    fn start(
        &self, name: &str, job: impl FnOnce() -> Result<(), MigrationError> + Send + 'static,
    ) -> Result<(), MigrationError> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.as_ref().is_some_and(|job| !job.is_finished()) {
            return Err(MigrationError::Busy);
        }
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(job)
            .map_err(MigrationError::Thread)?;
        *running = Some(thread);
        Ok(())
    }

    /// CHECK_DEVICE_STATE: waits for the transfer and returns its outcome.
    pub fn check(&self) -> Result<(), MigrationError> {
        let job = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or(MigrationError::NoTransfer)?;
        job.join().unwrap_or_else(|panic| {
            let what = crate::worker_guard::panic_message(&*panic);
            Err(MigrationError::Thread(std::io::Error::other(what)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::{FsState, FORMAT_VERSION};

    fn state() -> DeviceState {
        DeviceState {
            version: FORMAT_VERSION,
            session: None,
            fs: FsState {
                next_nodeid: 2,
                next_fh: 1,
                ..FsState::default()
            },
        }
    }

    fn pipe() -> (File, File) {
        let (r, w) = rustix::pipe::pipe().unwrap();
        (File::from(r), File::from(w))
    }

    #[test]
    fn a_saved_state_is_loaded_by_the_other_side() {
        let (source, destination) = (Transfer::new(), Transfer::new());
        let (r, w) = pipe();
        // Larger than a pipe's buffer: neither side may write inside the
        // call that starts it.
        let mut big = state();
        big.fs.next_fh = 1 << 40;
        big.fs.handles = (0..20_000)
            .map(|fh| crate::migration::HandleState {
                fh,
                nodeid: 2,
                flags: 0,
                directory: false,
            })
            .collect();
        let sent = big.clone();
        source.save(w, move || Ok(sent)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        destination
            .load(r, move |got| {
                tx.send(got).unwrap();
                Ok(())
            })
            .unwrap();
        source.check().unwrap();
        destination.check().unwrap();
        assert_eq!(rx.recv().unwrap(), big);
    }

    #[test]
    fn the_outcome_of_the_load_is_the_check() {
        let transfer = Transfer::new();
        let (r, w) = pipe();
        drop(w);
        transfer.load(r, |_| Ok(())).unwrap();
        // An empty stream is not a state.
        assert!(matches!(transfer.check(), Err(MigrationError::Format(_))));
        assert!(matches!(transfer.check(), Err(MigrationError::NoTransfer)));
    }

    #[test]
    fn a_failed_build_fails_the_check() {
        let transfer = Transfer::new();
        let (_r, w) = pipe();
        transfer.save(w, || Err(MigrationError::DaxWindow)).unwrap();
        assert!(matches!(transfer.check(), Err(MigrationError::DaxWindow)));
    }
}
