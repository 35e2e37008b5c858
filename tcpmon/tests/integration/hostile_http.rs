//! Hostile HTTP clients: malformed requests, huge headers, slowloris and 1,000 concurrent
//! scrapers. The agent stays up, answers the others, and its memory stays bounded.

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Barrier,
    },
    time::{Duration, Instant},
};

use crate::support::{
    http_get, raise_open_files_limit, require_root, rss_kib, timeout, Agent, NetNs,
};

const SCRAPERS: usize = 1_000;

#[test]
fn malformed_http_requests_do_not_hurt_the_agent() {
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start(&ns);
    let send = |bytes: &[u8]| {
        let mut stream = TcpStream::connect(agent.addr).expect("connect");
        stream.set_read_timeout(Some(timeout())).expect("timeout");
        let _ = stream.write_all(bytes);
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        String::from_utf8_lossy(&reply).into_owned()
    };
    assert!(send(b"\x00\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert!(send(b"GET /nothing-here HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 404"));
    assert!(send(b"POST /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 405"));
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

#[test]
fn a_1_mib_header_is_refused_without_being_read_whole() {
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start(&ns);
    let mut stream = TcpStream::connect(agent.addr).expect("connect");
    stream.set_read_timeout(Some(timeout())).expect("timeout");
    stream.set_write_timeout(Some(timeout())).expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nX-Big: ")
        .expect("send");
    // 1 MiB of header in 16 KiB pieces: the agent must hang up long before the end.
    let piece = [b'a'; 16 << 10];
    let mut sent = 0;
    while sent < 1 << 20 {
        if stream.write_all(&piece).is_err() {
            break;
        }
        sent += piece.len();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(sent < 1 << 20, "the agent read the whole 1 MiB header");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    // 431, unless the connection reset (unread data) came first.
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
        "{reply:.80}"
    );
    eprintln!("hung up after {} KiB of header", sent >> 10);
    assert_eq!(http_get(agent.addr, "/healthz"), "ok\n");
}

/// Opens a connection and, from another thread, trickles a request one byte every 200 ms;
/// returns how long until the agent hung up (the thread gives up after 20 s).
fn slowloris(addr: std::net::SocketAddr) -> std::thread::JoinHandle<Duration> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut reader = stream.try_clone().expect("clone");
        reader
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let request = b"GET /metrics HTTP/1.1\r\nHost: tcpmon\r\nX-Slow: ";
        for &byte in request.iter().chain(std::iter::repeat(&b'a')) {
            if started.elapsed() > Duration::from_secs(20) || stream.write_all(&[byte]).is_err() {
                break;
            }
            match reader.read(&mut [0; 512]) {
                // End of stream or reset: the agent hung up.
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        started.elapsed()
    })
}

#[test]
fn a_slowloris_client_is_cut_off_after_the_header_timeout_while_scrapes_go_on() {
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start(&ns);
    let trickling: Vec<_> = (0..20).map(|_| slowloris(agent.addr)).collect();
    // Connections that never send anything are closed after the same time.
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(agent.addr).expect("connect"))
        .collect();
    let started = Instant::now();
    let mut scrapes = 0;
    while started.elapsed() < Duration::from_secs(4) {
        assert!(agent.scrape().get("tcpmon_build_info{version=\"0.1.0\"}") == 1.0);
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(scrapes >= 10, "only {scrapes} scrapes in 4 s");
    // HEADER_READ_TIMEOUT is 5 s (src/web/server.rs, docs/SECURITY.md).
    let lasted: Vec<Duration> = trickling
        .into_iter()
        .map(|client| client.join().expect("slowloris thread"))
        .collect();
    let first = lasted.iter().min().copied().unwrap_or_default();
    let last = lasted.iter().max().copied().unwrap_or_default();
    eprintln!("slowloris clients cut off after {first:?} to {last:?}; {scrapes} scrapes meanwhile");
    for lasted in lasted {
        assert!(
            lasted >= Duration::from_millis(4_500) && lasted <= Duration::from_millis(7_500),
            "a slowloris client lasted {lasted:?}"
        );
    }
    for mut stream in idle {
        stream.set_read_timeout(Some(timeout())).expect("timeout");
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    }
    let lasted = started.elapsed();
    assert!(
        lasted <= Duration::from_millis(7_500),
        "idle connections lasted {lasted:?}"
    );
    assert_eq!(http_get(agent.addr, "/healthz"), "ok\n");
}

#[test]
fn a_thousand_concurrent_scrapers_all_get_answers_in_bounded_memory() {
    require_root();
    // The scrapers need 1,000 descriptors here; the agent starts with systemd's default of
    // 1,024 and must raise it itself.
    raise_open_files_limit();
    let ns = NetNs::new();
    let agent = Agent::start_with_open_files(&ns, &[], 1024);
    let limits = agent.proc_line("limits", "Max open files");
    let fields: Vec<&str> = limits.split_whitespace().collect();
    assert_eq!(
        fields[3], fields[4],
        "soft limit raised to the hard one: {limits}"
    );
    let (pid, addr) = (agent.pid(), agent.addr);
    let idle_rss = rss_kib(pid);
    let peak_rss = AtomicU64::new(idle_rss);
    let done = AtomicBool::new(false);
    let start = Barrier::new(SCRAPERS);
    let started = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                peak_rss.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let scrapers: Vec<_> = (0..SCRAPERS)
            .map(|_| {
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn_scoped(scope, || {
                        start.wait();
                        http_get(addr, "/metrics")
                    })
                    .expect("spawn scraper")
            })
            .collect();
        for scraper in scrapers {
            let body = scraper.join().expect("every scraper gets 200");
            assert!(body.contains("tcpmon_build_info"));
        }
        done.store(true, Ordering::Relaxed);
    });
    let (idle, peak) = (idle_rss >> 10, peak_rss.load(Ordering::Relaxed) >> 10);
    eprintln!(
        "{SCRAPERS} concurrent scrapers answered in {:?}; agent RSS {idle} MiB idle, {peak} MiB peak",
        started.elapsed()
    );
    // Each connection holds hyper's 8 KiB read and 8 KiB write buffers (the read buffer may
    // grow to the 16 KiB head limit) and its task; all scrapes at once share one encoded body.
    // So 1,000 connections may add 24 MiB at most: about 44 MiB for this debug build (20 MiB
    // idle), 38 MiB for a release build (14 MiB idle).
    assert!(
        peak - idle <= 24,
        "agent RSS grew from {idle} to {peak} MiB"
    );
    assert_eq!(http_get(agent.addr, "/healthz"), "ok\n");
}
