//! Reading the aggregate maps and the per-socket map at scrape time.
use tcpmon_common::{
    counter, handshake, maps, tcp_state, workload, DwellHistogram, SocketEntry, TRANSITION_SLOTS,
};

use aya::maps::MapData;

use super::{map_batch, Probe};
use crate::error::Error;

/// What the per-socket map holds.
#[derive(Clone, Debug, Default)]
pub struct TrackedSockets {
    pub count: u64,
    /// By (state, port slot): when the socket longest in that state entered it, in
    /// `bpf_ktime_get_ns()` time (CLOCK_MONOTONIC).
    pub oldest_entered_ns: std::collections::BTreeMap<(i32, u16), u64>,
}

/// One read of every aggregate map, summed over CPUs.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Indexed by `tcpmon_common::transition_index`.
    pub transitions: Vec<u64>,
    /// Indexed by raw TCP state.
    pub dwell: Vec<DwellHistogram>,
    /// Indexed by the `COUNTER_*` constants.
    pub counters: Vec<u64>,
    /// Indexed by `tcpmon_common::handshake::side_index`.
    pub handshake_duration: Vec<DwellHistogram>,
    /// Indexed by `tcpmon_common::handshake::side_index`.
    pub handshake_retransmits: Vec<u64>,
    /// Handshakes and teardowns the per-cgroup hash had no room for, indexed by
    /// `tcpmon_common::workload::uncounted_slot`.
    pub workload_uncounted: Vec<u64>,
}

impl Probe {
    /// A per-CPU array of counters, summed over CPUs and the first `rows` rows (see
    /// `tcpmon_common::maps`).
    fn counters_of(&self, name: &'static str, slots: u32, rows: u32) -> Result<Vec<u64>, Error> {
        sum_counters(self.map_data(name)?, slots, rows).map_err(Self::read_error(name))
    }

    /// The transition counts when the program was attached (zeros, or a pinned map's).
    pub fn transitions_at_attach(&self) -> &[u64] {
        &self.transitions_at_attach
    }

    /// A per-CPU array of histograms, merged over CPUs and the first `rows` rows.
    fn histograms_of(
        &self,
        name: &'static str,
        slots: u32,
        rows: u32,
    ) -> Result<Vec<DwellHistogram>, Error> {
        let per_cpu =
            map_batch::per_cpu_array::<DwellHistogram>(self.map_data(name)?, rows * slots)
                .map_err(Self::read_error(name))?;
        let mut totals = vec![DwellHistogram::EMPTY; slots as usize];
        for (index, cpus) in per_cpu.iter().enumerate() {
            let total = &mut totals[index % slots as usize];
            cpus.iter().for_each(|h| total.merge(h));
        }
        Ok(totals)
    }

    /// The bookkeeping counters alone, indexed by the `COUNTER_*` constants.
    pub fn counters(&self) -> Result<Vec<u64>, Error> {
        self.counters_of(maps::COUNTERS, counter::SLOTS, maps::ROWS)
    }

    /// Reads the aggregate maps, one batch syscall each. Values are summed over CPUs. The
    /// second rows are read only once some run has used them (most hosts never nest): a run
    /// counts itself in `NESTED_RUNS` before it updates them, so a scrape that reads 0 there
    /// misses at most what such a run adds meanwhile, and the next scrape has it.
    pub fn snapshot(&self) -> Result<Snapshot, Error> {
        let counters = self.counters()?;
        let rows = if counters[counter::NESTED_RUNS as usize] > 0 {
            maps::ROWS
        } else {
            1
        };
        Ok(Snapshot {
            transitions: self.counters_of(maps::TRANSITIONS, TRANSITION_SLOTS, rows)?,
            dwell: self.histograms_of(maps::DWELL, tcp_state::SLOTS, rows)?,
            counters,
            handshake_duration: self.histograms_of(
                maps::HANDSHAKE_DURATION,
                handshake::SIDE_SLOTS,
                rows,
            )?,
            handshake_retransmits: self.counters_of(
                maps::HANDSHAKE_RETRANSMITS,
                handshake::SIDE_SLOTS,
                rows,
            )?,
            workload_uncounted: self.counters_of(
                maps::WORKLOAD_UNCOUNTED,
                workload::UNCOUNTED_SLOTS,
                rows,
            )?,
        })
    }

    /// The per-socket map now: how many entries, and the oldest state entry per (state, port
    /// slot), one walk of the map.
    pub fn tracked_sockets(&self) -> Result<TrackedSockets, Error> {
        let data = self.map_data(maps::SOCKETS)?;
        let mut tracked = TrackedSockets::default();
        let entry_size = size_of::<SocketEntry>();
        map_batch::for_each_entry(data, size_of::<u64>(), entry_size, |_, value| {
            tracked.count += 1;
            // SAFETY: `value` holds the kernel's copy of one entry, `entry_size` bytes of a
            // #[repr(C)] struct of integers; read unaligned, as the buffer is bytes.
            let entry: SocketEntry = unsafe { std::ptr::read_unaligned(value.as_ptr().cast()) };
            let oldest = tracked
                .oldest_entered_ns
                .entry((entry.state, entry.port_slot))
                .or_insert(u64::MAX);
            *oldest = (*oldest).min(entry.entered_ns);
        })
        .map_err(Self::read_error(maps::SOCKETS))?;
        Ok(tracked)
    }
}

/// A per-CPU array of `u64` counters, summed over CPUs and the first `rows` rows.
pub(super) fn sum_counters(map: &MapData, slots: u32, rows: u32) -> std::io::Result<Vec<u64>> {
    let per_cpu = map_batch::per_cpu_array::<u64>(map, rows * slots)?;
    let mut totals = vec![0u64; slots as usize];
    for (index, cpus) in per_cpu.iter().enumerate() {
        totals[index % slots as usize] = totals[index % slots as usize]
            .wrapping_add(cpus.iter().fold(0u64, |sum, n| sum.wrapping_add(*n)));
    }
    Ok(totals)
}
