//! Types and constants shared by the tcpmon eBPF program and the userspace agent.
//!
//! Everything here is part of the kernel/userspace wire: `#[repr(C)]`, fields largest first,
//! no `bool`, explicit padding, and a size assertion on every struct (`wire`). Kernel TCP
//! states stay raw integers here; userspace turns them into `tcpmon::state::TcpState`.
//! Constants live in one module per subject, each name defined once.
#![no_std]

mod classify;
mod dwell;
mod wire;

pub use classify::*;
pub use dwell::*;
pub use wire::*;

/// Name of the tracepoint program inside the eBPF object.
pub const PROGRAM_NAME: &str = "inet_sock_set_state";
/// Name of the cover program: a second instance on the same tracepoint, attached after the
/// first, that counts the transitions the kernel did not run the first for (a run that would
/// have nested in its own run on that CPU). See `tcpmon-ebpf/src/reentry.rs`.
pub const COVER_PROGRAM_NAME: &str = "inet_sock_set_state_cover";
/// Names of the programs that count handshake retransmissions, each on the tracepoint of the
/// same name: SYNs a client sends again, and SYN-ACKs a server sends again.
pub const SYN_RETRANSMIT_PROGRAM_NAME: &str = "tcp_retransmit_skb";
pub const SYNACK_RETRANSMIT_PROGRAM_NAME: &str = "tcp_retransmit_synack";
/// The programs on `tcp:tcp_send_reset`: one for kernels whose tracepoint carries the reset's
/// reason (Linux 6.10+), one for those whose does not; the agent loads one of them.
pub const SEND_RESET_PROGRAM_NAME: &str = "tcp_send_reset";
pub const SEND_RESET_REASON_PROGRAM_NAME: &str = "tcp_send_reset_reason";
/// The socket iterator (`iter/tcp`) that `tcpmon sockets` reads.
pub const SOCKETS_ITERATOR_NAME: &str = "tcpmon_sockets";
/// The program, run on demand, that reads listeners' queues and drops.
pub const LISTENER_READER_NAME: &str = "tcpmon_read_listeners";
/// The program, run on demand, that reads namespaces' time-wait counts.
pub const NAMESPACE_READER_NAME: &str = "tcpmon_read_namespaces";
/// The socket iterator that puts a namespace's listeners in `maps::LISTENERS` at start-up.
pub const STARTUP_WALK_ITERATOR_NAME: &str = "tcpmon_startup_walk";
/// The program on `tcp:tcp_receive_reset`.
pub const RECEIVE_RESET_PROGRAM_NAME: &str = "tcp_receive_reset";

/// Address families counted separately: index 0 is AF_INET, 1 is AF_INET6.
pub const FAMILY_SLOTS: u32 = 2;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;

/// TCP states as the kernel numbers them (`include/net/tcp_states.h`).
pub mod tcp_state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_SENT: i32 = 2;
    pub const SYN_RECV: i32 = 3;
    pub const FIN_WAIT1: i32 = 4;
    pub const FIN_WAIT2: i32 = 5;
    /// Never on the tracepoint (a separate time-wait mini-socket lives on); sock_diag has it.
    pub const TIME_WAIT: i32 = 6;
    /// A socket entering it is finished (or not yet started).
    pub const CLOSE: i32 = 7;
    pub const CLOSE_WAIT: i32 = 8;
    pub const LAST_ACK: i32 = 9;
    /// A listener's child sockets start life with `oldstate == LISTEN`.
    pub const LISTEN: i32 = 10;
    pub const CLOSING: i32 = 11;
    /// A request socket: never on the tracepoint; sock_diag has it.
    pub const NEW_SYN_RECV: i32 = 12;
    /// Slots per state index: states are 1..=12; 16 keeps the index arithmetic a shift and
    /// leaves room for a future state. Every per-state array has this many entries.
    pub const SLOTS: u32 = 16;
}

/// Slots of the per-CPU bookkeeping counters (`maps::COUNTERS`).
pub mod counter {
    /// New entries put in the socket map.
    pub const TRACKED_INSERTS: u32 = 0;
    /// Entries deleted from the socket map because their socket reached CLOSE.
    pub const TRACKED_DELETES: u32 = 1;
    /// Transitions whose socket entry held another state than `oldstate` (stale after reuse):
    /// their dwell time is not recorded.
    pub const STALE_ENTRIES: u32 = 2;
    /// Transitions of sockets with no entry that should have one (opened before the agent
    /// started, or evicted): their dwell time is not recorded.
    pub const UNTRACKED: u32 = 3;
    /// Client handshakes that ended ESTABLISHED without a SYN_SENT entry to time them.
    pub const CLIENT_HANDSHAKE_UNTIMED: u32 = 4;
    /// Server handshakes whose child socket had no SYN-ACK RTT (the SYN-ACK was retransmitted,
    /// or a SYN cookie was used), so no time is recorded.
    pub const SERVER_HANDSHAKE_UNTIMED: u32 = 5;
    /// Tail events written to the ring buffer.
    pub const EVENTS: u32 = 6;
    /// Tail events lost because the ring buffer was full.
    pub const EVENTS_DROPPED: u32 = 7;
    /// Transitions the cover program counted because the kernel skipped the first program's
    /// run for them (it would have nested in the first's run on that CPU).
    pub const COVERED: u32 = 8;
    /// Socket-map updates and deletes the kernel refused because a run on the same CPU that
    /// this one interrupted held the map's bucket lock (`-EBUSY`): the socket's entry is then
    /// missing or stale, and its next transitions are counted as untracked or stale.
    pub const SOCKET_MAP_BUSY: u32 = 9;
    /// Resets not counted because `maps::RESETS` refused a new series: full, or its bucket
    /// locked by a run this one interrupted.
    pub const RESETS_UNCOUNTED: u32 = 10;
    /// Trouble events the program could not write because `maps::TROUBLE` was full.
    pub const TROUBLE_DROPPED: u32 = 11;
    /// Runs that updated the second row of the per-CPU arrays (a run that interrupted another
    /// in its accounting), counted before they update anything: while it is 0 the agent reads
    /// only the first row of the large maps.
    pub const NESTED_RUNS: u32 = 12;
    /// Listening sockets `maps::LISTENERS` had no room for: their queues and drops are not
    /// in the listen families.
    pub const LISTENERS_UNTRACKED: u32 = 13;
    pub const SLOTS: u32 = 14;
}

/// Service-port slots: slot 0 is `port="other"`, slots 1.. are ports the agent put in the
/// port map.
pub mod port {
    pub const SLOTS: u32 = 257;
    pub const OTHER: u32 = 0;
}

/// Which end of a connection a socket is: the client connected, the server accepted.
pub mod side {
    pub const CLIENT: u32 = 0;
    pub const SERVER: u32 = 1;
    pub const SLOTS: u32 = 2;
}

/// Handshake results, side included: the index of `tcpmon_handshakes_total`.
pub mod handshake {
    use crate::{port, side};

    pub const CLIENT_ESTABLISHED: u32 = 0;
    pub const CLIENT_REFUSED: u32 = 1;
    pub const CLIENT_TIMEOUT: u32 = 2;
    pub const CLIENT_UNREACHABLE: u32 = 3;
    pub const CLIENT_ABORTED: u32 = 4;
    pub const SERVER_ESTABLISHED: u32 = 5;
    pub const SERVER_RESET: u32 = 6;
    pub const RESULTS: u32 = 7;
    /// Handshake series: the indexes of `workload::Key`.
    pub const SLOTS: u32 = port::SLOTS * RESULTS;
    /// Entries of `maps::HANDSHAKE_DURATION` and of `maps::HANDSHAKE_RETRANSMITS`, indexed by
    /// [`side_index`].
    pub const SIDE_SLOTS: u32 = port::SLOTS * side::SLOTS;

    #[inline(always)]
    pub fn index(port_slot: u32, result: u32) -> Option<u32> {
        (port_slot < port::SLOTS && result < RESULTS).then_some(port_slot * RESULTS + result)
    }

    #[inline(always)]
    pub fn side_index(port_slot: u32, side: u32) -> Option<u32> {
        (port_slot < port::SLOTS && side < side::SLOTS).then_some(port_slot * side::SLOTS + side)
    }
}

/// How a connection ended: who closed first (`INITIATOR_*`) and how (`KIND_*`).
pub mod teardown {
    use crate::port;

    pub const INITIATOR_LOCAL: u32 = 0;
    pub const INITIATOR_REMOTE: u32 = 1;
    pub const INITIATOR_SIMULTANEOUS: u32 = 2;
    pub const INITIATORS: u32 = 3;
    /// The four-way teardown.
    pub const KIND_FIN: u32 = 0;
    /// Anything else.
    pub const KIND_RESET: u32 = 1;
    pub const KINDS: u32 = 2;
    /// Teardown series: the indexes of `workload::Key`.
    pub const SLOTS: u32 = port::SLOTS * INITIATORS * KINDS;

    #[inline(always)]
    pub fn index(port_slot: u32, initiator: u32, kind: u32) -> Option<u32> {
        (port_slot < port::SLOTS && initiator < INITIATORS && kind < KINDS)
            .then_some((port_slot * INITIATORS + initiator) * KINDS + kind)
    }
}

/// What a [`TroubleEvent`](crate::TroubleEvent) reports.
pub mod trouble {
    /// A handshake that ended without ESTABLISHED (`detail`: the `handshake` result).
    pub const HANDSHAKE_FAILED: u8 = 1;
    /// A reset sent (`detail`: the kernel's reason, or `reset::REASON_UNKNOWN`).
    pub const RESET_SENT: u8 = 2;
    pub const RESET_RECEIVED: u8 = 3;
    /// A SYN a client sent again.
    pub const SYN_RETRANSMIT: u8 = 4;
    /// A SYN-ACK a server sent again (the socket is the listener).
    pub const SYNACK_RETRANSMIT: u8 = 5;
    /// Segments a listener dropped (`dropped`: how many since the agent last looked). Not from
    /// the program: the kernel has no hook where a listener drops (a SYN dropped for a full
    /// queue is consumed, not freed with a reason), so the agent writes these from the
    /// listener's drop count.
    pub const LISTEN_DROPPED: u8 = 6;
}

/// Resets sent and received: the key of `maps::RESETS`.
pub mod reset {
    pub const SENT: u8 = 0;
    pub const RECEIVED: u8 = 1;
    /// The `state` of a reset sent for a segment that matched no socket.
    pub const NO_SOCKET: u8 = 0;
    /// The `reason` where the kernel gives none: every received reset, and sent ones before
    /// Linux 6.10.
    pub const REASON_UNKNOWN: u16 = u16::MAX;
    /// Series `maps::RESETS` holds: (direction, state, reason, port slot) combinations seen.
    pub const MAX_SERIES: u32 = 4096;

    /// One series of resets.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub struct Key {
        pub port_slot: u16,
        /// The kernel's `enum sk_rst_reason` value, or [`REASON_UNKNOWN`].
        pub reason: u16,
        /// The socket's TCP state, or [`NO_SOCKET`].
        pub state: u8,
        /// [`SENT`] or [`RECEIVED`].
        pub direction: u8,
        pub padding: [u8; 2],
    }
}

/// Handshakes and teardowns per socket cgroup: the key of `maps::WORKLOADS`, updated with
/// atomic adds; what it cannot take is counted per index in `maps::WORKLOAD_UNCOUNTED`, so
/// the sum over cgroups plus those is every handshake and teardown.
pub mod workload {
    /// [`Key::what`] of a handshake (`index`: `handshake::index`).
    pub const HANDSHAKE: u32 = 0;
    /// [`Key::what`] of a teardown (`index`: `teardown::index`).
    pub const TEARDOWN: u32 = 1;
    /// (cgroup, handshake or teardown index) combinations `maps::WORKLOADS` holds.
    pub const MAX_SERIES: u32 = 16_384;
    /// Slots of `maps::WORKLOAD_UNCOUNTED`: the handshake indexes, then the teardown ones.
    pub const UNCOUNTED_SLOTS: u32 = crate::handshake::SLOTS + crate::teardown::SLOTS;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub struct Key {
        /// The socket's cgroup v2 id; 0 if the kernel gave none.
        pub cgroup_id: u64,
        /// [`HANDSHAKE`] or [`TEARDOWN`].
        pub what: u32,
        pub index: u32,
    }

    /// The slot of `maps::WORKLOAD_UNCOUNTED` for a key.
    #[inline(always)]
    pub fn uncounted_slot(what: u32, index: u32) -> u32 {
        if what == HANDSHAKE {
            index
        } else {
            crate::handshake::SLOTS + index
        }
    }
}

/// The program's maps: their names in the eBPF object, and the sizes both sides agree on.
///
/// Every per-CPU array holds [`ROWS`] copies of its slots: row 0 is updated by a run on its
/// own, row 1 by a run that interrupted another on the same CPU in the middle of its updates
/// (the cover program, or a nested run on kernels that do not skip one), so that neither
/// update can undo the other without atomic instructions. The agent sums the rows.
pub mod maps {
    /// Copies of the slots in every per-CPU array map.
    pub const ROWS: u32 = 2;
    /// Per-CPU `u64` counters, one per (family, old state, new state); see
    /// [`transition_index`](crate::transition_index).
    pub const TRANSITIONS: &str = "TRANSITIONS";
    /// Per-CPU [`DwellHistogram`](crate::DwellHistogram), one per TCP state left.
    pub const DWELL: &str = "DWELL";
    /// LRU hash from socket address to [`SocketEntry`](crate::SocketEntry).
    pub const SOCKETS: &str = "SOCKETS";
    /// Per-CPU `u64` bookkeeping counters, indexed by the [`counter`](crate::counter) slots.
    pub const COUNTERS: &str = "COUNTERS";
    /// Hash from a service port (`u16`) to its port slot (`u32`, 1..`port::SLOTS`).
    pub const PORTS: &str = "PORTS";
    /// Per-CPU histogram of handshake times per (port slot, side).
    pub const HANDSHAKE_DURATION: &str = "HANDSHAKE_DURATION";
    /// Per-CPU `u64` per (port slot, side): SYNs (client) and SYN-ACKs (server) sent again; see
    /// `handshake::side_index`.
    pub const HANDSHAKE_RETRANSMITS: &str = "HANDSHAKE_RETRANSMITS";
    /// Hash from [`reset::Key`](crate::reset::Key) to a `u64` count, updated atomically.
    pub const RESETS: &str = "RESETS";
    /// Hash from `workload::Key` to a count.
    pub const WORKLOADS: &str = "WORKLOADS";
    /// Per-CPU `u64` counters: handshakes and teardowns `WORKLOADS` had no room for.
    pub const WORKLOAD_UNCOUNTED: &str = "WORKLOAD_UNCOUNTED";
    /// Ring buffer of [`TailEvent`](crate::TailEvent)s, written only for transitions that
    /// [`TAIL_FILTER`] selects.
    pub const EVENTS: &str = "EVENTS";
    /// One-slot array of [`TailFilter`](crate::TailFilter): the union of the connected `tcpmon
    /// tail` clients' filters.
    pub const TAIL_FILTER: &str = "TAIL_FILTER";
    /// Ring buffer of [`TroubleEvent`](crate::TroubleEvent)s, written all the time; the agent
    /// keeps the last ones for `tcpmon tail --recent`.
    pub const TROUBLE: &str = "TROUBLE";
    /// Size of [`TROUBLE`] in bytes (a power of two): about 4,000 events between two reads.
    pub const TROUBLE_RING_BYTES: u32 = 256 << 10;
    /// Size of [`EVENTS`] in bytes (a power of two): about 43,000 events.
    pub const EVENTS_RING_BYTES: u32 = 4 << 20;
    /// Hash from a listening socket's kernel address to
    /// [`ListenerEntry`](crate::ListenerEntry): every listener of every namespace in scope,
    /// put in by the program when a socket enters LISTEN (and once at start-up for those that
    /// already listen), taken out when it leaves. The listener iterator reads their queues and
    /// drops through it in one pass, without entering any namespace.
    pub const LISTENERS: &str = "LISTENERS";
    /// Capacity of [`LISTENERS`]: listening sockets on the host at once (a node of 110 pods
    /// has a few hundred).
    pub const MAX_LISTENERS: u32 = 8_192;
    /// Array of `u64` listener addresses the agent asks the listener reader to read.
    pub const LISTENER_QUERY: &str = "LISTENER_QUERY";
    /// Array of [`ListenerRecord`](crate::ListenerRecord)s: what the reader read.
    pub const LISTENER_ANSWERS: &str = "LISTENER_ANSWERS";
    /// Listeners (or namespaces) read by one run of a reader: the verifier walks every
    /// iteration of its loop, and Linux 5.10's refused 256 (E2BIG, too complex); 16 costs a
    /// test run per 16 listeners.
    pub const LISTENERS_PER_READ: u32 = 16;
    /// Array of two `u64`s: [`STARTUP_WINDOW`] (0 while the agent takes its baseline of
    /// sockets per state, then 1) and [`FIRST_SEEN_FULL`].
    pub const STARTUP: &str = "STARTUP";
    /// Index in [`STARTUP`] of the flag that closes the start-up window.
    pub const STARTUP_WINDOW: u32 = 0;
    /// Index in [`STARTUP`] of the count of sockets [`FIRST_SEEN`] had no room for.
    pub const FIRST_SEEN_FULL: u32 = 1;
    /// Hash from a socket's address to the state (`u32`) it was in before its first transition
    /// in the start-up window (CLOSE for a socket born in it), filled only in that window.
    pub const FIRST_SEEN: &str = "FIRST_SEEN";
    /// Capacity of [`FIRST_SEEN`]: sockets that change state while the agent starts.
    pub const MAX_FIRST_SEEN: u32 = 32_768;
    /// Hash from a `struct net` address to its inode (`u32`): the network namespaces where the
    /// program saw a socket close from FIN_WAIT1, FIN_WAIT2 or CLOSING (where time-wait
    /// sockets are made), and those the start-up walk found; their time-wait counts are read
    /// at scrape time.
    pub const NAMESPACES: &str = "NAMESPACES";
    /// Capacity of [`NAMESPACES`].
    pub const MAX_NAMESPACES: u32 = 4_096;
    /// Per-CPU `u64`: the inode of the namespace this CPU last put in [`NAMESPACES`], so that
    /// a storm in one namespace updates the hash once.
    pub const LAST_NAMESPACE: &str = "LAST_NAMESPACE";
    /// Array of [`NamespaceRecord`](crate::NamespaceRecord)s: what the namespace reader read,
    /// index for index with [`LISTENER_QUERY`].
    pub const NAMESPACE_ANSWERS: &str = "NAMESPACE_ANSWERS";
    /// Default capacity of [`SOCKETS`]: live TCP sockets tracked at once (TIME_WAIT is not
    /// tracked); `tcpmon agent --max-tracked-sockets` changes it at load time.
    pub const MAX_TRACKED_SOCKETS: u32 = 65_536;
}

/// Entries in `maps::TRANSITIONS`.
pub const TRANSITION_SLOTS: u32 = FAMILY_SLOTS * tcp_state::SLOTS * tcp_state::SLOTS;

/// Index of a transition counter, or `None` for a family or state out of range.
#[inline(always)]
pub fn transition_index(family_slot: u32, old: u32, new: u32) -> Option<u32> {
    let states = tcp_state::SLOTS;
    if family_slot >= FAMILY_SLOTS || old >= states || new >= states {
        return None;
    }
    Some((family_slot * states + old) * states + new)
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

    #[test]
    fn every_kernel_state_has_a_slot() {
        assert!(tcp_state::NEW_SYN_RECV < tcp_state::SLOTS as i32);
    }
}
