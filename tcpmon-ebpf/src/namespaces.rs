//! The network namespaces whose time-wait sockets tcpmon counts, and the reader of their
//! counts. A time-wait socket is made when a socket closes from FIN_WAIT1, FIN_WAIT2 or
//! CLOSING, so the program notes those closes' namespaces (a per-CPU note of the last one
//! keeps a storm in one namespace from touching the hash); the start-up walk notes every
//! namespace that had sockets before the agent. The kernel keeps each namespace's count
//! (`/proc/net/sockstat`'s "tw"): the agent runs `tcpmon_read_namespaces` at scrape time to
//! read them all, without entering any namespace.
use aya_ebpf::{bindings::BPF_ANY, macros::raw_tracepoint, programs::RawTracePointContext};
use tcpmon_common::{maps, NamespaceRecord};

use crate::{
    config::{
        global, NET_INUM_OFFSET, NS_REFS_OFFSET, SK_NET_OFFSET, TW_BIAS, TW_COUNT_OFFSET,
        TW_DEATH_ROW_OFFSET, TW_INDIRECT,
    },
    kernel::{read_or_zero, sock_field},
    maps::{LAST_NAMESPACE, LISTENER_QUERY, NAMESPACES, NAMESPACE_ANSWERS},
};

/// Notes the namespace of `sk`, a BTF-typed socket pointer.
#[inline(always)]
pub fn note(sk: *const u8) {
    let net: *const u8 = sock_field(sk, &SK_NET_OFFSET);
    if net.is_null() {
        return;
    }
    let inum: u32 = sock_field(net, &NET_INUM_OFFSET);
    if let Some(last) = LAST_NAMESPACE.get_ptr_mut(0) {
        // SAFETY: this CPU's value; a run that interrupts this one at most repeats the work.
        unsafe {
            if *last == u64::from(inum) {
                return;
            }
            *last = u64::from(inum);
        }
    }
    let key = net as u64;
    // SAFETY: the value is read once, by copy.
    if unsafe { NAMESPACES.get(&key) }.copied() != Some(inum) {
        // A new namespace, or a new one at the address of a namespace that is gone.
        let _ = NAMESPACES.insert(&key, &inum, u64::from(BPF_ANY));
    }
}

/// Reads the namespaces whose `struct net` addresses the agent wrote to `LISTENER_QUERY` (the
/// first `n`, the one argument) into `NAMESPACE_ANSWERS`. Never attached: the agent runs it
/// with `BPF_PROG_TEST_RUN`. A namespace that is gone reads with 0 references or another
/// inode, and the agent forgets it.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn tcpmon_read_namespaces(ctx: RawTracePointContext) -> i32 {
    let n: u64 = ctx.arg(0);
    for index in 0..maps::LISTENERS_PER_READ {
        if u64::from(index) >= n {
            break;
        }
        let (Some(&net), Some(answer)) = (
            LISTENER_QUERY.get(index),
            NAMESPACE_ANSWERS.get_ptr_mut(index),
        ) else {
            break;
        };
        // SAFETY: a valid pointer to this index's value in the array.
        unsafe { *answer = read(net) };
    }
    0
}

/// The namespace at `net`, as far as it can be read (what cannot be is 0). No branch but the
/// kernel's layout (a load-time constant), so that the verifier's walk stays small.
#[inline(always)]
fn read(net: u64) -> NamespaceRecord {
    let death_row = if global(&TW_INDIRECT) != 0 {
        // A NULL pointer reads as a count of 0 below.
        read_or_zero::<u64>(net, global(&TW_DEATH_ROW_OFFSET))
    } else {
        net
    };
    let count: i32 = read_or_zero(death_row, global(&TW_COUNT_OFFSET));
    NamespaceRecord {
        net,
        inum: read_or_zero(net, global(&NET_INUM_OFFSET)),
        time_wait: count - global(&TW_BIAS) as i32,
        refs: read_or_zero(net, global(&NS_REFS_OFFSET)),
        _pad: 0,
    }
}
