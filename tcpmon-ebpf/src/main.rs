//! tcpmon's eBPF program on `sock:inet_sock_set_state`.
//!
//! It aggregates in the kernel: a per-CPU transition matrix, per-state dwell-time histograms,
//! and a per-socket LRU map holding when each socket entered its current state. Nothing is sent
//! to userspace per event; the agent reads the maps when Prometheus scrapes.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
    EbpfContext,
};
use tcpmon_common::{
    dwell_bucket, transition_index, DwellHistogram, SocketEntry, AF_INET, AF_INET6, COUNTER_SLOTS,
    COUNTER_STALE_ENTRIES, COUNTER_TRACKED_DELETES, COUNTER_TRACKED_INSERTS, COUNTER_UNTRACKED,
    IPPROTO_TCP, MAX_TRACKED_SOCKETS, RECORD_BYTES, STATE_SLOTS, TCP_CLOSE, TCP_LISTEN,
    TRANSITION_SLOTS,
};

// Load-time configuration, set by the agent through `EbpfLoader::set_global`. Field offsets come
// from the tracepoint's tracefs format file, kernel struct offsets from /sys/kernel/btf/vmlinux.
#[no_mangle]
static TP_SKADDR: u32 = 8;
#[no_mangle]
static TP_OLDSTATE: u32 = 16;
#[no_mangle]
static TP_NEWSTATE: u32 = 20;
#[no_mangle]
static TP_FAMILY: u32 = 28;
#[no_mangle]
static TP_PROTOCOL: u32 = 30;
/// Width of the `protocol` field: 1 before Linux 5.6, 2 since.
#[no_mangle]
static TP_PROTOCOL_SIZE: u32 = 2;
/// Inode of the only network namespace to count, or 0 to count every namespace.
#[no_mangle]
static NETNS_FILTER: u32 = 0;
/// Offset of `struct sock.__sk_common.skc_net.net` (a `struct net *`).
#[no_mangle]
static SK_NET_OFFSET: u32 = 0;
/// Offset of `struct net.ns.inum`.
#[no_mangle]
static NET_INUM_OFFSET: u32 = 0;

/// Transition counters by (family, old state, new state).
#[map]
static TRANSITIONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(TRANSITION_SLOTS, 0);

/// Dwell-time histograms, one per state left.
#[map]
static DWELL: PerCpuArray<DwellHistogram> = PerCpuArray::with_max_entries(STATE_SLOTS, 0);

/// Per-socket state and entry time, keyed by the socket's kernel address.
#[map]
static SOCKETS: LruHashMap<u64, SocketEntry> = LruHashMap::with_max_entries(MAX_TRACKED_SOCKETS, 0);

/// Bookkeeping counters for the socket map (inserts, deletes, stale, untracked).
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    match try_inet_sock_set_state(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// Reads a load-time global; volatile so the compiler cannot fold the default value in.
#[inline(always)]
fn global(value: &'static u32) -> u32 {
    // SAFETY: `value` is a valid static; the loader rewrites it before the program runs.
    unsafe { core::ptr::read_volatile(value) }
}

/// The start of the tracepoint record, copied with one helper call. The verifier rejects ctx
/// reads at offsets that are not in the instruction itself, and the offsets here come from the
/// format file at load time; reading fields from a stack copy costs one `bpf_probe_read_kernel`
/// per event instead of one per field.
#[repr(C, align(8))]
struct Record([u8; RECORD_BYTES]);

impl Record {
    #[inline(always)]
    fn read(ctx: &TracePointContext) -> Result<Record, i32> {
        // SAFETY: ctx points at the record in perf's per-CPU trace buffer, which is larger than
        // RECORD_BYTES; the helper fails cleanly rather than fault if it were not.
        unsafe { bpf_probe_read_kernel(ctx.as_ptr().cast::<Record>()) }
    }

    #[inline(always)]
    fn field<T: Copy>(&self, offset: u32) -> Result<T, i32> {
        let offset = offset as usize;
        if offset + core::mem::size_of::<T>() > RECORD_BYTES {
            return Err(-1);
        }
        // SAFETY: in bounds (checked above) and naturally aligned (the agent rejects layouts
        // whose fields are not).
        Ok(unsafe { core::ptr::read(self.0.as_ptr().add(offset).cast::<T>()) })
    }
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), i32> {
    let record = Record::read(ctx)?;
    let protocol = if global(&TP_PROTOCOL_SIZE) == 1 {
        u16::from(record.field::<u8>(global(&TP_PROTOCOL))?)
    } else {
        record.field::<u16>(global(&TP_PROTOCOL))?
    };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let skaddr: u64 = record.field(global(&TP_SKADDR))?;
    let netns = global(&NETNS_FILTER);
    if netns != 0 && socket_netns(skaddr)? != netns {
        return Ok(());
    }
    let family_slot = match record.field::<u16>(global(&TP_FAMILY))? {
        AF_INET => 0,
        AF_INET6 => 1,
        _ => return Ok(()),
    };
    let old: i32 = record.field(global(&TP_OLDSTATE))?;
    let new: i32 = record.field(global(&TP_NEWSTATE))?;
    if let Some(index) = transition_index(family_slot, old as u32, new as u32) {
        increment(&TRANSITIONS, index);
    }
    track_dwell(skaddr, old, new);
    Ok(())
}

/// The network namespace inode of the socket at `skaddr`.
#[inline(always)]
fn socket_netns(skaddr: u64) -> Result<u32, i32> {
    let net_field = (skaddr + u64::from(global(&SK_NET_OFFSET))) as *const u64;
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one returns an error.
    let net = unsafe { bpf_probe_read_kernel(net_field) }?;
    let inum_field = (net + u64::from(global(&NET_INUM_OFFSET))) as *const u32;
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(inum_field) }
}

/// Updates the socket's entry and records how long it spent in `old`.
#[inline(always)]
fn track_dwell(skaddr: u64, old: i32, new: i32) {
    // A same-state event (shutdown then close) is a transition but never restarts the timer.
    if old == new {
        return;
    }
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match SOCKETS.get_ptr_mut(skaddr) {
        Some(entry) => {
            // SAFETY: the map returned a valid pointer to this socket's value.
            let entry = unsafe { &mut *entry };
            if entry.state == old {
                record_dwell(old, now.saturating_sub(entry.entered_ns));
            } else {
                increment(&COUNTERS, COUNTER_STALE_ENTRIES);
            }
            if new == TCP_CLOSE {
                if SOCKETS.remove(skaddr).is_ok() {
                    increment(&COUNTERS, COUNTER_TRACKED_DELETES);
                }
            } else {
                entry.entered_ns = now;
                entry.state = new;
            }
        }
        None => {
            // New sockets start from CLOSE (connect, listen) or LISTEN (a listener's child).
            if old != TCP_CLOSE && old != TCP_LISTEN {
                increment(&COUNTERS, COUNTER_UNTRACKED);
            }
            if new != TCP_CLOSE {
                let entry = SocketEntry {
                    entered_ns: now,
                    state: new,
                    _pad: 0,
                };
                if SOCKETS
                    .insert(skaddr, entry, u64::from(BPF_NOEXIST))
                    .is_ok()
                {
                    increment(&COUNTERS, COUNTER_TRACKED_INSERTS);
                }
            }
        }
    }
}

#[inline(always)]
fn record_dwell(state: i32, ns: u64) {
    if let Some(histogram) = DWELL.get_ptr_mut(state as u32) {
        // SAFETY: per-CPU value; a tracepoint program never nests on one CPU.
        let histogram = unsafe { &mut *histogram };
        if let Some(bucket) = histogram.buckets.get_mut(dwell_bucket(ns)) {
            *bucket += 1;
        }
        histogram.sum_ns += ns;
    }
}

#[inline(always)]
fn increment(map: &PerCpuArray<u64>, index: u32) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU value; a tracepoint program never nests on one CPU.
        unsafe { *counter += 1 };
    }
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
