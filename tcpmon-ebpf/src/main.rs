//! tcpmon's eBPF program on `sock:inet_sock_set_state`.
//!
//! It aggregates in the kernel: a per-CPU transition matrix, per-state dwell-time histograms,
//! handshake and teardown counters and handshake-time histograms per service port, and a
//! per-socket LRU map holding when each socket entered its current state. Nothing is sent to
//! userspace per event; the agent reads the maps when Prometheus scrapes.
#![no_std]
#![no_main]

mod kernel;
mod maps;
mod tail;

use aya_ebpf::programs::BtfTracePointContext;
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns, macros::btf_tracepoint};
use tcpmon_common::{
    handshake_duration_index, handshake_index, needs_sk_err, outcome, teardown_index,
    transition_index, Outcome, SocketEntry, AF_INET, AF_INET6, COUNTER_CLIENT_HANDSHAKE_UNTIMED,
    COUNTER_SERVER_HANDSHAKE_UNTIMED, COUNTER_STALE_ENTRIES, COUNTER_TRACKED_DELETES,
    COUNTER_TRACKED_INSERTS, COUNTER_UNTRACKED, HANDSHAKE_CLIENT_ESTABLISHED,
    HANDSHAKE_SERVER_ESTABLISHED, IPPROTO_TCP, PORT_OTHER, SIDE_CLIENT, SIDE_SERVER, TCP_CLOSE,
    TCP_LISTEN, TCP_SYN_SENT,
};

use crate::{
    kernel::{global, read_kernel, sock_field},
    maps::{
        decrement, increment, observe, COUNTERS, DWELL, HANDSHAKES, HANDSHAKE_DURATION, PORTS,
        SOCKETS, TEARDOWNS, TRANSITIONS,
    },
};

// Load-time configuration, set by the agent through `EbpfLoader::override_global`: offsets of
// kernel struct members, from the kernel's BTF.
/// Inode of the only network namespace to count, or 0 to count every namespace.
#[no_mangle]
static NETNS_FILTER: u32 = 0;
/// Offset of `struct sock.__sk_common.skc_net.net` (a `struct net *`).
#[no_mangle]
static SK_NET_OFFSET: u32 = 0;
/// Offset of `struct net.ns.inum`.
#[no_mangle]
static NET_INUM_OFFSET: u32 = 0;
/// Offset of `struct sock.sk_err`.
#[no_mangle]
static SK_ERR_OFFSET: u32 = 0;
/// Offset of `struct tcp_sock.srtt_us` (smoothed RTT in 1/8 µs).
#[no_mangle]
static SRTT_OFFSET: u32 = 0;
/// Offset of `struct sock.sk_protocol` (a `u16` since Linux 5.6).
#[no_mangle]
static SK_PROTOCOL_OFFSET: u32 = 0;
/// Offset of `struct sock.__sk_common.skc_family`.
#[no_mangle]
static SK_FAMILY_OFFSET: u32 = 0;
/// Offset of `struct inet_sock.inet_sport`: the local port, network byte order. Not
/// `skc_num`, which is already 0 when a socket that had a port reaches CLOSE.
#[no_mangle]
static INET_SPORT_OFFSET: u32 = 0;
/// Offset of `struct sock.__sk_common.skc_dport`: the remote port, network byte order.
#[no_mangle]
static SK_DPORT_OFFSET: u32 = 0;
/// Offset of `struct sock.__sk_common.skc_num`: the local port, host byte order, a plain load
/// (`inet_sport` takes a helper call), but only until the socket is unhashed on its way to CLOSE.
#[no_mangle]
static SK_NUM_OFFSET: u32 = 0;
/// Offsets of the address fields, read only for tail events.
#[no_mangle]
static SK_RCV_SADDR_OFFSET: u32 = 0;
#[no_mangle]
static SK_DADDR_OFFSET: u32 = 0;
#[no_mangle]
static SK_V6_RCV_SADDR_OFFSET: u32 = 0;
#[no_mangle]
static SK_V6_DADDR_OFFSET: u32 = 0;

/// One transition, as the tracepoint reports it.
pub struct Transition {
    /// The tracepoint's `struct sock *`; its address keys the socket map.
    sk: *const u8,
    old: i32,
    new: i32,
    dport: u16,
    family: u16,
}

/// What the accounting learnt that a tail event reports too.
pub struct Tracked {
    /// When the transition was seen (`bpf_ktime_get_ns`), read once for the dwell time and the
    /// tail event; 0 when neither needs it.
    now: u64,
    dwell_ns: Option<u64>,
    sk_err: i32,
    owner: tail::Owner,
}

/// `sock:inet_sock_set_state` as a BTF-enabled raw tracepoint: the kernel hands over its own
/// arguments `(sk, oldstate, newstate)` without building a trace record, and the program reads
/// the socket's fields straight from `struct sock` (the verifier knows its type from BTF).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    account(&ctx);
    0
}

fn account(ctx: &BtfTracePointContext) {
    let sk: *const u8 = ctx.arg(0);
    if sock_field::<u16>(sk, &SK_PROTOCOL_OFFSET) != IPPROTO_TCP {
        return;
    }
    let netns = global(&NETNS_FILTER);
    if netns != 0 && socket_netns(sk) != netns {
        return;
    }
    let family: u16 = sock_field(sk, &SK_FAMILY_OFFSET);
    let family_slot = match family {
        AF_INET => 0,
        AF_INET6 => 1,
        _ => return,
    };
    let t = Transition {
        sk,
        old: ctx.arg(1),
        new: ctx.arg(2),
        dport: u16::from_be(sock_field(sk, &SK_DPORT_OFFSET)),
        family,
    };
    if let Some(index) = transition_index(family_slot, t.old as u32, t.new as u32) {
        increment(&TRANSITIONS, index);
    }
    let tail = tail::is_on();
    // A same-state event (shutdown then close) is a transition but ends nothing and never
    // restarts a timer.
    let tracked = if t.old != t.new {
        track(&t, tail)
    } else {
        Tracked {
            // SAFETY: the helper has no preconditions.
            now: if tail {
                unsafe { bpf_ktime_get_ns() }
            } else {
                0
            },
            dwell_ns: None,
            sk_err: 0,
            owner: if tail {
                tail::owner_of(&t)
            } else {
                tail::Owner::none()
            },
        }
    };
    if tail {
        tail::emit(sk, &t, &tracked);
    }
}

/// Dwell time, handshake and teardown accounting, and the socket's entry.
#[inline(always)]
fn track(t: &Transition, tail: bool) -> Tracked {
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // A socket starting its life: connect or listen (from CLOSE), or a listener's child (from
    // LISTEN to anything but CLOSE; a listener itself only ever goes LISTEN -> CLOSE). It has
    // no time in its old state to measure and almost never an entry: insert straight away and
    // skip the lookup. An entry that is there after all (a CLOSE never seen) is stale whatever
    // state it holds, and makes the insert fail; the full path below handles it.
    let birth = t.old == TCP_CLOSE || (t.old == TCP_LISTEN && t.new != TCP_CLOSE);
    if birth {
        if let Some(tracked) = track_new(t, tail, now) {
            return tracked;
        }
    }
    let entry = SOCKETS.get_ptr_mut(t.sk as u64);
    let mut dwell_ns = None;
    let mut owner = tail::Owner::none();
    // A stale entry (its socket's CLOSE was never seen, and the address now belongs to a new
    // socket starting from CLOSE or LISTEN) describes another socket: start afresh.
    let mut fresh = false;
    let (port_slot, side) = match entry {
        Some(entry) => {
            // SAFETY: the map returned a valid pointer to this socket's value.
            let entry = unsafe { &*entry };
            if entry.state == t.old && !birth {
                let ns = now.saturating_sub(entry.entered_ns);
                observe(&DWELL, t.old as u32, ns);
                dwell_ns = Some(ns);
            } else {
                increment(&COUNTERS, COUNTER_STALE_ENTRIES);
                fresh = birth;
            }
            if fresh {
                service_port(t)
            } else {
                if tail {
                    owner = tail::Owner::of_entry(entry);
                }
                (u32::from(entry.port_slot), u32::from(entry.side))
            }
        }
        None => {
            // Every transition but a birth had an old state worth timing, a listener's
            // LISTEN -> CLOSE included (it opened before the agent, or its entry was evicted).
            if !birth {
                increment(&COUNTERS, COUNTER_UNTRACKED);
            }
            service_port(t)
        }
    };

    let sk_err = if needs_sk_err(t.old, t.new) {
        sock_field::<i32>(t.sk, &SK_ERR_OFFSET)
    } else {
        0
    };
    match outcome(t.old, t.new, sk_err) {
        Outcome::Handshake(result) => {
            if let Some(index) = handshake_index(port_slot, result) {
                increment(&HANDSHAKES, index);
            }
            handshake_time(t, result, port_slot, dwell_ns);
        }
        Outcome::Teardown(initiator, kind) => {
            if let Some(index) = teardown_index(port_slot, initiator, kind) {
                increment(&TEARDOWNS, index);
            }
        }
        Outcome::Nothing => {}
    }

    if tail && tail::in_process_context(t) {
        owner = tail::Owner::current();
    }
    match entry {
        Some(_) if t.new == TCP_CLOSE => {
            // Counted before the entry goes, so that the agent's eviction estimate (inserts -
            // deletes - entries present) can only be low while this runs, never high. Another
            // CPU's insert may have evicted the entry since the lookup: then it was no delete.
            increment(&COUNTERS, COUNTER_TRACKED_DELETES);
            if SOCKETS.remove(t.sk as u64).is_err() {
                decrement(&COUNTERS, COUNTER_TRACKED_DELETES);
            }
        }
        Some(entry) => {
            // SAFETY: as above; no other reference to the value is live.
            let entry = unsafe { &mut *entry };
            entry.entered_ns = now;
            entry.state = t.new;
            if fresh {
                entry.port_slot = port_slot as u16;
                entry.side = side as u16;
                entry.pid = owner.pid;
                entry.comm = owner.comm;
            }
            if tail {
                owner.store(entry);
            }
        }
        None if t.new != TCP_CLOSE => {
            insert(t, now, port_slot, side, &owner);
        }
        None => {}
    }
    Tracked {
        now,
        dwell_ns,
        sk_err,
        owner,
    }
}

/// Puts a new entry for the socket in `t.new`, unless one is there; counts and says whether it
/// did.
#[inline(always)]
fn insert(t: &Transition, now: u64, port_slot: u32, side: u32, owner: &tail::Owner) -> bool {
    let entry = SocketEntry {
        entered_ns: now,
        pid: owner.pid,
        comm: owner.comm,
        state: t.new,
        port_slot: port_slot as u16,
        side: side as u16,
    };
    let inserted = SOCKETS
        .insert(t.sk as u64, entry, u64::from(BPF_NOEXIST))
        .is_ok();
    if inserted {
        increment(&COUNTERS, COUNTER_TRACKED_INSERTS);
    }
    inserted
}

/// Inserts the entry of a socket starting its life; `None` if one was already there.
#[inline(always)]
fn track_new(t: &Transition, tail: bool, now: u64) -> Option<Tracked> {
    let (port_slot, side) = service_port(t);
    let owner = if tail && tail::in_process_context(t) {
        tail::Owner::current()
    } else {
        tail::Owner::none()
    };
    if !insert(t, now, port_slot, side, &owner) {
        return None;
    }
    // CLOSE -> SYN_SENT, CLOSE -> LISTEN, LISTEN -> SYN_RECV conclude nothing.
    Some(Tracked {
        now,
        dwell_ns: None,
        sk_err: 0,
        owner,
    })
}

/// Records how long an established handshake took: the client's SYN_SENT dwell, or the
/// server's SYN-ACK -> ACK round trip that the kernel measured into the child's `srtt_us`.
#[inline(always)]
fn handshake_time(t: &Transition, result: u32, port_slot: u32, dwell_ns: Option<u64>) {
    if result == HANDSHAKE_CLIENT_ESTABLISHED {
        match (dwell_ns, handshake_duration_index(port_slot, SIDE_CLIENT)) {
            (Some(ns), Some(index)) => observe(&HANDSHAKE_DURATION, index, ns),
            _ => increment(&COUNTERS, COUNTER_CLIENT_HANDSHAKE_UNTIMED),
        }
    } else if result == HANDSHAKE_SERVER_ESTABLISHED {
        let srtt = read_kernel::<u32>(t.sk as u64, global(&SRTT_OFFSET)).unwrap_or(0);
        match handshake_duration_index(port_slot, SIDE_SERVER) {
            // srtt_us holds 8x the RTT in microseconds: 125 ns per unit.
            Some(index) if srtt > 0 => observe(&HANDSHAKE_DURATION, index, u64::from(srtt) * 125),
            _ => increment(&COUNTERS, COUNTER_SERVER_HANDSHAKE_UNTIMED),
        }
    }
}

/// (port slot, side) of a socket seen for the first time. A connect's service port is the
/// remote one, a listener child's the local one; for a socket first seen mid-life, the local
/// port wins if it is a known service port.
#[inline(always)]
fn service_port(t: &Transition) -> (u32, u32) {
    let slot = |port: u16| PORTS.get_ptr(port).map(|s| unsafe { *s });
    if t.new == TCP_SYN_SENT {
        return (slot(t.dport).unwrap_or(PORT_OTHER), SIDE_CLIENT);
    }
    if t.old == TCP_LISTEN {
        return (slot(local_port(t)).unwrap_or(PORT_OTHER), SIDE_SERVER);
    }
    match (slot(local_port(t)), slot(t.dport)) {
        (Some(s), _) => (s, SIDE_SERVER),
        (None, Some(s)) => (s, SIDE_CLIENT),
        (None, None) => (PORT_OTHER, SIDE_CLIENT),
    }
}

/// The socket's local port. `skc_num` is a plain load from `struct sock`, and right for every
/// transition but one into CLOSE: the kernel unhashes a socket, zeroing `skc_num`, before it
/// stores CLOSE. (A listener's child starts as a copy of the listener: `skc_num` is already the
/// port it was accepted on.) `inet_sport` keeps the port to the end, but lies in
/// `struct inet_sock`, past the `struct sock` the verifier knows the tracepoint's pointer as,
/// so it takes a helper call: made only for CLOSE.
#[inline(always)]
pub fn local_port(t: &Transition) -> u16 {
    if t.new != TCP_CLOSE {
        return sock_field(t.sk, &SK_NUM_OFFSET);
    }
    let port = read_kernel::<u16>(t.sk as u64, global(&INET_SPORT_OFFSET)).unwrap_or(0);
    u16::from_be(port)
}

/// The network namespace inode of the socket.
#[inline(always)]
fn socket_netns(sk: *const u8) -> u32 {
    let net: *const u8 = sock_field(sk, &SK_NET_OFFSET);
    sock_field(net, &NET_INUM_OFFSET)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible: `bpf_probe_read_kernel` is a GPL-only helper.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
