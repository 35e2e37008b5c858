//! `tcpmon_sockets{state}` against `ss`, and a CLOSE_WAIT leak made on purpose: K sockets whose
//! peer closed and whose application holds them open.

use std::{
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use crate::support::{
    hidden::HiddenTransitions, require_root, scrape_until, ss_counts, Agent, NetNs,
};

const K: u64 = 20;
const HOLD: Duration = Duration::from_millis(1200);

#[test]
fn close_wait_sockets_are_counted_while_held_and_timed_after() {
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start_with(&ns, &["--ports", "8080"]);

    // Clients connect and close; the server keeps its K accepted sockets open: CLOSE_WAIT.
    let (listener, held) = ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:8080").expect("listen");
        let clients: Vec<TcpStream> = (0..K)
            .map(|_| TcpStream::connect("127.0.0.1:8080").expect("connect"))
            .collect();
        let held: Vec<TcpStream> = (0..K)
            .map(|_| listener.accept().expect("accept").0)
            .collect();
        drop(clients);
        (listener, held)
    });
    let closed_at = Instant::now();

    // The clients' FINs are ACKed with a delayed ACK: wait until they all reached FIN_WAIT2.
    // Orphaned, they then are time-wait mini-sockets in that substate, which the kernel counts
    // as time-wait sockets and so does tcpmon (ss shows them as FIN-WAIT-2 with a timewait
    // timer), so that the agent and ss look at the same settled state.
    let scrape = scrape_until(&agent, |s| {
        s.sockets()["CLOSE_WAIT"] == K && s.sockets()["TIME_WAIT"] == K
    });
    let sockets = scrape.sockets();
    assert_eq!(sockets["CLOSE_WAIT"], K, "held sockets");
    assert_eq!(sockets["TIME_WAIT"], K, "closed clients");
    assert_eq!(sockets["FIN_WAIT2"], 0, "no full socket in FIN_WAIT2");
    assert_eq!(sockets["LISTEN"], 1);
    assert_eq!(sockets, ss_counts(&ns), "agrees with ss -tan");

    std::thread::sleep(HOLD.saturating_sub(closed_at.elapsed()));
    drop(held);
    drop(listener);

    // The clients' sockets now wait in TIME_WAIT; the server's are gone.
    let scrape = scrape_until(&agent, |s| {
        s.sockets()["TIME_WAIT"] == K && s.sockets()["LAST_ACK"] == 0
    });
    let sockets = scrape.sockets();
    assert_eq!(sockets["TIME_WAIT"], K);
    assert_eq!(sockets["CLOSE_WAIT"], 0);
    assert_eq!(sockets, ss_counts(&ns), "agrees with ss -tan");

    // Every CLOSE_WAIT lasted the hold (1.2 s): all K in (1.048576, 2.097152] s.
    let close_wait = |le: &str| {
        scrape.get(&format!(
            "tcpmon_state_duration_seconds_bucket{{state=\"CLOSE_WAIT\",le=\"{le}\"}}"
        ))
    };
    assert_eq!(close_wait("1.048576"), 0.0);
    assert_eq!(close_wait("2.097152"), K as f64);
    assert_eq!(
        scrape.get("tcpmon_state_duration_seconds_count{state=\"CLOSE_WAIT\"}"),
        K as f64
    );
}

#[test]
fn ipv4_and_ipv6_sockets_are_both_counted() {
    // Both address families' transitions move sockets between states: every socket of each
    // family must be in the gauge, as `ss` shows.
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start_with(&ns, &["--ports", "8080"]);
    let held = ns.run(|| {
        let v4 = TcpListener::bind("127.0.0.1:8080").expect("listen on IPv4");
        let v6 = TcpListener::bind("[::1]:8081").expect("listen on IPv6");
        let mut held = Vec::new();
        for (listener, n) in [(&v4, 3), (&v6, 5)] {
            let addr = listener.local_addr().expect("address");
            for _ in 0..n {
                held.push(TcpStream::connect(addr).expect("connect"));
                held.push(listener.accept().expect("accept").0);
            }
        }
        (v4, v6, held)
    });
    let scrape = scrape_until(&agent, |s| s.sockets()["ESTABLISHED"] == 16);
    let sockets = scrape.sockets();
    assert_eq!(
        sockets["ESTABLISHED"],
        2 * (3 + 5),
        "both ends, both families"
    );
    assert_eq!(sockets["LISTEN"], 2);
    assert_eq!(sockets, ss_counts(&ns), "agrees with ss -tan");
    drop(held);
}

/// A listener on port 8080 in `ns` and `n` established connections to it, all kept open.
fn hold_open(ns: &NetNs, n: u64) -> (TcpListener, Vec<TcpStream>, Vec<TcpStream>) {
    ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:8080").expect("listen");
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..n {
            clients.push(TcpStream::connect("127.0.0.1:8080").expect("connect"));
            servers.push(listener.accept().expect("accept").0);
        }
        (listener, clients, servers)
    })
}

#[test]
fn thousands_of_open_sockets_are_all_tracked_and_none_evicted() {
    // More entries than one batch read (4,096): the socket map is walked to its end.
    require_root();
    const OPEN: u64 = 3_000;
    let ns = NetNs::new();
    let agent = Agent::start_with(&ns, &["--ports", "8080"]);
    let (listener, clients, servers) = hold_open(&ns, OPEN);
    let all = (2 * OPEN + 1) as f64; // both ends of every connection, and the listener
    let scrape = scrape_until(&agent, |s| s.get("tcpmon_tracked_sockets") == all);
    assert_eq!(scrape.get("tcpmon_tracked_sockets"), all);
    assert_eq!(scrape.get("tcpmon_tracked_sockets_evicted_total"), 0.0);
    assert_eq!(scrape.sockets()["ESTABLISHED"], 2 * OPEN);
    assert_eq!(scrape.sockets(), ss_counts(&ns), "agrees with ss -tan");

    let hidden = HiddenTransitions::observe();
    drop((clients, servers, listener));
    // Closing thousands of sockets at once can lose transitions in the kernel: a timer
    // interrupt that lands while the program runs for one close() runs its softirq (a batch of
    // delayed ACKs) inside it, and the kernel skips the program there (recursion), or the
    // interrupt lands on PID 1 on a kernel that hides that from BPF (`crate::support::hidden`).
    // Every entry left behind must be explained by a transition kept from the program.
    let settled = |s: &crate::support::Scrape| {
        s.get("tcpmon_tracked_sockets") as u64 <= crate::support::unseen(s, &hidden)
    };
    let scrape = scrape_until(&agent, settled);
    let left = scrape.get("tcpmon_tracked_sockets") as u64;
    let unseen = crate::support::unseen(&scrape, &hidden);
    if left > 0 {
        hidden.report();
        assert!(
            left <= unseen,
            "{left} entries left, {unseen} transitions kept from the program"
        );
        eprintln!("{unseen} transitions kept from the program, {left} entries left for the LRU");
    }
    assert_eq!(scrape.get("tcpmon_tracked_sockets_evicted_total"), 0.0);
}

#[test]
fn a_full_socket_map_evicts_counts_it_and_keeps_every_counter_exact() {
    require_root();
    const OPEN: u64 = 1_500;
    const CAPACITY: f64 = 1_024.0;
    let ns = NetNs::new();
    let agent = Agent::start_with(&ns, &["--ports", "8080", "--max-tracked-sockets", "1024"]);
    let (listener, clients, servers) = hold_open(&ns, OPEN);
    // Every socket got an entry once (both ends of each connection, and the listener); the
    // map holds at most its capacity, and every entry it lost is counted as evicted.
    let inserted = (2 * OPEN + 1) as f64;
    let scrape = scrape_until(&agent, |s| {
        s.get("tcpmon_tracked_sockets") + s.get("tcpmon_tracked_sockets_evicted_total") == inserted
    });
    let tracked = scrape.get("tcpmon_tracked_sockets");
    let evicted = scrape.get("tcpmon_tracked_sockets_evicted_total");
    assert!(
        tracked <= CAPACITY,
        "{tracked} entries in a map of {CAPACITY}"
    );
    assert_eq!(
        tracked + evicted,
        inserted,
        "tracked {tracked}, evicted {evicted}"
    );
    // Counters do not depend on the map: every handshake is there.
    let handshakes = |side: &str| {
        scrape.get(&format!(
            "tcpmon_handshakes_total{{side=\"{side}\",result=\"established\",port=\"8080\"}}"
        ))
    };
    assert_eq!(handshakes("client"), OPEN as f64);
    assert_eq!(handshakes("server"), OPEN as f64);

    // Closing: the evicted sockets' transitions are counted, their dwell is not (untracked).
    let hidden = HiddenTransitions::observe();
    drop((clients, servers, listener));
    let teardowns = |s: &crate::support::Scrape| {
        s.by_labels("tcpmon_teardowns_total", &["initiator", "kind"])
            .values()
            .sum::<u64>()
    };
    let scrape = scrape_until(&agent, |s| teardowns(s) == 2 * OPEN);
    if teardowns(&scrape) != 2 * OPEN {
        // Only a transition the kernel kept from the program may be missing.
        hidden.report();
        let missing = (2 * OPEN)
            .checked_sub(teardowns(&scrape))
            .expect("no teardown invented");
        let unseen = crate::support::unseen(&scrape, &hidden);
        assert!(
            missing <= unseen,
            "{missing} teardowns missing, {unseen} transitions kept from the program"
        );
    } else {
        assert_eq!(teardowns(&scrape), 2 * OPEN, "every teardown counted");
        let untracked = scrape.get("tcpmon_state_duration_unmeasured_total{reason=\"untracked\"}");
        assert!(
            untracked > 0.0,
            "evicted sockets' dwell times are unmeasured"
        );
        // A closing socket without an entry gets a new one (FIN_WAIT1, CLOSE_WAIT, ...), which
        // may evict again: the count only grows.
        let evicted_after = scrape.get("tcpmon_tracked_sockets_evicted_total");
        assert!(evicted_after >= evicted, "{evicted_after} < {evicted}");
    }
}
