//! Turning one read of the kernel maps (and the socket counts) into Prometheus metric families.
//! Pure functions, tested without root against hand-made snapshots.
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use tcpmon_common::{
    handshake_duration_index, handshake_index, teardown_index, COUNTER_CLIENT_HANDSHAKE_UNTIMED,
    COUNTER_EVENTS, COUNTER_EVENTS_DROPPED, COUNTER_SERVER_HANDSHAKE_UNTIMED,
    COUNTER_STALE_ENTRIES, COUNTER_UNTRACKED, FAMILY_SLOTS, HANDSHAKE_RESULTS, INITIATORS, KINDS,
    SIDES,
};

use crate::{
    histogram,
    ports::PortTable,
    probe::Snapshot,
    prog_stats::ProgramStats,
    sock_diag::SocketCounts,
    state::{TcpState, FAMILY_LABELS},
};

/// (side, result) label values by `HANDSHAKE_*` index.
const HANDSHAKE_LABELS: [(&str, &str); HANDSHAKE_RESULTS as usize] = [
    ("client", "established"),
    ("client", "refused"),
    ("client", "timeout"),
    ("client", "unreachable"),
    ("client", "aborted"),
    ("server", "established"),
    ("server", "reset"),
];
const SIDE_LABELS: [&str; SIDES as usize] = ["client", "server"];
const INITIATOR_LABELS: [&str; INITIATORS as usize] = ["local", "remote", "simultaneous"];
const KIND_LABELS: [&str; KINDS as usize] = ["fin", "reset"];

/// Name, help and label names of every family, in exposition order.
pub const FAMILIES: [(&str, &str, &[&str]); 19] = [
    ("tcpmon_state_transitions_total", "TCP state transitions seen on sock:inet_sock_set_state.", &["family", "old_state", "new_state"]),
    ("tcpmon_state_duration_seconds", "Time sockets spent in a TCP state before leaving it (ESTABLISHED: connection lifetime).", &["state"]),
    ("tcpmon_state_duration_unmeasured_total", "Transitions whose time in the old state could not be measured: the socket predates the agent or was evicted (untracked), or its entry was stale after address reuse (stale_entry).", &["reason"]),
    ("tcpmon_handshakes_total", "Three-way handshakes by outcome: client established, refused (RST), timeout, unreachable (ICMP), aborted (closed by the application); server established, reset.", &["side", "result", "port"]),
    ("tcpmon_handshake_duration_seconds", "Handshake time of established connections: client from SYN sent to ESTABLISHED, server from SYN-ACK sent to the final ACK.", &["side", "port"]),
    ("tcpmon_handshake_duration_unmeasured_total", "Established handshakes with no time recorded (client: connect began before the agent; server: SYN-ACK retransmitted or SYN cookie).", &["side"]),
    ("tcpmon_teardowns_total", "Connections ended, by who closed first (local, remote, simultaneous) and how (fin: the four-way teardown; reset: anything else).", &["initiator", "kind", "port"]),
    ("tcpmon_sockets", "TCP sockets now in each state, TIME_WAIT included, as sock_diag (ss) reports them.", &["state"]),
    ("tcpmon_tracked_sockets", "Sockets in the eBPF per-socket map now.", &[]),
    ("tcpmon_tracked_sockets_evicted_total", "Per-socket map entries evicted before their socket closed (map full, or a CLOSE never seen).", &[]),
    ("tcpmon_build_info", "tcpmon build information; value 1.", &["version"]),
    ("tcpmon_events_total", "Tail events the eBPF program wrote to its ring buffer (only while a tail client is connected).", &[]),
    ("tcpmon_events_dropped_total", "Tail events lost: ringbuf_full (the kernel's ring buffer was full), client_slow (a tail client's queue was full).", &["reason"]),
    ("tcpmon_tail_clients", "tcpmon tail clients connected now.", &[]),
    ("tcpmon_bpf_program_runs_total", "Runs of the eBPF program, counted by the kernel only while kernel.bpf_stats_enabled is 1 (see tcpmon_bpf_stats_enabled).", &[]),
    ("tcpmon_bpf_program_run_seconds_total", "Time spent in the eBPF program, counted by the kernel only while kernel.bpf_stats_enabled is 1.", &[]),
    ("tcpmon_bpf_program_missed_runs_total", "Transitions the kernel did not run the program for because another BPF program was running on that CPU (recursion misses): transitions tcpmon did not count.", &[]),
    ("tcpmon_bpf_stats_enabled", "1 while kernel.bpf_stats_enabled is on and the program's run count and time are being counted; 0 otherwise.", &[]),
    ("tcpmon_scrape_collect_duration_seconds", "How long the previous scrape took to read the kernel maps and count sockets.", &[]),
];

/// What one scrape reads, besides the kernel maps.
pub struct ScrapeInput<'a> {
    pub snapshot: &'a Snapshot,
    pub ports: &'a PortTable,
    pub sockets: &'a SocketCounts,
    pub tracked: u64,
    pub evicted: u64,
    /// Tail events dropped in userspace because a client was slow.
    pub dropped_slow: u64,
    pub tail_clients: usize,
    pub program: ProgramStats,
    pub bpf_stats_enabled: bool,
    pub last_collect_seconds: f64,
}

/// The families of one scrape; a family with no series yet is left out (the text format has
/// no way to show an empty one).
pub fn build(input: &ScrapeInput) -> Vec<MetricFamily> {
    let s = input.snapshot;
    let p = input.program;
    let c = |slot: u32| s.counters[slot as usize] as f64;
    let all = vec![
        family(0, MetricType::COUNTER, transitions(s)),
        family(1, MetricType::HISTOGRAM, state_durations(s)),
        family(
            2,
            MetricType::COUNTER,
            vec![
                counter(&[("reason", "untracked")], c(COUNTER_UNTRACKED)),
                counter(&[("reason", "stale_entry")], c(COUNTER_STALE_ENTRIES)),
            ],
        ),
        family(3, MetricType::COUNTER, handshakes(s, input.ports)),
        family(
            4,
            MetricType::HISTOGRAM,
            handshake_durations(s, input.ports),
        ),
        family(
            5,
            MetricType::COUNTER,
            vec![
                counter(&[("side", "client")], c(COUNTER_CLIENT_HANDSHAKE_UNTIMED)),
                counter(&[("side", "server")], c(COUNTER_SERVER_HANDSHAKE_UNTIMED)),
            ],
        ),
        family(6, MetricType::COUNTER, teardowns(s, input.ports)),
        family(7, MetricType::GAUGE, sockets(input.sockets)),
        family(8, MetricType::GAUGE, vec![gauge(&[], input.tracked as f64)]),
        family(
            9,
            MetricType::COUNTER,
            vec![counter(&[], input.evicted as f64)],
        ),
        family(
            10,
            MetricType::GAUGE,
            vec![gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
        ),
        family(
            11,
            MetricType::COUNTER,
            vec![counter(&[], c(COUNTER_EVENTS))],
        ),
        family(
            12,
            MetricType::COUNTER,
            vec![
                counter(&[("reason", "ringbuf_full")], c(COUNTER_EVENTS_DROPPED)),
                counter(&[("reason", "client_slow")], input.dropped_slow as f64),
            ],
        ),
        family(
            13,
            MetricType::GAUGE,
            vec![gauge(&[], input.tail_clients as f64)],
        ),
        family(
            14,
            MetricType::COUNTER,
            vec![counter(&[], p.run_count as f64)],
        ),
        family(
            15,
            MetricType::COUNTER,
            vec![counter(&[], p.run_time_ns as f64 / 1e9)],
        ),
        family(
            16,
            MetricType::COUNTER,
            // Absent, not 0, where the kernel does not count them (before Linux 6.7).
            p.recursion_misses
                .map(|misses| vec![counter(&[], misses as f64)])
                .unwrap_or_default(),
        ),
        family(
            17,
            MetricType::GAUGE,
            vec![gauge(&[], f64::from(u8::from(input.bpf_stats_enabled)))],
        ),
        family(
            18,
            MetricType::GAUGE,
            vec![gauge(&[], input.last_collect_seconds)],
        ),
    ];
    all.into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect()
}

/// Counters for every transition seen at least once.
fn transitions(s: &Snapshot) -> Vec<Metric> {
    let mut metrics = Vec::new();
    for family_slot in 0..FAMILY_SLOTS {
        for old in TcpState::ALL {
            for new in TcpState::ALL {
                let index = tcpmon_common::transition_index(family_slot, old as u32, new as u32);
                let value = index.map_or(0, |i| s.transitions[i as usize]);
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

/// A full-resolution histogram for every state some socket has left.
fn state_durations(s: &Snapshot) -> Vec<Metric> {
    TcpState::ALL
        .into_iter()
        .filter(|state| histogram::count(&s.dwell[*state as usize]) > 0)
        .map(|state| {
            let mut metric = Metric::from_label(labels(&[("state", state.name())]));
            metric.set_histogram(histogram::to_proto(&s.dwell[state as usize]));
            metric
        })
        .collect()
}

fn handshakes(s: &Snapshot, ports: &PortTable) -> Vec<Metric> {
    let mut metrics = Vec::new();
    for slot in ports.slots() {
        for (result, (side, name)) in (0..).zip(HANDSHAKE_LABELS) {
            let value = handshake_index(slot, result).map_or(0, |i| s.handshakes[i as usize]);
            if value > 0 {
                let labels = [
                    ("side", side),
                    ("result", name),
                    ("port", ports.label(slot)),
                ];
                metrics.push(counter(&labels, value as f64));
            }
        }
    }
    metrics
}

/// Per-port handshake histograms list every other bound (4^k µs) to keep the series count
/// per port low; the counts at those bounds are exact.
fn handshake_durations(s: &Snapshot, ports: &PortTable) -> Vec<Metric> {
    let mut metrics = Vec::new();
    for slot in ports.slots() {
        for (side, side_name) in (0..).zip(SIDE_LABELS) {
            let Some(index) = handshake_duration_index(slot, side) else {
                continue;
            };
            let h = &s.handshake_duration[index as usize];
            if histogram::count(h) > 0 {
                let pairs = [("side", side_name), ("port", ports.label(slot))];
                let mut metric = Metric::from_label(labels(&pairs));
                metric.set_histogram(histogram::to_proto_every(h, 2));
                metrics.push(metric);
            }
        }
    }
    metrics
}

fn teardowns(s: &Snapshot, ports: &PortTable) -> Vec<Metric> {
    let mut metrics = Vec::new();
    for slot in ports.slots() {
        for (initiator, initiator_name) in (0..).zip(INITIATOR_LABELS) {
            for (kind, kind_name) in (0..).zip(KIND_LABELS) {
                let index = teardown_index(slot, initiator, kind);
                let value = index.map_or(0, |i| s.teardowns[i as usize]);
                if value > 0 {
                    let pairs = [
                        ("initiator", initiator_name),
                        ("kind", kind_name),
                        ("port", ports.label(slot)),
                    ];
                    metrics.push(counter(&pairs, value as f64));
                }
            }
        }
    }
    metrics
}

/// Every state but NEW_SYN_RECV (request sockets), which counts as SYN_RECV, as `ss` shows it.
fn sockets(counts: &SocketCounts) -> Vec<Metric> {
    TcpState::ALL
        .into_iter()
        .filter(|state| *state != TcpState::NewSynRecv)
        .map(|state| {
            let mut n = counts.by_state[state as usize];
            if state == TcpState::SynRecv {
                n += counts.by_state[TcpState::NewSynRecv as usize];
            }
            gauge(&[("state", state.name())], n as f64)
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

#[cfg(test)]
#[path = "families_tests.rs"]
mod tests;
