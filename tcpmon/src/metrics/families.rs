//! Turning one read of the kernel maps (and the socket counts) into Prometheus metric families.
//! Pure functions, tested without root against hand-made snapshots.
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily};
use tcpmon_common::{counter, handshake, reset, side, teardown, FAMILY_SLOTS};

use std::collections::BTreeMap;

use super::{
    descriptors, histogram,
    listeners::{self, PortQueue},
    ports::PortTable,
    resets, socket_ages,
    socket_states::SocketCounts,
    workloads::ByWorkload,
};
use crate::{
    probe::{prog_stats::ProgramStats, resets::ReasonNames, Snapshot},
    state::{TcpState, FAMILY_LABELS},
};

/// (side, result) label values by `HANDSHAKE_*` index.
const HANDSHAKE_LABELS: [(&str, &str); handshake::RESULTS as usize] = [
    ("client", "established"),
    ("client", "refused"),
    ("client", "timeout"),
    ("client", "unreachable"),
    ("client", "aborted"),
    ("server", "established"),
    ("server", "reset"),
];
const SIDE_LABELS: [&str; side::SLOTS as usize] = ["client", "server"];
const INITIATOR_LABELS: [&str; teardown::INITIATORS as usize] = ["local", "remote", "simultaneous"];
const KIND_LABELS: [&str; teardown::KINDS as usize] = ["fin", "reset"];

/// The program's runs, as the main program and its cover together report them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramRuns {
    /// The main program's runs: one per transition it ran for.
    pub runs: u64,
    /// Time spent in both programs: what tcpmon costs the kernel.
    pub run_time_ns: u64,
    /// Transitions neither counted; `None` where the kernel does not report its skips.
    pub missed: Option<u64>,
}

impl ProgramRuns {
    /// From the programs' statistics (the main program, its cover, then the others), read
    /// before `covered` (the cover's count, from the snapshot): a skip counted after the stats
    /// were read may already be covered, so the difference can only fall short of the truth,
    /// never exceed it. The other programs' skips are missed: they have no cover.
    pub fn of(programs: &[ProgramStats], covered: u64) -> ProgramRuns {
        let [main, _, others @ ..] = programs else {
            return ProgramRuns::default();
        };
        let others_missed: u64 = others.iter().filter_map(|p| p.recursion_misses).sum();
        ProgramRuns {
            runs: main.run_count,
            run_time_ns: programs.iter().map(|p| p.run_time_ns).sum(),
            missed: main
                .recursion_misses
                .map(|m| m.saturating_sub(covered) + others_missed),
        }
    }
}

/// What one scrape reads, besides the kernel maps. What a failed part of the scrape would
/// have given is `None`, and its families are left out (see `scrape_parts`).
pub struct ScrapeInput<'a> {
    pub snapshot: &'a Snapshot,
    /// Handshakes and teardowns by workload label value.
    pub by_workload: &'a ByWorkload,
    pub ports: &'a PortTable,
    pub sockets: Option<&'a SocketCounts>,
    /// Listeners summed per port.
    pub listen: Option<&'a BTreeMap<u16, PortQueue>>,
    pub resets: &'a [(reset::Key, u64)],
    pub now_ns: u64,
    pub reset_reasons: &'a ReasonNames,
    pub tracked: Option<Tracked<'a>>,
    /// Tail events dropped in userspace because a client was slow.
    pub dropped_slow: u64,
    pub tail_clients: usize,
    pub program: Option<ProgramRuns>,
    pub bpf_stats_enabled: bool,
    pub last_collect_seconds: f64,
}

/// What the per-socket map holds.
#[derive(Clone, Copy, Debug)]
pub struct Tracked<'a> {
    pub count: u64,
    pub evicted: u64,
    /// By (state, port slot), when the oldest tracked socket entered it (on the clock of
    /// `ScrapeInput::now_ns`).
    pub oldest_entered_ns: &'a BTreeMap<(i32, u16), u64>,
}

/// The families of one scrape; a family with no series yet is left out (the text format has
/// no way to show an empty one).
pub fn build(input: &ScrapeInput) -> Vec<MetricFamily> {
    let s = input.snapshot;
    // A part that failed gives no series, and its families are left out below.
    let or_none = |present: bool, series: Vec<Metric>| if present { series } else { Vec::new() };
    let p = input.program.unwrap_or_default();
    let program = input.program.is_some();
    let tracked = input.tracked;
    let c = |slot: u32| s.counters[slot as usize] as f64;
    let mut all = vec![
        descriptors::STATE_TRANSITIONS.with(transitions(s)),
        descriptors::STATE_DURATION.with(state_durations(s)),
        descriptors::STATE_DURATION_UNMEASURED.with(vec![
            counter(&[("reason", "untracked")], c(counter::UNTRACKED)),
            counter(&[("reason", "stale_entry")], c(counter::STALE_ENTRIES)),
        ]),
        descriptors::HANDSHAKES.with(handshakes(input.by_workload, input.ports)),
        descriptors::HANDSHAKE_DURATION.with(handshake_durations(s, input.ports)),
        descriptors::HANDSHAKE_DURATION_UNMEASURED.with(vec![
            counter(&[("side", "client")], c(counter::CLIENT_HANDSHAKE_UNTIMED)),
            counter(&[("side", "server")], c(counter::SERVER_HANDSHAKE_UNTIMED)),
        ]),
        descriptors::HANDSHAKE_RETRANSMITS.with(handshake_retransmits(s, input.ports)),
    ];
    if let Some(listen) = input.listen {
        all.extend(listeners::families(input.ports, listen));
    }
    all.extend([
        descriptors::RESETS.with(resets::series(
            input.ports,
            input.resets,
            input.reset_reasons,
        )),
        descriptors::RESETS_UNCOUNTED.with(vec![counter(&[], c(counter::RESETS_UNCOUNTED))]),
        descriptors::LISTENERS_UNTRACKED.with(vec![counter(&[], c(counter::LISTENERS_UNTRACKED))]),
        descriptors::TEARDOWNS.with(teardowns(input.by_workload, input.ports)),
        descriptors::SOCKETS.with(input.sockets.map(sockets).unwrap_or_default()),
        descriptors::OLDEST_SOCKET_AGE.with(
            tracked
                .map(|t| socket_ages::series(input.ports, t.oldest_entered_ns, input.now_ns))
                .unwrap_or_default(),
        ),
        descriptors::TRACKED_SOCKETS.with(
            tracked
                .map(|t| vec![gauge(&[], t.count as f64)])
                .unwrap_or_default(),
        ),
        descriptors::TRACKED_SOCKETS_EVICTED.with(
            tracked
                .map(|t| vec![counter(&[], t.evicted as f64)])
                .unwrap_or_default(),
        ),
        descriptors::BUILD_INFO.with(vec![gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)]),
        descriptors::EVENTS.with(vec![counter(&[], c(counter::EVENTS))]),
        descriptors::EVENTS_DROPPED.with(vec![
            counter(&[("reason", "ringbuf_full")], c(counter::EVENTS_DROPPED)),
            counter(&[("reason", "client_slow")], input.dropped_slow as f64),
            counter(
                &[("reason", "recent_ringbuf_full")],
                c(counter::TROUBLE_DROPPED),
            ),
        ]),
        descriptors::TAIL_CLIENTS.with(vec![gauge(&[], input.tail_clients as f64)]),
        descriptors::PROGRAM_RUNS.with(or_none(program, vec![counter(&[], p.runs as f64)])),
        descriptors::PROGRAM_RUN_SECONDS.with(or_none(
            program,
            vec![counter(&[], p.run_time_ns as f64 / 1e9)],
        )),
        // Absent, not 0, where the kernel does not count them (before Linux 5.12).
        descriptors::PROGRAM_MISSED_RUNS.with(
            p.missed
                .map(|missed| vec![counter(&[], missed as f64)])
                .unwrap_or_default(),
        ),
        descriptors::PROGRAM_COVERED_RUNS.with(vec![counter(&[], c(counter::COVERED))]),
        descriptors::SOCKET_MAP_BUSY.with(vec![counter(&[], c(counter::SOCKET_MAP_BUSY))]),
        descriptors::BPF_STATS_ENABLED.with(vec![gauge(
            &[],
            f64::from(u8::from(input.bpf_stats_enabled)),
        )]),
        descriptors::SCRAPE_COLLECT_DURATION.with(vec![gauge(&[], input.last_collect_seconds)]),
    ]);
    all.into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect()
}

/// `tcpmon_scrape_errors_total`: the collector's own count, present in every scrape.
pub fn scrape_errors(count: u64) -> MetricFamily {
    descriptors::SCRAPE_ERRORS.with(vec![counter(&[], count as f64)])
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
        .filter(|state| s.dwell[*state as usize].count() > 0)
        .map(|state| {
            let mut metric = Metric::from_label(labels(&[("state", state.name())]));
            metric.set_histogram(histogram::to_proto(&s.dwell[state as usize]));
            metric
        })
        .collect()
}

fn handshakes(w: &ByWorkload, ports: &PortTable) -> Vec<Metric> {
    w.handshakes
        .iter()
        .filter(|(_, &value)| value > 0)
        .filter_map(|((index, workload), &value)| {
            let (slot, result) = (index / handshake::RESULTS, index % handshake::RESULTS);
            let (side, name) = HANDSHAKE_LABELS.get(result as usize)?;
            let labels = [
                ("side", *side),
                ("result", *name),
                ("port", ports.label(slot)),
                ("workload", workload.as_str()),
            ];
            Some(counter(&labels, value as f64))
        })
        .collect()
}

/// Per-port handshake histograms list every other bound (4^k µs) to keep the series count
/// per port low; the counts at those bounds are exact.
fn handshake_durations(s: &Snapshot, ports: &PortTable) -> Vec<Metric> {
    let mut metrics = Vec::new();
    for slot in ports.slots() {
        for (side, side_name) in (0..).zip(SIDE_LABELS) {
            let Some(index) = handshake::side_index(slot, side) else {
                continue;
            };
            let h = &s.handshake_duration[index as usize];
            if h.count() > 0 {
                let pairs = [("side", side_name), ("port", ports.label(slot))];
                let mut metric = Metric::from_label(labels(&pairs));
                metric.set_histogram(histogram::to_proto_every(h, 2));
                metrics.push(metric);
            }
        }
    }
    metrics
}

fn handshake_retransmits(s: &Snapshot, ports: &PortTable) -> Vec<Metric> {
    let mut metrics = Vec::new();
    for slot in ports.slots() {
        for (side, side_name) in (0..).zip(SIDE_LABELS) {
            let index = handshake::side_index(slot, side);
            let value = index.map_or(0, |i| s.handshake_retransmits[i as usize]);
            if value > 0 {
                let pairs = [("side", side_name), ("port", ports.label(slot))];
                metrics.push(counter(&pairs, value as f64));
            }
        }
    }
    metrics
}

fn teardowns(w: &ByWorkload, ports: &PortTable) -> Vec<Metric> {
    let per_slot = teardown::INITIATORS * teardown::KINDS;
    w.teardowns
        .iter()
        .filter(|(_, &value)| value > 0)
        .filter_map(|((index, workload), &value)| {
            let (slot, rest) = (index / per_slot, index % per_slot);
            let initiator = INITIATOR_LABELS.get((rest / teardown::KINDS) as usize)?;
            let kind = KIND_LABELS.get((rest % teardown::KINDS) as usize)?;
            let labels = [
                ("initiator", *initiator),
                ("kind", *kind),
                ("port", ports.label(slot)),
                ("workload", workload.as_str()),
            ];
            Some(counter(&labels, value as f64))
        })
        .collect()
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

pub(super) fn counter(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value);
    let mut metric = Metric::from_label(labels(pairs));
    metric.set_counter(c);
    metric
}

pub(super) fn gauge(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut metric = Metric::from_label(labels(pairs));
    metric.set_gauge(g);
    metric
}

#[cfg(test)]
#[path = "families_tests.rs"]
mod tests;
