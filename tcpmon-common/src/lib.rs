//! Types and constants shared by the tcpmon eBPF program and the userspace agent.
//!
//! Everything here is part of the kernel/userspace wire: `#[repr(C)]`, fields largest first,
//! no `bool`, explicit padding, and a size assertion on every struct. Kernel TCP states stay raw
//! integers here; userspace turns them into `tcpmon::state::TcpState`.
#![no_std]

/// Map: per-CPU `u64` counters, one per (family, old state, new state); see [`transition_index`].
pub const MAP_TRANSITIONS: &str = "TRANSITIONS";
/// Map: per-CPU [`DwellHistogram`], one per TCP state left.
pub const MAP_DWELL: &str = "DWELL";
/// Map: LRU hash from socket address (`skaddr`) to [`SocketEntry`].
pub const MAP_SOCKETS: &str = "SOCKETS";
/// Map: per-CPU `u64` bookkeeping counters, indexed by the `COUNTER_*` constants.
pub const MAP_COUNTERS: &str = "COUNTERS";

/// Name of the tracepoint program inside the eBPF object.
pub const PROGRAM_NAME: &str = "inet_sock_set_state";

/// Bytes at the start of the tracepoint record that the program copies per event: every field
/// it reads must end within them (72 bytes on Linux 6.x; the agent rejects layouts that do not
/// fit).
pub const RECORD_BYTES: usize = 128;

/// TCP states are 1..=12 in the kernel (`TCP_ESTABLISHED` .. `TCP_NEW_SYN_RECV`); 16 slots keep
/// the index arithmetic a shift and leave room for a future state.
pub const STATE_SLOTS: u32 = 16;
/// Address families counted separately: index 0 is AF_INET, 1 is AF_INET6.
pub const FAMILY_SLOTS: u32 = 2;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
/// `TCP_CLOSE`: a socket entering it is finished (or not yet started).
pub const TCP_CLOSE: i32 = 7;
/// `TCP_LISTEN`: a listener's child sockets start life with `oldstate == TCP_LISTEN`.
pub const TCP_LISTEN: i32 = 10;

/// Entries in [`MAP_TRANSITIONS`].
pub const TRANSITION_SLOTS: u32 = FAMILY_SLOTS * STATE_SLOTS * STATE_SLOTS;

/// Index of a transition counter, or `None` for a family or state out of range.
#[inline(always)]
pub fn transition_index(family_slot: u32, old: u32, new: u32) -> Option<u32> {
    if family_slot >= FAMILY_SLOTS || old >= STATE_SLOTS || new >= STATE_SLOTS {
        return None;
    }
    Some((family_slot * STATE_SLOTS + old) * STATE_SLOTS + new)
}

/// Finite dwell buckets: bucket `i` counts dwell times `<= 2^i` microseconds, `i` in `0..=32`
/// (1 µs .. about 71.6 minutes). One more bucket holds everything longer (`+Inf`).
pub const DWELL_FINITE_BUCKETS: usize = 33;
pub const DWELL_BUCKETS: usize = DWELL_FINITE_BUCKETS + 1;

/// Log2 histogram of the time sockets spent in one state, aggregated in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DwellHistogram {
    /// Non-cumulative counts per bucket (see [`DWELL_FINITE_BUCKETS`]).
    pub buckets: [u64; DWELL_BUCKETS],
    /// Sum of all observed dwell times, in nanoseconds.
    pub sum_ns: u64,
}
const _: () = assert!(core::mem::size_of::<DwellHistogram>() == 8 * (DWELL_BUCKETS + 1));

/// Bucket for a dwell time of `ns` nanoseconds: the smallest `i` with `ns <= 2^i µs`.
///
/// Written with shifts and compares only: the BPF instruction set has no count-leading-zeros.
#[inline(always)]
pub fn dwell_bucket(ns: u64) -> usize {
    let us = ns.div_ceil(1000);
    if us <= 1 {
        return 0;
    }
    // ceil(log2(us)) == floor(log2(us - 1)) + 1 for us >= 2.
    let mut v = us - 1;
    let mut log = 0usize;
    if v >= 1 << 32 {
        v >>= 32;
        log += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        log += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        log += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        log += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        log += 2;
    }
    if v >= 1 << 1 {
        log += 1;
    }
    let bucket = log + 1;
    if bucket > DWELL_FINITE_BUCKETS {
        DWELL_FINITE_BUCKETS
    } else {
        bucket
    }
}

/// What the program remembers about one socket between its transitions.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketEntry {
    /// `bpf_ktime_get_ns()` when the socket entered `state`.
    pub entered_ns: u64,
    /// The state the socket entered then; a mismatch with the next `oldstate` means the entry is
    /// stale (the socket address was reused after a CLOSE the program never saw).
    pub state: i32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<SocketEntry>() == 16);

/// Capacity of [`MAP_SOCKETS`]: live TCP sockets tracked at once (TIME_WAIT is not tracked).
pub const MAX_TRACKED_SOCKETS: u32 = 65_536;

/// [`MAP_COUNTERS`] slots.
/// New entries put in the socket map.
pub const COUNTER_TRACKED_INSERTS: u32 = 0;
/// Entries deleted from the socket map because their socket reached CLOSE.
pub const COUNTER_TRACKED_DELETES: u32 = 1;
/// Transitions whose socket entry held another state than `oldstate` (stale after reuse):
/// their dwell time is not recorded.
pub const COUNTER_STALE_ENTRIES: u32 = 2;
/// Transitions of sockets with no entry that should have one (opened before the agent started,
/// or evicted): their dwell time is not recorded.
pub const COUNTER_UNTRACKED: u32 = 3;
pub const COUNTER_SLOTS: u32 = 4;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both types are #[repr(C)], made only of integers, with explicit padding.
    unsafe impl aya::Pod for super::DwellHistogram {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SocketEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dwell_bucket_is_the_smallest_upper_bound() {
        assert_eq!(dwell_bucket(0), 0);
        assert_eq!(dwell_bucket(1_000), 0);
        assert_eq!(dwell_bucket(1_001), 1);
        assert_eq!(dwell_bucket(2_000), 1);
        assert_eq!(dwell_bucket(2_001), 2);
        assert_eq!(dwell_bucket(4_000), 2);
        assert_eq!(dwell_bucket(4_001), 3);
        assert_eq!(dwell_bucket(1_000_000), 10); // 1 ms <= 1024 µs
        assert_eq!(dwell_bucket((1u64 << 32) * 1000), 32);
        assert_eq!(dwell_bucket((1u64 << 32) * 1000 + 1), DWELL_FINITE_BUCKETS);
        assert_eq!(dwell_bucket(u64::MAX), DWELL_FINITE_BUCKETS);
    }

    #[test]
    fn dwell_bucket_matches_a_float_reference() {
        for ns in (0..50_000_000u64).step_by(997) {
            let us = ns.div_ceil(1000);
            let expected = (0..DWELL_FINITE_BUCKETS)
                .find(|&i| us <= 1u64 << i)
                .unwrap_or(DWELL_FINITE_BUCKETS);
            assert_eq!(dwell_bucket(ns), expected, "ns={ns}");
        }
    }

    #[test]
    fn transition_index_is_dense_and_bounded() {
        assert_eq!(transition_index(0, 0, 0), Some(0));
        assert_eq!(transition_index(1, 15, 15), Some(TRANSITION_SLOTS - 1));
        assert_eq!(transition_index(2, 0, 0), None);
        assert_eq!(transition_index(0, 16, 0), None);
    }
}
