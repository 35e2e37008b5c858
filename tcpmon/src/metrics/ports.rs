//! Which service ports get their own `port` label value: the ports given with `--ports`, then
//! listening ports as they are discovered, up to `--max-ports` of them; everything else is
//! `port="other"`. A port keeps its slot for the agent's lifetime, so its counters never move
//! between label values.
use std::collections::BTreeMap;

use tcpmon_common::port;

/// The label value of the catch-all slot.
pub const OTHER: &str = "other";
/// Ports with their own label, at most: slot 0 is "other".
pub const MAX_LABELLED_PORTS: usize = port::SLOTS as usize - 1;

#[derive(Debug)]
pub struct PortTable {
    slot_of: BTreeMap<u16, u32>,
    /// Label value per slot; index 0 is "other".
    labels: Vec<String>,
    discovered: usize,
    max_discovered: usize,
}

impl PortTable {
    /// A table with the `configured` ports, leaving room for `max_discovered` more. Fails when
    /// the two together exceed what the kernel maps hold.
    pub fn new(configured: &[u16], max_discovered: usize) -> Result<PortTable, String> {
        PortTable::continuing(&[], configured, max_discovered)
    }

    /// A table that keeps the `previous` agent's (port, slot) assignments (read back from a
    /// pinned port map, so counts already made in a slot keep their label), then adds the
    /// `configured` ports. Previous ports that were not configured count as discovered.
    pub fn continuing(
        previous: &[(u16, u32)],
        configured: &[u16],
        max_discovered: usize,
    ) -> Result<PortTable, String> {
        let mut table = PortTable {
            slot_of: BTreeMap::new(),
            labels: vec![OTHER.to_string()],
            discovered: 0,
            max_discovered,
        };
        let mut previous = previous.to_vec();
        previous.sort_by_key(|&(_, slot)| slot);
        for (i, &(port, slot)) in previous.iter().enumerate() {
            if slot as usize != i + 1 || table.insert(port).is_none() {
                return Err(format!(
                    "the pinned port table is inconsistent (port {port} in slot {slot})"
                ));
            }
            if !configured.contains(&port) {
                table.discovered += 1;
            }
        }
        for &port in configured {
            table.insert(port);
        }
        let room = max_discovered.saturating_sub(table.discovered);
        let wanted = table.slot_of.len().saturating_add(room);
        if wanted > MAX_LABELLED_PORTS {
            return Err(format!(
                "--ports ({}) plus --max-ports ({max_discovered}) exceed {MAX_LABELLED_PORTS} labelled ports",
                table.slot_of.len() - table.discovered
            ));
        }
        Ok(table)
    }

    fn insert(&mut self, port: u16) -> Option<(u16, u32)> {
        if self.slot_of.contains_key(&port) {
            return None;
        }
        let slot = self.labels.len() as u32;
        self.slot_of.insert(port, slot);
        self.labels.push(port.to_string());
        Some((port, slot))
    }

    /// Every (port, slot) assignment so far, for loading into the kernel map.
    pub fn assignments(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        self.slot_of.iter().map(|(&port, &slot)| (port, slot))
    }

    /// Gives newly seen listening ports a slot while the cap allows; returns the new ones.
    pub fn discover(&mut self, listening: impl IntoIterator<Item = u16>) -> Vec<(u16, u32)> {
        let mut added = Vec::new();
        for port in listening {
            if self.discovered >= self.max_discovered {
                break;
            }
            if let Some(assignment) = self.insert(port) {
                self.discovered += 1;
                added.push(assignment);
            }
        }
        added
    }

    /// A port's slot: its own, or "other".
    pub fn slot(&self, port: u16) -> u32 {
        self.slot_of.get(&port).copied().unwrap_or(port::OTHER)
    }

    /// The `port` label value of a slot.
    pub fn label(&self, slot: u32) -> &str {
        self.labels
            .get(slot as usize)
            .map(String::as_str)
            .unwrap_or(OTHER)
    }

    /// Slots in use, "other" included.
    pub fn slots(&self) -> impl Iterator<Item = u32> {
        port::OTHER..self.labels.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_ports_come_first_and_discovery_is_capped() {
        let mut table = PortTable::new(&[443, 80], 2).expect("fits");
        assert_eq!(table.label(0), "other");
        assert_eq!(table.label(1), "443");
        assert_eq!(table.label(2), "80");
        assert_eq!(
            table.discover([80, 22, 5432, 6379]),
            vec![(22, 3), (5432, 4)]
        );
        assert_eq!(table.discover([9090]), vec![]);
        assert_eq!(table.label(5), "other");
        assert_eq!(table.slots().count(), 5);
        let all: Vec<_> = table.assignments().collect();
        assert_eq!(all, vec![(22, 3), (80, 2), (443, 1), (5432, 4)]);
    }

    #[test]
    fn a_port_keeps_its_slot() {
        let mut table = PortTable::new(&[], 10).expect("fits");
        assert_eq!(table.discover([8080]), vec![(8080, 1)]);
        assert_eq!(table.discover([9000, 8080]), vec![(9000, 2)]);
        assert_eq!(table.label(1), "8080");
    }

    #[test]
    fn a_pinned_table_keeps_its_slots_and_its_discoveries_count() {
        let previous = [(8080, 2), (443, 1), (22, 3)];
        let mut table = PortTable::continuing(&previous, &[443, 5432], 2).expect("fits");
        assert_eq!(
            table.assignments().collect::<Vec<_>>(),
            vec![(22, 3), (443, 1), (5432, 4), (8080, 2)]
        );
        // 8080 and 22 were discovered: the cap of 2 is reached.
        assert_eq!(table.discover([9000]), vec![]);
        assert_eq!(
            PortTable::continuing(&[(80, 2)], &[], 2).expect_err("gap"),
            "the pinned port table is inconsistent (port 80 in slot 2)"
        );
    }

    #[test]
    fn refuses_more_ports_than_the_maps_hold() {
        let many: Vec<u16> = (1..=200).collect();
        assert_eq!(
            PortTable::new(&many, 100).expect_err("too many"),
            "--ports (200) plus --max-ports (100) exceed 256 labelled ports"
        );
    }
}
