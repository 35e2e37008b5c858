//! Handshakes that do not complete: SYNs nobody answers (timeout) and connects the application
//! gives up on (aborted). Refused connects are in agent_metrics.rs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::support::{
    assert_exact_in,
    hidden::HiddenTransitions,
    require_root,
    workload::{self, Expected, FullListener, SERVICE_PORT},
    Agent, NetNs,
};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn unanswered_syns_time_out_and_closed_connects_abort() {
    require_root();
    const TIMEOUTS: u64 = 8;
    const ABORTS: u64 = 25;
    let ns = NetNs::new();
    // One SYN retransmission: a connect times out after 1 + 2 seconds.
    ns.sysctl("net.ipv4.tcp_syn_retries", "1");
    let agent = Agent::start_with(&ns, &["--ports", "8080"]);
    let hidden = HiddenTransitions::of(
        "events/tcp/tcp_retransmit_skb",
        "dport == 8080 && state == 2",
    );
    let mut expected = Expected::default();
    expected
        // The listener and the one connection that fills its accept queue; closing the
        // listener resets that unaccepted connection (local on the server, remote on the client).
        .listener("inet")
        .handshakes("inet", 1, "8080")
        .resets("inet", 1, "8080")
        .failed_connects("inet", TIMEOUTS, "timeout", "8080")
        .failed_connects("inet", ABORTS, "aborted", "8080");
    let addr = SocketAddr::new(V4, SERVICE_PORT);
    let workload = || {
        let full = FullListener::open(V4, SERVICE_PORT);
        workload::timed_out_connects(addr, TIMEOUTS);
        workload::aborted_connects(addr, ABORTS);
        full.close();
    };
    assert_exact_in(&agent, &ns, workload, &expected);
    let scrape = agent.scrape();
    // Each timed-out connect spent 3 s in SYN_SENT: all of them in (2.097152, 4.194304] s.
    let syn_sent = |le: &str| {
        scrape.get(&format!(
            "tcpmon_state_duration_seconds_bucket{{state=\"SYN_SENT\",le=\"{le}\"}}"
        ))
    };
    let quick = (1 + ABORTS) as f64; // the filler's handshake and the aborted connects
    assert_eq!(syn_sent("2.097152"), quick);
    assert_eq!(syn_sent("4.194304"), quick + TIMEOUTS as f64);
    // The SYNs the kernel sent again, by its own count (TCPSynRetrans also counts SYN-ACKs,
    // of which there are none here): at least one per timed-out connect (how many depends on
    // the kernel: 6.6+ sends a few at linear one-second intervals first), none for the others.
    let syns = agent.scrape();
    let sent_again = ns.tcp_counter("TcpExtTCPSynRetrans");
    assert!(sent_again >= TIMEOUTS, "{sent_again} SYNs sent again");
    // Less what the sandbox kernels hide from BPF: a timer that fired on top of PID 1.
    hidden.report();
    assert_eq!(
        syns.get("tcpmon_handshake_retransmits_total{side=\"client\",port=\"8080\"}"),
        (sent_again - hidden.count()) as f64,
        "SYNs sent again"
    );
    assert_eq!(
        syns.get("tcpmon_handshake_retransmits_total{side=\"server\",port=\"8080\"}"),
        0.0
    );
}
