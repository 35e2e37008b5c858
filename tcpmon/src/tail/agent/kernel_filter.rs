//! The filter the program applies before it writes an event (`tcpmon_common::TailFilter`): a
//! rule per connected client, its port and family filter. It may select more than the clients
//! want, never less: each client's whole filter stays exact in the agent. A client without a
//! port filter, or with more ports than a rule holds, selects every port; one without a family
//! filter every family; more clients than the program holds rules share one rule, the union of
//! their ports and families.
use std::collections::BTreeSet;

use tcpmon_common::{TailFilter, TailRule, TAIL_FILTER_RULES, TAIL_RULE_PORTS};

use crate::tail::filter::{Family, Filter};

pub fn union<'a>(filters: impl IntoIterator<Item = &'a Filter>) -> TailFilter {
    let filters: Vec<&Filter> = filters.into_iter().collect();
    let mut rules: Vec<TailRule> = Vec::new();
    if filters.len() <= TAIL_FILTER_RULES {
        for filter in &filters {
            let r = rule(std::slice::from_ref(filter));
            if !rules.contains(&r) {
                rules.push(r);
            }
        }
    } else {
        rules.push(rule(&filters));
    }
    let mut kernel = TailFilter {
        rule_count: rules.len() as u32,
        ..TailFilter::default()
    };
    kernel.rules[..rules.len()].copy_from_slice(&rules);
    kernel
}

/// One rule selecting everything any of `filters` selects.
fn rule(filters: &[&Filter]) -> TailRule {
    let mut rule = TailRule::default();
    let mut ports = BTreeSet::new();
    let (mut every_family, mut every_port) = (false, false);
    for filter in filters {
        every_family |= filter.families.is_empty();
        for family in &filter.families {
            rule.families |= match family {
                Family::Inet => 1,
                Family::Inet6 => 2,
            };
        }
        every_port |= filter.ports.is_empty();
        ports.extend(filter.ports.iter().copied());
    }
    if every_family {
        rule.families = 0;
    }
    if !every_port && ports.len() <= TAIL_RULE_PORTS {
        rule.port_count = ports.len() as u32;
        for (slot, port) in rule.ports.iter_mut().zip(ports) {
            *slot = port;
        }
    }
    rule
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(ports: &[u16], families: &[Family]) -> Filter {
        Filter {
            ports: ports.to_vec(),
            families: families.to_vec(),
            ..Filter::default()
        }
    }

    fn rules(kernel: &TailFilter) -> Vec<(u32, Vec<u16>)> {
        kernel.rules[..kernel.rule_count as usize]
            .iter()
            .map(|r| (r.families, r.ports[..r.port_count as usize].to_vec()))
            .collect()
    }

    #[test]
    fn no_client_selects_nothing() {
        assert_eq!(union(&[]), TailFilter::default());
    }

    #[test]
    fn each_client_gets_its_own_rule() {
        let kernel = union(&[
            filter(&[443, 80], &[]),
            filter(&[], &[Family::Inet6]),
            filter(&[443, 80], &[]),
        ]);
        assert_eq!(rules(&kernel), [(0, vec![80, 443]), (2, vec![])]);
    }

    #[test]
    fn a_client_with_too_many_ports_selects_every_port() {
        let many: Vec<u16> = (1..=TAIL_RULE_PORTS as u16 + 1).collect();
        assert_eq!(rules(&union(&[filter(&many, &[])])), [(0, vec![])]);
        let most: Vec<u16> = (1..=TAIL_RULE_PORTS as u16).collect();
        assert_eq!(rules(&union(&[filter(&most, &[])])), [(0, most)]);
    }

    #[test]
    fn more_clients_than_rules_share_one() {
        let clients: Vec<Filter> = (0..=TAIL_FILTER_RULES as u16)
            .map(|i| filter(&[1000 + i], &[Family::Inet]))
            .collect();
        let ports: Vec<u16> = (0..=TAIL_FILTER_RULES as u16).map(|i| 1000 + i).collect();
        assert_eq!(rules(&union(&clients)), [(1, ports)]);
        let mut clients = clients;
        clients.push(filter(&[], &[]));
        assert_eq!(rules(&union(&clients)), [(0, vec![])]);
    }
}
