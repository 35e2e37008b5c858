//! Every metric family tcpmon exports, as a named value: name, help, type and label names
//! together, as node_exporter's typed descriptors keep them. The collector announces [`ALL`];
//! `families::build` fills each one by name.
use prometheus::proto::{Metric, MetricFamily, MetricType};

/// One metric family's fixed parts.
#[derive(Debug)]
pub struct FamilyDesc {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    /// Label names, in the order every series of the family carries them.
    pub labels: &'static [&'static str],
}

impl FamilyDesc {
    /// The family with these series.
    pub fn with(&self, metrics: Vec<Metric>) -> MetricFamily {
        let mut family = MetricFamily::default();
        family.set_name(self.name.to_string());
        family.set_help(self.help.to_string());
        family.set_field_type(self.kind);
        family.set_metric(metrics);
        family
    }
}

pub const STATE_TRANSITIONS: FamilyDesc = FamilyDesc {
    name: "tcpmon_state_transitions_total",
    help: "TCP state transitions seen on sock:inet_sock_set_state.",
    kind: MetricType::COUNTER,
    labels: &["family", "old_state", "new_state"],
};

pub const STATE_DURATION: FamilyDesc = FamilyDesc {
    name: "tcpmon_state_duration_seconds",
    help: "Time sockets spent in a TCP state before leaving it (ESTABLISHED: connection lifetime).",
    kind: MetricType::HISTOGRAM,
    labels: &["state"],
};

pub const STATE_DURATION_UNMEASURED: FamilyDesc = FamilyDesc {
    name: "tcpmon_state_duration_unmeasured_total",
    help: "Transitions whose time in the old state could not be measured: the socket predates the agent or was evicted (untracked), or its entry was stale after address reuse (stale_entry).",
    kind: MetricType::COUNTER,
    labels: &["reason"],
};

pub const HANDSHAKES: FamilyDesc = FamilyDesc {
    name: "tcpmon_handshakes_total",
    help: "Three-way handshakes by outcome: client established, refused (RST), timeout, unreachable (ICMP), aborted (closed by the application); server established, reset. workload: the socket's owner (systemd unit, NAMESPACE/POD, container/ID, host; other beyond --max-workloads).",
    kind: MetricType::COUNTER,
    labels: &["side", "result", "port", "workload"],
};

pub const HANDSHAKE_DURATION: FamilyDesc = FamilyDesc {
    name: "tcpmon_handshake_duration_seconds",
    help: "Handshake time of established connections: client from SYN sent to ESTABLISHED, server from SYN-ACK sent to the final ACK.",
    kind: MetricType::HISTOGRAM,
    labels: &["side", "port"],
};

pub const HANDSHAKE_DURATION_UNMEASURED: FamilyDesc = FamilyDesc {
    name: "tcpmon_handshake_duration_unmeasured_total",
    help: "Established handshakes with no time recorded (client: connect began before the agent; server: SYN-ACK retransmitted or SYN cookie).",
    kind: MetricType::COUNTER,
    labels: &["side"],
};

pub const HANDSHAKE_RETRANSMITS: FamilyDesc = FamilyDesc {
    name: "tcpmon_handshake_retransmits_total",
    help: "Handshake segments sent again: SYNs a client retransmitted (side=client, port=the remote port) and SYN-ACKs a server retransmitted (side=server, port=the listening port).",
    kind: MetricType::COUNTER,
    labels: &["side", "port"],
};

pub const LISTEN_QUEUE_LENGTH: FamilyDesc = FamilyDesc {
    name: "tcpmon_listen_queue_length",
    help: "Connections in the accept queues of the port's listeners, waiting for accept() (ss -lt Recv-Q).",
    kind: MetricType::GAUGE,
    labels: &["port"],
};

pub const LISTEN_QUEUE_LIMIT: FamilyDesc = FamilyDesc {
    name: "tcpmon_listen_queue_limit",
    help: "The accept queue limits of the port's listeners: the listen() backlog capped by net.core.somaxconn (ss -lt Send-Q). The kernel queues one more than the limit before it drops.",
    kind: MetricType::GAUGE,
    labels: &["port"],
};

pub const LISTEN_DROPS: FamilyDesc = FamilyDesc {
    name: "tcpmon_listen_drops_total",
    help: "SYNs and final ACKs the port's listeners dropped, mostly because the accept queue was full (the listeners' share of TcpExtListenDrops); closed listeners' drops stay counted.",
    kind: MetricType::COUNTER,
    labels: &["port"],
};

pub const RESETS: FamilyDesc = FamilyDesc {
    name: "tcpmon_resets_total",
    help: "TCP resets sent and received, by the socket's state (none: a segment that matched no socket), the kernel's reason (Linux 6.10+ for sent resets; unknown otherwise) and service port.",
    kind: MetricType::COUNTER,
    labels: &["direction", "state", "reason", "port"],
};

pub const RESETS_UNCOUNTED: FamilyDesc = FamilyDesc {
    name: "tcpmon_resets_uncounted_total",
    help: "Resets not in tcpmon_resets_total: the first of a new series when the series map was full or locked by a run the reset interrupted.",
    kind: MetricType::COUNTER,
    labels: &[],
};

pub const LISTENERS_UNTRACKED: FamilyDesc = FamilyDesc {
    name: "tcpmon_listeners_untracked_total",
    help: "Listening sockets the program's listener table had no room for: their queues and drops are not in the listen families.",
    kind: MetricType::COUNTER,
    labels: &[],
};

pub const TEARDOWNS: FamilyDesc = FamilyDesc {
    name: "tcpmon_teardowns_total",
    help: "Connections ended, by who closed first (local, remote, simultaneous) and how (fin: the four-way teardown; reset: anything else). workload: the socket's owner, as for tcpmon_handshakes_total.",
    kind: MetricType::COUNTER,
    labels: &["initiator", "kind", "port", "workload"],
};

pub const SOCKETS: FamilyDesc = FamilyDesc {
    name: "tcpmon_sockets",
    help: "TCP sockets now in each state in every network namespace in scope, TIME_WAIT included (orphaned sockets waiting in FIN_WAIT2 are time-wait mini-sockets, counted as TIME_WAIT).",
    kind: MetricType::GAUGE,
    labels: &["state"],
};

pub const OLDEST_SOCKET_AGE: FamilyDesc = FamilyDesc {
    name: "tcpmon_oldest_socket_age_seconds",
    help: "How long the socket longest in each state has been in it (sockets tcpmon saw enter it; TIME_WAIT not tracked): a CLOSE_WAIT leak, a FIN_WAIT2 waiting for its peer, a connect retrying.",
    kind: MetricType::GAUGE,
    labels: &["state", "port"],
};

pub const TRACKED_SOCKETS: FamilyDesc = FamilyDesc {
    name: "tcpmon_tracked_sockets",
    help: "Sockets in the eBPF per-socket map now.",
    kind: MetricType::GAUGE,
    labels: &[],
};

pub const TRACKED_SOCKETS_EVICTED: FamilyDesc = FamilyDesc {
    name: "tcpmon_tracked_sockets_evicted_total",
    help: "Per-socket map entries evicted before their socket closed (map full, or a CLOSE never seen).",
    kind: MetricType::COUNTER,
    labels: &[],
};

pub const BUILD_INFO: FamilyDesc = FamilyDesc {
    name: "tcpmon_build_info",
    help: "tcpmon build information; value 1.",
    kind: MetricType::GAUGE,
    labels: &["version"],
};

pub const EVENTS: FamilyDesc = FamilyDesc {
    name: "tcpmon_events_total",
    help: "Tail events the eBPF program wrote to its ring buffer (only while a tail client is connected).",
    kind: MetricType::COUNTER,
    labels: &[],
};

pub const EVENTS_DROPPED: FamilyDesc = FamilyDesc {
    name: "tcpmon_events_dropped_total",
    help: "Events lost: ringbuf_full (the tail ring buffer was full), client_slow (a tail client's queue was full), recent_ringbuf_full (the trouble ring buffer behind tail --recent was full).",
    kind: MetricType::COUNTER,
    labels: &["reason"],
};

pub const TAIL_CLIENTS: FamilyDesc = FamilyDesc {
    name: "tcpmon_tail_clients",
    help: "tcpmon tail clients connected now.",
    kind: MetricType::GAUGE,
    labels: &[],
};

pub const PROGRAM_RUNS: FamilyDesc = FamilyDesc {
    name: "tcpmon_bpf_program_runs_total",
    help: "Runs of the eBPF program, counted by the kernel only while kernel.bpf_stats_enabled is 1 (see tcpmon_bpf_stats_enabled).",
    kind: MetricType::COUNTER,
    labels: &[],
};

pub const PROGRAM_RUN_SECONDS: FamilyDesc = FamilyDesc {
    name: "tcpmon_bpf_program_run_seconds_total",
    help: "Time spent in the eBPF program, counted by the kernel only while kernel.bpf_stats_enabled is 1.",
    kind: MetricType::COUNTER,
    labels: &[],
};

pub const PROGRAM_MISSED_RUNS: FamilyDesc = FamilyDesc {
    name: "tcpmon_bpf_program_missed_runs_total",
    help: "Transitions tcpmon did not count: the kernel skipped the program's run (it would have nested in its own run on that CPU) and the cover program did not count the transition instead.",
    kind: MetricType::COUNTER,
    labels: &[],
};

pub const PROGRAM_COVERED_RUNS: FamilyDesc = FamilyDesc {
    name: "tcpmon_bpf_program_covered_runs_total",
    help: "Transitions the kernel skipped the program's run for (it would have nested in its own run on that CPU) that the cover program counted instead.",
    kind: MetricType::COUNTER,
    labels: &[],
};

pub const SOCKET_MAP_BUSY: FamilyDesc = FamilyDesc {
    name: "tcpmon_tracked_sockets_busy_total",
    help: "Per-socket map updates the kernel refused because the run they interrupted on the same CPU held the map's lock; the socket's next transitions count as untracked or stale.",
    kind: MetricType::COUNTER,
    labels: &[],
};

pub const BPF_STATS_ENABLED: FamilyDesc = FamilyDesc {
    name: "tcpmon_bpf_stats_enabled",
    help: "1 while kernel.bpf_stats_enabled is on and the program's run count and time are being counted; 0 otherwise.",
    kind: MetricType::GAUGE,
    labels: &[],
};

pub const SCRAPE_COLLECT_DURATION: FamilyDesc = FamilyDesc {
    name: "tcpmon_scrape_collect_duration_seconds",
    help:
        "How long the previous scrape took to read the kernel maps and count sockets (every part).",
    kind: MetricType::GAUGE,
    labels: &[],
};

pub const SCRAPE_COLLECTOR_SUCCESS: FamilyDesc = FamilyDesc {
    name: "tcpmon_scrape_collector_success",
    help: "Whether each part of this scrape succeeded (1) or failed (0, its families left out, the error on stderr).",
    kind: MetricType::GAUGE,
    labels: &["collector"],
};

pub const SCRAPE_COLLECTOR_DURATION: FamilyDesc = FamilyDesc {
    name: "tcpmon_scrape_collector_duration_seconds",
    help: "How long each part of this scrape took.",
    kind: MetricType::GAUGE,
    labels: &["collector"],
};

pub const SCRAPE_ERRORS: FamilyDesc = FamilyDesc {
    name: "tcpmon_scrape_errors_total",
    help: "Scrapes in which some part failed (tcpmon_scrape_collector_success says which); the other parts' families are still there.",
    kind: MetricType::COUNTER,
    labels: &[],
};

/// Every family, in exposition order.
pub const ALL: [&FamilyDesc; 32] = [
    &STATE_TRANSITIONS,
    &STATE_DURATION,
    &STATE_DURATION_UNMEASURED,
    &HANDSHAKES,
    &HANDSHAKE_DURATION,
    &HANDSHAKE_DURATION_UNMEASURED,
    &HANDSHAKE_RETRANSMITS,
    &LISTEN_QUEUE_LENGTH,
    &LISTEN_QUEUE_LIMIT,
    &LISTEN_DROPS,
    &RESETS,
    &RESETS_UNCOUNTED,
    &LISTENERS_UNTRACKED,
    &TEARDOWNS,
    &SOCKETS,
    &OLDEST_SOCKET_AGE,
    &TRACKED_SOCKETS,
    &TRACKED_SOCKETS_EVICTED,
    &BUILD_INFO,
    &EVENTS,
    &EVENTS_DROPPED,
    &TAIL_CLIENTS,
    &PROGRAM_RUNS,
    &PROGRAM_RUN_SECONDS,
    &PROGRAM_MISSED_RUNS,
    &PROGRAM_COVERED_RUNS,
    &SOCKET_MAP_BUSY,
    &BPF_STATS_ENABLED,
    &SCRAPE_COLLECT_DURATION,
    &SCRAPE_COLLECTOR_SUCCESS,
    &SCRAPE_COLLECTOR_DURATION,
    &SCRAPE_ERRORS,
];
