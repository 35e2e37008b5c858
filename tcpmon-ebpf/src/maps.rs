//! The program's maps and the per-CPU updates it makes to them.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tcpmon_common::{
    counter, dwell_bucket, handshake, maps, port, reset, tcp_state, workload, DwellHistogram,
    ListenerEntry, ListenerRecord, NamespaceRecord, SocketEntry, TailFilter, TRANSITION_SLOTS,
};

/// Transition counters by (family, old state, new state).
#[map(name = "TRANSITIONS")]
static TRANSITIONS_MAP: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(maps::ROWS * TRANSITION_SLOTS, 0);
pub static TRANSITIONS: Counters = Counters::new(&TRANSITIONS_MAP, TRANSITION_SLOTS);

/// Dwell-time histograms, one per state left.
#[map(name = "DWELL")]
static DWELL_MAP: PerCpuArray<DwellHistogram> =
    PerCpuArray::with_max_entries(maps::ROWS * tcp_state::SLOTS, 0);
pub static DWELL: Histograms = Histograms::new(&DWELL_MAP, tcp_state::SLOTS);

/// Per-socket state, entry time and service port, keyed by the socket's kernel address.
#[map]
pub static SOCKETS: LruHashMap<u64, SocketEntry> =
    LruHashMap::with_max_entries(maps::MAX_TRACKED_SOCKETS, 0);

/// Every listening socket in scope, keyed by its kernel address (see `listeners`).
#[map]
pub static LISTENERS: HashMap<u64, ListenerEntry> =
    HashMap::with_max_entries(maps::MAX_LISTENERS, 0);

/// The listener addresses the agent asks `tcpmon_read_listeners` to read.
#[map]
pub static LISTENER_QUERY: Array<u64> = Array::with_max_entries(maps::LISTENERS_PER_READ, 0);

/// What `tcpmon_read_listeners` read, index for index with `LISTENER_QUERY`.
#[map]
pub static LISTENER_ANSWERS: Array<ListenerRecord> =
    Array::with_max_entries(maps::LISTENERS_PER_READ, 0);

/// The start-up window's flag and the count of sockets `FIRST_SEEN` had no room for (see
/// `startup`).
#[map]
pub static STARTUP: Array<u64> = Array::with_max_entries(2, 0);

/// The state each socket was in before its first transition in the start-up window.
#[map]
pub static FIRST_SEEN: HashMap<u64, u32> = HashMap::with_max_entries(maps::MAX_FIRST_SEEN, 0);

/// Namespaces whose time-wait sockets are counted: `struct net` address to inode.
#[map]
pub static NAMESPACES: HashMap<u64, u32> = HashMap::with_max_entries(maps::MAX_NAMESPACES, 0);

/// The inode of the namespace each CPU last put in `NAMESPACES`.
#[map]
pub static LAST_NAMESPACE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// What `tcpmon_read_namespaces` read, index for index with `LISTENER_QUERY`.
#[map]
pub static NAMESPACE_ANSWERS: Array<NamespaceRecord> =
    Array::with_max_entries(maps::LISTENERS_PER_READ, 0);

/// Bookkeeping counters (inserts, deletes, stale, untracked, untimed handshakes).
#[map(name = "COUNTERS")]
static COUNTERS_MAP: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(maps::ROWS * counter::SLOTS, 0);
pub static COUNTERS: Counters = Counters::new(&COUNTERS_MAP, counter::SLOTS);

/// Service ports with their own label value, to port slot; written by the agent.
#[map]
pub static PORTS: HashMap<u16, u32> = HashMap::with_max_entries(port::SLOTS, 0);

/// Handshake-time histograms per (port slot, side).
#[map(name = "HANDSHAKE_DURATION")]
static HANDSHAKE_DURATION_MAP: PerCpuArray<DwellHistogram> =
    PerCpuArray::with_max_entries(maps::ROWS * handshake::SIDE_SLOTS, 0);
pub static HANDSHAKE_DURATION: Histograms =
    Histograms::new(&HANDSHAKE_DURATION_MAP, handshake::SIDE_SLOTS);

/// Handshake retransmissions per (port slot, side).
#[map(name = "HANDSHAKE_RETRANSMITS")]
static HANDSHAKE_RETRANSMITS_MAP: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(maps::ROWS * handshake::SIDE_SLOTS, 0);
pub static HANDSHAKE_RETRANSMITS: Counters =
    Counters::new(&HANDSHAKE_RETRANSMITS_MAP, handshake::SIDE_SLOTS);

/// Resets sent and received, per series; updated with atomic adds (see `resets.rs`).
#[map]
pub static RESETS: HashMap<reset::Key, u64> = HashMap::with_max_entries(reset::MAX_SERIES, 0);

/// Handshakes and teardowns per socket cgroup; updated with atomic adds (see `workloads.rs`).
#[map]
pub static WORKLOADS: HashMap<workload::Key, u64> =
    HashMap::with_max_entries(workload::MAX_SERIES, 0);

/// What `WORKLOADS` had no room for, per handshake and teardown index.
#[map(name = "WORKLOAD_UNCOUNTED")]
static WORKLOAD_UNCOUNTED_MAP: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(maps::ROWS * workload::UNCOUNTED_SLOTS, 0);
pub static WORKLOAD_UNCOUNTED: Counters =
    Counters::new(&WORKLOAD_UNCOUNTED_MAP, workload::UNCOUNTED_SLOTS);

/// Tail events for `tcpmon tail`, written only for transitions TAIL_FILTER selects.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(maps::EVENTS_RING_BYTES, 0);

/// Trouble events (failed handshakes, resets, retransmissions), written all the time.
#[map]
pub static TROUBLE: RingBuf = RingBuf::with_byte_size(maps::TROUBLE_RING_BYTES, 0);

/// The union of the connected tail clients' filters; written by the agent.
#[map]
pub static TAIL_FILTER: Array<TailFilter> = Array::with_max_entries(1, 0);

/// Which row of the per-CPU arrays a run updates (see `tcpmon_common::maps`): the kernel
/// never runs a program nested in itself more than one level deep on one CPU (process context,
/// then a softirq on top of it), so two rows keep every update whole.
#[derive(Clone, Copy)]
pub struct Row(u32);

impl Row {
    /// A run that interrupted no other run of tcpmon's accounting on its CPU.
    pub const OWN: Row = Row(0);
    /// A run that interrupted another one in the middle of its updates.
    pub const NESTED: Row = Row(1);

    #[inline(always)]
    pub fn is_own(self) -> bool {
        self.0 == 0
    }

    /// The map index of slot `index` of a map with `slots` slots per row; `None` out of range,
    /// so that a bad index never lands in the other row.
    #[inline(always)]
    fn slot(self, slots: u32, index: u32) -> Option<u32> {
        (index < slots).then_some(self.0 * slots + index)
    }
}

/// A per-CPU array of `u64` counters with a row per [`Row`].
pub struct Counters {
    map: &'static PerCpuArray<u64>,
    slots: u32,
}

impl Counters {
    const fn new(map: &'static PerCpuArray<u64>, slots: u32) -> Counters {
        Counters { map, slots }
    }

    #[inline(always)]
    pub fn increment(&self, row: Row, index: u32) {
        let slot = row.slot(self.slots, index);
        if let Some(counter) = slot.and_then(|i| self.map.get_ptr_mut(i)) {
            // SAFETY: a per-CPU value in this run's own row: no other run touches it meanwhile.
            unsafe { *counter += 1 };
        }
    }

    /// Adds one to `index` of the first row with an atomic add: for a slot that programs which
    /// may interrupt each other on one CPU both update.
    #[inline(always)]
    pub fn increment_atomic(&self, index: u32) {
        let slot = Row::OWN.slot(self.slots, index);
        if let Some(counter) = slot.and_then(|i| self.map.get_ptr_mut(i)) {
            // SAFETY: a valid, aligned per-CPU u64, updated only atomically.
            unsafe { crate::kernel::atomic_add(counter, 1) };
        }
    }

    /// Undoes an [`increment`](Self::increment) made earlier in the same run.
    #[inline(always)]
    pub fn decrement(&self, row: Row, index: u32) {
        let slot = row.slot(self.slots, index);
        if let Some(counter) = slot.and_then(|i| self.map.get_ptr_mut(i)) {
            // SAFETY: as above.
            unsafe { *counter = (*counter).wrapping_sub(1) };
        }
    }
}

/// Adds one to `key`'s count in `map`, a hash of counts shared by every CPU (atomic adds),
/// inserting the key first if it is new; false if the map had no room for it.
#[inline(always)]
pub fn hash_add<K>(map: &HashMap<K, u64>, key: &K) -> bool {
    if add_to(map, key) {
        return true;
    }
    // The first of its key. Another CPU may be adding the same one: whichever insert loses
    // finds the winner's entry.
    let _ = map.insert(key, &0, u64::from(aya_ebpf::bindings::BPF_NOEXIST));
    add_to(map, key)
}

#[inline(always)]
fn add_to<K>(map: &HashMap<K, u64>, key: &K) -> bool {
    match map.get_ptr_mut(key) {
        Some(value) => {
            // SAFETY: a valid, aligned u64 in the map; other CPUs update it only atomically.
            unsafe { crate::kernel::atomic_add(value, 1) };
            true
        }
        None => false,
    }
}

/// A per-CPU array of histograms with a row per [`Row`].
pub struct Histograms {
    map: &'static PerCpuArray<DwellHistogram>,
    slots: u32,
}

impl Histograms {
    const fn new(map: &'static PerCpuArray<DwellHistogram>, slots: u32) -> Histograms {
        Histograms { map, slots }
    }

    /// Adds one observation of `ns` nanoseconds to histogram `index`.
    #[inline(always)]
    pub fn observe(&self, row: Row, index: u32, ns: u64) {
        let slot = row.slot(self.slots, index);
        if let Some(histogram) = slot.and_then(|i| self.map.get_ptr_mut(i)) {
            // SAFETY: a per-CPU value in this run's own row: no other run touches it meanwhile.
            let histogram = unsafe { &mut *histogram };
            if let Some(bucket) = histogram.buckets.get_mut(dwell_bucket(ns)) {
                *bucket += 1;
            }
            histogram.sum_ns += ns;
        }
    }
}
