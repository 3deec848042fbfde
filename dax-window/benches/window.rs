//! Cost of the index operations as the window grows from 256 MiB to 64 GiB.
//!
//! `cargo bench -p dax-window` — results and ratios in docs/dax-window.md.
//! Every window is fully mapped (one 2 MiB mapping per slot, each of its own
//! inode) through a mapper that does nothing, so the numbers are the index's own
//! cost; slots are visited in a scattered order so larger windows pay their
//! cache misses.

#[cfg(not(loom))]
mod benches {
    use std::convert::Infallible;
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    use criterion::{BenchmarkId, Criterion};
    use dax_window::{InodeId, MapRequest, Mapper, Order, Window, WindowGeometry, SLOT_SIZE};

    const MIB: u64 = 1024 * 1024;
    const SIZES: [(u64, &str); 3] = [
        (256 * MIB, "256MiB"),
        (4096 * MIB, "4GiB"),
        (65536 * MIB, "64GiB"),
    ];

    /// A VMM that accepts everything instantly.
    struct NoopMapper;

    impl Mapper for NoopMapper {
        type File = ();
        type Error = Infallible;

        fn map(&self, _: u64, _: u64, _: &(), _: u64, _: bool) -> Result<(), Infallible> {
            Ok(())
        }

        fn unmap(&self, _: u64, _: u64) -> Result<(), Infallible> {
            Ok(())
        }
    }

    fn request(slot: u64, inode: u64) -> MapRequest<'static, ()> {
        MapRequest {
            moffset: slot * SLOT_SIZE,
            len: SLOT_SIZE,
            inode: InodeId(inode),
            file: &(),
            foffset: 0,
            writable: false,
        }
    }

    fn full_window(size: u64) -> Window {
        let window = Window::new(WindowGeometry::new(size).unwrap());
        for slot in 0..window.geometry().slot_count() {
            window
                .setup_mapping(&NoopMapper, &request(slot, slot + 1))
                .unwrap();
        }
        window
    }

    /// Visits every slot once per cycle in a scattered order.
    struct Scatter {
        next: u64,
        slots: u64,
    }

    impl Scatter {
        fn next(&mut self) -> u64 {
            self.next = (self.next + 7919) % self.slots;
            self.next
        }
    }

    pub fn index_operations(c: &mut Criterion) {
        for (size, name) in SIZES {
            let idle = Window::new(WindowGeometry::new(size).unwrap());
            let slots = idle.geometry().slot_count();
            eprintln!(
                "index bytes per 2 MiB slot, {name}: idle {:.2}",
                idle.index_bytes() as f64 / slots as f64
            );
            drop(idle);
            let window = full_window(size);
            eprintln!(
                "index bytes per 2 MiB slot, {name}: fully mapped {:.2}",
                window.index_bytes() as f64 / slots as f64
            );
            let mut scatter = Scatter { next: 0, slots };

            c.bench_with_input(
                BenchmarkId::new("grab_release", name),
                &window,
                |b, window| {
                    b.iter(|| {
                        let slot = scatter.next();
                        drop(
                            window
                                .grab_at(slot * SLOT_SIZE, SLOT_SIZE, Order::Slot)
                                .unwrap(),
                        );
                    })
                },
            );
            c.bench_with_input(BenchmarkId::new("lookup", name), &window, |b, window| {
                b.iter(|| window.lookup(scatter.next() * SLOT_SIZE + 4096).unwrap())
            });
            c.bench_with_input(
                BenchmarkId::new("invalidate", name),
                &window,
                |b, window| {
                    // Only the invalidation is timed; giving the slot back to its
                    // inode as a live mapping happens between measurements.
                    b.iter_custom(|iterations| {
                        let mut timed = Duration::ZERO;
                        for _ in 0..iterations {
                            let slot = scatter.next();
                            window
                                .remove_mapping(&NoopMapper, slot * SLOT_SIZE, SLOT_SIZE)
                                .unwrap();
                            window
                                .setup_mapping(&NoopMapper, &request(slot, slot + 1))
                                .unwrap();
                            let started = Instant::now();
                            let report = window.repair(&NoopMapper, InodeId(slot + 1), &(), 0);
                            timed += started.elapsed();
                            assert_eq!(black_box(report).clipped, 1);
                        }
                        timed
                    })
                },
            );
        }
    }

    pub fn config() -> Criterion {
        Criterion::default()
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(30)
    }
}

#[cfg(not(loom))]
criterion::criterion_group! {
    name = index;
    config = benches::config();
    targets = benches::index_operations
}
#[cfg(not(loom))]
criterion::criterion_main!(index);

#[cfg(loom)]
fn main() {}
