//! The locked-entry index of DAX window slots.
//!
//! A virtio-fs guest maps file ranges into a fixed-size *DAX window* that the
//! VMM owns; the daemon asks the VMM to map and unmap, and must know at every
//! moment which window extents hold which file ranges. This crate is that
//! knowledge, with the locking that makes concurrent requests on the same slots
//! safe: the semantics Linux `fs/dax.c` reached after its missed-wakeup bugs
//! (a 2 MiB waiter sleeping on a 4 KiB entry's queue, 2019; parallel
//! invalidators where one found nothing and woke nobody, 2021).
//!
//! * [`WindowGeometry`] validates window sizes and ranges.
//! * [`Window`] holds one packed word per 2 MiB slot, split-slot detail and
//!   mapping records, a reverse index inode -> slots, and counters.
//! * [`Window::grab`] locks a range at an [`Order`] and returns a [`SlotGuard`]
//!   (or a [`GrabConflict`]); under the guard the daemon maps, upgrades and
//!   unmaps through its [`Mapper`]. No mutex is held while the mapper runs.
//! * [`Window::setup_mapping`] / [`Window::remove_mapping`] serve
//!   FUSE_SETUPMAPPING / FUSE_REMOVEMAPPING; [`Window::repair`] keeps an
//!   inode's mappings page-granularly within its file's size after the file
//!   shrank or grew (no VMM mapping of a page past the end, which would raise
//!   SIGBUS in the VMM); [`Window::reset`] empties the window.
//! * Waiters sleep on a hashed [`WaitTable`]; the wake rules are in the
//!   `window` module documentation and in `docs/dax-window.md`.
//!
//! The crate does no I/O. Its primitives come from [`sync`], which switches to
//! loom under `--cfg loom` for the model-checking suite.

/// Names a fault point for [`Window::faulty`]; the injected-fault variant under
/// loom, a unit stand-in (for which `faulty` is constant false) otherwise.
macro_rules! fault_point {
    ($name:ident) => {{
        #[cfg(loom)]
        let point = $crate::window::InjectedFault::$name;
        #[cfg(not(loom))]
        let point = $crate::window::FaultPoint;
        point
    }};
}
pub(crate) use fault_point;

mod check;
mod entry;
mod geometry;
mod guard;
mod maintenance;
mod mapper;
pub mod memory_mapper;
mod repair;
mod reverse;
mod shard;
mod stats;
pub mod sync;
mod wait;
mod window;

pub use check::InvariantViolation;
pub use entry::{file_pages_end, file_part, InodeId, MappingRecord, MappingState};
pub use geometry::{
    GeometryError, Order, RangeError, WindowGeometry, WindowRange, MAX_WINDOW_SIZE, PAGES_PER_SLOT,
    PAGE_SIZE, SLOT_SIZE,
};
pub use guard::{MapError, SlotGuard, UnmapError, UpgradeError};
pub use maintenance::{ResetReport, TeardownFailure};
pub use mapper::{MapRequest, Mapper, RemoveError, SetupError, SetupOutcome};
pub use memory_mapper::MemoryMapper;
pub use repair::RepairReport;
pub use stats::WindowStats;
pub use wait::{WaitKey, WaitTable};
#[cfg(loom)]
pub use window::InjectedFault;
pub use window::{GrabConflict, GrabError, Window, WindowConfig};
