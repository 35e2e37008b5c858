//! Resets sent and received, per (state, reason, service port): `tcp:tcp_send_reset` and
//! `tcp:tcp_receive_reset`, as BTF-enabled tracepoint programs. Resets are rare next to state
//! changes, and the series they make are few and unpredictable, so they are counted in a hash
//! (`maps::RESETS`) with atomic adds rather than in per-CPU arrays of every combination.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tcpmon_common::{counter, port, reset, trouble};

use crate::{
    config::{
        global, DEV_NET_OFFSET, NETNS_FILTER, NET_INUM_OFFSET, SKB_DEV_OFFSET, SKB_HEAD_OFFSET,
        SKB_TRANSPORT_HEADER_OFFSET, SK_DPORT_OFFSET, SK_STATE_OFFSET,
    },
    counted_family,
    kernel::{read_kernel, sock_field},
    local_port_in,
    maps::{hash_add, COUNTERS, PORTS, RESETS},
    trouble::{record, Trouble},
};

/// `tcp_send_reset (sk, skb)`, before Linux 6.10: resets sent by a full socket.
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    sent(&ctx, reset::REASON_UNKNOWN);
    0
}

/// `tcp_send_reset (sk, skb, reason)`, Linux 6.10+: every reset sent, with the kernel's reason;
/// `sk` is NULL for a segment that matched no socket, a time-wait socket after a FIN_WAIT2.
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset_reason(ctx: BtfTracePointContext) -> i32 {
    let reason: u32 = ctx.arg(2);
    sent(&ctx, u16::try_from(reason).unwrap_or(reset::REASON_UNKNOWN));
    0
}

/// `tcp_receive_reset (sk)`: a reset accepted by a socket, just before it closes.
#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    by_socket(sk, reset::RECEIVED, reset::REASON_UNKNOWN);
    0
}

#[inline(always)]
fn sent(ctx: &BtfTracePointContext, reason: u16) {
    let sk: *const u8 = ctx.arg(0);
    if !sk.is_null() {
        by_socket(sk, reset::SENT, reason);
        return;
    }
    // No socket: the answer to a segment, whose device says the namespace and whose TCP
    // header says the port it was sent to (local) and from (remote).
    let skb: *const u8 = ctx.arg(1);
    if skb.is_null() {
        return;
    }
    let netns = global(&NETNS_FILTER);
    if netns != 0 {
        let dev: *const u8 = sock_field(skb, &SKB_DEV_OFFSET);
        if dev.is_null() {
            return;
        }
        let net: *const u8 = sock_field(dev, &DEV_NET_OFFSET);
        if sock_field::<u32>(net, &NET_INUM_OFFSET) != netns {
            return;
        }
    }
    let head: u64 = sock_field(skb, &SKB_HEAD_OFFSET);
    let transport: u16 = sock_field(skb, &SKB_TRANSPORT_HEADER_OFFSET);
    let Ok(ports) = read_kernel::<[u16; 2]>(head, u32::from(transport)) else {
        return;
    };
    let (local, remote) = (u16::from_be(ports[1]), u16::from_be(ports[0]));
    count(&reset::Key {
        port_slot: service_slot(local, remote),
        reason,
        state: reset::NO_SOCKET,
        direction: reset::SENT,
        padding: [0; 2],
    });
    let what = Trouble {
        kind: trouble::RESET_SENT,
        state: reset::NO_SOCKET,
        detail: reason,
        sport: local,
    };
    record(core::ptr::null(), what, remote);
}

/// A reset of socket `sk` (a full, request or time-wait socket: all begin with `sock_common`).
#[inline(always)]
fn by_socket(sk: *const u8, direction: u8, reason: u16) {
    if counted_family(sk).is_none() {
        return;
    }
    let state: u8 = sock_field(sk, &SK_STATE_OFFSET);
    // A socket the kernel closes before it resets (data unread, SO_LINGER 0) is already
    // unhashed: its port is in `inet_sport` only. Request and time-wait sockets are never in
    // CLOSE, and have only `skc_num`.
    let local = local_port_in(sk, i32::from(state));
    let remote = u16::from_be(sock_field(sk, &SK_DPORT_OFFSET));
    count(&reset::Key {
        port_slot: service_slot(local, remote),
        reason,
        state,
        direction,
        padding: [0; 2],
    });
    let kind = if direction == reset::SENT {
        trouble::RESET_SENT
    } else {
        trouble::RESET_RECEIVED
    };
    let what = Trouble {
        kind,
        state,
        detail: reason,
        sport: local,
    };
    record(sk, what, 0);
}

/// The slot of the connection's service port: the local port if it has a label (a server),
/// else the remote one (a client), else "other".
#[inline(always)]
fn service_slot(local: u16, remote: u16) -> u16 {
    let slot = PORTS.get_ptr(local).or_else(|| PORTS.get_ptr(remote));
    // SAFETY: the map returned a valid pointer to the port's slot, which only the agent writes.
    slot.map_or(port::OTHER, |s| unsafe { *s }) as u16
}

#[inline(always)]
fn count(key: &reset::Key) {
    if !hash_add(&RESETS, key) {
        COUNTERS.increment_atomic(counter::RESETS_UNCOUNTED);
    }
}
