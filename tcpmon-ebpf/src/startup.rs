//! The start-up window: from the moment the program is attached until the agent has walked
//! every namespace's sockets, the program notes the state each socket was in before its first
//! transition. With the walk, that gives the agent the exact number of sockets per state at
//! the moment of attaching, whatever changed during the walk; from then on the transition
//! counts keep it exact (`tcpmon/src/metrics/socket_states.rs`). Outside the window this is
//! one inlined array load per transition.
use aya_ebpf::bindings::BPF_NOEXIST;
use tcpmon_common::{maps, tcp_state};

use crate::{
    kernel::atomic_add,
    maps::{FIRST_SEEN, STARTUP},
    Transition,
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
