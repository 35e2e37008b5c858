//! Load-time configuration, set by the agent through `EbpfLoader::override_global` before the
//! program is loaded: the namespace filter, and offsets of kernel struct members found in the
//! kernel's BTF. The globals live in a frozen read-only map, so the verifier knows their
//! values as constants.

/// Reads a load-time global; volatile so the compiler cannot fold the default value in.
#[inline(always)]
pub fn global(value: &'static u32) -> u32 {
    // SAFETY: `value` is a valid static; the loader rewrites it before the program runs.
    unsafe { core::ptr::read_volatile(value) }
}

/// Inode of the only network namespace to count, or 0 to count every namespace.
#[no_mangle]
pub static NETNS_FILTER: u32 = 0;
/// Offset of `struct sock.__sk_common.skc_net.net` (a `struct net *`).
#[no_mangle]
pub static SK_NET_OFFSET: u32 = 0;
/// Offset of `struct net.ns.inum`.
#[no_mangle]
pub static NET_INUM_OFFSET: u32 = 0;
/// Offset of `struct sock.sk_err`.
#[no_mangle]
pub static SK_ERR_OFFSET: u32 = 0;
/// Offset of `struct tcp_sock.srtt_us` (smoothed RTT in 1/8 µs).
#[no_mangle]
pub static SRTT_OFFSET: u32 = 0;
/// Offset of `struct sock.sk_protocol` (a `u16` since Linux 5.6).
#[no_mangle]
pub static SK_PROTOCOL_OFFSET: u32 = 0;
/// Offset of `struct sock.__sk_common.skc_family`.
#[no_mangle]
pub static SK_FAMILY_OFFSET: u32 = 0;
/// Offset of `struct inet_sock.inet_sport`: the local port, network byte order. Not
/// `skc_num`, which is already 0 when a socket that had a port reaches CLOSE.
#[no_mangle]
pub static INET_SPORT_OFFSET: u32 = 0;
/// Offset of `struct sock.__sk_common.skc_dport`: the remote port, network byte order.
#[no_mangle]
pub static SK_DPORT_OFFSET: u32 = 0;
/// Offset of `struct sock.__sk_common.skc_num`: the local port, host byte order, a plain load
/// (`inet_sport` takes a helper call), but only until the socket is unhashed on its way to CLOSE.
#[no_mangle]
pub static SK_NUM_OFFSET: u32 = 0;
/// Offsets of the address fields, read only for tail events.
#[no_mangle]
pub static SK_RCV_SADDR_OFFSET: u32 = 0;
#[no_mangle]
pub static SK_DADDR_OFFSET: u32 = 0;
#[no_mangle]
pub static SK_V6_RCV_SADDR_OFFSET: u32 = 0;
#[no_mangle]
pub static SK_V6_DADDR_OFFSET: u32 = 0;
/// Offset of `struct sock.__sk_common.skc_state`: the socket's TCP state (a byte).
#[no_mangle]
pub static SK_STATE_OFFSET: u32 = 0;
/// Offsets for resets sent for a segment that matched no socket, read from the segment:
/// `struct sk_buff.dev`, `struct net_device.nd_net.net`, `struct sk_buff.head` and
/// `struct sk_buff.transport_header`.
#[no_mangle]
pub static SKB_DEV_OFFSET: u32 = 0;
#[no_mangle]
pub static DEV_NET_OFFSET: u32 = 0;
#[no_mangle]
pub static SKB_HEAD_OFFSET: u32 = 0;
#[no_mangle]
pub static SKB_TRANSPORT_HEADER_OFFSET: u32 = 0;
/// Offsets for the socket iterator's inode: `struct sock.sk_socket`, `struct
/// socket_alloc.vfs_inode`, `struct inode.i_ino`.
#[no_mangle]
pub static SK_SOCKET_OFFSET: u32 = 0;
#[no_mangle]
pub static SOCKET_INODE_OFFSET: u32 = 0;
#[no_mangle]
pub static INODE_INO_OFFSET: u32 = 0;
/// Offsets for the socket's cgroup: `struct sock.sk_cgrp_data` (0 when the kernel has none),
/// `struct cgroup.kn`, `struct kernfs_node.id`.
#[no_mangle]
pub static SK_CGRP_OFFSET: u32 = 0;
#[no_mangle]
pub static CGROUP_KN_OFFSET: u32 = 0;
#[no_mangle]
pub static KN_ID_OFFSET: u32 = 0;
/// 1 where `sk_cgrp_data.cgroup` is a typed pointer (5.15+): read with plain loads.
#[no_mangle]
pub static CGROUP_TYPED: u32 = 0;
/// 1 to count handshakes and teardowns per socket cgroup (the `workload` label), 0 not to
/// (`--max-workloads 0`: no cgroup is read, everything counts as workload "other").
#[no_mangle]
pub static ATTRIBUTE_WORKLOADS: u32 = 1;
/// Offsets of a listener's queue and drop counts: `struct sock.sk_drops`,
/// `struct sock.sk_ack_backlog`, `struct sock.sk_max_ack_backlog` and
/// `struct inet_connection_sock.icsk_accept_queue.qlen`.
#[no_mangle]
pub static SK_DROPS_OFFSET: u32 = 0;
#[no_mangle]
pub static SK_ACK_BACKLOG_OFFSET: u32 = 0;
#[no_mangle]
pub static SK_MAX_ACK_BACKLOG_OFFSET: u32 = 0;
#[no_mangle]
pub static ACCEPT_QLEN_OFFSET: u32 = 0;
/// Where a namespace's time-wait count is: `struct net.ipv4.tcp_death_row`'s offset (used
/// only where it is a pointer, Linux 5.19-6.1), then the count's offset (in `struct net`, or
/// in the pointed-to `struct inet_timewait_death_row`); `TW_BIAS` is subtracted from it (1
/// for `tw_refcount`, which starts at 1; 0 for the older `tw_count`).
#[no_mangle]
pub static TW_DEATH_ROW_OFFSET: u32 = 0;
#[no_mangle]
pub static TW_INDIRECT: u32 = 0;
#[no_mangle]
pub static TW_COUNT_OFFSET: u32 = 0;
#[no_mangle]
pub static TW_BIAS: u32 = 0;
/// Offset of `struct net.ns`'s reference count (`__ns_ref`, or `count` before 6.18).
#[no_mangle]
pub static NS_REFS_OFFSET: u32 = 0;
