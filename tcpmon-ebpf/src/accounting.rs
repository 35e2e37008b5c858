//! The accounting of one transition that changes a state: the socket's entry in the per-socket
//! map (when it entered its state, its service port and side), dwell times, and the handshake
//! or teardown the transition concludes.
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns};
use tcpmon_common::{
    counter, handshake, needs_sk_err, outcome, port, side, tcp_state, teardown, workload, Outcome,
    SocketEntry, DWELL_UNKNOWN,
};

use crate::{
    config::{global, SK_ERR_OFFSET, SRTT_OFFSET},
    kernel::{read_kernel, sock_field},
    local_port,
    maps::{COUNTERS, DWELL, HANDSHAKE_DURATION, PORTS, SOCKETS},
    owner::{in_process_context, Owner},
    trouble, workloads, Transition,
};

/// What the accounting learnt that a tail event reports too.
pub struct Tracked {
    /// When the transition was seen (`bpf_ktime_get_ns`), read once for the dwell time and the
    /// tail event; 0 when neither needs it.
    pub now: u64,
    /// Time in the old state, or `DWELL_UNKNOWN`. Not an `Option`: the payload of a `None`
    /// is undefined, and LLVM may copy it from a stack slot never written, which the 5.10
    /// verifier refuses ("invalid read from stack").
    pub dwell_ns: u64,
    pub sk_err: i32,
    pub owner: Owner,
}

/// Dwell time, handshake and teardown accounting, and the socket's entry.
#[inline(always)]
pub fn track(t: &Transition, tail: bool) -> Tracked {
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // A socket starting its life: connect or listen (from CLOSE), or a listener's child (from
    // LISTEN to anything but CLOSE; a listener itself only ever goes LISTEN -> CLOSE). It has
    // no time in its old state to measure and almost never an entry: insert straight away and
    // skip the lookup. An entry that is there after all (a CLOSE never seen) is stale whatever
    // state it holds, and makes the insert fail; the full path below handles it.
    let birth =
        t.old == tcp_state::CLOSE || (t.old == tcp_state::LISTEN && t.new != tcp_state::CLOSE);
    if birth {
        if let Some(tracked) = track_new(t, tail, now) {
            return tracked;
        }
    }
    let entry = SOCKETS.get_ptr_mut(t.sk as u64);
    let mut dwell_ns = DWELL_UNKNOWN;
    let mut owner = Owner::none();
    // A stale entry (its socket's CLOSE was never seen, and the address now belongs to a new
    // socket starting from CLOSE or LISTEN) describes another socket: start afresh.
    let mut fresh = false;
    let (port_slot, side) = match entry {
        Some(entry) => {
            // SAFETY: the map returned a valid pointer to this socket's value.
            let entry = unsafe { &*entry };
            if entry.state == t.old && !birth {
                let ns = now.saturating_sub(entry.entered_ns);
                DWELL.observe(t.row, t.old as u32, ns);
                dwell_ns = ns;
            } else {
                COUNTERS.increment(t.row, counter::STALE_ENTRIES);
                fresh = birth;
            }
            if fresh {
                service_port(t)
            } else {
                if tail {
                    owner = Owner::of_entry(entry);
                }
                (u32::from(entry.port_slot), u32::from(entry.side))
            }
        }
        None => {
            // Every transition but a birth had an old state worth timing, a listener's
            // LISTEN -> CLOSE included (it opened before the agent, or its entry was evicted).
            if !birth {
                COUNTERS.increment(t.row, counter::UNTRACKED);
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
            if let Some(index) = handshake::index(port_slot, result) {
                workloads::count(t, workload::HANDSHAKE, index);
            }
            handshake_time(t, result, port_slot, dwell_ns);
            if result != handshake::CLIENT_ESTABLISHED && result != handshake::SERVER_ESTABLISHED {
                let what = trouble::Trouble {
                    kind: tcpmon_common::trouble::HANDSHAKE_FAILED,
                    state: t.old as u8,
                    detail: result as u16,
                    sport: crate::local_port(t),
                };
                trouble::record(t.sk, what, 0);
            }
        }
        Outcome::Teardown(initiator, kind) => {
            if let Some(index) = teardown::index(port_slot, initiator, kind) {
                workloads::count(t, workload::TEARDOWN, index);
            }
        }
        Outcome::Nothing => {}
    }

    if tail && in_process_context(t) {
        owner = Owner::current();
    }
    match entry {
        Some(_) if t.new == tcp_state::CLOSE => {
            // Counted before the entry goes, so that the agent's eviction estimate (inserts -
            // deletes - entries present) can only be low while this runs, never high. Another
            // CPU's insert may have evicted the entry since the lookup: then it was no delete.
            COUNTERS.increment(t.row, counter::TRACKED_DELETES);
            if let Err(code) = SOCKETS.remove(t.sk as u64) {
                COUNTERS.decrement(t.row, counter::TRACKED_DELETES);
                count_busy(t, code);
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
        None if t.new != tcp_state::CLOSE => {
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
fn insert(t: &Transition, now: u64, port_slot: u32, side: u32, owner: &Owner) -> bool {
    let entry = SocketEntry {
        entered_ns: now,
        pid: owner.pid,
        comm: owner.comm,
        state: t.new,
        port_slot: port_slot as u16,
        side: side as u16,
    };
    match SOCKETS.insert(t.sk as u64, entry, u64::from(BPF_NOEXIST)) {
        Ok(()) => {
            COUNTERS.increment(t.row, counter::TRACKED_INSERTS);
            true
        }
        Err(code) => {
            count_busy(t, code);
            false
        }
    }
}

/// Counts a socket-map operation the kernel refused because the run this one interrupted on
/// its CPU holds the bucket lock it needs.
#[inline(always)]
fn count_busy(t: &Transition, code: i32) {
    if code == -EBUSY {
        COUNTERS.increment(t.row, counter::SOCKET_MAP_BUSY);
    }
}

const EBUSY: i32 = 16;

/// Inserts the entry of a socket starting its life; `None` if one was already there.
#[inline(always)]
fn track_new(t: &Transition, tail: bool, now: u64) -> Option<Tracked> {
    let (port_slot, side) = service_port(t);
    let owner = if tail && in_process_context(t) {
        Owner::current()
    } else {
        Owner::none()
    };
    if !insert(t, now, port_slot, side, &owner) {
        return None;
    }
    // CLOSE -> SYN_SENT, CLOSE -> LISTEN, LISTEN -> SYN_RECV conclude nothing.
    Some(Tracked {
        now,
        dwell_ns: DWELL_UNKNOWN,
        sk_err: 0,
        owner,
    })
}

/// Records how long an established handshake took: the client's SYN_SENT dwell, or the
/// server's SYN-ACK -> ACK round trip that the kernel measured into the child's `srtt_us`.
#[inline(always)]
fn handshake_time(t: &Transition, result: u32, port_slot: u32, dwell_ns: u64) {
    if result == handshake::CLIENT_ESTABLISHED {
        let known = (dwell_ns != DWELL_UNKNOWN).then_some(dwell_ns);
        match (known, handshake::side_index(port_slot, side::CLIENT)) {
            (Some(ns), Some(index)) => HANDSHAKE_DURATION.observe(t.row, index, ns),
            _ => COUNTERS.increment(t.row, counter::CLIENT_HANDSHAKE_UNTIMED),
        }
    } else if result == handshake::SERVER_ESTABLISHED {
        let srtt = read_kernel::<u32>(t.sk as u64, global(&SRTT_OFFSET)).unwrap_or(0);
        match handshake::side_index(port_slot, side::SERVER) {
            // srtt_us holds 8x the RTT in microseconds: 125 ns per unit.
            Some(index) if srtt > 0 => {
                HANDSHAKE_DURATION.observe(t.row, index, u64::from(srtt) * 125)
            }
            _ => COUNTERS.increment(t.row, counter::SERVER_HANDSHAKE_UNTIMED),
        }
    }
}

/// (port slot, side) of a socket seen for the first time. A connect's service port is the
/// remote one, a listener child's the local one; for a socket first seen mid-life, the local
/// port wins if it is a known service port.
#[inline(always)]
fn service_port(t: &Transition) -> (u32, u32) {
    // SAFETY: the map returned a valid pointer to the port's slot, which only the agent writes.
    let slot = |port: u16| PORTS.get_ptr(port).map(|s| unsafe { *s });
    if t.new == tcp_state::SYN_SENT {
        return (slot(t.dport).unwrap_or(port::OTHER), side::CLIENT);
    }
    if t.old == tcp_state::LISTEN {
        return (slot(local_port(t)).unwrap_or(port::OTHER), side::SERVER);
    }
    match (slot(local_port(t)), slot(t.dport)) {
        (Some(s), _) => (s, side::SERVER),
        (None, Some(s)) => (s, side::CLIENT),
        (None, None) => (port::OTHER, side::CLIENT),
    }
}
