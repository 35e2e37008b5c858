//! The agent runs as root on every host: garbage from its clients and a stop in the middle of
//! a storm must not hurt it or leave anything behind.
mod support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, TcpStream},
    os::unix::net::UnixStream,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use support::{
    http_get, require_root,
    workload::{self, Close, SERVICE_PORT},
    Agent, NetNs, TIMEOUT,
};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn sigterm_in_the_middle_of_a_storm_exits_cleanly_and_the_next_start_is_clean() {
    require_root();
    let ns = NetNs::new();
    let mut agent = Agent::start(&ns);
    let program = agent.program_id.to_string();
    let stop = AtomicBool::new(false);
    let (status, stderr) = ns.run(|| {
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    workload::connections(V4, SERVICE_PORT, 200, Close::ServerFirst);
                }
            });
            std::thread::sleep(Duration::from_millis(500));
            let stopped = agent.stop();
            stop.store(true, Ordering::Relaxed);
            stopped
        })
    });
    assert!(status.success(), "exit status {status}");
    assert_eq!(
        stderr,
        [format!("tcpmon: stopped; program {program} detached")]
    );
    let shown = Command::new("bpftool")
        .args(["prog", "show", "id", &program])
        .output();
    assert!(
        !shown.expect("bpftool").status.success(),
        "program {program} left loaded"
    );
    // Its perf_event link (`bpftool link show` lists `"prog_id":N`) is gone with it.
    let links = support::run("bpftool", &["-j", "link", "show"]);
    assert!(
        !links.contains(&format!("\"prog_id\":{program}}}"))
            && !links.contains(&format!("\"prog_id\":{program},")),
        "a link to program {program} is left: {links}"
    );

    let again = Agent::start(&ns);
    assert_eq!(http_get(again.addr, "/healthz"), "ok\n");
    assert_ne!(again.program_id.to_string(), program);
}

#[test]
fn garbage_on_the_tail_socket_is_refused_and_the_agent_carries_on() {
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start(&ns);
    let ask = |request: &[u8]| -> String {
        let mut stream = UnixStream::connect(&agent.tail_socket).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let _ = stream.write_all(request);
        let mut line = String::new();
        let _ = BufReader::new(&stream).read_line(&mut line);
        line
    };
    assert!(ask(b"not json\n").starts_with("{\"type\":\"error\",\"message\":\"bad request:"));
    assert!(ask(b"{\"ports\":[\"x\"]}\n").starts_with("{\"type\":\"error\""));
    // A request longer than 64 KiB is cut off and refused.
    let huge = vec![b'a'; 1 << 20];
    assert!(ask(&huge).starts_with("{\"type\":\"error\""));
    // Half-open clients that never send a request do not stop others.
    let idle: Vec<UnixStream> = (0..50)
        .map(|_| UnixStream::connect(&agent.tail_socket).expect("connect"))
        .collect();
    assert_eq!(http_get(agent.addr, "/healthz"), "ok\n");
    assert!(agent.scrape().get("tcpmon_build_info{version=\"0.1.0\"}") == 1.0);
    drop(idle);
}

#[test]
fn malformed_http_requests_do_not_hurt_the_agent() {
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start(&ns);
    let send = |bytes: &[u8]| {
        let mut stream = TcpStream::connect(agent.addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let _ = stream.write_all(bytes);
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        String::from_utf8_lossy(&reply).into_owned()
    };
    assert!(send(b"\x00\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    let huge_header = format!(
        "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let reply = send(huge_header.as_bytes());
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
        "{reply:.80}"
    );
    assert!(send(b"GET /nothing-here HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 404"));
    // 200 scrapers at once: each gets its answer.
    std::thread::scope(|scope| {
        let scrapers: Vec<_> = (0..200)
            .map(|_| scope.spawn(|| http_get(agent.addr, "/metrics")))
            .collect();
        for scraper in scrapers {
            assert!(scraper
                .join()
                .expect("scraper")
                .contains("tcpmon_build_info"));
        }
    });
    assert_eq!(http_get(agent.addr, "/healthz"), "ok\n");
}

/// The agent's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .expect("VmRSS")
}

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
    let ready = support::scrape_until(&agent, |s| s.get("tcpmon_tail_clients") == CLIENTS as f64);
    assert_eq!(ready.get("tcpmon_tail_clients"), CLIENTS as f64);
    // One more is refused, in one line.
    let mut extra = UnixStream::connect(&agent.tail_socket).expect("connect");
    extra.set_read_timeout(Some(TIMEOUT)).expect("timeout");
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
    support::assert_exact_in(&agent, &ns, work, &expected);
    let after = rss_kib(agent.pid());
    eprintln!("{CLIENTS} stalled tail clients: agent RSS {before} KiB -> {after} KiB");
    // The events are decoded once and shared (about 300 bytes each, 16,384 at most in any
    // queue: ~5 MiB), plus 8 bytes per queued reference per client (128 KiB each: 8 MiB);
    // measured: +18 MiB.
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    drop(stalled);
    assert_eq!(http_get(agent.addr, "/healthz"), "ok\n");
}
