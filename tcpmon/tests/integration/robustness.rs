//! The agent runs as root on every host: garbage from its tail clients and a stop in the
//! middle of a storm must not hurt it or leave anything behind. (Hostile HTTP clients:
//! `hostile_http.rs`.)

use std::{
    io::{BufRead, BufReader, Write},
    net::{IpAddr, Ipv4Addr},
    os::unix::net::UnixStream,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use crate::support::{
    http_get, require_root, timeout,
    workload::{self, Close, SERVICE_PORT},
    Agent, NetNs,
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
                // One listener for the whole storm: re-binding a port whose connections are
                // still closing can fail under load.
                let listener = std::net::TcpListener::bind((V4, SERVICE_PORT)).expect("listen");
                while !stop.load(Ordering::Relaxed) {
                    workload::connection_to(&listener, Close::ServerFirst);
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
    assert!(
        crate::support::program_unloaded(&program),
        "program {program} left loaded"
    );
    // Its link is gone with it.
    assert_eq!(
        crate::support::links_to_program(&program),
        Vec::<u32>::new(),
        "links to program {program} remain"
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
        stream.set_read_timeout(Some(timeout())).expect("timeout");
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
