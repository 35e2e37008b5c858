//! The records the program and the agent exchange through maps: a socket's entry in the
//! per-socket map and a tail event in the ring buffer.

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

/// One transition for `tcpmon tail`, as the program writes it to [`maps::EVENTS`](crate::maps::EVENTS).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the transition.
    pub ts_ns: u64,
    /// The socket's kernel address: identifies a connection until it reaches CLOSE.
    pub skaddr: u64,
    /// Time spent in `oldstate`, or [`DWELL_UNKNOWN`].
    pub dwell_ns: u64,
    /// The socket's cgroup v2 id (its directory's inode number), 0 if unknown.
    pub cgroup_id: u64,
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
    /// [`TAIL_TRANSITION`], or [`TAIL_SYN_RETRANSMIT`] (a SYN sent again by a socket in
    /// SYN_SENT: `oldstate` and `newstate` are both SYN_SENT).
    pub kind: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<TailEvent>() == 104);

/// [`TailEvent::kind`] of a state transition.
pub const TAIL_TRANSITION: u8 = 0;
/// [`TailEvent::kind`] of a SYN retransmission.
pub const TAIL_SYN_RETRANSMIT: u8 = 1;

/// A handshake or teardown that went wrong, as the programs write it to
/// [`maps::TROUBLE`](crate::maps::TROUBLE) all the time (`tcpmon tail --recent`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TroubleEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// The socket's kernel address; 0 for a reset sent for a segment that matched no socket.
    pub skaddr: u64,
    /// Local and remote addresses (zero where unknown): IPv4 in the first 4 bytes, or IPv6.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub family: u16,
    /// Local and remote ports, host byte order.
    pub sport: u16,
    pub dport: u16,
    /// One of the [`trouble`](crate::trouble) kinds.
    pub kind: u8,
    /// The socket's TCP state (the old one for a failed handshake); 0 for no socket.
    pub state: u8,
    /// A failed handshake's `handshake` result index, a sent reset's reason, else 0.
    pub detail: u16,
    pub _pad: [u8; 2],
    /// For `LISTEN_DROPPED`, the segments dropped; 0 for every other kind.
    pub dropped: u32,
}
const _: () = assert!(core::mem::size_of::<TroubleEvent>() == 64);

/// One open socket, as the socket iterator (`tcpmon sockets`) writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketRecord {
    /// The socket's kernel address: the per-socket map's key, and a tail event's `connection`.
    pub skaddr: u64,
    /// `bpf_ktime_get_ns()` when the socket entered `state`, or 0 if tcpmon did not see it.
    pub entered_ns: u64,
    /// The socket's inode (`ss -e`'s `ino`, `socket:[INODE]` in `/proc/PID/fd`), 0 if none.
    pub inode: u64,
    /// The socket's cgroup v2 id (its directory's inode number), 0 if unknown.
    pub cgroup_id: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// The process the tail saw act on the socket, as in [`SocketEntry`]; 0 if none.
    pub pid: u32,
    pub comm: [u8; 16],
    pub family: u16,
    /// Local and remote ports, host byte order.
    pub sport: u16,
    pub dport: u16,
    /// The kernel's TCP state.
    pub state: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<SocketRecord>() == 104);

/// The value of a `maps::LISTENERS` entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerEntry {
    /// `bpf_ktime_get_ns()` when the entry was made: with the socket's address, the listener's
    /// identity (an address is reused by a later socket; its entry is then made anew).
    pub since_ns: u64,
}
const _: () = assert!(core::mem::size_of::<ListenerEntry>() == 8);

/// One listening socket, as the listener iterator writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerRecord {
    /// The socket's kernel address (the entry's key).
    pub skaddr: u64,
    /// [`ListenerEntry::since_ns`].
    pub since_ns: u64,
    /// The address listened on: IPv4 in the first 4 bytes, or IPv6.
    pub address: [u8; 16],
    /// `sk_drops`: SYNs and final ACKs the listener dropped (`tcp_listendrop`).
    pub drops: u32,
    /// `sk_ack_backlog`: connections waiting for `accept()` (`ss -lt` Recv-Q).
    pub queued: u32,
    /// `sk_max_ack_backlog`: the accept queue's limit (`ss -lt` Send-Q).
    pub limit: u32,
    /// `icsk_accept_queue.qlen`: request sockets (`NEW_SYN_RECV`) of handshakes in progress.
    pub requests: u32,
    /// The inode of the socket's network namespace.
    pub netns: u32,
    pub family: u16,
    /// The local port, host byte order.
    pub port: u16,
    /// The socket's TCP state now: LISTEN, or another for an entry whose socket left LISTEN
    /// without the program seeing it (the agent then deletes the entry).
    pub state: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<ListenerRecord>() == 64);

/// One socket of a namespace, as the start-up walk (`tcpmon_startup_walk`) writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartupSocket {
    /// The socket's kernel address.
    pub skaddr: u64,
    /// Its TCP state when the walk visited it.
    pub state: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<StartupSocket>() == 16);

/// One network namespace, as the namespace reader writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceRecord {
    /// The `struct net` address (the `NAMESPACES` key).
    pub net: u64,
    /// The inode read from it now: another than the entry's means the address was reused.
    pub inum: u32,
    /// Its time-wait sockets (`/proc/net/sockstat`'s "tw" in that namespace).
    pub time_wait: i32,
    /// Its reference count: 0 once the namespace is gone.
    pub refs: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<NamespaceRecord>() == 24);

/// [`TailEvent::dwell_ns`] when the socket's time in its old state is not known.
pub const DWELL_UNKNOWN: u64 = u64::MAX;

/// Client filters a [`TailFilter`] holds; more are merged into one coarser rule.
pub const TAIL_FILTER_RULES: usize = 4;
/// Ports a [`TailRule`] holds; a client filter with more selects every port.
pub const TAIL_RULE_PORTS: usize = 8;

/// What the program writes to the ring buffer: the union of the connected tail clients'
/// filters, one rule per client, so that events no client wants are never written (each
/// client's own filter, addresses, states and pids included, is applied exactly in the agent).
/// Written by the agent whenever a client comes or goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TailFilter {
    /// How many of `rules` are set; 0 while no client is connected.
    pub rule_count: u32,
    pub _pad: u32,
    /// A transition is written if any rule selects it.
    pub rules: [TailRule; TAIL_FILTER_RULES],
}
const _: () = assert!(core::mem::size_of::<TailFilter>() == 104);

/// One client's port and family filter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TailRule {
    /// A bit per family slot (bit 0 AF_INET, bit 1 AF_INET6); 0 selects every family.
    pub families: u32,
    /// How many of `ports` are set; 0 selects every port.
    pub port_count: u32,
    /// Selected if the local or the remote port is one of these.
    pub ports: [u16; TAIL_RULE_PORTS],
}
const _: () = assert!(core::mem::size_of::<TailRule>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: these types are #[repr(C)], made only of integers, with explicit padding.
    unsafe impl aya::Pod for crate::DwellHistogram {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::SocketEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::TailEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::TailFilter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::reset::Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::SocketRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::TroubleEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::ListenerEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::ListenerRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::StartupSocket {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::NamespaceRecord {}
    // SAFETY: as above (16 bytes, no padding).
    unsafe impl aya::Pod for crate::workload::Key {}
}
