//! TCP states as the kernel numbers them (`include/net/tcp_states.h`), with the names operators
//! know from `ss` and `tcpstates`.

use tcpmon_common::tcp_state;

/// A kernel TCP state. The wire carries raw `i32`s; this is their userspace face; the numbers
/// are `tcpmon_common::tcp_state`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    Established = tcp_state::ESTABLISHED as isize,
    SynSent = tcp_state::SYN_SENT as isize,
    SynRecv = tcp_state::SYN_RECV as isize,
    FinWait1 = tcp_state::FIN_WAIT1 as isize,
    FinWait2 = tcp_state::FIN_WAIT2 as isize,
    TimeWait = tcp_state::TIME_WAIT as isize,
    Close = tcp_state::CLOSE as isize,
    CloseWait = tcp_state::CLOSE_WAIT as isize,
    LastAck = tcp_state::LAST_ACK as isize,
    Listen = tcp_state::LISTEN as isize,
    Closing = tcp_state::CLOSING as isize,
    NewSynRecv = tcp_state::NEW_SYN_RECV as isize,
}

impl TcpState {
    /// Every state, in kernel order.
    pub const ALL: [TcpState; 12] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
    ];

    /// The state with kernel number `raw`, if there is one.
    pub fn from_raw(raw: i32) -> Option<TcpState> {
        TcpState::ALL.into_iter().find(|s| *s as i32 == raw)
    }

    /// The label value used in metrics: upper case, as `ss` and `tcpstates` print it.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::NewSynRecv => "NEW_SYN_RECV",
        }
    }

    /// Parses a state name as [`TcpState::name`] prints it, case-insensitively.
    pub fn from_name(name: &str) -> Option<TcpState> {
        TcpState::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for TcpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Address family label values, by the slot the eBPF program counts them in.
pub const FAMILY_LABELS: [&str; tcpmon_common::FAMILY_SLOTS as usize] = ["inet", "inet6"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_kernel() {
        assert_eq!(TcpState::from_raw(1), Some(TcpState::Established));
        assert_eq!(TcpState::from_raw(7), Some(TcpState::Close));
        assert_eq!(TcpState::from_raw(10), Some(TcpState::Listen));
        assert_eq!(TcpState::from_raw(12), Some(TcpState::NewSynRecv));
        assert_eq!(TcpState::from_raw(0), None);
        assert_eq!(TcpState::from_raw(13), None);
        assert_eq!(TcpState::Close as i32, tcpmon_common::tcp_state::CLOSE);
        assert_eq!(TcpState::Listen as i32, tcpmon_common::tcp_state::LISTEN);
    }

    #[test]
    fn names_round_trip() {
        for state in TcpState::ALL {
            assert_eq!(TcpState::from_name(state.name()), Some(state));
            assert_eq!(TcpState::from_raw(state as i32), Some(state));
        }
        assert_eq!(TcpState::from_name("close_wait"), Some(TcpState::CloseWait));
        assert_eq!(TcpState::from_name("CLOSED"), None);
        assert_eq!(TcpState::FinWait2.to_string(), "FIN_WAIT2");
    }
}
