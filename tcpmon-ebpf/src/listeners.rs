//! Every listening socket in scope, in one map (`LISTENERS`), so that the agent reads the
//! queues and drop counts of all of them in one pass of `tcpmon_read_listeners`, in every
//! network namespace at once, without entering any.
//!
//! (A map iterator, `iter/bpf_map_elem`, would be the natural reader; this kernel refuses to
//! load one, even empty, with EPERM, so the agent hands the addresses over and runs a reader.)
//!
//! The main program (and its cover) puts a socket in when it enters LISTEN and takes it out
//! when it leaves LISTEN for CLOSE: rare transitions, and on the common path two compares. A
//! listener's child also starts in LISTEN (it is a copy of the listener: `LISTEN → SYN_RECV`)
//! and is neither put in nor taken out. Listeners older than the agent are put in once at
//! start-up by `tcpmon_startup_walk` (`startup.rs`), run in each namespace.
use aya_ebpf::{
    bindings::BPF_ANY, helpers::bpf_ktime_get_ns, macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use tcpmon_common::{counter, maps, tcp_state, ListenerEntry, ListenerRecord, AF_INET};

use crate::{
    config::{
        global, ACCEPT_QLEN_OFFSET, NET_INUM_OFFSET, SK_ACK_BACKLOG_OFFSET, SK_DROPS_OFFSET,
        SK_FAMILY_OFFSET, SK_MAX_ACK_BACKLOG_OFFSET, SK_NET_OFFSET, SK_NUM_OFFSET,
        SK_RCV_SADDR_OFFSET, SK_STATE_OFFSET, SK_V6_RCV_SADDR_OFFSET,
    },
    kernel::read_or_zero,
    maps::{COUNTERS, LISTENERS, LISTENER_ANSWERS, LISTENER_QUERY},
    Transition,
};

/// Follows a socket into and out of LISTEN.
#[inline(always)]
pub fn follow(t: &Transition) {
    if t.new == tcp_state::LISTEN && t.old != tcp_state::LISTEN {
        // A new listener, or a new one at a reused address: a new identity either way.
        let entry = ListenerEntry {
            // SAFETY: the helper has no preconditions.
            since_ns: unsafe { bpf_ktime_get_ns() },
        };
        if LISTENERS
            .insert(&(t.sk as u64), &entry, u64::from(BPF_ANY))
            .is_err()
        {
            COUNTERS.increment(t.row, counter::LISTENERS_UNTRACKED);
        }
    } else if t.old == tcp_state::LISTEN && t.new == tcp_state::CLOSE {
        let _ = LISTENERS.remove(&(t.sk as u64));
    }
}

/// Reads the listeners whose addresses the agent wrote to `LISTENER_QUERY` (the first `n`,
/// `n` the one argument) into `LISTENER_ANSWERS`. Never attached: the agent runs it with
/// `BPF_PROG_TEST_RUN`, since this kernel refuses iterators over a map's elements. The socket
/// is read with `bpf_probe_read_kernel` (its address is an integer to the verifier): an entry
/// whose socket closed unseen reads as garbage or fails, never faults, and the agent drops
/// entries whose state is not LISTEN.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn tcpmon_read_listeners(ctx: RawTracePointContext) -> i32 {
    let n: u64 = ctx.arg(0);
    for index in 0..maps::LISTENERS_PER_READ {
        if u64::from(index) >= n {
            break;
        }
        let (Some(&sk), Some(answer)) = (
            LISTENER_QUERY.get(index),
            LISTENER_ANSWERS.get_ptr_mut(index),
        ) else {
            break;
        };
        // SAFETY: a valid pointer to this index's value in the array.
        unsafe { *answer = read(sk) };
    }
    0
}

/// The listener at `sk`, as far as it can be read (what cannot be is 0). One branch only, on
/// the family, so that the verifier's walk of the reader's loop stays small.
#[inline(always)]
fn read(sk: u64) -> ListenerRecord {
    let net: u64 = field(sk, &SK_NET_OFFSET);
    let family: u16 = field(sk, &SK_FAMILY_OFFSET);
    let address = if family == AF_INET {
        let v4: [u8; 4] = field(sk, &SK_RCV_SADDR_OFFSET);
        [
            v4[0], v4[1], v4[2], v4[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]
    } else {
        field(sk, &SK_V6_RCV_SADDR_OFFSET)
    };
    ListenerRecord {
        skaddr: sk,
        since_ns: 0,
        address,
        drops: field::<i32>(sk, &SK_DROPS_OFFSET) as u32,
        queued: field(sk, &SK_ACK_BACKLOG_OFFSET),
        limit: field(sk, &SK_MAX_ACK_BACKLOG_OFFSET),
        requests: field::<i32>(sk, &ACCEPT_QLEN_OFFSET) as u32,
        // A NULL `net` reads as 0 too.
        netns: read_or_zero(net, global(&NET_INUM_OFFSET)),
        family,
        port: field(sk, &SK_NUM_OFFSET),
        state: field(sk, &SK_STATE_OFFSET),
        _pad: [0; 7],
    }
}

/// The member of the socket at `sk` at `*offset`, or zeroes if it cannot be read.
#[inline(always)]
fn field<T: Copy>(sk: u64, offset: &'static u32) -> T {
    read_or_zero(sk, global(offset))
}
