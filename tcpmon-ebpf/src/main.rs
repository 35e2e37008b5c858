//! tcpmon's eBPF program on the kernel's `inet_sock_set_state` tracepoint, attached as a
//! BTF-enabled tracepoint (`tp_btf`). This file is the entry point: it filters (TCP, the
//! namespace asked for, IPv4/IPv6) and counts the transition; `accounting` does the rest.
//!
//! It aggregates in the kernel: a per-CPU transition matrix, per-state dwell-time histograms,
//! handshake and teardown counters and handshake-time histograms per service port, and a
//! per-socket LRU map holding when each socket entered its current state; the agent reads the
//! maps when Prometheus scrapes. Only while a `tcpmon tail` client is connected does it also
//! write one event per transition the clients' filters may want to a ring buffer (`tail`).
//!
//! The object holds two programs on the tracepoint: the main one, and its cover, which counts
//! the transitions the kernel did not run the main one for (`reentry`).
#![no_std]
#![no_main]
// The BPF target has no atomic read-modify-write types; the intrinsic is the kernel's atomic
// add instruction (`kernel::atomic_add`).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod accounting;
mod config;
mod kernel;
mod listeners;
mod maps;
mod namespaces;
mod owner;
mod reentry;
mod resets;
mod retransmits;
mod sockets_iter;
mod startup;
mod tail;
mod trouble;
mod workloads;

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use tcpmon_common::{tcp_state, transition_index, AF_INET, AF_INET6, DWELL_UNKNOWN, IPPROTO_TCP};

use crate::{
    accounting::{track, Tracked},
    config::{
        global, INET_SPORT_OFFSET, NETNS_FILTER, NET_INUM_OFFSET, SK_DPORT_OFFSET,
        SK_FAMILY_OFFSET, SK_NET_OFFSET, SK_NUM_OFFSET, SK_PROTOCOL_OFFSET,
    },
    kernel::{read_kernel, sock_field},
    maps::{Row, TRANSITIONS},
    reentry::Key,
};

/// One transition, as the tracepoint reports it.
#[derive(Clone, Copy)]
pub struct Transition {
    /// The tracepoint's `struct sock *`; its address keys the socket map.
    sk: *const u8,
    old: i32,
    new: i32,
    dport: u16,
    family: u16,
    family_slot: u32,
    /// The row of the per-CPU arrays this run updates.
    row: Row,
}

/// `sock:inet_sock_set_state` as a BTF-enabled raw tracepoint: the kernel hands over its own
/// arguments `(sk, oldstate, newstate)` without building a trace record, and the program reads
/// the socket's fields straight from `struct sock` (the verifier knows its type from BTF).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    if let (Some(t), Some(state)) = (transition(&ctx), reentry::this_cpu()) {
        let row = reentry::enter(state);
        let now = account(&Transition { row, ..t });
        reentry::leave(state, row);
        reentry::push(state, Key::of(t.sk, t.old, t.new), now);
    }
    0
}

/// The cover: the same tracepoint, attached after the main program; it accounts only the
/// transitions the kernel did not run the main program for (see `reentry`).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_cover(ctx: BtfTracePointContext) -> i32 {
    let Some(state) = reentry::this_cpu() else {
        return 0;
    };
    // The top token first: for almost every transition the main program ran, and the cover is
    // done without reading the socket.
    let key = Key::of(ctx.arg(0), ctx.arg(1), ctx.arg(2));
    if reentry::take_top(state, key) {
        return 0;
    }
    // A transition the main program filters out leaves no token, and needs no search for one.
    let Some(t) = transition(&ctx) else {
        return 0;
    };
    if !reentry::take_below(state, key) {
        let row = reentry::enter(state);
        reentry::count_covered(row);
        account(&Transition { row, ..t });
        reentry::leave(state, row);
    }
    0
}

/// The transition, if it is one tcpmon counts: TCP, in the namespace asked for, IPv4 or IPv6.
#[inline(always)]
fn transition(ctx: &BtfTracePointContext) -> Option<Transition> {
    let sk: *const u8 = ctx.arg(0);
    if sock_field::<u16>(sk, &SK_PROTOCOL_OFFSET) != IPPROTO_TCP {
        return None;
    }
    let (family, family_slot) = counted_family(sk)?;
    Some(Transition {
        sk,
        old: ctx.arg(1),
        new: ctx.arg(2),
        dport: u16::from_be(sock_field(sk, &SK_DPORT_OFFSET)),
        family,
        family_slot,
        row: Row::OWN,
    })
}

/// The socket's family and family slot, if tcpmon counts it: in the namespace asked for, IPv4
/// or IPv6.
#[inline(always)]
pub fn counted_family(sk: *const u8) -> Option<(u16, u32)> {
    let netns = global(&NETNS_FILTER);
    if netns != 0 && socket_netns(sk) != netns {
        return None;
    }
    let family: u16 = sock_field(sk, &SK_FAMILY_OFFSET);
    match family {
        AF_INET => Some((family, 0)),
        AF_INET6 => Some((family, 1)),
        _ => None,
    }
}

/// Counts the transition and does the rest of its accounting; returns the clock read it made
/// (0 if none).
#[inline(always)]
fn account(t: &Transition) -> u64 {
    if let Some(index) = transition_index(t.family_slot, t.old as u32, t.new as u32) {
        TRANSITIONS.increment(t.row, index);
    }
    listeners::follow(t);
    if t.old != t.new {
        startup::note_first(t);
        let made_time_wait = matches!(
            t.old,
            tcp_state::FIN_WAIT1 | tcp_state::FIN_WAIT2 | tcp_state::CLOSING
        );
        if t.new == tcp_state::CLOSE && made_time_wait {
            namespaces::note(t.sk);
        }
    }
    let tail = tail::wanted(t);
    // A same-state event (shutdown then close) is a transition but ends nothing and never
    // restarts a timer.
    let tracked = if t.old != t.new {
        track(t, tail)
    } else {
        Tracked {
            now: if tail {
                // SAFETY: the helper has no preconditions.
                unsafe { bpf_ktime_get_ns() }
            } else {
                0
            },
            dwell_ns: DWELL_UNKNOWN,
            sk_err: 0,
            owner: if tail {
                tail::owner_of(t)
            } else {
                owner::Owner::none()
            },
        }
    };
    if tail {
        tail::emit(t.sk, t, &tracked, tcpmon_common::TAIL_TRANSITION);
    }
    tracked.now
}

/// The socket's local port. `skc_num` is a plain load from `struct sock`, and right for every
/// transition but one into CLOSE: the kernel unhashes a socket, zeroing `skc_num`, before it
/// stores CLOSE. (A listener's child starts as a copy of the listener: `skc_num` is already the
/// port it was accepted on.) `inet_sport` keeps the port to the end, but lies in
/// `struct inet_sock`, past the `struct sock` the verifier knows the tracepoint's pointer as,
/// so it takes a helper call: made only for CLOSE.
#[inline(always)]
pub fn local_port(t: &Transition) -> u16 {
    local_port_in(t.sk, t.new)
}

/// [`local_port`] of a socket in `state` (a full socket if that is CLOSE).
#[inline(always)]
pub fn local_port_in(sk: *const u8, state: i32) -> u16 {
    if state != tcp_state::CLOSE {
        return sock_field(sk, &SK_NUM_OFFSET);
    }
    let port = read_kernel::<u16>(sk as u64, global(&INET_SPORT_OFFSET)).unwrap_or(0);
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
