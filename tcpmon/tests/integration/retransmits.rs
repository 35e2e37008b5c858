//! Handshake retransmissions counted exactly: SYNs a client sends again because an nftables
//! rule in the test's namespace drops every SYN (handshake_failures.rs has the ones a full
//! accept queue drops), SYN-ACKs a server sends again because a rule drops the handshake's
//! final ACK, and the timeline of a handshake that needed them.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use crate::support::{
    hidden::HiddenTransitions, lines_of, require_root, run, scrape_until, workload, Agent, NetNs,
    TCPMON,
};

const PORT: u16 = 7071;
/// `net.ipv4.tcp_synack_retries` in the namespace: SYN-ACKs go again after 1 s and 3 s, and
/// the request is dropped when the next timeout ends, 7 s after the SYN.
const SYNACK_RETRIES: u64 = 2;

/// Drops, in `ns`, what arrives for `port` with exactly the TCP flags `flags` of
/// FIN, SYN, RST and ACK (nftables syntax). The table goes with the namespace.
fn drop_in(ns: &NetNs, port: u16, flags: &str) {
    run(
        "ip",
        &[
            "netns",
            "exec",
            &ns.name,
            "nft",
            &format!(
                "add table inet tcpmon_test; \
                 add chain inet tcpmon_test input {{ type filter hook input priority 0; }}; \
                 add rule inet tcpmon_test input tcp dport {port} \
                 tcp flags & (fin | syn | rst | ack) == {flags} drop"
            ),
        ],
    );
}

#[test]
fn syns_lost_on_the_way_are_sent_again_and_counted_exactly() {
    require_root();
    const CONNECTS: u64 = 2;
    const SYN_PORT: u16 = 7079;
    let ns = NetNs::new();
    ns.sysctl("net.ipv4.tcp_syn_retries", "2");
    drop_in(&ns, SYN_PORT, "syn");
    let agent = Agent::start_with(&ns, &["--ports", &SYN_PORT.to_string()]);
    let hidden = HiddenTransitions::of(
        "events/tcp/tcp_retransmit_skb",
        &format!("dport == {SYN_PORT} && state == 2"),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], SYN_PORT));
    ns.run(|| {
        // A listener is there; its SYNs never reach it.
        let _listener = TcpListener::bind(addr).expect("listen");
        // Each fails with ETIMEDOUT after about 7 s: SYN, again at +1 s and +3 s.
        workload::timed_out_connects(addr, CONNECTS);
    });
    let again = ns.tcp_counter("TcpExtTCPSynRetrans");
    assert!(again >= CONNECTS * 2, "{again} SYNs sent again");
    let scrape = agent.scrape();
    hidden.report();
    // What the sandbox kernels hide from BPF (a timer that fired on top of PID 1) is missing.
    let seen = again - hidden.count();
    let series = |name: &str, labels: &str| scrape.get(&format!("{name}{{{labels}}}"));
    let port = format!("port=\"{SYN_PORT}\"");
    assert_eq!(
        series(
            "tcpmon_handshake_retransmits_total",
            &format!("side=\"client\",{port}")
        ),
        seen as f64,
        "missed runs: {}",
        scrape.get("tcpmon_bpf_program_missed_runs_total")
    );
    assert_eq!(
        series(
            "tcpmon_handshake_retransmits_total",
            &format!("side=\"server\",{port}")
        ),
        0.0
    );
    assert_eq!(
        series(
            "tcpmon_handshakes_total",
            &format!("side=\"client\",result=\"timeout\",{port}")
        ),
        CONNECTS as f64
    );
    assert_eq!(ns.tcp_counter("TcpExtListenDrops"), 0, "not the listener's");
}

#[test]
fn synacks_sent_again_for_lost_final_acks_are_counted_exactly() {
    require_root();
    const CONNECTIONS: u64 = 4;
    let ns = NetNs::new();
    ns.sysctl("net.ipv4.tcp_synack_retries", &SYNACK_RETRIES.to_string());
    // Everything the clients send to the port that is neither SYN, FIN nor RST: the final ACK
    // of each handshake, and each ACK answering a SYN-ACK sent again.
    drop_in(&ns, PORT, "ack");
    let agent = Agent::start_with(&ns, &["--ports", &PORT.to_string()]);
    let hidden = HiddenTransitions::of(
        "events/tcp/tcp_retransmit_synack",
        &format!("sport == {PORT}"),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
    ns.run(|| {
        let listener = TcpListener::bind(addr).expect("listen");
        // Each connect returns on the SYN-ACK; the server never sees the ACK.
        let clients: Vec<TcpStream> = (0..CONNECTIONS)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        // Past the requests' last timeout: nothing is sent again after it.
        std::thread::sleep(Duration::from_secs(8));
        drop(clients);
        drop(listener);
    });
    let scrape = agent.scrape();
    let retransmits = |side: &str| {
        scrape.get(&format!(
            "tcpmon_handshake_retransmits_total{{side=\"{side}\",port=\"{PORT}\"}}"
        ))
    };
    assert_eq!(
        ns.tcp_counter("TcpExtTCPSynRetrans"),
        CONNECTIONS * SYNACK_RETRIES,
        "the kernel's own count"
    );
    hidden.report();
    assert_eq!(
        retransmits("server") + hidden.count() as f64,
        (CONNECTIONS * SYNACK_RETRIES) as f64,
        "SYN-ACKs sent again: {:?}, missed runs {}",
        scrape.by_labels("tcpmon_handshake_retransmits_total", &["side", "port"]),
        scrape.get("tcpmon_bpf_program_missed_runs_total")
    );
    assert_eq!(retransmits("client"), 0.0, "no SYN was sent again");
}

#[test]
fn a_timeline_shows_each_syn_sent_again_and_when() {
    require_root();
    const FULL_PORT: u16 = 7078;
    let ns = NetNs::new();
    ns.sysctl("net.ipv4.tcp_syn_retries", "1");
    let agent = Agent::start_with(&ns, &["--ports", &FULL_PORT.to_string()]);
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let full = ns.run(|| workload::FullListener::open(ip, FULL_PORT));
    let mut tail = std::process::Command::new(TCPMON)
        .args([
            "tail",
            "--socket",
            &agent.tail_socket,
            "--port",
            &FULL_PORT.to_string(),
        ])
        .args(["-o", "timeline", "--count", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tcpmon tail");
    let lines = lines_of(tail.stdout.take().expect("piped"));
    scrape_until(&agent, |s| s.get("tcpmon_tail_clients") == 1.0);
    // A sandbox kernel may hide a transition from BPF (a timer that fired on top of PID 1):
    // that connection never ends in the tail, so the test tries another, and fails only if
    // nothing was hidden.
    let mut attempts = 0;
    let line = loop {
        let hidden = HiddenTransitions::observe();
        let again_before = ns.tcp_counter("TcpExtTCPSynRetrans");
        ns.run(|| workload::timed_out_connects(SocketAddr::new(ip, FULL_PORT), 1));
        let again = ns.tcp_counter("TcpExtTCPSynRetrans") - again_before;
        match lines.recv_timeout(Duration::from_secs(5)) {
            Ok(line) => break (line, again),
            Err(_) => {
                hidden.report();
                attempts += 1;
                assert!(
                    hidden.count() > 0 && attempts < 3,
                    "no timeline after {attempts} connects"
                );
            }
        }
    };
    let (line, again) = line;
    assert!(tail.wait().expect("the tail exits").success());
    assert!(again >= 1);
    // The first retransmission timeout is 1 s; each later one doubles.
    let expected = format!(": SYN ×{} (+1.0", again + 1);
    assert!(line.contains(&expected), "{expected} in {line}");
    assert!(line.ends_with("[handshake timed out]"), "{line}");
    ns.run(|| full.close());
}
