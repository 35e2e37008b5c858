//! Handshakes and teardowns per workload: counted by the socket's own cgroup (v2) id, read
//! from the socket when a handshake or teardown ends, in a hash shared by every CPU
//! (`maps::WORKLOADS`; the agent names cgroups and bounds the label's values). What the hash
//! has no room for is counted per index, so nothing goes uncounted; so is everything when
//! attribution is off (`--max-workloads 0`).
use tcpmon_common::workload;

use crate::{
    config::{global, ATTRIBUTE_WORKLOADS},
    kernel::sock_cgroup_id,
    maps::{hash_add, WORKLOADS, WORKLOAD_UNCOUNTED},
    Transition,
};

/// Counts one handshake (`what` = `workload::HANDSHAKE`, `index` = `handshake::index`) or
/// teardown of the transition's socket for its cgroup.
#[inline(always)]
pub fn count(t: &Transition, what: u32, index: u32) {
    if global(&ATTRIBUTE_WORKLOADS) == 0 {
        WORKLOAD_UNCOUNTED.increment(t.row, workload::uncounted_slot(what, index));
        return;
    }
    let key = workload::Key {
        cgroup_id: sock_cgroup_id(t.sk),
        what,
        index,
    };
    if !hash_add(&WORKLOADS, &key) {
        WORKLOAD_UNCOUNTED.increment(t.row, workload::uncounted_slot(what, index));
    }
}
