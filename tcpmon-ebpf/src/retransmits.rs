//! Handshake retransmissions, per service port: SYNs a client sent again (`tcp_retransmit_skb`
//! for a socket in SYN_SENT) and SYN-ACKs a server sent again (`tcp_retransmit_synack`, for a
//! listener's request). Each the kernel's own tracepoint, as a BTF-enabled tracepoint program;
//! both run in the retransmission timers (softirq), so they almost never nest in themselves,
//! and a run the kernel skips counts in `tcpmon_bpf_program_missed_runs_total`.
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use tcpmon_common::{
    handshake, port, side, tcp_state, trouble, DWELL_UNKNOWN, TAIL_SYN_RETRANSMIT,
};

use crate::{
    accounting::Tracked,
    config::{SK_DPORT_OFFSET, SK_NUM_OFFSET, SK_STATE_OFFSET},
    counted_family,
    kernel::sock_field,
    maps::{Row, HANDSHAKE_RETRANSMITS, PORTS},
    tail,
    trouble::{record, Trouble},
    Transition,
};

/// `tcp:tcp_retransmit_skb (sk, skb)`: every retransmitted segment; a SYN when the socket is
/// still in SYN_SENT. Its service port is the remote one.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    if i32::from(sock_field::<u8>(sk, &SK_STATE_OFFSET)) != tcp_state::SYN_SENT {
        return 0;
    }
    if let Some((family, family_slot)) = counted_family(sk) {
        let dport = u16::from_be(sock_field(sk, &SK_DPORT_OFFSET));
        count(dport, side::CLIENT);
        // For `tail -o timeline`: `SYN ×3 (+1.00 s, +3.00 s)`. In the tail's own ring, so that
        // it comes before the connection's later transitions.
        let t = Transition {
            sk,
            old: tcp_state::SYN_SENT,
            new: tcp_state::SYN_SENT,
            dport,
            family,
            family_slot,
            // Always in a timer (softirq), never nested in another softirq run of tcpmon: the
            // second row, since the run it may interrupt (a transition in process context)
            // updates the first without atomics.
            row: Row::NESTED,
        };
        if tail::wanted(&t) {
            let tracked = Tracked {
                // SAFETY: the helper has no preconditions.
                now: unsafe { bpf_ktime_get_ns() },
                dwell_ns: DWELL_UNKNOWN,
                sk_err: 0,
                owner: tail::owner_of(&t),
            };
            tail::emit(sk, &t, &tracked, TAIL_SYN_RETRANSMIT);
        }
        let what = Trouble {
            kind: trouble::SYN_RETRANSMIT,
            state: tcp_state::SYN_SENT as u8,
            detail: 0,
            sport: sock_field(sk, &SK_NUM_OFFSET),
        };
        record(sk, what, 0);
    }
    0
}

/// `tcp:tcp_retransmit_synack (sk, req)`: a SYN-ACK sent again for a request of listener `sk`,
/// whose local port is the service port.
#[btf_tracepoint(function = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    if counted_family(sk).is_some() {
        count(sock_field(sk, &SK_NUM_OFFSET), side::SERVER);
        let what = Trouble {
            kind: trouble::SYNACK_RETRANSMIT,
            state: tcp_state::LISTEN as u8,
            detail: 0,
            sport: sock_field(sk, &SK_NUM_OFFSET),
        };
        record(sk, what, 0);
    }
    0
}

#[inline(always)]
fn count(service_port: u16, side: u32) {
    // SAFETY: the map returned a valid pointer to the port's slot, which only the agent writes.
    let slot = PORTS
        .get_ptr(service_port)
        .map_or(port::OTHER, |s| unsafe { *s });
    if let Some(index) = handshake::side_index(slot, side) {
        HANDSHAKE_RETRANSMITS.increment(Row::OWN, index);
    }
}
