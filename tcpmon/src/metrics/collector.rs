//! The Prometheus collector: at scrape time it counts sockets with sock_diag, gives newly seen
//! listening ports their label, reads the kernel's maps and builds the metric families. There
//! is no per-event work in userspace.
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
    families::{self, ProgramRuns, ScrapeInput},
    listen_watch::ListenWatch,
    listeners::PortQueue,
    netns,
    ports::PortTable,
    sock_diag::{self, SocketCounts},
    workloads::{WorkloadLabels, UNKNOWN},
};
use crate::{
    error::Error,
    probe::{prog_stats, Probe},
    tail::{agent::hub::Hub, event::monotonic_ns},
    workload::cgroups::Workloads,
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
    collecting: Mutex<()>,
    /// Collections that failed (`tcpmon_scrape_errors_total`).
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
            collecting: Mutex::new(()),
            errors: AtomicU64::new(0),
            descs,
        };
        collector.count_sockets()?;
        Ok(collector)
    }

    /// Counts sockets in every namespace in scope, sums listeners per port, and labels newly
    /// seen listening ports.
    fn count_sockets(&self) -> Result<(SocketCounts, BTreeMap<u16, PortQueue>), Error> {
        let per_namespace = netns::in_each(self.listen_watch.namespaces(), || {
            sock_diag::count_tcp_sockets(&sock_diag::open()?)
        })
        .map_err(|cause| Error::Io {
            what: "counting sockets with sock_diag".into(),
            cause,
        })?;
        let mut total = SocketCounts::default();
        for counts in &per_namespace {
            total.add(counts);
        }
        let listeners = self.listen_watch.listeners().map_err(|cause| Error::Io {
            what: "reading the listeners".into(),
            cause,
        })?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // In port order, as documented: with more ports than `--max-ports`, the lowest win.
        let listening: BTreeSet<u16> = listeners.iter().map(|l| l.port).collect();
        let added = state.ports.discover(listening);
        for (port, slot) in added {
            state.probe.set_port_slot(port, slot)?;
        }
        drop(state);
        Ok((total, self.listen_watch.observe(&listeners)))
    }

    fn families(&self) -> Result<Vec<MetricFamily>, Error> {
        // One collection at a time: concurrent scrapes wait instead of each walking every
        // namespace at once.
        let _one_at_a_time = self.collecting.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let (sockets, listen) = self.count_sockets()?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Evictions are not reported by the kernel, but every entry is inserted, deleted on
        // CLOSE, evicted, or still present. Inserts are read before the map is counted and
        // deletes after, so `inserts - deletes - live` never exceeds the true count; keeping
        // the maximum makes it monotonic, and it is exact whenever no socket changes state
        // during the scrape.
        let program = state.probe.program_stats()?;
        let inserts = state.probe.counters()?[counter::TRACKED_INSERTS as usize];
        let tracked = state.probe.tracked_sockets()?;
        let snapshot = state.probe.snapshot()?;
        let deletes = snapshot.counters[counter::TRACKED_DELETES as usize];
        let resets = state.probe.resets()?;
        // Read after the snapshot's uncounted ones: a handshake is in the hash or in those.
        let counts = state.probe.workload_counts()?;
        let by_workload =
            state
                .workload_labels
                .split(&counts, &snapshot.workload_uncounted, |id| {
                    self.workloads
                        .name(id)
                        .map_or_else(|| UNKNOWN.to_string(), |n| n.to_string())
                });
        let now_ns = monotonic_ns();
        let estimate = inserts
            .saturating_sub(deletes)
            .saturating_sub(tracked.count);
        state.evicted = state.evicted.max(estimate);
        let mut program = ProgramRuns::of(&program, snapshot.counters[counter::COVERED as usize]);
        // Never backwards: a later scrape can only find more of the truth.
        program.missed = program.missed.map(|m| m.max(state.missed));
        state.missed = program.missed.unwrap_or(0);
        let families = families::build(&ScrapeInput {
            snapshot: &snapshot,
            by_workload: &by_workload,
            ports: &state.ports,
            sockets: &sockets,
            listen: &listen,
            resets: &resets,
            reset_reasons: state.probe.reset_reasons(),
            tracked: tracked.count,
            oldest_entered_ns: &tracked.oldest_entered_ns,
            now_ns,
            evicted: state.evicted,
            dropped_slow: self.hub.dropped_slow.load(Ordering::Relaxed),
            tail_clients: self.hub.subscribers(),
            program,
            bpf_stats_enabled: prog_stats::stats_enabled(),
            last_collect_seconds: state.last_collect_seconds,
        });
        state.last_collect_seconds = started.elapsed().as_secs_f64();
        Ok(families)
    }
}

impl Collector for ProbeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = match self.families() {
            Ok(families) => families,
            Err(e) => {
                // A failed read leaves the families out; the scrape still succeeds and
                // Prometheus shows the gap instead of stale values, and the error count.
                self.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("tcpmon: scrape: {e}");
                Vec::new()
            }
        };
        let errors = self.errors.load(Ordering::Relaxed);
        families.push(families::scrape_errors(errors));
        families
    }
}
