//! `tcpmon_resets_total{direction,state,reason,port}`: the reset programs' series, labelled.
//!
//! `reason` is the kernel's own name for why it sent the reset (`enum sk_rst_reason`, Linux
//! 6.10+), without its `SK_RST_REASON_` prefix and lower-cased as Prometheus label values
//! usually are: `no_socket`, `tcp_abort_on_close`, `tcp_abort_on_linger`, ... Received resets
//! carry no reason (the peer does not say), nor do resets sent on older kernels: `unknown`.
use std::collections::BTreeMap;

use prometheus::proto::Metric;
use tcpmon_common::{reset, tcp_state};

use super::{families::counter, ports::PortTable};
use crate::{probe::resets::ReasonNames, state::TcpState};

/// The `state` label of a reset sent for a segment that matched no socket.
pub const NO_SOCKET_STATE: &str = "none";
fn state_label(state: u8) -> &'static str {
    match i32::from(state) {
        0 => NO_SOCKET_STATE,
        // A request socket's reset, as `ss` shows request sockets.
        tcp_state::NEW_SYN_RECV => TcpState::SynRecv.name(),
        raw => TcpState::from_raw(raw).map_or("unknown", TcpState::name),
    }
}

/// One series per (direction, state, reason, port label) with a count, summed where series of
/// the kernel's map share their labels (an unknown reason value and `unknown`).
pub fn series(
    ports: &PortTable,
    resets: &[(reset::Key, u64)],
    reasons: &ReasonNames,
) -> Vec<Metric> {
    let mut by_labels: BTreeMap<(&str, &str, &str, &str), u64> = BTreeMap::new();
    for (key, count) in resets {
        let direction = match key.direction {
            reset::SENT => "sent",
            _ => "received",
        };
        let labels = (
            direction,
            state_label(key.state),
            reasons.name(key.reason),
            ports.label(u32::from(key.port_slot)),
        );
        *by_labels.entry(labels).or_default() += count;
    }
    by_labels
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|((direction, state, reason, port), count)| {
            let pairs = [
                ("direction", direction),
                ("state", state),
                ("reason", reason),
                ("port", port),
            ];
            counter(&pairs, count as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(direction: u8, state: u8, reason: u16, port_slot: u16) -> reset::Key {
        reset::Key {
            port_slot,
            reason,
            state,
            direction,
            padding: [0; 2],
        }
    }

    #[test]
    fn labels_each_series_and_sums_those_that_share_labels() {
        let reasons = ReasonNames::new(&[
            (0, "SK_RST_REASON_NOT_SPECIFIED".into()),
            (1, "SK_RST_REASON_NO_SOCKET".into()),
            (2, "SK_RST_REASON_MAX".into()),
        ]);
        assert_eq!(reasons.name(1), "no_socket");
        assert_eq!(reasons.name(2), "unknown");
        let ports = PortTable::new(&[80], 0).expect("fits");
        let resets = [
            (key(reset::SENT, 0, 1, 1), 3),
            (key(reset::RECEIVED, 2, reset::REASON_UNKNOWN, 1), 2),
            (key(reset::RECEIVED, 2, 2, 1), 1),
            (key(reset::SENT, 12, 0, 0), 4),
        ];
        let text: Vec<String> = series(&ports, &resets, &reasons)
            .iter()
            .map(|m| {
                let labels: Vec<&str> = m.get_label().iter().map(|l| l.value()).collect();
                format!("{} {}", labels.join(","), m.get_counter().get_value())
            })
            .collect();
        assert_eq!(
            text,
            [
                "received,SYN_SENT,unknown,80 3",
                "sent,SYN_RECV,not_specified,other 4",
                "sent,none,no_socket,80 3",
            ]
        );
    }
}
