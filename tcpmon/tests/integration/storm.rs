//! Exactness under a storm: 200,000 connections as fast as this machine makes them, four kinds
//! at once, and every counter equal to the workload's ground truth.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use crate::support::{
    assert_exact,
    workload::{self, Close, Expected},
};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// (port, connections, how they end). Client-first connections leave the client's port in
/// TIME_WAIT for a minute, so they are spread over two service ports to stay clear of the
/// ephemeral port range (28,232 ports per destination).
const STORM: [(u16, u64, Close); 4] = [
    (8080, 25_000, Close::ClientFirst),
    (8081, 25_000, Close::ClientFirst),
    (8082, 60_000, Close::ServerFirst),
    (8083, 50_000, Close::ClientReset),
];
const REFUSED: u64 = 40_000;

/// `TCPMON_STORM_DIVISOR` (default 1) divides every count: the kernel matrix runs the storm
/// with a tenth of the connections, since qemu emulates the guest's CPU in software.
fn divisor() -> u64 {
    std::env::var("TCPMON_STORM_DIVISOR")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|d| *d >= 1)
        .unwrap_or(1)
}

#[test]
fn every_counter_is_exact_under_a_connection_storm() {
    let d = divisor();
    let storm = STORM.map(|(port, n, close)| (port, n / d, close));
    let refused = REFUSED / d;
    let mut expected = Expected::default();
    for (port, n, close) in storm {
        let port = port.to_string();
        expected.listener("inet").handshakes("inet", n, &port);
        match close {
            Close::ClientReset => expected.resets("inet", n, &port),
            _ => expected.teardowns("inet", n, &port),
        };
    }
    expected.failed_connects("inet", refused, "refused", "other");
    let total = storm.iter().map(|(_, n, _)| n).sum::<u64>() + refused;

    let started = Instant::now();
    let workload = || {
        std::thread::scope(|scope| {
            for (port, n, close) in storm {
                scope.spawn(move || workload::connections(V4, port, n, close));
            }
            scope.spawn(move || workload::refused_connects(V4, refused));
        })
    };
    let args = ["--ports", "8080,8081,8082,8083"];
    let (agent, _ns) = assert_exact(&args, workload, &expected);
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let covered = agent.scrape().get("tcpmon_bpf_program_covered_runs_total");
    eprintln!(
        "{total} connections, {rate:.0}/s, every counter exact, 0 missed runs ({covered} \
         transitions the kernel skipped the program for, counted by its cover)"
    );
}
