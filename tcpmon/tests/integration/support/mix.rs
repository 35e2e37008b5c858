//! A round of every kind of connection at once, on fixed service ports: client closes first,
//! server closes first, SO_LINGER 0 resets, refused connects, connections held in CLOSE_WAIT,
//! and a burst of more sockets open at once than a small per-socket map holds. The soak
//! repeats it for minutes; each round's transitions are known exactly ([`expect_round`]).
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    time::{Duration, Instant},
};

use super::{
    held::{self, CloseWait, Held},
    workload::{self, Close, Expected},
};

pub const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// (port, connections per round, how they end).
pub const MIXED: [(u16, u64, Close); 3] = [
    (8080, 300, Close::ClientFirst),
    (8081, 300, Close::ServerFirst),
    (8082, 300, Close::ClientReset),
];
/// Connects to a port nobody listens on, per round (port label `other`).
pub const REFUSED: u64 = 300;
/// Connections held in CLOSE_WAIT each round, and for how long at least.
pub const CLOSE_WAIT: (u16, u64) = (8083, 50);
pub const HOLD: Duration = Duration::from_millis(300);
/// Connections open at once each round: 3,001 sockets with the listener.
pub const BURST: (u16, u64) = (8084, 1_500);
/// The ports above, for `--ports`.
pub const PORTS: &str = "8080,8081,8082,8083,8084";
/// Connections (and refused connects) per round.
pub const PER_ROUND: u64 = MIXED[0].1 + MIXED[1].1 + MIXED[2].1 + REFUSED + CLOSE_WAIT.1 + BURST.1;

/// One round, in the namespace of the calling thread, on two threads: one makes short
/// connections of every kind ([`mixed`]); the other holds connections in CLOSE_WAIT and a
/// burst open, then closes them, and `before` too if given. Two, not one per kind: on two
/// cores more threads would preempt one between a connection's two closes (see
/// `support::held`).
pub fn round(before: Option<Held>) {
    std::thread::scope(|scope| {
        scope.spawn(mixed);
        scope.spawn(move || {
            let started = Instant::now();
            let close_wait = CloseWait::open(V4, CLOSE_WAIT.0, CLOSE_WAIT.1);
            let burst = Held::open(V4, BURST.0, BURST.1);
            std::thread::sleep(HOLD.saturating_sub(started.elapsed()));
            close_wait.close();
            burst.close_gradually();
            if let Some(before) = before {
                before.close_gradually();
            }
        });
    })
}

/// The [`MIXED`] connections and [`REFUSED`] connects, interleaved. Each connection carries a
/// request and a reply, and its second side closes right after the first, so that the ACK of
/// the first FIN never goes out from a timer (see `support::held`).
fn mixed() {
    let listeners =
        MIXED.map(|(port, _, _)| TcpListener::bind(SocketAddr::new(V4, port)).expect("listen"));
    let most = MIXED.iter().map(|(_, n, _)| *n).chain([REFUSED]).max();
    for i in 0..most.unwrap_or(0) {
        for ((_, n, close), listener) in MIXED.iter().zip(&listeners) {
            if i < *n {
                held::connection_with_reply(listener, *close);
            }
        }
        if i < REFUSED {
            workload::refused_connects(V4, 1);
        }
    }
}

/// What one [`round`] adds (without `before`).
pub fn expect_round(e: &mut Expected) {
    for (port, n, close) in MIXED {
        let port = port.to_string();
        e.listener("inet").handshakes("inet", n, &port);
        match close {
            Close::ClientReset => e.resets("inet", n, &port),
            _ => e.teardowns("inet", n, &port),
        };
    }
    e.failed_connects("inet", REFUSED, "refused", "other");
    Held::expect(e, "inet", CLOSE_WAIT.0, CLOSE_WAIT.1);
    Held::expect(e, "inet", BURST.0, BURST.1);
}
