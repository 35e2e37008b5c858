//! The program's maps and the per-CPU updates it makes to them.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tcpmon_common::{
    counter, dwell_bucket, handshake, maps, port, tcp_state, teardown, DwellHistogram, SocketEntry,
    TRANSITION_SLOTS,
};

/// Transition counters by (family, old state, new state).
#[map]
pub static TRANSITIONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(TRANSITION_SLOTS, 0);

/// Dwell-time histograms, one per state left.
#[map]
pub static DWELL: PerCpuArray<DwellHistogram> = PerCpuArray::with_max_entries(tcp_state::SLOTS, 0);

/// Per-socket state, entry time and service port, keyed by the socket's kernel address.
#[map]
pub static SOCKETS: LruHashMap<u64, SocketEntry> =
    LruHashMap::with_max_entries(maps::MAX_TRACKED_SOCKETS, 0);

/// Bookkeeping counters (inserts, deletes, stale, untracked, untimed handshakes).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::SLOTS, 0);

/// Service ports with their own label value, to port slot; written by the agent.
#[map]
pub static PORTS: HashMap<u16, u32> = HashMap::with_max_entries(port::SLOTS, 0);

/// Handshake results per (port slot, result).
#[map]
pub static HANDSHAKES: PerCpuArray<u64> = PerCpuArray::with_max_entries(handshake::SLOTS, 0);

/// Handshake-time histograms per (port slot, side).
#[map]
pub static HANDSHAKE_DURATION: PerCpuArray<DwellHistogram> =
    PerCpuArray::with_max_entries(handshake::DURATION_SLOTS, 0);

/// Teardowns per (port slot, initiator, kind).
#[map]
pub static TEARDOWNS: PerCpuArray<u64> = PerCpuArray::with_max_entries(teardown::SLOTS, 0);

/// Tail events for `tcpmon tail`, written only while TAIL_SWITCH is on.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(maps::EVENTS_RING_BYTES, 0);

/// Slot 0 is non-zero while a tail client is connected; written by the agent.
#[map]
pub static TAIL_SWITCH: Array<u32> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn increment(map: &PerCpuArray<u64>, index: u32) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU value; a tracepoint program never nests on one CPU.
        unsafe { *counter += 1 };
    }
}

/// Undoes an [`increment`] made earlier in the same run (on this CPU, so it cannot wrap).
#[inline(always)]
pub fn decrement(map: &PerCpuArray<u64>, index: u32) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU value; a tracepoint program never nests on one CPU.
        unsafe { *counter = (*counter).wrapping_sub(1) };
    }
}

/// Adds one observation of `ns` nanoseconds to histogram `index` of `map`.
#[inline(always)]
pub fn observe(map: &PerCpuArray<DwellHistogram>, index: u32, ns: u64) {
    if let Some(histogram) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU value; a tracepoint program never nests on one CPU.
        let histogram = unsafe { &mut *histogram };
        if let Some(bucket) = histogram.buckets.get_mut(dwell_bucket(ns)) {
            *bucket += 1;
        }
        histogram.sum_ns += ns;
    }
}
