//! What a transition ends: a three-way handshake (and how) or a connection (who closed first,
//! with FINs or a reset). Pure functions of the transition and the socket's `sk_err`, shared by
//! the eBPF program and the host-side unit tests.

/// errno values the kernel leaves in `sk_err` when it ends a connection.
pub mod errno {
    pub const EPIPE: i32 = 32;
    pub const ENETUNREACH: i32 = 101;
    pub const ECONNRESET: i32 = 104;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
    pub const EHOSTUNREACH: i32 = 113;
}

use crate::{handshake, tcp_state, teardown};

/// What a transition concludes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Nothing,
    /// A handshake ended with this [`handshake`] result.
    Handshake(u32),
    /// A connection ended: `teardown::INITIATOR_*` and `teardown::KIND_*`.
    Teardown(u32, u32),
}

/// Whether [`outcome`] needs the socket's `sk_err` for this transition (it costs a kernel read).
#[inline(always)]
pub fn needs_sk_err(old: i32, new: i32) -> bool {
    new == tcp_state::CLOSE && old != tcp_state::CLOSE && old != tcp_state::SYN_RECV
}

/// Classifies a transition `old -> new` (`old != new`). `sk_err` is read just as the socket
/// reaches CLOSE: the kernel sets it before `tcp_done()` when a RST or a timeout ends the
/// socket, and leaves it 0 when the application closes or aborts it.
#[inline(always)]
pub fn outcome(old: i32, new: i32, sk_err: i32) -> Outcome {
    match (old, new) {
        (tcp_state::SYN_SENT, tcp_state::ESTABLISHED) => {
            Outcome::Handshake(handshake::CLIENT_ESTABLISHED)
        }
        (tcp_state::SYN_SENT, tcp_state::CLOSE) => Outcome::Handshake(match sk_err {
            errno::ECONNREFUSED => handshake::CLIENT_REFUSED,
            errno::ETIMEDOUT => handshake::CLIENT_TIMEOUT,
            errno::EHOSTUNREACH | errno::ENETUNREACH => handshake::CLIENT_UNREACHABLE,
            _ => handshake::CLIENT_ABORTED,
        }),
        (tcp_state::SYN_RECV, tcp_state::ESTABLISHED) => {
            Outcome::Handshake(handshake::SERVER_ESTABLISHED)
        }
        (tcp_state::SYN_RECV, tcp_state::CLOSE) => Outcome::Handshake(handshake::SERVER_RESET),
        (_, tcp_state::CLOSE) => connection_end(old, sk_err),
        _ => Outcome::Nothing,
    }
}

/// The end of an established connection, from the state it leaves for CLOSE.
#[inline(always)]
fn connection_end(old: i32, sk_err: i32) -> Outcome {
    let reset_by_peer = sk_err == errno::ECONNRESET || sk_err == errno::EPIPE;
    let initiator = match old {
        tcp_state::FIN_WAIT1 | tcp_state::FIN_WAIT2 => teardown::INITIATOR_LOCAL,
        tcp_state::CLOSE_WAIT | tcp_state::LAST_ACK => teardown::INITIATOR_REMOTE,
        tcp_state::CLOSING => teardown::INITIATOR_SIMULTANEOUS,
        tcp_state::ESTABLISHED if reset_by_peer => teardown::INITIATOR_REMOTE,
        tcp_state::ESTABLISHED => teardown::INITIATOR_LOCAL,
        _ => return Outcome::Nothing,
    };
    // The FIN sequence ends in FIN_WAIT2 (TIME_WAIT follows), LAST_ACK or CLOSING; any other
    // way to CLOSE, or an error left by a RST or a timeout, is a reset.
    let completed = matches!(
        old,
        tcp_state::FIN_WAIT2 | tcp_state::LAST_ACK | tcp_state::CLOSING
    );
    let kind = if completed && sk_err == 0 {
        teardown::KIND_FIN
    } else {
        teardown::KIND_RESET
    };
    Outcome::Teardown(initiator, kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{port, side};

    #[test]
    fn client_handshakes() {
        let end = |sk_err| outcome(tcp_state::SYN_SENT, tcp_state::CLOSE, sk_err);
        assert_eq!(
            outcome(tcp_state::SYN_SENT, tcp_state::ESTABLISHED, 0),
            Outcome::Handshake(handshake::CLIENT_ESTABLISHED)
        );
        assert_eq!(
            end(errno::ECONNREFUSED),
            Outcome::Handshake(handshake::CLIENT_REFUSED)
        );
        assert_eq!(
            end(errno::ETIMEDOUT),
            Outcome::Handshake(handshake::CLIENT_TIMEOUT)
        );
        assert_eq!(
            end(errno::EHOSTUNREACH),
            Outcome::Handshake(handshake::CLIENT_UNREACHABLE)
        );
        assert_eq!(
            end(errno::ENETUNREACH),
            Outcome::Handshake(handshake::CLIENT_UNREACHABLE)
        );
        assert_eq!(end(0), Outcome::Handshake(handshake::CLIENT_ABORTED));
        assert!(needs_sk_err(tcp_state::SYN_SENT, tcp_state::CLOSE));
        assert!(!needs_sk_err(tcp_state::SYN_SENT, tcp_state::ESTABLISHED));
    }

    #[test]
    fn server_handshakes() {
        assert_eq!(
            outcome(tcp_state::SYN_RECV, tcp_state::ESTABLISHED, 0),
            Outcome::Handshake(handshake::SERVER_ESTABLISHED)
        );
        assert_eq!(
            outcome(tcp_state::SYN_RECV, tcp_state::CLOSE, 0),
            Outcome::Handshake(handshake::SERVER_RESET)
        );
        assert!(!needs_sk_err(tcp_state::SYN_RECV, tcp_state::CLOSE));
    }

    #[test]
    fn orderly_teardowns() {
        let fin = |old| outcome(old, tcp_state::CLOSE, 0);
        assert_eq!(
            fin(tcp_state::FIN_WAIT2),
            Outcome::Teardown(teardown::INITIATOR_LOCAL, teardown::KIND_FIN)
        );
        assert_eq!(
            fin(tcp_state::LAST_ACK),
            Outcome::Teardown(teardown::INITIATOR_REMOTE, teardown::KIND_FIN)
        );
        assert_eq!(
            fin(tcp_state::CLOSING),
            Outcome::Teardown(teardown::INITIATOR_SIMULTANEOUS, teardown::KIND_FIN)
        );
    }

    #[test]
    fn resets() {
        let close = |old, err| outcome(old, tcp_state::CLOSE, err);
        // SO_LINGER 0 on our side: tcp_disconnect() reaches CLOSE before it sets sk_err.
        assert_eq!(
            close(tcp_state::ESTABLISHED, 0),
            Outcome::Teardown(teardown::INITIATOR_LOCAL, teardown::KIND_RESET)
        );
        // A RST from the peer.
        assert_eq!(
            close(tcp_state::ESTABLISHED, errno::ECONNRESET),
            Outcome::Teardown(teardown::INITIATOR_REMOTE, teardown::KIND_RESET)
        );
        // Retransmissions gave up: our side ended it.
        assert_eq!(
            close(tcp_state::ESTABLISHED, errno::ETIMEDOUT),
            Outcome::Teardown(teardown::INITIATOR_LOCAL, teardown::KIND_RESET)
        );
        // Closing with unread data after the peer's FIN, and a RST in LAST_ACK.
        assert_eq!(
            close(tcp_state::CLOSE_WAIT, 0),
            Outcome::Teardown(teardown::INITIATOR_REMOTE, teardown::KIND_RESET)
        );
        assert_eq!(
            close(tcp_state::LAST_ACK, errno::ECONNRESET),
            Outcome::Teardown(teardown::INITIATOR_REMOTE, teardown::KIND_RESET)
        );
        assert_eq!(
            close(tcp_state::FIN_WAIT1, errno::ECONNRESET),
            Outcome::Teardown(teardown::INITIATOR_LOCAL, teardown::KIND_RESET)
        );
    }

    #[test]
    fn other_transitions_conclude_nothing() {
        assert_eq!(
            outcome(tcp_state::CLOSE, tcp_state::SYN_SENT, 0),
            Outcome::Nothing
        );
        assert_eq!(
            outcome(tcp_state::LISTEN, tcp_state::SYN_RECV, 0),
            Outcome::Nothing
        );
        assert_eq!(
            outcome(tcp_state::ESTABLISHED, tcp_state::FIN_WAIT1, 0),
            Outcome::Nothing
        );
        assert_eq!(
            outcome(tcp_state::LISTEN, tcp_state::CLOSE, 0),
            Outcome::Nothing
        );
        assert!(!needs_sk_err(tcp_state::CLOSE, tcp_state::CLOSE));
    }

    #[test]
    fn indexes_are_dense_and_bounded() {
        assert_eq!(handshake::index(0, 0), Some(0));
        assert_eq!(
            handshake::index(port::SLOTS - 1, handshake::RESULTS - 1),
            Some(handshake::SLOTS - 1)
        );
        assert_eq!(handshake::index(port::SLOTS, 0), None);
        assert_eq!(
            handshake::side_index(port::SLOTS - 1, side::SLOTS - 1),
            Some(handshake::SIDE_SLOTS - 1)
        );
        assert_eq!(
            teardown::index(
                port::SLOTS - 1,
                teardown::INITIATORS - 1,
                teardown::KINDS - 1
            ),
            Some(teardown::SLOTS - 1)
        );
        assert_eq!(teardown::index(0, teardown::INITIATORS, 0), None);
    }
}
