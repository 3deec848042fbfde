//! Samples, medians and the Markdown tables printed as rows complete.

use std::time::Duration;

use crate::ops::{Row, Rss};

/// One timed run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Operations per second.
    pub rate: f64,
    /// CPU time of the daemon per operation, microseconds.
    pub daemon_us: f64,
    /// CPU time of the benchmark process (the harness: guest driver and VMM) per
    /// operation, microseconds.
    pub harness_us: f64,
}

impl Sample {
    /// `ops` operations in `length`, costing the daemon `daemon_ns` and the harness
    /// `own_ns` of CPU time.
    pub fn new(ops: f64, length: Duration, daemon_ns: u64, own_ns: u64) -> Self {
        let per_op = |ns: u64| {
            if ops > 0.0 {
                ns as f64 / ops / 1000.0
            } else {
                f64::NAN
            }
        };
        Sample {
            rate: ops / length.as_secs_f64(),
            daemon_us: per_op(daemon_ns),
            harness_us: per_op(own_ns),
        }
    }
}

/// Microseconds per operation of the median sample; 0 for no samples (a part a
/// frontend's protocol does not have).
pub fn us_per_op(samples: &[Sample]) -> f64 {
    if samples.is_empty() {
        0.0
    } else {
        1e6 / median(samples.iter().map(|s| s.rate))
    }
}

/// The floor of one DAX cycle, in µs, from its parts measured alone: two FUSE round
/// trips (SETUPMAPPING, REMOVEMAPPING), two backend-channel round trips (SHMEM_MAP and
/// SHMEM_UNMAP with their acks) and the map and unmap themselves.
pub fn cycle_floor(fuse: f64, socket: f64, map: f64) -> f64 {
    2.0 * fuse + 2.0 * socket + map
}

/// Median of `values` (NaN if empty).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Smallest and largest of `values`.
pub fn spread(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    values
        .into_iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
}

/// A rate with thousands separators, no decimals.
pub fn rate(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Prints the Markdown tables to stdout, a row as soon as it is measured.
#[derive(Debug, Default)]
pub struct Table {
    ops_header: bool,
    rss_header: bool,
    dax_header: bool,
}

impl Table {
    /// Prints one operations row (header first if needed).
    pub fn ops_row(&mut self, row: &Row) {
        if !self.ops_header {
            self.ops_header = true;
            println!();
            println!(
                "| operation | queues × in flight | daxfsd | virtiofsd | ratio d/v (pairs min–max) \
                 | daemon CPU µs/op d / v | harness CPU µs/op d / v |"
            );
            println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
        }
        let [d, v] = &row.samples;
        let med = |s: &[Sample], f: fn(&Sample) -> f64| median(s.iter().map(f));
        let (d_rate, v_rate) = (med(d, |s| s.rate), med(v, |s| s.rate));
        let (lo, hi) = spread(d.iter().zip(v).map(|(a, b)| a.rate / b.rate));
        println!(
            "| {} | {} | {} {} | {} | **{:.2}×** ({:.2}–{:.2}) | {:.1} / {:.1} | {:.1} / {:.1} |",
            row.workload.label(),
            format_args!("{} × {}", row.queues, row.depth),
            rate(d_rate),
            row.workload.unit(),
            rate(v_rate),
            d_rate / v_rate,
            lo,
            hi,
            med(d, |s| s.daemon_us),
            med(v, |s| s.daemon_us),
            med(d, |s| s.harness_us),
            med(v, |s| s.harness_us),
        );
    }

    /// Prints one peak-RSS row.
    pub fn rss_row(&mut self, rss: &Rss) {
        if !self.rss_header {
            self.rss_header = true;
            println!();
            println!(
                "| peak RSS (VmHWM) after all workloads | daxfsd | virtiofsd | ratio d/v \
                 | open descriptors d / v |"
            );
            println!("| --- | ---: | ---: | ---: | ---: |");
        }
        let [d, v] = rss.kib;
        println!(
            "| {} request queue(s) | {} KiB | {} KiB | **{:.2}×** | {} / {} |",
            rss.queues,
            rate(d as f64),
            rate(v as f64),
            d as f64 / v as f64,
            rss.fds[0],
            rss.fds[1]
        );
    }

    /// Prints one DAX cycle row: daxfsd against the limit.
    pub fn dax_row(&mut self, label: &str, daxfsd: &[Sample], limit: &[Sample]) {
        if !self.dax_header {
            self.dax_header = true;
            println!();
            println!(
                "| DAX cycle: SETUPMAPPING + REMOVEMAPPING of 2 MiB | daxfsd cycles/s | limit cycles/s \
                 | ratio (pairs min–max) | daxfsd CPU µs/cycle | harness CPU µs/cycle d / limit |"
            );
            println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        }
        let (d, l) = (
            median(daxfsd.iter().map(|s| s.rate)),
            median(limit.iter().map(|s| s.rate)),
        );
        let (lo, hi) = spread(daxfsd.iter().zip(limit).map(|(a, b)| a.rate / b.rate));
        println!(
            "| {label} | {} | {} | **{:.2}×** ({:.2}–{:.2}) | {:.1} | {:.1} / {:.1} |",
            rate(d),
            rate(l),
            d / l,
            lo,
            hi,
            median(daxfsd.iter().map(|s| s.daemon_us)),
            median(daxfsd.iter().map(|s| s.harness_us)),
            median(limit.iter().map(|s| s.harness_us)),
        );
    }
}

impl Table {
    /// Prints what a cycle through daxfsd is made of: two FUSE round trips (a
    /// SETUPMAPPING and a REMOVEMAPPING), two backend-channel round trips (the
    /// SHMEM_MAP and SHMEM_UNMAP with their acks) and the map and unmap themselves,
    /// each measured alone; their sum is the floor of a cycle with this protocol.
    pub fn dax_breakdown(
        &mut self, daxfsd: &[Sample], fuse: &[Sample], socket: &[Sample], map: &[Sample],
    ) {
        let (cycle, fuse, socket, map) = (
            us_per_op(daxfsd),
            us_per_op(fuse),
            us_per_op(socket),
            us_per_op(map),
        );
        let floor = cycle_floor(fuse, socket, map);
        println!();
        println!(
            "| 1 queue, µs per cycle (medians) | FUSE round trip (GETATTR) | socket round trip \
             | map + unmap | floor: 2 FUSE + 2 socket + map/unmap | daxfsd cycle | floor / daxfsd |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        println!(
            "| each part alone | {fuse:.1} | {socket:.1} | {map:.1} | {floor:.1} | {cycle:.1} | **{:.2}×** |",
            floor / cycle
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median([]).is_nan());
    }

    #[test]
    fn rates_get_separators() {
        assert_eq!(rate(1234567.4), "1,234,567");
        assert_eq!(rate(999.0), "999");
        assert_eq!(rate(1000.0), "1,000");
        assert_eq!(rate(f64::NAN), "-");
    }
}
