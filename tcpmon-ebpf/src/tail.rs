//! Tail events: one per transition that a connected `tcpmon tail` client may want, with the
//! process that owns the socket carried from the transitions that run in its context.
use aya_ebpf::bindings::BPF_RB_NO_WAKEUP;
use tcpmon_common::{counter, TailEvent, TailRule};

use crate::{
    accounting::Tracked,
    kernel::write_addresses,
    maps::{COUNTERS, EVENTS, SOCKETS, TAIL_FILTER},
    owner::{in_process_context, Owner},
    Transition,
};

/// Whether a connected tail client may want this transition: one of the clients' rules (its
/// port and family filter) selects it. Checked before anything is done for the tail, so an
/// incident tail filtered to one port costs the other ports almost nothing.
#[inline(always)]
pub fn wanted(t: &Transition) -> bool {
    let Some(filter) = TAIL_FILTER.get(0) else {
        return false;
    };
    let count = filter.rule_count as usize;
    if count == 0 {
        return false;
    }
    let local = crate::local_port(t);
    for (i, rule) in filter.rules.iter().enumerate() {
        if i >= count {
            break;
        }
        if selects(rule, t, local) {
            return true;
        }
    }
    false
}

#[inline(always)]
fn selects(rule: &TailRule, t: &Transition, local: u16) -> bool {
    if rule.families != 0 && rule.families & (1 << t.family_slot) == 0 {
        return false;
    }
    let count = rule.port_count as usize;
    if count == 0 {
        return true;
    }
    for (i, &port) in rule.ports.iter().enumerate() {
        if i >= count {
            break;
        }
        if port == local || port == t.dport {
            return true;
        }
    }
    false
}

/// The owner of a socket whose state did not change (a second shutdown or close).
#[inline(always)]
pub fn owner_of(t: &Transition) -> Owner {
    if in_process_context(t) {
        return Owner::current();
    }
    match SOCKETS.get_ptr(t.sk as u64) {
        // SAFETY: the map returned a valid pointer to this socket's value.
        Some(entry) => Owner::of_entry(unsafe { &*entry }),
        None => Owner::none(),
    }
}

/// Writes the tail event straight into the ring buffer (the BPF stack is too small for a copy);
/// a full ring buffer is counted, never waited for.
#[inline(always)]
pub fn emit(sk: *const u8, t: &Transition, tracked: &Tracked, kind: u8) {
    let Some(mut entry) = EVENTS.reserve::<TailEvent>(0) else {
        COUNTERS.increment(t.row, counter::EVENTS_DROPPED);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, writable TailEvent in the ring buffer; every field
    // is written before submit.
    unsafe {
        (*event).ts_ns = tracked.now;
        (*event).skaddr = t.sk as u64;
        (*event).dwell_ns = tracked.dwell_ns;
        (*event).cgroup_id = crate::kernel::sock_cgroup_id(sk);
        (*event).comm = tracked.owner.comm;
        (*event).pid = tracked.owner.pid;
        (*event).oldstate = t.old;
        (*event).newstate = t.new;
        (*event).sk_err = tracked.sk_err;
        (*event).sport = crate::local_port(t);
        (*event).dport = t.dport;
        (*event).family = t.family;
        (*event).kind = kind;
        (*event)._pad = 0;
        // The record is 8-byte aligned, and so are the address arrays in it.
        let saddr = (&raw mut (*event).saddr).cast::<[u32; 4]>();
        let daddr = (&raw mut (*event).daddr).cast::<[u32; 4]>();
        write_addresses(sk, t.family, saddr, daddr);
    }
    // Never wake the agent: it polls every few milliseconds while a client listens. A wake-up
    // per event (the ring buffer's default whenever the reader has caught up) costs an
    // irq_work and a context switch each; even one per 64 KiB cost a helper call per event to
    // find out when.
    let flags = BPF_RB_NO_WAKEUP;
    entry.submit(u64::from(flags));
    COUNTERS.increment(t.row, counter::EVENTS);
}
