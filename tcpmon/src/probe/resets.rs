//! The reset programs: which of them this kernel takes, and reading what they counted; and
//! reading the per-cgroup handshake and teardown counts, a hash of the same kind.
use std::collections::BTreeMap;

use aya::maps::{HashMap, MapData};
use tcpmon_common::{
    maps, reset, workload, RECEIVE_RESET_PROGRAM_NAME, SEND_RESET_PROGRAM_NAME,
    SEND_RESET_REASON_PROGRAM_NAME,
};

use super::{map_error, KernelOffsets, Probe};
use crate::error::Error;

/// The (program, tracepoint) pairs to load: `tcp_send_reset` has carried the reset's reason
/// since the kernel gained `enum sk_rst_reason` (Linux 6.10), and a program may read only the
/// arguments its kernel's tracepoint has.
pub fn programs(offsets: &KernelOffsets) -> [(&'static str, &'static str); 2] {
    let send = if offsets.reset_reasons.is_some() {
        SEND_RESET_REASON_PROGRAM_NAME
    } else {
        SEND_RESET_PROGRAM_NAME
    };
    [
        (send, "tcp_send_reset"),
        (RECEIVE_RESET_PROGRAM_NAME, "tcp_receive_reset"),
    ]
}

impl Probe {
    /// The names of this kernel's reset reasons (none before Linux 6.10).
    pub fn reset_reasons(&self) -> &ReasonNames {
        &self.reset_reasons
    }

    /// Every series of resets counted so far.
    pub fn resets(&self) -> Result<Vec<(reset::Key, u64)>, Error> {
        let resets: HashMap<&MapData, reset::Key, u64> = HashMap::try_from(self.map(maps::RESETS)?)
            .map_err(|e| map_error(maps::RESETS, "open", e))?;
        resets
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| map_error(maps::RESETS, "read", e))
    }

    /// Every (cgroup, handshake or teardown) count so far.
    pub fn workload_counts(&self) -> Result<Vec<(workload::Key, u64)>, Error> {
        let counts: HashMap<&MapData, workload::Key, u64> =
            HashMap::try_from(self.map(maps::WORKLOADS)?)
                .map_err(|e| map_error(maps::WORKLOADS, "open", e))?;
        counts
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| map_error(maps::WORKLOADS, "read", e))
    }
}

/// The `reason` of a reset whose kernel value has no name here.
pub const UNKNOWN_REASON: &str = "unknown";

/// Reset reasons by the kernel's value.
#[derive(Clone, Debug, Default)]
pub struct ReasonNames(BTreeMap<u32, String>);

impl ReasonNames {
    /// From `enum sk_rst_reason`'s (value, name) pairs; its `SK_RST_REASON_MAX` is no reason.
    pub fn new(values: &[(u32, String)]) -> ReasonNames {
        let names = values
            .iter()
            .filter_map(|(value, name)| {
                let short = name.strip_prefix("SK_RST_REASON_").unwrap_or(name);
                (short != "MAX").then(|| (*value, short.to_ascii_lowercase()))
            })
            .collect();
        ReasonNames(names)
    }

    pub fn name(&self, reason: u16) -> &str {
        self.0
            .get(&u32::from(reason))
            .map_or(UNKNOWN_REASON, String::as_str)
    }
}
