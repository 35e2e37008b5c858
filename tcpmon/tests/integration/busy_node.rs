//! The agent over every namespace, as on a node: sockets and listeners older than the agent,
//! sockets that change state while it starts, a namespace made after it started and one that
//! vanishes, each counted exactly (socket counts against `ss` in every namespace, listen
//! queues and drops against the kernel's own counters).

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use crate::support::{
    mix::V4, require_root, timeout, workload, workload::Close, Agent, NetNs, Scrape,
};

/// A listener that predates the agent, one made after it, and one that connections churn on.
const OLD_PORT: u16 = 7301;
const CHURN_PORT: u16 = 7302;
const NEW_PORT: u16 = 7303;
/// Connections the churn opens while the agent starts, one every 3 ms (about 1.2 s).
const CHURNED: usize = 400;
/// SYNs each flood sends to a full queue (and `tcp_syn_retries` in the namespace).
const FLOOD: u64 = 3;
const SYN_RETRIES: &str = "1";

/// Sockets per state in every namespace of the host, as `ss -tan` shows them there (see
/// `support::ss_counts`).
fn ss_everywhere() -> BTreeMap<String, u64> {
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    for path in tcpmon::netns::all().values() {
        let net = format!("--net={}", path.display());
        let Ok(out) = std::process::Command::new("nsenter")
            .args([net.as_str(), "ss", "-tanoH"])
            .output()
        else {
            continue;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let state = match line.split_whitespace().next().unwrap_or_default() {
                _ if line.contains("timer:(timewait") => "TIME_WAIT",
                "ESTAB" => "ESTABLISHED",
                "SYN-SENT" => "SYN_SENT",
                "SYN-RECV" => "SYN_RECV",
                "FIN-WAIT-1" => "FIN_WAIT1",
                "FIN-WAIT-2" => "FIN_WAIT2",
                "TIME-WAIT" => "TIME_WAIT",
                "CLOSE-WAIT" => "CLOSE_WAIT",
                "LAST-ACK" => "LAST_ACK",
                "LISTEN" => "LISTEN",
                "CLOSING" => "CLOSING",
                other => panic!("unknown ss state {other}"),
            };
            *total.entry(state.to_string()).or_default() += 1;
        }
    }
    total
}

/// The agent's socket counts, without the states nobody is in (as `ss_everywhere` lists).
fn counted(scrape: &Scrape) -> BTreeMap<String, u64> {
    let mut sockets = scrape.sockets();
    sockets.retain(|_, n| *n > 0);
    sockets
}

/// Scrapes until the agent's socket counts equal `ss` in every namespace just before the
/// scrape, plus the scrape's own connection (both ends ESTABLISHED while it is served);
/// returns the last scrape and what `ss` said.
fn settled(agent: &Agent) -> (Scrape, BTreeMap<String, u64>) {
    let deadline = std::time::Instant::now() + timeout();
    loop {
        let mut expected = ss_everywhere();
        *expected.entry("ESTABLISHED".into()).or_default() += 2;
        let scrape = agent.scrape();
        if counted(&scrape) == expected || std::time::Instant::now() > deadline {
            return (scrape, expected);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A listener with backlog 1 in `ns` on `port`, its queue full (two connections, the kernel
/// holds one more than the limit) and [`FLOOD`] connects whose SYNs it dropped; returns the
/// sockets and the namespace's drop count.
fn full_listener(ns: &NetNs, port: u16) -> (TcpListener, Vec<TcpStream>, u64) {
    ns.sysctl("net.ipv4.tcp_syn_retries", SYN_RETRIES);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (listener, queued) = ns.run(|| {
        let listener = workload::listen_with_backlog(addr, 1);
        let queued: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(addr).expect("fits in the queue"))
            .collect();
        workload::timed_out_connects(addr, FLOOD);
        (listener, queued)
    });
    (listener, queued, ns.tcp_counter("TcpExtListenDrops"))
}

fn listen_series(scrape: &Scrape, name: &str, port: u16) -> Option<f64> {
    let series = format!("{name}{{port=\"{port}\"}}");
    scrape.series.get(&series).copied()
}

#[test]
fn sockets_and_listeners_of_every_namespace_are_exact_through_start_up_new_and_gone_namespaces() {
    require_root();
    // Before the agent: a full listener, 40 open connections and five leaking CLOSE_WAITs.
    let old = NetNs::new();
    let (old_listener, old_queued, old_drops) = full_listener(&old, OLD_PORT);
    let held = old.run(|| {
        let listener = TcpListener::bind(("127.0.0.1", 7304)).expect("listen");
        let open: Vec<(TcpStream, TcpStream)> = (0..40)
            .map(|_| {
                let client = TcpStream::connect(("127.0.0.1", 7304)).expect("connect");
                (client, listener.accept().expect("accept").0)
            })
            .collect();
        let leaking: Vec<TcpStream> = (0..5)
            .map(|_| {
                let client = TcpStream::connect(("127.0.0.1", 7304)).expect("connect");
                let server = listener.accept().expect("accept").0;
                drop(client);
                server
            })
            .collect();
        (listener, open, leaking)
    });

    // While the agent starts and walks the namespaces, connections open (and stay open) and
    // the older ones close: sockets born and gone between attaching and the walk.
    let churning = AtomicBool::new(true);
    let ports = format!("{OLD_PORT},{CHURN_PORT},{NEW_PORT}");
    let (listener, mut older, leaking) = held;
    let (agent, churned) = std::thread::scope(|scope| {
        let churn = scope.spawn(|| {
            old.run(|| {
                let listener = TcpListener::bind(("127.0.0.1", CHURN_PORT)).expect("listen");
                let mut opened = Vec::new();
                while churning.load(Ordering::Relaxed) {
                    // At most CHURNED pairs (a guest may allow only 1,024 open files).
                    if opened.len() < CHURNED {
                        let client =
                            TcpStream::connect(("127.0.0.1", CHURN_PORT)).expect("connect");
                        opened.push((client, listener.accept().expect("accept").0));
                        if opened.len() % 8 == 0 {
                            drop(older.pop());
                        }
                    }
                    std::thread::sleep(Duration::from_millis(3));
                }
                (listener, opened)
            })
        });
        // Stops the churn however this closure ends (a panic must not leave it looping).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Relaxed);
            }
        }
        let stop = Stop(&churning);
        let agent = Agent::start_everywhere(&old, &["--ports", &ports]);
        std::thread::sleep(Duration::from_millis(200));
        drop(stop);
        (agent, churn.join().expect("churn"))
    });
    drop(older);
    assert!(
        churned.1.len() > 20,
        "{} connections opened",
        churned.1.len()
    );
    assert!(agent.notes.iter().all(|n| !n.contains("without room")));

    // After the agent: a new namespace with a full listener and 7 connections in TIME_WAIT.
    let new = NetNs::new();
    let (new_listener, new_queued, new_drops) = full_listener(&new, NEW_PORT);
    new.run(|| workload::connections(V4, 7305, 7, Close::ClientFirst));

    let (scrape, expected) = settled(&agent);
    assert_eq!(
        counted(&scrape),
        expected,
        "agrees with ss in every namespace"
    );
    for part in tcpmon::metrics::scrape_parts::PARTS {
        let success = format!("tcpmon_scrape_collector_success{{collector=\"{part}\"}}");
        assert_eq!(scrape.get(&success), 1.0, "{part}");
    }
    for (port, drops) in [(OLD_PORT, old_drops), (NEW_PORT, new_drops)] {
        let series = |name| listen_series(&scrape, name, port);
        assert_eq!(
            series("tcpmon_listen_queue_length"),
            Some(2.0),
            "port {port}"
        );
        assert_eq!(
            series("tcpmon_listen_queue_limit"),
            Some(1.0),
            "port {port}"
        );
        assert_eq!(series("tcpmon_listen_drops_total"), Some(drops as f64));
        assert!(drops >= FLOOD, "{drops} drops on port {port}");
    }

    // The new namespace goes, with its last sockets: the scrape stays whole, its listener's
    // queue goes, its drops stay counted.
    drop((new_listener, new_queued));
    drop(new);
    let (scrape, expected) = settled(&agent);
    assert_eq!(scrape.get("tcpmon_scrape_errors_total"), 0.0);
    assert_eq!(counted(&scrape), expected, "agrees with ss after");
    let series = |name| listen_series(&scrape, name, NEW_PORT);
    assert_eq!(series("tcpmon_listen_queue_length"), None);
    assert_eq!(series("tcpmon_listen_drops_total"), Some(new_drops as f64));
    drop((old_listener, old_queued, listener, leaking, churned));
}
