//! `tcpmon tail --recent`: failed handshakes, resets and SYN retransmissions kept by the agent
//! while no client tailed, each one of them, as the counters count them.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::{Command, Stdio},
    time::Duration,
};

use crate::support::{
    hidden::HiddenTransitions,
    kernel_names_reset_reasons, require_root,
    workload::{self, FullListener, CLOSED_PORT},
    Agent, NetNs, Scrape, TCPMON,
};

const FULL_PORT: u16 = 7076;
const REFUSED: u64 = 3;

/// Events by (what, detail).
fn by_kind(events: &[serde_json::Value]) -> BTreeMap<(String, String), u64> {
    let mut kinds = BTreeMap::new();
    for e in events {
        let detail = e["detail"].as_str().unwrap_or("-").to_string();
        *kinds
            .entry((e["what"].as_str().expect("what").to_string(), detail))
            .or_default() += 1;
    }
    kinds
}

fn total(scrape: &Scrape, metric: &str, labels: &[&str], keep: impl Fn(&[String]) -> bool) -> u64 {
    scrape
        .by_labels(metric, labels)
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn trouble_before_any_client_is_kept_and_matches_the_counters() {
    require_root();
    let ns = NetNs::new();
    ns.sysctl("net.ipv4.tcp_syn_retries", "1");
    let ports = format!("{CLOSED_PORT},{FULL_PORT}");
    let agent = Agent::start_with(&ns, &["--ports", &ports]);
    let hidden = HiddenTransitions::of(
        "events/tcp/tcp_retransmit_skb",
        &format!("dport == {FULL_PORT} && state == 2"),
    );
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let full = ns.run(|| {
        workload::refused_connects(ip, REFUSED);
        let full = FullListener::open(ip, FULL_PORT);
        workload::timed_out_connects(SocketAddr::new(ip, FULL_PORT), 1);
        full
    });
    // The agent reads the trouble ring every 100 ms; a scrape looks at the listeners.
    std::thread::sleep(Duration::from_millis(300));
    let scrape = agent.scrape();
    let events = agent.recent(&[]);
    let kinds = by_kind(&events);
    let count = |what: &str, detail: &str| {
        kinds
            .get(&(what.to_string(), detail.to_string()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(count("handshake_failed", "refused"), REFUSED, "{kinds:?}");
    assert_eq!(count("handshake_failed", "timeout"), 1, "{kinds:?}");
    let no_socket = if kernel_names_reset_reasons() {
        REFUSED
    } else {
        0
    };
    assert_eq!(count("reset_sent", "no_socket"), no_socket, "{kinds:?}");

    // Every event the counters count, and no other.
    let labels = ["side", "result", "port"];
    let failed = total(&scrape, "tcpmon_handshakes_total", &labels, |k| {
        !k[1].contains("established")
    });
    let of = |what: &str| {
        kinds
            .iter()
            .filter(|((w, _), _)| w == what)
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    assert_eq!(of("handshake_failed"), failed);
    let reset_labels = ["direction", "state", "reason", "port"];
    let sent = total(&scrape, "tcpmon_resets_total", &reset_labels, |k| {
        k[0] == "sent"
    });
    let received = total(&scrape, "tcpmon_resets_total", &reset_labels, |k| {
        k[0] == "received"
    });
    assert_eq!((of("reset_sent"), of("reset_received")), (sent, received));
    // Less what the sandbox kernels hide from BPF: a timer that fired on top of PID 1.
    hidden.report();
    let syns = ns.tcp_counter("TcpExtTCPSynRetrans") - hidden.count();
    assert!(syns >= 1);
    assert_eq!(of("syn_retransmit"), syns);
    let retransmits = total(
        &scrape,
        "tcpmon_handshake_retransmits_total",
        &["side", "port"],
        |k| k[0] == "client",
    );
    assert_eq!(retransmits, syns);
    let dropped: u64 = events
        .iter()
        .filter(|e| e["what"] == "listen_dropped")
        .map(|e| e["dropped"].as_u64().expect("a count"))
        .sum();
    assert_eq!(dropped, ns.tcp_counter("TcpExtListenDrops"));
    assert_eq!(
        dropped as f64,
        scrape.get(&format!(
            "tcpmon_listen_drops_total{{port=\"{FULL_PORT}\"}}"
        ))
    );

    // The usual filters; --since leaves out what is older.
    let port = CLOSED_PORT.to_string();
    let refused_only = agent.recent(&["--port", &port, "--state", "SYN_SENT"]);
    assert_eq!(refused_only.len() as u64, 2 * REFUSED, "{refused_only:?}");
    assert!(agent.recent(&["--since", "1ms"]).is_empty());

    // --follow: new trouble as it happens.
    let follower = Command::new(TCPMON)
        .args([
            "tail", "--recent", "--since", "1ms", "--follow", "--count", "2",
        ])
        .args([
            "--state",
            "SYN_SENT",
            "-o",
            "json",
            "--socket",
            &agent.tail_socket,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the follower");
    // The follower may take a while to connect (a slow guest): refused connects, one every
    // half second, until it has had its two events.
    let mut follower = follower;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while follower.try_wait().expect("poll the follower").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the follower got no events"
        );
        ns.run(|| workload::refused_connects(ip, 1));
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = follower
        .wait_with_output()
        .expect("the follower exits after 2 events");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let mut whats: Vec<&str> = lines
        .iter()
        .map(|l| l["what"].as_str().expect("what"))
        .collect();
    // One connect's two events, or (if the follower joined between them) one of each of two.
    whats.sort_unstable();
    assert_eq!(whats, ["handshake_failed", "reset_received"], "{lines:?}");
    ns.run(|| full.close());
}
