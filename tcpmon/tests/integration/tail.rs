//! `tcpmon tail` end to end: real agents, real tail processes, real traffic in a namespace.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    os::unix::{fs::MetadataExt, net::UnixStream},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::support::{
    assert_exact_in, require_root, scrape_until, timeout,
    workload::{self, Close, Expected, SERVICE_PORT},
    Agent, NetNs, TCPMON,
};
use tcpmon::{state::TcpState, tail::event::Message};

const V4: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const V6: std::net::IpAddr = std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
const N: u64 = 100;

/// A `tcpmon tail` process whose stdout lines arrive on a channel; killed on drop.
struct Tail {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Tail {
    fn spawn(args: &[&str]) -> Tail {
        let mut child = Command::new(TCPMON)
            .arg("tail")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tcpmon tail");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Tail { child, lines }
    }

    /// Every line until the process exits (it does after --count events).
    fn lines_until_exit(mut self) -> Vec<String> {
        let deadline = Instant::now() + timeout();
        let mut lines = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    assert!(Instant::now() < deadline, "tail did not finish: {lines:?}");
                }
            }
        }
        let status = self.child.wait().expect("tail exits");
        assert!(status.success(), "tail exit status {status}");
        lines
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (family, old, new) counts of the events among NDJSON lines; panics on anything else.
fn transitions(lines: &[String], port: u16) -> BTreeMap<Vec<String>, u64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        let Message::Event(e) = serde_json::from_str(line).expect("an event line") else {
            panic!("not an event: {line}");
        };
        assert!(e.local_port == port || e.remote_port == port, "{line}");
        let key = vec![e.family, e.old_state.to_string(), e.new_state.to_string()];
        *counts.entry(key).or_default() += 1;
    }
    counts
}

fn total(expected: &Expected) -> u64 {
    expected.transitions.values().sum()
}

fn connections(port: u16, close: Close, listeners: u64) -> Expected {
    let label = port.to_string();
    let mut e = Expected::default();
    for _ in 0..listeners {
        e.listener("inet");
    }
    e.handshakes("inet", N, &label);
    match close {
        Close::ClientReset => e.resets("inet", N, &label),
        _ => e.teardowns("inet", N, &label),
    };
    e
}

#[test]
fn each_client_gets_exactly_the_events_its_filter_selects() {
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start(&ns);
    let on_8080 = connections(SERVICE_PORT, Close::ClientFirst, 1);
    let on_9090 = connections(9090, Close::ClientReset, 2); // two listeners, N/2 each
    let socket = agent.tail_socket.clone();
    let count = |e: &Expected| total(e).to_string();
    let a = Tail::spawn(&[
        "--socket",
        &socket,
        "--port",
        "8080",
        "-o",
        "json",
        "--count",
        &count(&on_8080),
    ]);
    let b = Tail::spawn(&[
        "--socket",
        &socket,
        "--port",
        "9090",
        "-o",
        "json",
        "--count",
        &count(&on_9090),
    ]);
    let ready = scrape_until(&agent, |s| s.get("tcpmon_tail_clients") == 2.0);
    assert_eq!(ready.get("tcpmon_tail_clients"), 2.0);

    // 9090, 8080, 9090: each client's quota spans events of the other port, so a filter that
    // let them through would show within its --count.
    ns.run(|| {
        workload::connections(V4, 9090, N / 2, Close::ClientReset);
        workload::connections(V4, SERVICE_PORT, N, Close::ClientFirst);
        workload::connections(V4, 9090, N / 2, Close::ClientReset);
    });
    assert_eq!(
        transitions(&a.lines_until_exit(), SERVICE_PORT),
        on_8080.transitions
    );
    assert_eq!(
        transitions(&b.lines_until_exit(), 9090),
        on_9090.transitions
    );
    let scrape = scrape_until(&agent, |s| s.get("tcpmon_tail_clients") == 0.0);
    assert_eq!(
        scrape.get("tcpmon_tail_clients"),
        0.0,
        "clients gone after --count"
    );
    let all = total(&on_8080) + total(&on_9090);
    assert_eq!(scrape.get("tcpmon_events_total"), all as f64);
}

/// The program writes only what some client's port and family filters may want: traffic on
/// other ports or of another family never reaches the ring buffer (`tcpmon_events_total`
/// counts what it wrote), while the counters stay exact.
#[test]
fn events_no_client_wants_are_never_written() {
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start_with(&ns, &["--ports", "8080,9090"]);
    let wanted = connections(9090, Close::ServerFirst, 1);
    let socket = agent.tail_socket.clone();
    let ipv6_only = Tail::spawn(&["--socket", &socket, "--family", "inet6", "-o", "json"]);
    let on_9090 = Tail::spawn(&[
        "--socket",
        &socket,
        "--port",
        "9090",
        "-o",
        "json",
        "--count",
        &total(&wanted).to_string(),
    ]);
    scrape_until(&agent, |s| s.get("tcpmon_tail_clients") == 2.0);

    let mut expected = connections(SERVICE_PORT, Close::ClientFirst, 1);
    expected
        .listener("inet")
        .handshakes("inet", N, "9090")
        .teardowns("inet", N, "9090");
    let workload = || {
        workload::connections(V4, SERVICE_PORT, N, Close::ClientFirst);
        workload::connections(V4, 9090, N, Close::ServerFirst);
    };
    assert_exact_in(&agent, &ns, workload, &expected);
    assert_eq!(
        transitions(&on_9090.lines_until_exit(), 9090),
        wanted.transitions
    );
    let scrape = agent.scrape();
    assert_eq!(
        scrape.get("tcpmon_events_total"),
        total(&wanted) as f64,
        "only the transitions on port 9090 were written"
    );
    drop(ipv6_only);
}

#[test]
fn events_name_both_ends_of_the_connection_in_either_family() {
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start(&ns);
    // Each family: a listener (CLOSE -> LISTEN, and LISTEN -> CLOSE at the end) and N
    // connections, 10 transitions each.
    let per_family = 2 + 10 * N;
    let tail = Tail::spawn(&[
        "--socket",
        &agent.tail_socket,
        "--port",
        "8080",
        "-o",
        "json",
        "--count",
        &(2 * per_family).to_string(),
    ]);
    scrape_until(&agent, |s| s.get("tcpmon_tail_clients") == 1.0);
    ns.run(|| {
        workload::connections(V4, SERVICE_PORT, N, Close::ClientFirst);
        workload::connections(V6, SERVICE_PORT, N, Close::ClientFirst);
    });
    let mut per_family_seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut ephemeral_ports = std::collections::BTreeSet::new();
    for line in tail.lines_until_exit() {
        let Message::Event(e) = serde_json::from_str(&line).expect("an event line") else {
            panic!("not an event: {line}");
        };
        let loopback: std::net::IpAddr = if e.family == "inet" { V4 } else { V6 };
        *per_family_seen.entry(e.family.clone()).or_default() += 1;
        if e.new_state == TcpState::Listen
            || e.old_state == TcpState::Listen && e.new_state == TcpState::Close
        {
            // A listener is bound to the address, with no peer.
            assert_eq!(
                (e.local, e.local_port, e.remote_port),
                (loopback, SERVICE_PORT, 0),
                "{line}"
            );
            continue;
        }
        if e.old_state == TcpState::Listen && e.remote_port == 0 {
            // Kernels up to 6.12 at least announce a listener's child while it is still a copy
            // of the listener, before they give it the peer's address and port.
            let unset: std::net::IpAddr = if e.family == "inet" {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            };
            assert_eq!(
                (e.new_state, e.local, e.local_port, e.remote),
                (TcpState::SynRecv, loopback, SERVICE_PORT, unset),
                "{line}"
            );
            continue;
        }
        assert_eq!((e.local, e.remote), (loopback, loopback), "{line}");
        if e.new_state == TcpState::SynSent && e.local_port == 0 {
            // connect() enters SYN_SENT before it picks the local port.
            assert_eq!(e.remote_port, SERVICE_PORT, "{line}");
            continue;
        }
        let other = if e.local_port == SERVICE_PORT {
            e.remote_port
        } else {
            e.local_port
        };
        assert!(
            (e.local_port == SERVICE_PORT) != (e.remote_port == SERVICE_PORT) && other >= 1024,
            "one end is the service, the other an ephemeral port: {line}"
        );
        ephemeral_ports.insert((e.family, other));
    }
    let expected = BTreeMap::from([
        ("inet".to_string(), per_family),
        ("inet6".to_string(), per_family),
    ]);
    assert_eq!(per_family_seen, expected);
    assert_eq!(
        ephemeral_ports.len() as u64,
        2 * N,
        "one client port per connection"
    );
}

#[test]
fn a_client_that_stops_reading_is_told_what_it_missed_and_metrics_stay_exact() {
    require_root();
    const MANY: u64 = 3_000;
    let ns = NetNs::new();
    let agent = Agent::start_with(&ns, &["--ports", "8080"]);
    // A client that sends its filter and then does not read.
    let mut stream = UnixStream::connect(&agent.tail_socket).expect("connect to the agent");
    stream.write_all(b"{\"ports\":[8080]}\n").expect("request");
    let ready = scrape_until(&agent, |s| s.get("tcpmon_tail_clients") == 1.0);
    assert_eq!(ready.get("tcpmon_tail_clients"), 1.0);

    let mut expected = Expected::default();
    expected
        .listener("inet")
        .handshakes("inet", MANY, "8080")
        .teardowns("inet", MANY, "8080");
    let workload = || workload::connections(V4, SERVICE_PORT, MANY, Close::ClientFirst);
    assert_exact_in(&agent, &ns, workload, &expected);

    // Now read: every event is either delivered or reported lost.
    let all = total(&expected);
    stream.set_read_timeout(Some(timeout())).expect("timeout");
    let (mut delivered, mut lost) = (0, 0);
    for line in BufReader::new(&stream).lines() {
        match serde_json::from_str(&line.expect("read")).expect("a message") {
            Message::Event(_) => delivered += 1,
            Message::Retransmit(e) => panic!("no SYN is sent again here: {e:?}"),
            Message::Lost { count } => lost += count,
            Message::Error { message } => panic!("{message}"),
        }
        if delivered + lost == all {
            break;
        }
    }
    assert_eq!(delivered + lost, all, "delivered {delivered}, lost {lost}");
    assert!(
        lost > 0,
        "a client that did not read for {all} events lost some"
    );
    let scrape = agent.scrape();
    assert_eq!(
        scrape.get("tcpmon_events_dropped_total{reason=\"client_slow\"}"),
        lost as f64
    );
    assert_eq!(
        scrape.get("tcpmon_events_dropped_total{reason=\"ringbuf_full\"}"),
        0.0
    );
    assert_eq!(scrape.get("tcpmon_events_total"), all as f64);
    eprintln!("slow client: {delivered} delivered, {lost} lost of {all}");
}

#[test]
fn the_tail_socket_is_root_only() {
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start(&ns);
    let meta = std::fs::metadata(&agent.tail_socket).expect("socket exists");
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            TCPMON,
            "tail",
        ])
        .args(["--socket", &agent.tail_socket])
        .output()
        .expect("setpriv");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "tcpmon: error: permission denied on {}: the tail socket is root's; run tcpmon tail as root\n",
            agent.tail_socket
        )
    );
}

#[test]
fn standalone_works_without_an_agent() {
    require_root();
    let ns = NetNs::new();
    let expected = connections(SERVICE_PORT, Close::ServerFirst, 1);
    let path = ns.path();
    let tail = Tail::spawn(&[
        "--standalone",
        "--netns",
        &path,
        "--port",
        "8080",
        "--count",
        &total(&expected).to_string(),
    ]);
    let header = tail
        .lines
        .recv_timeout(timeout())
        .expect("header once attached");
    assert!(header.starts_with("TIME(UTC)"), "{header}");
    ns.run(|| workload::connections(V4, SERVICE_PORT, N, Close::ServerFirst));
    let mut counts: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for row in tail.lines_until_exit() {
        let columns: Vec<&str> = row.split_whitespace().collect();
        let arrow = columns
            .iter()
            .position(|c| *c == "->")
            .expect("a table row");
        let key = vec![
            "inet".to_string(),
            columns[arrow - 1].into(),
            columns[arrow + 1].into(),
        ];
        *counts.entry(key).or_default() += 1;
    }
    assert_eq!(counts, expected.transitions);
}
