//! Sockets per state (`tcpmon_sockets`) without walking any namespace at scrape time.
//!
//! A full socket's state changes only by a transition the program counts, so the sockets in a
//! state now are those that were in it when the program was attached, plus the transitions
//! into it since, minus those out of it. The first term is taken once at start-up: the agent
//! walks every namespace's sockets while the program notes, for each socket that changes
//! state meanwhile, the state it was in before its first transition (`FIRST_SEEN`). A socket
//! noted there was in its noted state at attach (none, if it was born since); any other
//! walked socket did not change, so its walked state is its state at attach. That holds
//! whatever the traffic during the walk.
//!
//! What the tracepoint never shows comes from the kernel's own counts, read across all
//! namespaces by the readers: request sockets (`NEW_SYN_RECV`, counted as SYN_RECV as `ss`
//! does) are the listeners' SYN queues, and time-wait sockets are each namespace's "tw" of
//! `/proc/net/sockstat`. That count includes orphaned sockets waiting in FIN_WAIT2 as
//! time-wait mini-sockets, which `ss` shows as FIN-WAIT-2: tcpmon counts them as TIME_WAIT.
use std::{collections::HashMap, io, path::PathBuf};

use tcpmon_common::{tcp_state, transition_index, StartupSocket, FAMILY_SLOTS};

use crate::netns;
use crate::probe::readers::KernelReaders;

/// Entries of [`SocketCounts::by_state`], indexed by raw kernel state.
pub const STATE_SLOTS: usize = tcp_state::SLOTS as usize;

/// Sockets per raw kernel state (request sockets already counted in SYN_RECV).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketCounts {
    pub by_state: [u64; STATE_SLOTS],
}

/// Sockets per state at attach, and the transition counts then.
#[derive(Clone, Debug)]
pub struct SocketStates {
    at_attach: [i64; STATE_SLOTS],
    transitions_at_attach: Vec<u64>,
}

impl SocketStates {
    /// From the start-up walk (`walked`, every namespace's full sockets, in any order, a
    /// socket possibly twice), what the program noted in the window (`first_seen`) and the
    /// transition counts at attach.
    pub fn new(
        walked: &[StartupSocket],
        first_seen: &HashMap<u64, u32>,
        transitions_at_attach: Vec<u64>,
    ) -> SocketStates {
        let mut at_attach = [0i64; STATE_SLOTS];
        let mut add = |state: u32| {
            if counted(state as i32) {
                at_attach[state as usize] += 1;
            }
        };
        first_seen.values().for_each(|&state| add(state));
        let unchanged: HashMap<u64, u32> = walked
            .iter()
            .filter(|r| !first_seen.contains_key(&r.skaddr))
            .map(|r| (r.skaddr, r.state))
            .collect();
        unchanged.values().for_each(|&state| add(state));
        SocketStates {
            at_attach,
            transitions_at_attach,
        }
    }

    /// The sockets per state now, from the transition counts now, the listeners' request
    /// sockets and the namespaces' time-wait sockets.
    pub fn counts(&self, transitions: &[u64], requests: u64, time_wait: u64) -> SocketCounts {
        let mut now = self.at_attach;
        for family in 0..FAMILY_SLOTS {
            for old in 0..STATE_SLOTS as u32 {
                for new in 0..STATE_SLOTS as u32 {
                    let Some(index) = transition_index(family, old, new) else {
                        continue;
                    };
                    let index = index as usize;
                    let since =
                        transitions.get(index).copied().unwrap_or(0).wrapping_sub(
                            self.transitions_at_attach.get(index).copied().unwrap_or(0),
                        ) as i64;
                    if old == new || since == 0 {
                        continue;
                    }
                    if counted(new as i32) {
                        now[new as usize] = now[new as usize].wrapping_add(since);
                    }
                    // A listener's child starts as a copy of the listener: it leaves no LISTEN.
                    let child = old as i32 == tcp_state::LISTEN && new as i32 != tcp_state::CLOSE;
                    if counted(old as i32) && !child {
                        now[old as usize] = now[old as usize].wrapping_sub(since);
                    }
                }
            }
        }
        let mut counts = SocketCounts::default();
        for (slot, n) in counts.by_state.iter_mut().zip(now) {
            // Never below zero, even if a transition was lost (then counted as a missed run).
            *slot = n.max(0) as u64;
        }
        let syn_recv = &mut counts.by_state[tcp_state::SYN_RECV as usize];
        *syn_recv = syn_recv.saturating_add(requests);
        counts.by_state[tcp_state::TIME_WAIT as usize] = time_wait;
        counts
    }
}

/// Takes the sockets per state at attach: walks each namespace of `namespaces` once (which
/// also finds the listeners and namespaces older than the agent), then closes the program's
/// start-up window. Returns them, and how many sockets changed state during the walk without
/// room to note them (each may leave its state's count off by one).
pub fn take_baseline(
    readers: &KernelReaders,
    namespaces: Vec<PathBuf>,
    transitions_at_attach: Vec<u64>,
) -> io::Result<(SocketStates, u64)> {
    let walked = netns::in_each(namespaces, || readers.walk_here())?.concat();
    let (first_seen, unnoted) = readers.close_startup_window()?;
    Ok((
        SocketStates::new(&walked, &first_seen, transitions_at_attach),
        unnoted,
    ))
}

/// Whether full sockets in `state` are counted: every state a hashed socket can be in.
fn counted(state: i32) -> bool {
    state > 0
        && (state as usize) < STATE_SLOTS
        && state != tcp_state::CLOSE
        && state != tcp_state::TIME_WAIT
        && state != tcp_state::NEW_SYN_RECV
}

#[cfg(test)]
mod tests {
    use tcpmon_common::TRANSITION_SLOTS;

    use super::*;

    const EST: u32 = tcp_state::ESTABLISHED as u32;
    const LISTEN: u32 = tcp_state::LISTEN as u32;
    const CLOSE: u32 = tcp_state::CLOSE as u32;
    const FIN_WAIT1: u32 = tcp_state::FIN_WAIT1 as u32;
    const SYN_SENT: u32 = tcp_state::SYN_SENT as u32;
    const SYN_RECV: u32 = tcp_state::SYN_RECV as u32;

    fn walked(sockets: &[(u64, u32)]) -> Vec<StartupSocket> {
        sockets
            .iter()
            .map(|&(skaddr, state)| StartupSocket {
                skaddr,
                state,
                _pad: 0,
            })
            .collect()
    }

    fn count(t: &mut [u64], old: u32, new: u32, n: u64) {
        t[transition_index(0, old, new).expect("in range") as usize] += n;
    }

    #[test]
    fn the_walk_and_the_first_states_give_the_sockets_at_attach_whatever_changed_meanwhile() {
        // At attach: a listener (1), two established sockets (2, 3), one in FIN_WAIT1 (4).
        // During the walk: 3 went to FIN_WAIT1 before the walk saw it; 4 closed before the
        // walk reached it; 5 was born (connect) and is established when walked; 2 was walked
        // and changed afterwards.
        let walk = walked(&[(1, LISTEN), (2, EST), (3, FIN_WAIT1), (5, EST), (5, EST)]);
        let first: HashMap<u64, u32> = [(3, EST), (4, FIN_WAIT1), (5, CLOSE), (2, EST)].into();
        let states = SocketStates::new(&walk, &first, vec![0; TRANSITION_SLOTS as usize]);
        let at = |s: u32| states.at_attach[s as usize];
        assert_eq!((at(LISTEN), at(EST), at(FIN_WAIT1)), (1, 2, 1));
        assert_eq!(states.at_attach.iter().sum::<i64>(), 4);
    }

    #[test]
    fn transitions_since_attach_move_sockets_between_states_and_children_leave_no_listen() {
        let mut before = vec![0u64; TRANSITION_SLOTS as usize];
        count(&mut before, SYN_SENT, EST, 7); // before attach (a pinned map): ignored
        let states = SocketStates::new(
            &walked(&[(1, LISTEN), (2, EST)]),
            &HashMap::new(),
            before.clone(),
        );
        let mut now = before;
        // Three connections on loopback, both ends: connects, children, then one closed.
        count(&mut now, CLOSE, SYN_SENT, 3);
        count(&mut now, SYN_SENT, EST, 3);
        count(&mut now, LISTEN, SYN_RECV, 3);
        count(&mut now, SYN_RECV, EST, 3);
        count(&mut now, EST, FIN_WAIT1, 1);
        count(&mut now, FIN_WAIT1, FIN_WAIT1, 4); // shutdown then close: no change
        let counts = states.counts(&now, 2, 5);
        let by = |s: i32| counts.by_state[s as usize];
        assert_eq!(by(tcp_state::LISTEN), 1);
        assert_eq!(by(tcp_state::ESTABLISHED), 1 + 6 - 1);
        assert_eq!(by(tcp_state::FIN_WAIT1), 1);
        assert_eq!(by(tcp_state::SYN_SENT), 0);
        assert_eq!(by(tcp_state::SYN_RECV), 2, "request sockets");
        assert_eq!(by(tcp_state::TIME_WAIT), 5);
        assert_eq!(by(tcp_state::CLOSE), 0);
    }
}
