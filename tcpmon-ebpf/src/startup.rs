//! The start-up walk and window: from the moment the program is attached until the agent has walked
//! every namespace's sockets, the program notes the state each socket was in before its first
//! transition. With the walk, that gives the agent the exact number of sockets per state at
//! the moment of attaching, whatever changed during the walk; from then on the transition
//! counts keep it exact (`tcpmon/src/metrics/socket_states.rs`). Outside the window this is
//! one inlined array load per transition.
use core::ffi::c_void;

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns};
use tcpmon_common::{maps, tcp_state, ListenerEntry, StartupSocket};

use crate::{
    config::SK_STATE_OFFSET,
    counted_family,
    kernel::{atomic_add, seq_write, sock_field},
    maps::{FIRST_SEEN, LISTENERS, STARTUP},
    namespaces, Transition,
};

/// `EEXIST`: the socket already has its first state.
const EEXIST: i32 = 17;

/// Notes the state `t`'s socket was in before it, if the window is open and this is the
/// socket's first transition in it. `t` changes the state.
#[inline(always)]
pub fn note_first(t: &Transition) {
    let Some(window) = STARTUP.get_ptr_mut(maps::STARTUP_WINDOW) else {
        return;
    };
    // SAFETY: a valid pointer to the array's value.
    if unsafe { *window } != 0 {
        return;
    }
    // A socket born in the window (connect or listen from CLOSE, or a listener's child, which
    // starts as a copy of the listener) was in no counted state before.
    let child = t.old == tcp_state::LISTEN && t.new != tcp_state::CLOSE;
    let first = (if child { tcp_state::CLOSE } else { t.old }) as u32;
    if let Err(code) = FIRST_SEEN.insert(&(t.sk as u64), &first, u64::from(BPF_NOEXIST)) {
        if code != -EEXIST {
            if let Some(full) = STARTUP.get_ptr_mut(maps::FIRST_SEEN_FULL) {
                // SAFETY: a valid, aligned u64 in the array; updated only atomically.
                unsafe { atomic_add(full, 1) };
            }
        }
    }
}

/// `struct bpf_iter__tcp { struct bpf_iter_meta *meta; struct sock_common *sk_common; uid }`:
/// the start-up walk of one namespace. For each full socket it writes a [`StartupSocket`] (the
/// agent's baseline of sockets per state, see `startup`) and puts a listener in `LISTENERS`
/// unless the main program already did (its entry is newer); it notes the namespace of every
/// socket, time-wait ones included, for the time-wait counts.
#[no_mangle]
#[link_section = "iter/tcp"]
pub extern "C" fn tcpmon_startup_walk(ctx: *mut c_void) -> i32 {
    let ctx = ctx as *const u64;
    // SAFETY: the kernel's context, as laid out above; the socket is NULL on the last call.
    let (meta, sk) = unsafe { (*ctx as *const u8, *ctx.add(1) as *const u8) };
    if sk.is_null() || counted_family(sk).is_none() {
        return 0;
    }
    namespaces::note(sk);
    let state = i32::from(sock_field::<u8>(sk, &SK_STATE_OFFSET));
    if state == tcp_state::TIME_WAIT || state == tcp_state::NEW_SYN_RECV {
        return 0;
    }
    let record = StartupSocket {
        skaddr: sk as u64,
        state: state as u32,
        _pad: 0,
    };
    seq_write(meta, &record);
    if state == tcp_state::LISTEN {
        let entry = ListenerEntry {
            // SAFETY: the helper has no preconditions.
            since_ns: unsafe { bpf_ktime_get_ns() },
        };
        // A full map is counted when the program itself meets a new listener.
        let _ = LISTENERS.insert(&(sk as u64), &entry, u64::from(BPF_NOEXIST));
    }
    0
}
