//! Handshake retransmissions counted exactly. SYNs a client sends again are in
//! handshake_failures.rs (connects to a full accept queue); here, SYN-ACKs a server sends again
//! because an nftables rule in the test's namespace drops the handshake's final ACK.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use crate::support::{require_root, run, scrape_until, workload, Agent, NetNs, TCPMON};

const PORT: u16 = 7071;
/// `net.ipv4.tcp_synack_retries` in the namespace: SYN-ACKs go again after 1 s and 3 s, and
/// the request is dropped when the next timeout ends, 7 s after the SYN.
const SYNACK_RETRIES: u64 = 2;

#[test]
fn synacks_sent_again_for_lost_final_acks_are_counted_exactly() {
    require_root();
    const CONNECTIONS: u64 = 4;
    let ns = NetNs::new();
    ns.sysctl("net.ipv4.tcp_synack_retries", &SYNACK_RETRIES.to_string());
    // Everything the clients send to the port that is neither SYN, FIN nor RST: the final ACK
    // of each handshake, and each ACK answering a SYN-ACK sent again.
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
                 add rule inet tcpmon_test input tcp dport {PORT} \
                 tcp flags & (fin | syn | rst | ack) == ack drop"
            ),
        ],
    );
    let agent = Agent::start_with(&ns, &["--ports", &PORT.to_string()]);
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
    assert_eq!(
        retransmits("server"),
        (CONNECTIONS * SYNACK_RETRIES) as f64,
        "SYN-ACKs sent again"
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
    let tail = std::process::Command::new(TCPMON)
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
    scrape_until(&agent, |s| s.get("tcpmon_tail_clients") == 1.0);
    ns.run(|| workload::timed_out_connects(SocketAddr::new(ip, FULL_PORT), 1));
    let out = tail
        .wait_with_output()
        .expect("the tail exits after one connection");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let again = ns.tcp_counter("TcpExtTCPSynRetrans");
    assert!(again >= 1);
    // The first retransmission timeout is 1 s; each later one doubles.
    let expected = format!(": SYN ×{} (+1.0", again + 1);
    assert!(line.contains(&expected), "{expected} in {line}");
    assert!(line.ends_with("[handshake timed out]"), "{line}");
    ns.run(|| full.close());
}
