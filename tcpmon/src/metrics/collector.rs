//! The Prometheus collector: at scrape time it reads the kernel's maps and its readers (every
//! listener and namespace at once), gives newly seen listening ports their label, and builds
//! the metric families. There is no per-event work in userspace, and nothing per namespace.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
};
use tcpmon_common::counter;

use super::{
    descriptors,
    families::{self, ProgramRuns, ScrapeInput, Tracked},
    listen_watch::ListenWatch,
    listeners::{self, PortQueue},
    ports::PortTable,
    scrape_parts::Parts,
    socket_states::SocketStates,
    workloads::WorkloadLabels,
};
use crate::{
    clock::monotonic_ns,
    error::Error,
    probe::{prog_stats, Probe},
    tail::agent::hub::Hub,
    workload::{cgroups::Workloads, UNKNOWN},
};

/// What a scrape changes: the probe's port map, the port table, the eviction and missed-run
/// high-water marks.
struct State {
    probe: Probe,
    ports: PortTable,
    evicted: u64,
    /// The highest `tcpmon_bpf_program_missed_runs_total` reported so far.
    missed: u64,
    /// How long the previous collection took.
    last_collect_seconds: f64,
    /// Which workloads have a label value of their own.
    workload_labels: WorkloadLabels,
}

pub struct ProbeCollector {
    state: Mutex<State>,
    /// The namespaces in scope, and what their listeners dropped.
    listen_watch: Arc<ListenWatch>,
    /// The tail's hub, for its drop count.
    hub: Arc<Hub>,
    /// Names of the sockets' cgroups.
    workloads: Arc<Workloads>,
    /// Sockets per state at attach, for `tcpmon_sockets`.
    socket_states: SocketStates,
    collecting: Mutex<()>,
    /// Scrapes in which some part failed (`tcpmon_scrape_errors_total`).
    errors: AtomicU64,
    descs: Vec<Desc>,
}

impl ProbeCollector {
    /// Loads the port table into the program and makes a first discovery of listening ports.
    pub fn new(
        mut probe: Probe,
        ports: PortTable,
        listen_watch: Arc<ListenWatch>,
        hub: Arc<Hub>,
        workloads: Arc<Workloads>,
        socket_states: SocketStates,
        max_workloads: usize,
    ) -> Result<ProbeCollector, Error> {
        for (port, slot) in ports.assignments() {
            probe.set_port_slot(port, slot)?;
        }
        let descs = descriptors::ALL
            .iter()
            .map(|family| {
                let labels = family.labels.iter().map(|l| l.to_string()).collect();
                Desc::new(
                    family.name.to_string(),
                    family.help.to_string(),
                    labels,
                    Default::default(),
                )
                .expect("metric names in descriptors::ALL are valid")
            })
            .collect();
        let collector = ProbeCollector {
            state: Mutex::new(State {
                probe,
                ports,
                evicted: 0,
                missed: 0,
                last_collect_seconds: 0.0,
                workload_labels: WorkloadLabels::new(max_workloads),
            }),
            listen_watch,
            hub,
            workloads,
            socket_states,
            collecting: Mutex::new(()),
            errors: AtomicU64::new(0),
            descs,
        };
        collector.read_listeners()?;
        Ok(collector)
    }

    /// Reads every listener and labels newly seen listening ports: returns the request
    /// sockets, and each port's sums.
    fn read_listeners(&self) -> Result<(u64, BTreeMap<u16, PortQueue>), Error> {
        let listeners = self.listen_watch.listeners().map_err(|cause| Error::Io {
            what: "reading the listeners".into(),
            cause,
        })?;
        let requests = listeners.iter().map(|l| l.requests).sum();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // In port order, as documented: with more ports than `--max-ports`, the lowest win.
        let listening: BTreeSet<u16> = listeners.iter().map(|l| l.port).collect();
        let added = state.ports.discover(listening);
        for (port, slot) in added {
            state.probe.set_port_slot(port, slot)?;
        }
        drop(state);
        Ok((requests, self.listen_watch.observe(&listeners)))
    }

    /// The time-wait sockets of every namespace.
    fn time_wait(&self) -> Result<u64, Error> {
        let namespaces = self
            .listen_watch
            .readers()
            .namespaces()
            .map_err(|cause| Error::Io {
                what: "reading the namespaces' time-wait counts".into(),
                cause,
            })?;
        Ok(namespaces
            .iter()
            .map(|n| u64::try_from(n.time_wait).unwrap_or(0))
            .sum())
    }

    /// One scrape, part by part (`scrape_parts`): a part that fails leaves out only its
    /// families.
    fn families(&self) -> Vec<MetricFamily> {
        // One collection at a time: concurrent scrapes wait instead of each reading the maps.
        let _one_at_a_time = self.collecting.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let mut parts = Parts::default();
        let listen = parts.run("listeners", || self.read_listeners());
        let time_wait = parts.run("namespaces", || self.time_wait());
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let program = parts.run("programs", || state.probe.program_stats());
        // Evictions are not reported by the kernel, but every entry is inserted, deleted on
        // CLOSE, evicted, or still present. Inserts are read before the map is counted and
        // deletes after (with the maps), so `inserts - deletes - live` never exceeds the true
        // count; keeping the maximum makes it monotonic, and it is exact whenever no socket
        // changes state during the scrape.
        let tracked = parts.run("tracked_sockets", || {
            let inserts = state.probe.counters()?[counter::TRACKED_INSERTS as usize];
            Ok((inserts, state.probe.tracked_sockets()?))
        });
        let maps = parts.run("maps", || {
            let snapshot = state.probe.snapshot()?;
            let resets = state.probe.resets()?;
            // Read after the snapshot's uncounted ones: a handshake is in the hash or in those.
            let counts = state.probe.workload_counts()?;
            Ok((snapshot, resets, counts))
        });
        let mut families = match maps {
            Some((snapshot, resets, counts)) => {
                let sockets = match (&listen, time_wait) {
                    (Some((requests, _)), Some(time_wait)) => Some(self.socket_states.counts(
                        &snapshot.transitions,
                        *requests,
                        time_wait,
                    )),
                    _ => None,
                };
                let by_workload =
                    state
                        .workload_labels
                        .split(&counts, &snapshot.workload_uncounted, |id| {
                            self.workloads
                                .name(id)
                                .map_or_else(|| UNKNOWN.to_string(), |n| n.to_string())
                        });
                let deletes = snapshot.counters[counter::TRACKED_DELETES as usize];
                let tracked = tracked.as_ref().map(|(inserts, tracked)| {
                    let estimate = inserts
                        .saturating_sub(deletes)
                        .saturating_sub(tracked.count);
                    state.evicted = state.evicted.max(estimate);
                    Tracked {
                        count: tracked.count,
                        evicted: state.evicted,
                        oldest_entered_ns: &tracked.oldest_entered_ns,
                    }
                });
                let program = program.map(|stats| {
                    let covered = snapshot.counters[counter::COVERED as usize];
                    let mut program = ProgramRuns::of(&stats, covered);
                    // Never backwards: a later scrape can only find more of the truth.
                    program.missed = program.missed.map(|m| m.max(state.missed));
                    state.missed = program.missed.unwrap_or(0);
                    program
                });
                families::build(&ScrapeInput {
                    snapshot: &snapshot,
                    by_workload: &by_workload,
                    ports: &state.ports,
                    sockets: sockets.as_ref(),
                    listen: listen.as_ref().map(|(_, listen)| listen),
                    resets: &resets,
                    reset_reasons: state.probe.reset_reasons(),
                    tracked,
                    now_ns: monotonic_ns(),
                    dropped_slow: self.hub.dropped_slow.load(Ordering::Relaxed),
                    tail_clients: self.hub.subscribers(),
                    program,
                    bpf_stats_enabled: prog_stats::stats_enabled(),
                    last_collect_seconds: state.last_collect_seconds,
                })
            }
            // Without the aggregate maps, what the listeners give still stands.
            None => listen
                .as_ref()
                .map(|(_, listen)| listeners::families(&state.ports, listen))
                .unwrap_or_default(),
        };
        state.last_collect_seconds = started.elapsed().as_secs_f64();
        if !parts.all_succeeded() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        families.extend(parts.families());
        families
    }
}

impl Collector for ProbeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.families();
        let errors = self.errors.load(Ordering::Relaxed);
        families.push(families::scrape_errors(errors));
        families
    }
}
