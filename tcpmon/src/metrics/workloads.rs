//! The `workload` label of `tcpmon_handshakes_total` and `tcpmon_teardowns_total`: the
//! program counts per socket cgroup id; here ids become names (`workload::cgroups`) and names
//! become at most `--max-workloads` label values, the rest `other`.
//!
//! A name keeps its label value until the agent restarts, and a cgroup the label value it was
//! first counted under, so that no series ever moves to `other` and back or from `unknown` to a
//! name (a counter must not go backwards). Names are admitted at the scrape that
//! first sees them, the busiest first, while there is room: on a busy node the workloads with
//! the most connections when the agent starts get the values, and later ones fold into `other`.
//! What the kernel's hash had no room for (`maps::WORKLOAD_UNCOUNTED`) counts as `other` too,
//! so the values of each (port, result) always sum to every handshake and teardown.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use tcpmon_common::workload;

/// The label value for handshakes and teardowns of workloads beyond `--max-workloads`.
pub const OTHER: &str = "other";

/// Counts per (handshake or teardown index, workload label value).
pub type Split = BTreeMap<(u32, String), u64>;

/// The handshake and teardown counts by workload label, as a scrape reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ByWorkload {
    pub handshakes: Split,
    pub teardowns: Split,
}

/// Which workload names have a label value of their own, and each cgroup's label value.
#[derive(Debug)]
pub struct WorkloadLabels {
    max: usize,
    /// Names with a label value of their own (at most `max`).
    named: HashSet<String>,
    /// Each cgroup id's label value, fixed at the scrape that first sees the id: a name found
    /// only later (an `unknown` cgroup named after all, a pod's directory appearing) never
    /// moves counts from one series to another, so no series goes backwards. Ids the kernel's
    /// hash no longer holds are dropped, so this stays as small as that hash.
    label_of: HashMap<u64, Arc<str>>,
}

impl WorkloadLabels {
    pub fn new(max: usize) -> WorkloadLabels {
        WorkloadLabels {
            max,
            named: HashSet::new(),
            label_of: HashMap::new(),
        }
    }

    /// Sums the kernel's counts by label value. `name` gives a cgroup id's workload name (it
    /// is asked only for ids not seen before); `uncounted` is `maps::WORKLOAD_UNCOUNTED`, by
    /// `workload::uncounted_slot`.
    pub fn split(
        &mut self,
        counts: &[(workload::Key, u64)],
        uncounted: &[u64],
        name: impl Fn(u64) -> String,
    ) -> ByWorkload {
        let mut new_names: HashMap<u64, String> = HashMap::new();
        for (key, _) in counts {
            if !self.label_of.contains_key(&key.cgroup_id) {
                new_names
                    .entry(key.cgroup_id)
                    .or_insert_with(|| name(key.cgroup_id));
            }
        }
        let mut totals: HashMap<&str, u64> = HashMap::new();
        for (key, value) in counts {
            if let Some(name) = new_names.get(&key.cgroup_id) {
                *totals.entry(name.as_str()).or_default() += value;
            }
        }
        self.admit(totals);
        for (id, name) in new_names {
            let label = if self.named.contains(&name) {
                name.as_str()
            } else {
                OTHER
            };
            self.label_of.insert(id, Arc::from(label));
        }
        let present: HashSet<u64> = counts.iter().map(|(key, _)| key.cgroup_id).collect();
        self.label_of.retain(|id, _| present.contains(id));
        let mut split = ByWorkload::default();
        for (key, value) in counts {
            let label = self.label_of[&key.cgroup_id].to_string();
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

    #[test]
    fn a_cgroup_keeps_the_label_it_was_first_counted_under() {
        let mut labels = WorkloadLabels::new(4);
        let uncounted = vec![0; workload::UNCOUNTED_SLOTS as usize];
        let entry = |label: &str| (5, label.to_string());
        let first = [(key(7, workload::HANDSHAKE, 5), 3)];
        let split = labels.split(&first, &uncounted, |_| "unknown".to_string());
        assert_eq!(split.handshakes, BTreeMap::from([(entry("unknown"), 3)]));
        // Named at a later scrape: the counts stay where they were, and grow there.
        let later = [(key(7, workload::HANDSHAKE, 5), 4)];
        let split = labels.split(&later, &uncounted, |_| "app7.service".to_string());
        assert_eq!(split.handshakes, BTreeMap::from([(entry("unknown"), 4)]));
        assert_eq!(labels.label_of.len(), 1);
        // An id the kernel no longer holds is forgotten.
        labels.split(&[], &uncounted, name);
        assert!(labels.label_of.is_empty());
    }
}
