//! What a transition ends: a three-way handshake (and how) or a connection (who closed first,
//! with FINs or a reset). Pure functions of the transition and the socket's `sk_err`, shared by
//! the eBPF program and the host-side unit tests.

/// Kernel TCP states used here (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_SYN_SENT: i32 = 2;
pub const TCP_SYN_RECV: i32 = 3;
pub const TCP_FIN_WAIT1: i32 = 4;
pub const TCP_FIN_WAIT2: i32 = 5;
pub const TCP_CLOSE_WAIT: i32 = 8;
pub const TCP_LAST_ACK: i32 = 9;
pub const TCP_CLOSING: i32 = 11;

/// errno values the kernel leaves in `sk_err` when it ends a connection.
pub const EPIPE: i32 = 32;
pub const ENETUNREACH: i32 = 101;
pub const ECONNRESET: i32 = 104;
pub const ETIMEDOUT: i32 = 110;
pub const ECONNREFUSED: i32 = 111;
pub const EHOSTUNREACH: i32 = 113;

/// Port slots: slot 0 is `port="other"`, slots 1.. are ports the agent put in the port map.
pub const PORT_SLOTS: u32 = 257;
pub const PORT_OTHER: u32 = 0;

/// Handshake results, `side` included (the index of `tcpmon_handshakes_total`).
pub const HANDSHAKE_CLIENT_ESTABLISHED: u32 = 0;
pub const HANDSHAKE_CLIENT_REFUSED: u32 = 1;
pub const HANDSHAKE_CLIENT_TIMEOUT: u32 = 2;
pub const HANDSHAKE_CLIENT_UNREACHABLE: u32 = 3;
pub const HANDSHAKE_CLIENT_ABORTED: u32 = 4;
pub const HANDSHAKE_SERVER_ESTABLISHED: u32 = 5;
pub const HANDSHAKE_SERVER_RESET: u32 = 6;
pub const HANDSHAKE_RESULTS: u32 = 7;

pub const SIDE_CLIENT: u32 = 0;
pub const SIDE_SERVER: u32 = 1;
pub const SIDES: u32 = 2;

pub const INITIATOR_LOCAL: u32 = 0;
pub const INITIATOR_REMOTE: u32 = 1;
pub const INITIATOR_SIMULTANEOUS: u32 = 2;
pub const INITIATORS: u32 = 3;

pub const KIND_FIN: u32 = 0;
pub const KIND_RESET: u32 = 1;
pub const KINDS: u32 = 2;

/// Entries of the per-port maps.
pub const HANDSHAKE_SLOTS: u32 = PORT_SLOTS * HANDSHAKE_RESULTS;
pub const HANDSHAKE_DURATION_SLOTS: u32 = PORT_SLOTS * SIDES;
pub const TEARDOWN_SLOTS: u32 = PORT_SLOTS * INITIATORS * KINDS;

#[inline(always)]
pub fn handshake_index(port_slot: u32, result: u32) -> Option<u32> {
    (port_slot < PORT_SLOTS && result < HANDSHAKE_RESULTS)
        .then_some(port_slot * HANDSHAKE_RESULTS + result)
}

#[inline(always)]
pub fn handshake_duration_index(port_slot: u32, side: u32) -> Option<u32> {
    (port_slot < PORT_SLOTS && side < SIDES).then_some(port_slot * SIDES + side)
}

#[inline(always)]
pub fn teardown_index(port_slot: u32, initiator: u32, kind: u32) -> Option<u32> {
    (port_slot < PORT_SLOTS && initiator < INITIATORS && kind < KINDS)
        .then_some((port_slot * INITIATORS + initiator) * KINDS + kind)
}

/// What a transition concludes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Nothing,
    /// A handshake ended with this `HANDSHAKE_*` result.
    Handshake(u32),
    /// A connection ended: `INITIATOR_*` and `KIND_*`.
    Teardown(u32, u32),
}

/// Whether [`outcome`] needs the socket's `sk_err` for this transition (it costs a kernel read).
#[inline(always)]
pub fn needs_sk_err(old: i32, new: i32) -> bool {
    new == crate::TCP_CLOSE && old != crate::TCP_CLOSE && old != TCP_SYN_RECV
}

/// Classifies a transition `old -> new` (`old != new`). `sk_err` is read just as the socket
/// reaches CLOSE: the kernel sets it before `tcp_done()` when a RST or a timeout ends the
/// socket, and leaves it 0 when the application closes or aborts it.
#[inline(always)]
pub fn outcome(old: i32, new: i32, sk_err: i32) -> Outcome {
    match (old, new) {
        (TCP_SYN_SENT, TCP_ESTABLISHED) => Outcome::Handshake(HANDSHAKE_CLIENT_ESTABLISHED),
        (TCP_SYN_SENT, crate::TCP_CLOSE) => Outcome::Handshake(match sk_err {
            ECONNREFUSED => HANDSHAKE_CLIENT_REFUSED,
            ETIMEDOUT => HANDSHAKE_CLIENT_TIMEOUT,
            EHOSTUNREACH | ENETUNREACH => HANDSHAKE_CLIENT_UNREACHABLE,
            _ => HANDSHAKE_CLIENT_ABORTED,
        }),
        (TCP_SYN_RECV, TCP_ESTABLISHED) => Outcome::Handshake(HANDSHAKE_SERVER_ESTABLISHED),
        (TCP_SYN_RECV, crate::TCP_CLOSE) => Outcome::Handshake(HANDSHAKE_SERVER_RESET),
        (_, crate::TCP_CLOSE) => teardown(old, sk_err),
        _ => Outcome::Nothing,
    }
}

/// The end of an established connection, from the state it leaves for CLOSE.
#[inline(always)]
fn teardown(old: i32, sk_err: i32) -> Outcome {
    let reset_by_peer = sk_err == ECONNRESET || sk_err == EPIPE;
    let initiator = match old {
        TCP_FIN_WAIT1 | TCP_FIN_WAIT2 => INITIATOR_LOCAL,
        TCP_CLOSE_WAIT | TCP_LAST_ACK => INITIATOR_REMOTE,
        TCP_CLOSING => INITIATOR_SIMULTANEOUS,
        TCP_ESTABLISHED if reset_by_peer => INITIATOR_REMOTE,
        TCP_ESTABLISHED => INITIATOR_LOCAL,
        _ => return Outcome::Nothing,
    };
    // The FIN sequence ends in FIN_WAIT2 (TIME_WAIT follows), LAST_ACK or CLOSING; any other
    // way to CLOSE, or an error left by a RST or a timeout, is a reset.
    let completed = matches!(old, TCP_FIN_WAIT2 | TCP_LAST_ACK | TCP_CLOSING);
    let kind = if completed && sk_err == 0 {
        KIND_FIN
    } else {
        KIND_RESET
    };
    Outcome::Teardown(initiator, kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TCP_CLOSE, TCP_LISTEN};

    #[test]
    fn client_handshakes() {
        let end = |sk_err| outcome(TCP_SYN_SENT, TCP_CLOSE, sk_err);
        assert_eq!(
            outcome(TCP_SYN_SENT, TCP_ESTABLISHED, 0),
            Outcome::Handshake(HANDSHAKE_CLIENT_ESTABLISHED)
        );
        assert_eq!(
            end(ECONNREFUSED),
            Outcome::Handshake(HANDSHAKE_CLIENT_REFUSED)
        );
        assert_eq!(end(ETIMEDOUT), Outcome::Handshake(HANDSHAKE_CLIENT_TIMEOUT));
        assert_eq!(
            end(EHOSTUNREACH),
            Outcome::Handshake(HANDSHAKE_CLIENT_UNREACHABLE)
        );
        assert_eq!(
            end(ENETUNREACH),
            Outcome::Handshake(HANDSHAKE_CLIENT_UNREACHABLE)
        );
        assert_eq!(end(0), Outcome::Handshake(HANDSHAKE_CLIENT_ABORTED));
        assert!(needs_sk_err(TCP_SYN_SENT, TCP_CLOSE));
        assert!(!needs_sk_err(TCP_SYN_SENT, TCP_ESTABLISHED));
    }

    #[test]
    fn server_handshakes() {
        assert_eq!(
            outcome(TCP_SYN_RECV, TCP_ESTABLISHED, 0),
            Outcome::Handshake(HANDSHAKE_SERVER_ESTABLISHED)
        );
        assert_eq!(
            outcome(TCP_SYN_RECV, TCP_CLOSE, 0),
            Outcome::Handshake(HANDSHAKE_SERVER_RESET)
        );
        assert!(!needs_sk_err(TCP_SYN_RECV, TCP_CLOSE));
    }

    #[test]
    fn orderly_teardowns() {
        let fin = |old| outcome(old, TCP_CLOSE, 0);
        assert_eq!(
            fin(TCP_FIN_WAIT2),
            Outcome::Teardown(INITIATOR_LOCAL, KIND_FIN)
        );
        assert_eq!(
            fin(TCP_LAST_ACK),
            Outcome::Teardown(INITIATOR_REMOTE, KIND_FIN)
        );
        assert_eq!(
            fin(TCP_CLOSING),
            Outcome::Teardown(INITIATOR_SIMULTANEOUS, KIND_FIN)
        );
    }

    #[test]
    fn resets() {
        let close = |old, err| outcome(old, TCP_CLOSE, err);
        // SO_LINGER 0 on our side: tcp_disconnect() reaches CLOSE before it sets sk_err.
        assert_eq!(
            close(TCP_ESTABLISHED, 0),
            Outcome::Teardown(INITIATOR_LOCAL, KIND_RESET)
        );
        // A RST from the peer.
        assert_eq!(
            close(TCP_ESTABLISHED, ECONNRESET),
            Outcome::Teardown(INITIATOR_REMOTE, KIND_RESET)
        );
        // Retransmissions gave up: our side ended it.
        assert_eq!(
            close(TCP_ESTABLISHED, ETIMEDOUT),
            Outcome::Teardown(INITIATOR_LOCAL, KIND_RESET)
        );
        // Closing with unread data after the peer's FIN, and a RST in LAST_ACK.
        assert_eq!(
            close(TCP_CLOSE_WAIT, 0),
            Outcome::Teardown(INITIATOR_REMOTE, KIND_RESET)
        );
        assert_eq!(
            close(TCP_LAST_ACK, ECONNRESET),
            Outcome::Teardown(INITIATOR_REMOTE, KIND_RESET)
        );
        assert_eq!(
            close(TCP_FIN_WAIT1, ECONNRESET),
            Outcome::Teardown(INITIATOR_LOCAL, KIND_RESET)
        );
    }

    #[test]
    fn other_transitions_conclude_nothing() {
        assert_eq!(outcome(TCP_CLOSE, TCP_SYN_SENT, 0), Outcome::Nothing);
        assert_eq!(outcome(TCP_LISTEN, TCP_SYN_RECV, 0), Outcome::Nothing);
        assert_eq!(outcome(TCP_ESTABLISHED, TCP_FIN_WAIT1, 0), Outcome::Nothing);
        assert_eq!(outcome(TCP_LISTEN, TCP_CLOSE, 0), Outcome::Nothing);
        assert!(!needs_sk_err(TCP_CLOSE, TCP_CLOSE));
    }

    #[test]
    fn indexes_are_dense_and_bounded() {
        assert_eq!(handshake_index(0, 0), Some(0));
        assert_eq!(
            handshake_index(PORT_SLOTS - 1, HANDSHAKE_RESULTS - 1),
            Some(HANDSHAKE_SLOTS - 1)
        );
        assert_eq!(handshake_index(PORT_SLOTS, 0), None);
        assert_eq!(
            handshake_duration_index(PORT_SLOTS - 1, SIDES - 1),
            Some(HANDSHAKE_DURATION_SLOTS - 1)
        );
        assert_eq!(
            teardown_index(PORT_SLOTS - 1, INITIATORS - 1, KINDS - 1),
            Some(TEARDOWN_SLOTS - 1)
        );
        assert_eq!(teardown_index(0, INITIATORS, 0), None);
    }
}
