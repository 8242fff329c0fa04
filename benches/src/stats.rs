//! Order statistics of timings, and the numbers the benchmarks print.

use std::time::Duration;

/// Order statistics of a set of timings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// How many samples.
    pub n: usize,
    /// The smallest.
    pub min: Duration,
    /// The median (nearest rank).
    pub p50: Duration,
    /// The 99th percentile (nearest rank).
    pub p99: Duration,
    /// The largest.
    pub max: Duration,
    /// The arithmetic mean.
    pub mean: Duration,
}

impl Summary {
    /// The statistics of `samples`; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_unstable();
        let total: Duration = s.iter().sum();
        let n = s.len();
        Some(Summary {
            n,
            min: s[0],
            p50: s[rank(n, 50.0)],
            p99: s[rank(n, 99.0)],
            max: s[n - 1],
            mean: total / u32::try_from(n).unwrap_or(u32::MAX),
        })
    }
}

/// The index of the `p`th percentile of `n` sorted samples (nearest rank).
fn rank(n: usize, p: f64) -> usize {
    let r = (p / 100.0 * n as f64).ceil() as usize;
    r.clamp(1, n) - 1
}

/// Mebibytes per second for `bytes` in `elapsed`.
pub fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64().max(1e-9)
}

/// `a / b`, formatted as `0.88x`.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "n/a".to_owned()
    }
}

/// A duration in milliseconds with 1 decimal (`812.3 ms`).
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// A duration in microseconds, no decimals (`412 µs`).
pub fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// The median of `values` (the lower middle for an even count); `0.0` when empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = Summary::of(&samples).unwrap();
        assert_eq!(s.n, 100);
        assert_eq!(s.min, Duration::from_millis(1));
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        let ten: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(Summary::of(&ten).unwrap().p50, Duration::from_millis(5));
        assert_eq!(Summary::of(&ten).unwrap().p99, Duration::from_millis(10));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn throughput_and_ratio_are_formatted_for_the_report() {
        assert!((mib_per_s(256 << 20, Duration::from_secs(2)) - 128.0).abs() < 1e-9);
        assert_eq!(ratio(123.4, 140.0), "0.88x");
        assert_eq!(ratio(1.0, 0.0), "n/a");
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }
}
