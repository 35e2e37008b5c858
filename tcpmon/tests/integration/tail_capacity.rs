//! Tail clients that stop reading: at most 64 are served, each costs bounded memory, and the
//! agent's counters stay exact. In a binary of its own: its 40,000 events load the machine, and
//! an exactness test must not share that with others.

use std::{
    io::{BufRead, BufReader, Write},
    net::{IpAddr, Ipv4Addr},
    os::unix::net::UnixStream,
};

use crate::support::{
    http_get, require_root, rss_kib, timeout,
    workload::{self, Close, SERVICE_PORT},
    Agent, NetNs,
};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn stalled_tail_clients_are_capped_and_cost_bounded_memory() {
    require_root();
    const CLIENTS: usize = 64;
    let ns = NetNs::new();
    let agent = Agent::start_with(&ns, &["--ports", "8080"]);
    let before = rss_kib(agent.pid());
    // Clients that ask for everything and never read.
    let stalled: Vec<UnixStream> = (0..CLIENTS)
        .map(|_| {
            let mut stream = UnixStream::connect(&agent.tail_socket).expect("connect");
            stream.write_all(b"{}\n").expect("request");
            stream
        })
        .collect();
    let ready =
        crate::support::scrape_until(&agent, |s| s.get("tcpmon_tail_clients") == CLIENTS as f64);
    assert_eq!(ready.get("tcpmon_tail_clients"), CLIENTS as f64);
    // One more is refused, in one line.
    let mut extra = UnixStream::connect(&agent.tail_socket).expect("connect");
    extra.set_read_timeout(Some(timeout())).expect("timeout");
    extra.write_all(b"{}\n").expect("request");
    let mut line = String::new();
    BufReader::new(&extra).read_line(&mut line).expect("answer");
    assert_eq!(
        line,
        "{\"type\":\"error\",\"message\":\"too many tail clients (64 connected): close one and retry\"}\n"
    );
    // 40,000 events: every queue fills up (16,384 each) and the rest are dropped.
    let mut expected = workload::Expected::default();
    expected
        .listener("inet")
        .handshakes("inet", 4_000, "8080")
        .teardowns("inet", 4_000, "8080");
    let work = || workload::connections(V4, SERVICE_PORT, 4_000, Close::ClientFirst);
    crate::support::assert_exact_in(&agent, &ns, work, &expected);
    let after = rss_kib(agent.pid());
    eprintln!("{CLIENTS} stalled tail clients: agent RSS {before} KiB -> {after} KiB");
    // Clients that want every event share the kernel's records (96 bytes each, 16,384 at most
    // in any queue: 1.5 MiB per distinct backlog), and each client's task holds at most one
    // 32 KiB chunk of formatted lines it cannot write. Measured: +6 MiB (+18 MiB when every
    // event was decoded into strings; +44 MiB when a task formatted whole batches).
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    drop(stalled);
    assert_eq!(http_get(agent.addr, "/healthz"), "ok\n");
}
