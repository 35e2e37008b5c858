//! Tail events: one per transition while a `tcpmon tail` client is connected, with the process
//! that owns the socket carried from the transitions that run in its context.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel_buf},
    programs::TracePointContext,
    EbpfContext,
};
use tcpmon_common::{
    SocketEntry, TailEvent, AF_INET, COUNTER_EVENTS, COUNTER_EVENTS_DROPPED, DWELL_UNKNOWN,
    TCP_FIN_WAIT1, TCP_LAST_ACK, TCP_LISTEN, TCP_SYN_SENT,
};

use crate::{
    maps::{increment, COUNTERS, EVENTS, SOCKETS, TAIL_SWITCH},
    record::global,
    Tracked, Transition, TP_DADDR, TP_DADDR_V6, TP_SADDR, TP_SADDR_V6,
};

/// Unread bytes in the ring buffer at which the agent is woken: about 630 events.
const WAKEUP_BYTES: u64 = 64 * 1024;
/// A TailEvent in the ring buffer: 8 bytes of record header, then the event.
const RECORD_BYTES: u64 = 8 + core::mem::size_of::<TailEvent>() as u64;

/// Whether a tail client is connected.
#[inline(always)]
pub fn is_on() -> bool {
    TAIL_SWITCH.get(0).is_some_and(|on| *on != 0)
}

/// The process a socket belongs to, as far as the program knows.
pub struct Owner {
    pub pid: u32,
    pub comm: [u8; 16],
}

impl Owner {
    #[inline(always)]
    pub fn none() -> Owner {
        Owner {
            pid: 0,
            comm: [0; 16],
        }
    }

    #[inline(always)]
    pub fn of_entry(entry: &SocketEntry) -> Owner {
        Owner {
            pid: entry.pid,
            comm: entry.comm,
        }
    }

    /// The current task. Only meaningful in process context: most transitions run in softirq,
    /// where the current task is whoever was interrupted.
    #[inline(always)]
    pub fn current() -> Owner {
        Owner {
            pid: (bpf_get_current_pid_tgid() >> 32) as u32,
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
        }
    }

    #[inline(always)]
    pub fn store(&self, entry: &mut SocketEntry) {
        if self.pid != 0 {
            entry.pid = self.pid;
            entry.comm = self.comm;
        }
    }
}

/// Transitions that only system calls make (connect, listen, close, shutdown), so the current
/// task is the socket's owner.
#[inline(always)]
pub fn in_process_context(t: &Transition) -> bool {
    matches!(
        t.new,
        TCP_SYN_SENT | TCP_LISTEN | TCP_FIN_WAIT1 | TCP_LAST_ACK
    )
}

/// The owner of a socket whose state did not change (a second shutdown or close).
#[inline(always)]
pub fn owner_of(t: &Transition) -> Owner {
    if in_process_context(t) {
        return Owner::current();
    }
    match SOCKETS.get_ptr(t.skaddr) {
        // SAFETY: the map returned a valid pointer to this socket's value.
        Some(entry) => Owner::of_entry(unsafe { &*entry }),
        None => Owner::none(),
    }
}

/// Writes the tail event straight into the ring buffer (the BPF stack is too small for a copy);
/// a full ring buffer is counted, never waited for.
#[inline(always)]
pub fn emit(ctx: &TracePointContext, t: &Transition, tracked: &Tracked) {
    let Some(mut entry) = EVENTS.reserve::<TailEvent>(0) else {
        increment(&COUNTERS, COUNTER_EVENTS_DROPPED);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, writable TailEvent in the ring buffer; every field
    // is written before submit.
    unsafe {
        (*event).ts_ns = aya_ebpf::helpers::bpf_ktime_get_ns();
        (*event).skaddr = t.skaddr;
        (*event).dwell_ns = tracked.dwell_ns.unwrap_or(DWELL_UNKNOWN);
        (*event).saddr = [0; 16];
        (*event).daddr = [0; 16];
        (*event).comm = tracked.owner.comm;
        (*event).pid = tracked.owner.pid;
        (*event).oldstate = t.old;
        (*event).newstate = t.new;
        (*event).sk_err = tracked.sk_err;
        (*event).sport = t.sport;
        (*event).dport = t.dport;
        (*event).family = t.family;
        (*event)._pad = [0; 2];
        let base = ctx.as_ptr() as u64;
        if t.family == AF_INET {
            read_into(base, global(&TP_SADDR), &mut (&mut (*event).saddr)[..4]);
            read_into(base, global(&TP_DADDR), &mut (&mut (*event).daddr)[..4]);
        } else {
            read_into(base, global(&TP_SADDR_V6), &mut (*event).saddr);
            read_into(base, global(&TP_DADDR_V6), &mut (*event).daddr);
        }
    }
    // Wake the agent only once a batch has piled up: a wake-up per event (the ring buffer's
    // default whenever the reader has caught up) costs an irq_work and a context switch each.
    // The agent also polls every few milliseconds, so a quiet stream is not held back.
    // Once per WAKEUP_BYTES of unread data: when this event's bytes cross a multiple of it
    // (the reserved record counts as available, header included).
    let avail = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    let before = avail.saturating_sub(RECORD_BYTES);
    let flags = if avail / WAKEUP_BYTES != before / WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(u64::from(flags));
    increment(&COUNTERS, COUNTER_EVENTS);
}

/// Copies `out.len()` bytes of the record at `offset` into `out`; leaves zeros on failure.
#[inline(always)]
fn read_into(record: u64, offset: u32, out: &mut [u8]) {
    // SAFETY: the source is inside the tracepoint record (offsets from its format file); the
    // helper fails cleanly rather than fault.
    let _ = unsafe { bpf_probe_read_kernel_buf((record + u64::from(offset)) as *const u8, out) };
}
