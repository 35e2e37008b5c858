//! The Prometheus collector: reads the kernel's maps at scrape time and turns them into metric
//! families. There is no per-event work in userspace; a scrape costs a few hundred map reads.
use std::sync::Mutex;

use prometheus::{
    core::{Collector, Desc},
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};
use tcpmon_common::{
    COUNTER_STALE_ENTRIES, COUNTER_TRACKED_DELETES, COUNTER_TRACKED_INSERTS, COUNTER_UNTRACKED,
    FAMILY_SLOTS,
};

use crate::{
    histogram,
    probe::{Probe, Snapshot},
    state::{TcpState, FAMILY_LABELS},
};

/// (name, help, label names) of every family this collector exports.
const FAMILIES: [(&str, &str, &[&str]); 6] = [
    (
        "tcpmon_state_transitions_total",
        "TCP state transitions seen on sock:inet_sock_set_state.",
        &["family", "old_state", "new_state"],
    ),
    (
        "tcpmon_state_duration_seconds",
        "Time sockets spent in a TCP state before leaving it (ESTABLISHED: connection lifetime).",
        &["state"],
    ),
    (
        "tcpmon_state_duration_unmeasured_total",
        "Transitions whose time in the old state could not be measured: the socket predates the agent or was evicted (untracked), or its entry was stale after address reuse (stale_entry).",
        &["reason"],
    ),
    (
        "tcpmon_tracked_sockets",
        "Sockets in the eBPF per-socket map now.",
        &[],
    ),
    (
        "tcpmon_tracked_sockets_evicted_total",
        "Per-socket map entries evicted before their socket closed (map full, or a CLOSE never seen).",
        &[],
    ),
    ("tcpmon_build_info", "tcpmon build information; value 1.", &["version"]),
];

pub struct ProbeCollector {
    probe: Mutex<Probe>,
    descs: Vec<Desc>,
    /// Highest eviction count reported so far; see [`ProbeCollector::evicted`].
    evicted: Mutex<u64>,
}

impl ProbeCollector {
    pub fn new(probe: Probe) -> ProbeCollector {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, labels)| {
                let labels = labels.iter().map(|l| l.to_string()).collect();
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    labels,
                    Default::default(),
                )
                .expect("metric names in FAMILIES are valid")
            })
            .collect();
        ProbeCollector {
            probe: Mutex::new(probe),
            descs,
            evicted: Mutex::new(0),
        }
    }

    /// Evictions are not reported by the kernel, but every entry is inserted, deleted on CLOSE,
    /// evicted, or still present. Inserts are read before the map is counted and deletes after,
    /// so `inserts - deletes - live` never exceeds the true count; keeping the maximum makes it
    /// monotonic, and it is exact whenever no socket changes state during the scrape.
    fn evicted(&self, inserts: u64, live: u64, deletes: u64) -> u64 {
        let estimate = inserts.saturating_sub(deletes).saturating_sub(live);
        let mut evicted = self.evicted.lock().unwrap_or_else(|e| e.into_inner());
        *evicted = (*evicted).max(estimate);
        *evicted
    }

    fn families(&self) -> Result<Vec<MetricFamily>, crate::error::Error> {
        let probe = self.probe.lock().unwrap_or_else(|e| e.into_inner());
        let inserts = probe.counters()?[COUNTER_TRACKED_INSERTS as usize];
        let live = probe.tracked_sockets()?;
        let snapshot = probe.snapshot()?;
        let evicted = self.evicted(
            inserts,
            live,
            snapshot.counters[COUNTER_TRACKED_DELETES as usize],
        );
        Ok(vec![
            family(0, MetricType::COUNTER, transitions(&snapshot)),
            family(1, MetricType::HISTOGRAM, durations(&snapshot)),
            family(2, MetricType::COUNTER, unmeasured(&snapshot)),
            family(3, MetricType::GAUGE, vec![gauge(&[], live as f64)]),
            family(4, MetricType::COUNTER, vec![counter(&[], evicted as f64)]),
            family(
                5,
                MetricType::GAUGE,
                vec![gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
            ),
        ])
    }
}

impl Collector for ProbeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        match self.families() {
            Ok(families) => families,
            Err(e) => {
                // A failed map read leaves the families out; the scrape still succeeds and
                // Prometheus shows the gap instead of stale values.
                eprintln!("tcpmon: scrape: {e}");
                Vec::new()
            }
        }
    }
}

/// Counters for every transition seen at least once.
fn transitions(snapshot: &Snapshot) -> Vec<Metric> {
    let mut metrics = Vec::new();
    for family_slot in 0..FAMILY_SLOTS {
        for old in TcpState::ALL {
            for new in TcpState::ALL {
                let Some(index) =
                    tcpmon_common::transition_index(family_slot, old as u32, new as u32)
                else {
                    continue;
                };
                let value = snapshot.transitions[index as usize];
                if value > 0 {
                    let labels = [
                        ("family", FAMILY_LABELS[family_slot as usize]),
                        ("old_state", old.name()),
                        ("new_state", new.name()),
                    ];
                    metrics.push(counter(&labels, value as f64));
                }
            }
        }
    }
    metrics
}

/// A histogram for every state some socket has left.
fn durations(snapshot: &Snapshot) -> Vec<Metric> {
    TcpState::ALL
        .into_iter()
        .filter_map(|state| {
            let h = &snapshot.dwell[state as usize];
            (histogram::count(h) > 0).then(|| {
                let mut metric = Metric::from_label(labels(&[("state", state.name())]));
                metric.set_histogram(histogram::to_proto(h));
                metric
            })
        })
        .collect()
}

fn unmeasured(snapshot: &Snapshot) -> Vec<Metric> {
    [
        ("untracked", COUNTER_UNTRACKED),
        ("stale_entry", COUNTER_STALE_ENTRIES),
    ]
    .into_iter()
    .map(|(reason, slot)| {
        counter(
            &[("reason", reason)],
            snapshot.counters[slot as usize] as f64,
        )
    })
    .collect()
}

fn family(desc: usize, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let (name, help, _) = FAMILIES[desc];
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value.to_string());
            pair
        })
        .collect()
}

fn counter(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value);
    let mut metric = Metric::from_label(labels(pairs));
    metric.set_counter(c);
    metric
}

fn gauge(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut metric = Metric::from_label(labels(pairs));
    metric.set_gauge(g);
    metric
}
