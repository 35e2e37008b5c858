//! `tcpmon_oldest_socket_age_seconds{state,port}`: how long the socket longest in each state
//! has been there, from the per-socket map at scrape time. A CLOSE_WAIT that only grows is a
//! leak (the application never closes); a FIN_WAIT2 waits for a peer that never sends its FIN;
//! a long SYN_SENT is a connect retrying its SYNs. TIME_WAIT is not tracked (the kernel ends
//! it after 60 s by itself), nor are sockets older than the agent.
use std::collections::BTreeMap;

use prometheus::proto::Metric;
use tcpmon_common::tcp_state;

use super::{families::gauge, ports::PortTable};
use crate::state::TcpState;

/// One gauge per (state, port label), the oldest of the slots that share the label.
pub fn series(
    ports: &PortTable,
    oldest_entered_ns: &BTreeMap<(i32, u16), u64>,
    now_ns: u64,
) -> Vec<Metric> {
    let mut by_labels: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (&(state, slot), &entered) in oldest_entered_ns {
        // A listener's child is ESTABLISHED at birth; request sockets are never tracked.
        let Some(state) = TcpState::from_raw(state).filter(|_| state != tcp_state::TIME_WAIT)
        else {
            continue;
        };
        let age = now_ns.saturating_sub(entered);
        let labels = (state.name(), ports.label(u32::from(slot)));
        let oldest = by_labels.entry(labels).or_default();
        *oldest = (*oldest).max(age);
    }
    by_labels
        .into_iter()
        .map(|((state, port), age)| gauge(&[("state", state), ("port", port)], age as f64 / 1e9))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_of_each_state_and_label_with_slots_folded_into_other() {
        let ports = PortTable::new(&[80], 0).expect("fits");
        let oldest = BTreeMap::from([
            ((tcp_state::CLOSE_WAIT, 1), 1_000_000_000),
            ((tcp_state::CLOSE_WAIT, 0), 4_000_000_000),
            // A slot without a label of its own counts as "other".
            ((tcp_state::CLOSE_WAIT, 7), 2_500_000_000),
            ((tcp_state::LISTEN, 1), 500_000_000),
            ((tcp_state::TIME_WAIT, 1), 0),
            ((99, 1), 0),
        ]);
        let text: Vec<String> = series(&ports, &oldest, 5_000_000_000)
            .iter()
            .map(|m| {
                let labels: Vec<&str> = m.get_label().iter().map(|l| l.value()).collect();
                format!("{} {}", labels.join(","), m.get_gauge().get_value())
            })
            .collect();
        assert_eq!(
            text,
            ["CLOSE_WAIT,80 4", "CLOSE_WAIT,other 2.5", "LISTEN,80 4.5"]
        );
    }
}
