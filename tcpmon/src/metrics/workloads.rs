//! The `workload` label of `tcpmon_handshakes_total` and `tcpmon_teardowns_total`: the
//! program counts per socket cgroup id; here ids become names (`workload::cgroups`) and names
//! become at most `--max-workloads` label values, the rest `other`.
//!
//! A name keeps its label value until the agent restarts, so that no series ever moves to
//! `other` and back (a counter must not go backwards). Names are admitted at the scrape that
//! first sees them, the busiest first, while there is room: on a busy node the workloads with
//! the most connections when the agent starts get the values, and later ones fold into `other`.
//! What the kernel's hash had no room for (`maps::WORKLOAD_UNCOUNTED`) counts as `other` too,
//! so the values of each (port, result) always sum to every handshake and teardown.
use std::collections::{BTreeMap, HashMap, HashSet};

use tcpmon_common::workload;

/// The label value for handshakes and teardowns of workloads beyond `--max-workloads`.
pub const OTHER: &str = "other";
/// The name for sockets whose cgroup the kernel did not give.
pub const UNKNOWN: &str = "unknown";

/// Counts per (handshake or teardown index, workload label value).
pub type Split = BTreeMap<(u32, String), u64>;

/// The handshake and teardown counts by workload label, as a scrape reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ByWorkload {
    pub handshakes: Split,
    pub teardowns: Split,
}

/// Which workload names have a label value of their own.
#[derive(Debug)]
pub struct WorkloadLabels {
    max: usize,
    named: HashSet<String>,
}

impl WorkloadLabels {
    pub fn new(max: usize) -> WorkloadLabels {
        WorkloadLabels {
            max,
            named: HashSet::new(),
        }
    }

    /// Sums the kernel's counts by label value. `name` gives a cgroup id's workload name;
    /// `uncounted` is `maps::WORKLOAD_UNCOUNTED`, by `workload::uncounted_slot`.
    pub fn split(
        &mut self,
        counts: &[(workload::Key, u64)],
        uncounted: &[u64],
        name: impl Fn(u64) -> String,
    ) -> ByWorkload {
        let mut names: HashMap<u64, String> = HashMap::new();
        let mut totals: HashMap<&str, u64> = HashMap::new();
        for (key, _) in counts {
            names
                .entry(key.cgroup_id)
                .or_insert_with(|| name(key.cgroup_id));
        }
        for (key, value) in counts {
            *totals.entry(names[&key.cgroup_id].as_str()).or_default() += value;
        }
        self.admit(totals);
        let mut split = ByWorkload::default();
        for (key, value) in counts {
            let label = &names[&key.cgroup_id];
            let label = if self.named.contains(label) {
                label.clone()
            } else {
                OTHER.to_string()
            };
            *split.part(key.what).entry((key.index, label)).or_default() += value;
        }
        for (what, slots) in [
            (workload::HANDSHAKE, 0..tcpmon_common::handshake::SLOTS),
            (workload::TEARDOWN, 0..tcpmon_common::teardown::SLOTS),
        ] {
            for index in slots {
                let slot = workload::uncounted_slot(what, index) as usize;
                let missed = uncounted.get(slot).copied().unwrap_or(0);
                if missed > 0 {
                    *split
                        .part(what)
                        .entry((index, OTHER.to_string()))
                        .or_default() += missed;
                }
            }
        }
        split
    }

    /// Gives label values to names not seen before, the busiest first, while there is room.
    fn admit(&mut self, totals: HashMap<&str, u64>) {
        let mut new: Vec<(&str, u64)> = totals
            .into_iter()
            .filter(|(name, _)| *name != OTHER && !self.named.contains(*name))
            .collect();
        new.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (name, _) in new {
            if self.named.len() >= self.max {
                break;
            }
            self.named.insert(name.to_string());
        }
    }
}

impl ByWorkload {
    fn part(&mut self, what: u32) -> &mut Split {
        if what == workload::HANDSHAKE {
            &mut self.handshakes
        } else {
            &mut self.teardowns
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cgroup_id: u64, what: u32, index: u32) -> workload::Key {
        workload::Key {
            cgroup_id,
            what,
            index,
        }
    }

    fn name(id: u64) -> String {
        match id {
            1 => "host".into(),
            2 | 3 => "web.service".into(),
            n => format!("app{n}.service"),
        }
    }

    #[test]
    fn sums_cgroups_of_one_name_and_folds_the_quietest_into_other() {
        let mut labels = WorkloadLabels::new(2);
        let counts = [
            (key(1, workload::HANDSHAKE, 5), 1),
            (key(2, workload::HANDSHAKE, 5), 10),
            (key(3, workload::HANDSHAKE, 5), 5),
            (key(4, workload::HANDSHAKE, 5), 7),
            (key(4, workload::TEARDOWN, 9), 7),
        ];
        let mut uncounted = vec![0; workload::UNCOUNTED_SLOTS as usize];
        uncounted[workload::uncounted_slot(workload::TEARDOWN, 9) as usize] = 2;
        let split = labels.split(&counts, &uncounted, name);
        let entry = |index: u32, label: &str| (index, label.to_string());
        assert_eq!(
            split.handshakes,
            BTreeMap::from([
                (entry(5, "web.service"), 15),
                (entry(5, "app4.service"), 7),
                (entry(5, OTHER), 1),
            ])
        );
        assert_eq!(
            split.teardowns,
            BTreeMap::from([(entry(9, "app4.service"), 7), (entry(9, OTHER), 2)])
        );
        // A busier newcomer later finds no room, and the named ones stay named.
        let later = [
            (key(1, workload::HANDSHAKE, 5), 1),
            (key(2, workload::HANDSHAKE, 5), 10),
            (key(8, workload::HANDSHAKE, 5), 100),
        ];
        let split = labels.split(&later, &uncounted, name);
        assert_eq!(split.handshakes[&entry(5, "web.service")], 10);
        assert_eq!(split.handshakes[&entry(5, OTHER)], 101);
    }
}
