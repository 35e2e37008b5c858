//! Resets sent and received, with the kernel's reason, against the namespace's own counters:
//! connects to a port nothing listens on, a server that closes with data unread, a client that
//! closes with SO_LINGER 0.

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
};

use crate::support::{
    kernel_names_reset_reasons, require_root,
    workload::{self, CLOSED_PORT},
    Agent, NetNs, Scrape,
};

const UNREAD_PORT: u16 = 7073;
const LINGER_PORT: u16 = 7074;
const N: u64 = 3;

/// `tcpmon_resets_total` by (direction, state, reason, port).
fn resets(scrape: &Scrape) -> Vec<(Vec<String>, u64)> {
    let labels = ["direction", "state", "reason", "port"];
    scrape
        .by_labels("tcpmon_resets_total", &labels)
        .into_iter()
        .collect()
}

fn series(direction: &str, state: &str, reason: &str, port: u16, n: u64) -> (Vec<String>, u64) {
    let labels = [direction, state, reason, &port.to_string()];
    (labels.iter().map(|l| l.to_string()).collect(), n)
}

#[test]
fn resets_are_counted_by_direction_state_reason_and_port() {
    require_root();
    let ns = NetNs::new();
    let ports = format!("{CLOSED_PORT},{UNREAD_PORT},{LINGER_PORT}");
    let agent = Agent::start_with(&ns, &["--ports", &ports]);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    ns.run(|| {
        workload::refused_connects(ip, N);
        let unread = TcpListener::bind(SocketAddr::new(ip, UNREAD_PORT)).expect("listen");
        for _ in 0..N {
            let mut client =
                TcpStream::connect(unread.local_addr().expect("address")).expect("connect");
            let (server, _) = unread.accept().expect("accept");
            client.write_all(b"unread").expect("write");
            // Wait until the data is in the server's receive queue, and leave it there.
            server.peek(&mut [0u8; 1]).expect("peek");
            drop(server);
            workload::read_until_closed(client);
        }
        let linger = TcpListener::bind(SocketAddr::new(ip, LINGER_PORT)).expect("listen");
        for _ in 0..N {
            let client =
                TcpStream::connect(linger.local_addr().expect("address")).expect("connect");
            let (server, _) = linger.accept().expect("accept");
            workload::set_linger_zero(&client);
            drop(client);
            workload::read_until_closed(server);
        }
    });
    let scrape = agent.scrape();
    let with_reasons = kernel_names_reset_reasons();
    let reason = |name: &'static str| if with_reasons { name } else { "unknown" };
    let mut expected = vec![
        series("received", "ESTABLISHED", "unknown", LINGER_PORT, N),
        series("received", "ESTABLISHED", "unknown", UNREAD_PORT, N),
        series("received", "SYN_SENT", "unknown", CLOSED_PORT, N),
        series(
            "sent",
            "CLOSE",
            reason("tcp_abort_on_close"),
            UNREAD_PORT,
            N,
        ),
    ];
    // SO_LINGER 0: the reason kernels give has changed (6.18 says tcp_state); any named one.
    let linger_reason = resets(&scrape)
        .into_iter()
        .find(|(labels, _)| labels[0] == "sent" && labels[3] == LINGER_PORT.to_string())
        .map(|(labels, _)| labels[2].clone())
        .unwrap_or_default();
    assert_eq!(linger_reason == "unknown", !with_reasons, "{linger_reason}");
    expected.push(series("sent", "CLOSE", &linger_reason, LINGER_PORT, N));
    // Older kernels do not trace a reset sent for a segment that matched no socket.
    if with_reasons {
        expected.push(series("sent", "none", "no_socket", CLOSED_PORT, N));
    }
    expected.sort();
    assert_eq!(resets(&scrape), expected, "{}", scrape.text);

    // The kernel's own counts of the same resets.
    assert_eq!(ns.tcp_counter("TcpExtTCPAbortOnClose"), N, "data unread");
    assert_eq!(ns.tcp_counter("TcpExtTCPAbortOnData"), N, "SO_LINGER 0");
    let sent: u64 = resets(&scrape)
        .iter()
        .filter(|(labels, _)| labels[0] == "sent")
        .map(|(_, n)| n)
        .sum();
    let untraced = if with_reasons { 0 } else { N };
    assert_eq!(
        sent + untraced,
        ns.tcp_counter("TcpOutRsts"),
        "every reset sent"
    );
    assert_eq!(scrape.get("tcpmon_resets_uncounted_total"), 0.0);
}
