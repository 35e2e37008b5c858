//! Log2 dwell-time histograms, aggregated in the kernel.

/// Finite dwell buckets: bucket `i` counts dwell times `<= 2^i` microseconds, `i` in `0..=32`
/// (1 µs .. about 71.6 minutes). One more bucket holds everything longer (`+Inf`).
pub const DWELL_FINITE_BUCKETS: usize = 33;
pub const DWELL_BUCKETS: usize = DWELL_FINITE_BUCKETS + 1;

/// Log2 histogram of the time sockets spent in one state, aggregated in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DwellHistogram {
    /// Non-cumulative counts per bucket (see [`DWELL_FINITE_BUCKETS`]).
    pub buckets: [u64; DWELL_BUCKETS],
    /// Sum of all observed dwell times, in nanoseconds.
    pub sum_ns: u64,
}
const _: () = assert!(core::mem::size_of::<DwellHistogram>() == 8 * (DWELL_BUCKETS + 1));

impl DwellHistogram {
    /// No observations: the identity for [`DwellHistogram::merge`].
    pub const EMPTY: DwellHistogram = DwellHistogram {
        buckets: [0; DWELL_BUCKETS],
        sum_ns: 0,
    };

    /// Adds `other` (one CPU's histogram) into this one.
    pub fn merge(&mut self, other: &DwellHistogram) {
        for (sum, add) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *sum += add;
        }
        self.sum_ns += other.sum_ns;
    }

    /// The number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Bucket for a dwell time of `ns` nanoseconds: the smallest `i` with `ns <= 2^i µs`.
///
/// Written with shifts and compares only: the BPF instruction set has no count-leading-zeros.
#[inline(always)]
pub fn dwell_bucket(ns: u64) -> usize {
    let us = ns.div_ceil(1000);
    if us <= 1 {
        return 0;
    }
    // ceil(log2(us)) == floor(log2(us - 1)) + 1 for us >= 2.
    let mut v = us - 1;
    let mut log = 0usize;
    if v >= 1 << 32 {
        v >>= 32;
        log += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        log += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        log += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        log += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        log += 2;
    }
    if v >= 1 << 1 {
        log += 1;
    }
    let bucket = log + 1;
    if bucket > DWELL_FINITE_BUCKETS {
        DWELL_FINITE_BUCKETS
    } else {
        bucket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dwell_bucket_is_the_smallest_upper_bound() {
        assert_eq!(dwell_bucket(0), 0);
        assert_eq!(dwell_bucket(1_000), 0);
        assert_eq!(dwell_bucket(1_001), 1);
        assert_eq!(dwell_bucket(2_000), 1);
        assert_eq!(dwell_bucket(2_001), 2);
        assert_eq!(dwell_bucket(4_000), 2);
        assert_eq!(dwell_bucket(4_001), 3);
        assert_eq!(dwell_bucket(1_000_000), 10); // 1 ms <= 1024 µs
        assert_eq!(dwell_bucket((1u64 << 32) * 1000), 32);
        assert_eq!(dwell_bucket((1u64 << 32) * 1000 + 1), DWELL_FINITE_BUCKETS);
        assert_eq!(dwell_bucket(u64::MAX), DWELL_FINITE_BUCKETS);
    }

    #[test]
    fn dwell_bucket_matches_a_float_reference() {
        for ns in (0..50_000_000u64).step_by(997) {
            let us = ns.div_ceil(1000);
            let expected = (0..DWELL_FINITE_BUCKETS)
                .find(|&i| us <= 1u64 << i)
                .unwrap_or(DWELL_FINITE_BUCKETS);
            assert_eq!(dwell_bucket(ns), expected, "ns={ns}");
        }
    }
}
