//! Conversion of the kernel's log2 dwell buckets into Prometheus histograms.
use prometheus::proto;
use tcpmon_common::{DwellHistogram, DWELL_FINITE_BUCKETS};

/// Upper bound of finite bucket `i`, in seconds: 2^i microseconds.
pub fn upper_bound_seconds(i: usize) -> f64 {
    (1u64 << i) as f64 * 1e-6
}

/// The Prometheus form: cumulative buckets with `le` in seconds, `_sum` in seconds, `_count`.
/// The overflow bucket is not listed; it is the difference between `_count` and the last `le`.
pub fn to_proto(h: &DwellHistogram) -> proto::Histogram {
    to_proto_every(h, 1)
}

/// Like [`to_proto`], listing only every `step`-th bound (2^0, 2^step, ... µs). Cumulative
/// counts at the bounds kept are still exact: they are sums of whole kernel buckets.
pub fn to_proto_every(h: &DwellHistogram, step: usize) -> proto::Histogram {
    let mut cumulative = 0;
    let buckets = (0..DWELL_FINITE_BUCKETS)
        .filter_map(|i| {
            cumulative += h.buckets[i];
            (i % step == 0).then(|| {
                let mut bucket = proto::Bucket::default();
                bucket.set_upper_bound(upper_bound_seconds(i));
                bucket.set_cumulative_count(cumulative);
                bucket
            })
        })
        .collect();
    let mut histogram = proto::Histogram::default();
    histogram.set_bucket(buckets);
    histogram.set_sample_count(h.count());
    histogram.set_sample_sum(h.sum_ns as f64 / 1e9);
    histogram
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DwellHistogram {
        let mut h = DwellHistogram::EMPTY;
        h.buckets[0] = 2; // two dwells <= 1 µs
        h.buckets[10] = 3; // three dwells in (512 µs, 1024 µs]
        h.buckets[DWELL_FINITE_BUCKETS] = 1; // one beyond 2^32 µs
        h.sum_ns = 1_500 + 3 * 1_000_000 + 5_000_000_000_000;
        h
    }

    #[test]
    fn buckets_are_cumulative_with_bounds_in_seconds() {
        let p = to_proto(&sample());
        let buckets = p.get_bucket();
        assert_eq!(buckets.len(), DWELL_FINITE_BUCKETS);
        assert_eq!(buckets[0].upper_bound(), 1e-6);
        assert_eq!(buckets[0].cumulative_count(), 2);
        assert_eq!(buckets[9].upper_bound(), 512e-6);
        assert_eq!(buckets[9].cumulative_count(), 2);
        assert_eq!(buckets[10].upper_bound(), 1024e-6);
        assert_eq!(buckets[10].cumulative_count(), 5);
        let last = &buckets[DWELL_FINITE_BUCKETS - 1];
        assert!((last.upper_bound() - 4294.967296).abs() < 1e-9);
        assert!(last.upper_bound() >= 3600.0, "reaches at least an hour");
        assert_eq!(last.cumulative_count(), 5);
    }

    #[test]
    fn coarser_bounds_stay_exact() {
        let p = to_proto_every(&sample(), 2);
        let bounds: Vec<f64> = p.get_bucket().iter().map(|b| b.upper_bound()).collect();
        assert_eq!(bounds.len(), 17, "4^k µs for k = 0..=16");
        assert_eq!(bounds[1], 4e-6);
        assert!((bounds[16] - 4294.967296).abs() < 1e-9);
        let counts: Vec<u64> = p
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        // 2 at <= 1 µs, 3 more at (512, 1024] µs which first shows at le = 1024 µs (index 5).
        assert_eq!(&counts[..6], &[2, 2, 2, 2, 2, 5]);
        assert_eq!(p.get_sample_count(), 6);
    }

    #[test]
    fn count_includes_overflow_and_sum_is_in_seconds() {
        let p = to_proto(&sample());
        assert_eq!(p.get_sample_count(), 6);
        assert!((p.get_sample_sum() - 5000.0030015).abs() < 1e-9);
    }

    #[test]
    fn merge_adds_per_cpu_values() {
        let mut total = DwellHistogram::EMPTY;
        total.merge(&sample());
        total.merge(&sample());
        assert_eq!(total.count(), 12);
        assert_eq!(total.buckets[10], 6);
        assert_eq!(total.sum_ns, 2 * sample().sum_ns);
    }

    #[test]
    fn text_exposition_has_inf_sum_and_count() {
        use prometheus::Encoder;
        let mut family = proto::MetricFamily::default();
        family.set_name("tcpmon_state_duration_seconds".into());
        family.set_help("h".into());
        family.set_field_type(proto::MetricType::HISTOGRAM);
        let mut metric = proto::Metric::default();
        metric.set_histogram(to_proto(&sample()));
        family.set_metric(vec![metric]);
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&[family], &mut out)
            .expect("encodes");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("tcpmon_state_duration_seconds_bucket{le=\"0.000001\"} 2\n"));
        assert!(text.contains("tcpmon_state_duration_seconds_bucket{le=\"0.001024\"} 5\n"));
        assert!(text.contains("tcpmon_state_duration_seconds_bucket{le=\"+Inf\"} 6\n"));
        assert!(text.contains("tcpmon_state_duration_seconds_count 6\n"));
        assert!(text.contains("tcpmon_state_duration_seconds_sum 5000.0030015\n"));
    }
}
