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
/// Map: hash from a service port (`u16`) to its port slot (`u32`, 1..[`PORT_SLOTS`]).
pub const MAP_PORTS: &str = "PORTS";
/// Map: per-CPU `u64` per (port slot, `HANDSHAKE_*` result); see [`handshake_index`].
pub const MAP_HANDSHAKES: &str = "HANDSHAKES";
/// Map: per-CPU [`DwellHistogram`] of handshake times per (port slot, side).
pub const MAP_HANDSHAKE_DURATION: &str = "HANDSHAKE_DURATION";
/// Map: per-CPU `u64` per (port slot, initiator, kind); see [`teardown_index`].
pub const MAP_TEARDOWNS: &str = "TEARDOWNS";
/// Map: ring buffer of [`TailEvent`]s, written only while [`MAP_TAIL_SWITCH`] is on.
pub const MAP_EVENTS: &str = "EVENTS";
/// Map: one-slot array; non-zero while a `tcpmon tail` client is connected.
pub const MAP_TAIL_SWITCH: &str = "TAIL_SWITCH";
/// Size of [`MAP_EVENTS`] in bytes (a power of two): about 43,000 events.
pub const EVENTS_RING_BYTES: u32 = 4 << 20;

/// Name of the tracepoint program inside the eBPF object.
pub const PROGRAM_NAME: &str = "inet_sock_set_state";

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

mod classify;
mod dwell;

pub use classify::*;
pub use dwell::*;

/// What the program remembers about one socket between its transitions.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketEntry {
    /// `bpf_ktime_get_ns()` when the socket entered `state`.
    pub entered_ns: u64,
    /// The process that last acted on the socket in process context (connect, listen, close,
    /// shutdown), recorded while the tail is on; 0 if none was seen.
    pub pid: u32,
    /// That process's command name, NUL-padded.
    pub comm: [u8; 16],
    /// The state the socket entered then; a mismatch with the next `oldstate` means the entry is
    /// stale (the socket address was reused after a CLOSE the program never saw).
    pub state: i32,
    /// Port slot of the socket's service port, chosen when the entry was made.
    pub port_slot: u16,
    /// `SIDE_CLIENT` or `SIDE_SERVER`.
    pub side: u16,
}
const _: () = assert!(core::mem::size_of::<SocketEntry>() == 40);

/// One transition for `tcpmon tail`, as the program writes it to [`MAP_EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the transition.
    pub ts_ns: u64,
    /// The socket's kernel address: identifies a connection until it reaches CLOSE.
    pub skaddr: u64,
    /// Time spent in `oldstate`, or [`DWELL_UNKNOWN`].
    pub dwell_ns: u64,
    /// Local and remote addresses: IPv4 in the first 4 bytes, or IPv6.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Command name of `pid`, NUL-padded.
    pub comm: [u8; 16],
    /// See [`SocketEntry::pid`]; 0 if unknown.
    pub pid: u32,
    pub oldstate: i32,
    pub newstate: i32,
    /// `sk_err` when the socket reached CLOSE, else 0.
    pub sk_err: i32,
    /// Local and remote ports, host byte order.
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<TailEvent>() == 96);

/// [`TailEvent::dwell_ns`] when the socket's time in its old state is not known.
pub const DWELL_UNKNOWN: u64 = u64::MAX;

/// Default capacity of [`MAP_SOCKETS`]: live TCP sockets tracked at once (TIME_WAIT is not
/// tracked); `tcpmon agent --max-tracked-sockets` changes it at load time.
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
/// Client handshakes that ended ESTABLISHED without a SYN_SENT entry to time them.
pub const COUNTER_CLIENT_HANDSHAKE_UNTIMED: u32 = 4;
/// Server handshakes whose child socket had no SYN-ACK RTT (the SYN-ACK was retransmitted, or
/// a SYN cookie was used), so no time is recorded.
pub const COUNTER_SERVER_HANDSHAKE_UNTIMED: u32 = 5;
/// Tail events written to the ring buffer.
pub const COUNTER_EVENTS: u32 = 6;
/// Tail events lost because the ring buffer was full.
pub const COUNTER_EVENTS_DROPPED: u32 = 7;
pub const COUNTER_SLOTS: u32 = 8;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both types are #[repr(C)], made only of integers, with explicit padding.
    unsafe impl aya::Pod for super::DwellHistogram {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SocketEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TailEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_index_is_dense_and_bounded() {
        assert_eq!(transition_index(0, 0, 0), Some(0));
        assert_eq!(transition_index(1, 15, 15), Some(TRANSITION_SLOTS - 1));
        assert_eq!(transition_index(2, 0, 0), None);
        assert_eq!(transition_index(0, 16, 0), None);
    }
}
