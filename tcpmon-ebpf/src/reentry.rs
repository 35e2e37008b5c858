//! Exactness when the kernel nests: the main program and its cover.
//!
//! The kernel skips a tracing program's run when it would nest in the same program's run on
//! the same CPU (Linux 6.0+: a softirq on the exit of an interrupt that landed while the
//! program ran in process context), and counts the skip as a recursion miss. The guard is per
//! program, so a second program on the same tracepoint, attached after the first, still runs
//! for such a transition: the cover (`inet_sock_set_state_cover`). It has to count exactly the
//! transitions the main program was not run for, and no other.
//!
//! The protocol, per CPU:
//! - the main program, after accounting a transition, pushes the transition's token (socket
//!   address and the two states) on a small stack;
//! - the cover, run next for the same transition, looks for its token from the top down (the
//!   top first, before it even reads the socket; below only for a transition tcpmon counts,
//!   that is one that passes the main program's filters). Found:
//!   the main program ran, so the cover drops the token (and any above it) and is done. Not
//!   found: the main program was not run for this transition, and the cover accounts it.
//!
//! The token says "the main program ran for this transition" whatever the kernel did around it:
//! an interrupt may land before the main program's first instruction or after its last while
//! the kernel still holds its guard (the stack is then untouched, so the cover counts the
//! skipped transition), or between the two programs (the nested transition pushes and pops its
//! own token above). A flag set only while the main program's instructions run would miss the
//! first two windows, which `kernel.bpf_stats_enabled` widens. Tokens pushed by nested runs
//! whose cover was itself skipped (they landed in the cover's own guard window) sit above the
//! outer token and go with it. On kernels that run a nested program instead of skipping it
//! (before 6.0), the nested run pushes and its cover pops its own token: nothing is counted
//! twice.
//!
//! Both programs account a transition with the same code; a run that finds another run's
//! accounting in progress on its CPU (the `busy` flag) updates the second row of every per-CPU
//! array (see `maps::Row`), so neither can interrupt and undo the other's update.
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::PerCpuArray};
use tcpmon_common::counter;

use crate::maps::{Row, COUNTERS};

/// Tokens remembered per CPU: more than the transitions that can be pending at once (a softirq
/// nested in one process-context run, each of its transitions pushing and popping in turn).
pub const DEPTH: u32 = 16;
/// A token older than this is a leftover (pushed by a run whose cover was skipped), not a
/// transition whose cover is still to run: those are microseconds old.
const TOKEN_LIFETIME_NS: u64 = 100_000_000;

#[repr(C)]
#[derive(Clone, Copy)]
struct Token {
    sk: u64,
    /// As in [`Key`]; 0 once taken.
    states: u32,
    _pad: u32,
    /// When it was pushed, or 0 when the run had no clock read.
    pushed_ns: u64,
}

/// The per-CPU state both programs share.
#[repr(C)]
pub struct Reentry {
    /// Non-zero while a run is accounting a transition on this CPU.
    busy: u32,
    /// Index of the top token.
    top: u32,
    tokens: [Token; DEPTH as usize],
}

#[map]
static REENTRY: PerCpuArray<Reentry> = PerCpuArray::with_max_entries(1, 0);

/// What a token identifies a transition by: the socket and its two states, read from the
/// tracepoint's arguments alone (no read of the socket).
#[derive(Clone, Copy)]
pub struct Key {
    sk: u64,
    /// `old << 8 | new`, plus one so that no key is 0.
    states: u32,
}

impl Key {
    #[inline(always)]
    pub fn of(sk: *const u8, old: i32, new: i32) -> Key {
        Key {
            sk: sk as u64,
            states: ((old as u32 & 0xff) << 8 | (new as u32 & 0xff)) + 1,
        }
    }
}

/// This CPU's state; `None` only if the map is broken.
#[inline(always)]
pub fn this_cpu() -> Option<&'static mut Reentry> {
    // SAFETY: per-CPU value; the runs that share it on this CPU follow the protocol above.
    REENTRY.get_ptr_mut(0).map(|r| unsafe { &mut *r })
}

/// Starts accounting a transition: the row it may update, its own, or the nested row if
/// another run's accounting is in progress on this CPU. [`leave`] ends it. Not a function
/// that takes the accounting as a closure: LLVM made that closure a BPF-to-BPF function,
/// a call and a return on every transition.
#[inline(always)]
pub fn enter(state: &mut Reentry) -> Row {
    // SAFETY: volatile so the compiler neither caches the flag nor merges the two writes: a
    // nested run reads it between them.
    let nested = unsafe { core::ptr::read_volatile(&state.busy) } != 0;
    if nested {
        // First, so that a scrape that sees no nested run yet may skip the second rows.
        COUNTERS.increment(Row::NESTED, counter::NESTED_RUNS);
        return Row::NESTED;
    }
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(&mut state.busy, 1) };
    Row::OWN
}

/// Ends the accounting [`enter`] started in `row`.
#[inline(always)]
pub fn leave(state: &mut Reentry, row: Row) {
    if row.is_own() {
        // SAFETY: as in `enter`.
        unsafe { core::ptr::write_volatile(&mut state.busy, 0) };
    }
}

/// The main program's last step: "this transition was accounted".
#[inline(always)]
pub fn push(state: &mut Reentry, key: Key, now: u64) {
    let top = (state.top.wrapping_add(1)) % DEPTH;
    if let Some(token) = state.tokens.get_mut(top as usize) {
        *token = Token {
            sk: key.sk,
            states: key.states,
            _pad: 0,
            pushed_ns: now,
        };
    }
    // SAFETY: volatile: the token must be in place before it is on the stack.
    unsafe { core::ptr::write_volatile(&mut state.top, top) };
}

/// The cover's question, in the common case: is this transition's token on top of the stack
/// (the main program ran just before)? Takes it off if so.
#[inline(always)]
pub fn take_top(state: &mut Reentry, key: Key) -> bool {
    let top = state.top % DEPTH;
    if let Some(token) = state.tokens.get_mut(top as usize) {
        if token.sk == key.sk && token.states == key.states {
            token.states = 0;
            state.top = top.wrapping_add(DEPTH - 1) % DEPTH;
            return true;
        }
    }
    false
}

/// The rest of the question: is the token further down (pushed before transitions that
/// interrupted the gap between the two programs and whose cover was skipped)? Takes it and
/// everything above it off if so.
#[inline(always)]
pub fn take_below(state: &mut Reentry, key: Key) -> bool {
    let top = state.top % DEPTH;
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut depth = 1;
    while depth < DEPTH {
        let index = top.wrapping_add(DEPTH - depth) % DEPTH;
        if let Some(token) = state.tokens.get(index as usize) {
            let fresh =
                token.pushed_ns == 0 || now.saturating_sub(token.pushed_ns) < TOKEN_LIFETIME_NS;
            if token.sk == key.sk && token.states == key.states && fresh {
                let mut clear = 0;
                while clear <= depth {
                    let i = top.wrapping_add(DEPTH - clear) % DEPTH;
                    if let Some(token) = state.tokens.get_mut(i as usize) {
                        token.states = 0;
                    }
                    clear += 1;
                }
                state.top = index.wrapping_add(DEPTH - 1) % DEPTH;
                return true;
            }
        }
        depth += 1;
    }
    false
}

/// Counts a transition the cover accounted for the main program.
#[inline(always)]
pub fn count_covered(row: Row) {
    COUNTERS.increment(row, counter::COVERED);
}
