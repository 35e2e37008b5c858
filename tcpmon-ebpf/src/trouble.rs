//! Trouble events: every failed handshake, reset and handshake retransmission, written to
//! their own small ring buffer whether or not a tail client listens, so that the agent can
//! answer `tcpmon tail --recent` for what went wrong while nobody watched. They are rare next
//! to transitions; a full ring is counted (`counter::TROUBLE_DROPPED`), never waited for.
use aya_ebpf::helpers::bpf_ktime_get_ns;
use tcpmon_common::{counter, TroubleEvent};

use crate::{
    config::{SK_DPORT_OFFSET, SK_FAMILY_OFFSET},
    kernel::{sock_field, write_addresses},
    maps::{COUNTERS, TROUBLE},
};

/// What the event says besides its socket.
pub struct Trouble {
    pub kind: u8,
    pub state: u8,
    pub detail: u16,
    pub sport: u16,
}

/// Writes an event about socket `sk` (a full, request or time-wait socket), or about no socket
/// (null `sk`: then only `sport` and `dport` are known).
#[inline(always)]
pub fn record(sk: *const u8, what: Trouble, dport_if_no_socket: u16) {
    let Some(mut entry) = TROUBLE.reserve::<TroubleEvent>(0) else {
        COUNTERS.increment_atomic(counter::TROUBLE_DROPPED);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, writable TroubleEvent; every field is written
    // before submit.
    unsafe {
        (*event).ts_ns = bpf_ktime_get_ns();
        (*event).skaddr = sk as u64;
        (*event).kind = what.kind;
        (*event).state = what.state;
        (*event).detail = what.detail;
        (*event).sport = what.sport;
        (*event)._pad = [0; 2];
        (*event).dropped = 0;
        let saddr = (&raw mut (*event).saddr).cast::<[u32; 4]>();
        let daddr = (&raw mut (*event).daddr).cast::<[u32; 4]>();
        if sk.is_null() {
            (*event).family = 0;
            (*event).dport = dport_if_no_socket;
            *saddr = [0; 4];
            *daddr = [0; 4];
        } else {
            let family: u16 = sock_field(sk, &SK_FAMILY_OFFSET);
            (*event).family = family;
            (*event).dport = u16::from_be(sock_field(sk, &SK_DPORT_OFFSET));
            write_addresses(sk, family, saddr, daddr);
        }
    }
    // The kernel's own choice of wakeup: only the first event after the agent has read the
    // ring wakes it (and the agent reads at most ten times a second), so an idle agent sleeps
    // and a storm of trouble costs a wakeup per read, not per event.
    entry.submit(0);
}
