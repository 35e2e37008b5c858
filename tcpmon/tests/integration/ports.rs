//! The `port` label: listening ports are discovered up to --max-ports, the rest fold into
//! port="other", and a busy default set-up stays within a few thousand series.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};

use crate::support::{
    require_root,
    workload::{self, Close, Expected},
    Agent, NetNs,
};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Opens listeners on `ports` inside `ns` and keeps them open.
fn listen_on(ns: &NetNs, ports: impl Iterator<Item = u16> + Send) -> Vec<TcpListener> {
    ns.run(|| {
        ports
            .map(|p| TcpListener::bind(SocketAddr::new(V4, p)).expect("listen"))
            .collect()
    })
}

/// One connection to each listener, ended as `close` says.
fn connect_each(ns: &NetNs, listeners: &[TcpListener], close: Close) {
    ns.run(|| {
        for listener in listeners {
            workload::connection_to(listener, close);
        }
    })
}

#[test]
fn ports_beyond_max_ports_fold_into_other() {
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start_with(&ns, &["--max-ports", "3"]);
    let listeners = listen_on(&ns, 7001..=7005);
    // The scrape discovers the listeners: the first three (in port order) get a label.
    agent.scrape();
    connect_each(&ns, &listeners, Close::ClientFirst);
    drop(listeners);

    let mut expected = Expected::default();
    for port in ["7001", "7002", "7003"] {
        expected
            .handshakes("inet", 1, port)
            .teardowns("inet", 1, port);
    }
    expected
        .handshakes("inet", 2, "other")
        .teardowns("inet", 2, "other");
    for _ in 0..5 {
        expected.listener("inet");
    }
    let scrape = crate::support::settle(&agent, &expected);
    assert_eq!(scrape.observed(), expected);
}

#[test]
fn fifty_listening_ports_stay_under_three_thousand_series() {
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start(&ns); // the default set-up: no --ports, default --max-ports
    let listeners = listen_on(&ns, 7001..=7050);
    agent.scrape();
    // Every port sees both sides of the handshake (loopback), a FIN teardown and a reset.
    connect_each(&ns, &listeners, Close::ClientFirst);
    connect_each(&ns, &listeners, Close::ClientReset);
    ns.run(|| workload::refused_connects(V4, 50));

    let scrape = agent.scrape();
    let series = scrape.series.len();
    eprintln!("{series} series with 50 listening ports");
    assert!(series < 3000, "{series} series");
    let ports: std::collections::BTreeSet<String> = scrape
        .by_labels("tcpmon_handshakes_total", &["port"])
        .into_keys()
        .flatten()
        .collect();
    assert_eq!(ports.len(), 33, "32 labelled ports and other: {ports:?}");
    assert!(ports.contains("other"));
    drop(listeners);
}
