//! Handshake retransmissions counted exactly. SYNs a client sends again are in
//! handshake_failures.rs (connects to a full accept queue); here, SYN-ACKs a server sends again
//! because an nftables rule in the test's namespace drops the handshake's final ACK.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use crate::support::{require_root, run, Agent, NetNs};

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
