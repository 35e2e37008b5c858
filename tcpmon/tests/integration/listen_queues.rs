//! Accept queues and listen drops, against the kernel's own numbers: a listener with backlog 1
//! that never accepts, its queue filled, then flooded with connects whose SYNs it drops; the
//! drops as `tail --recent` events.

use std::{
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::support::{require_root, run, workload, Agent, NetNs};

const PORT: u16 = 7072;
/// `net.ipv4.tcp_syn_retries` in the namespace: each flooding connect sends its SYN again after
/// 1 s and fails a few seconds after it began.
const SYN_RETRIES: u64 = 1;

/// Recv-Q and Send-Q of the namespace's one listener, as `ss -lt` shows them.
fn ss_queue(ns: &NetNs) -> (f64, f64) {
    let out = run("ip", &["netns", "exec", &ns.name, "ss", "-ltnH"]);
    let words: Vec<&str> = out.split_whitespace().collect();
    let number = |i: usize| words[i].parse::<f64>().expect("a queue size");
    (number(1), number(2))
}

#[test]
fn a_full_accept_queue_its_limit_and_every_dropped_syn_are_exact() {
    require_root();
    const FLOOD: u64 = 4;
    let ns = NetNs::new();
    ns.sysctl("net.ipv4.tcp_syn_retries", &SYN_RETRIES.to_string());
    let agent = Agent::start_with(&ns, &["--ports", &PORT.to_string()]);
    let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
    let (listener, queued) = ns.run(|| {
        let listener = workload::listen_with_backlog(addr, 1);
        // The kernel queues one more than the limit: two handshakes complete, one at a time so
        // that neither is still a request when the next SYN arrives.
        let queued: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(addr).expect("fits in the queue"))
            .collect();
        workload::timed_out_connects(addr, FLOOD);
        (listener, queued)
    });
    let drops = ns.tcp_counter("TcpExtListenDrops");
    // Every SYN of the flood, first ones and retransmissions (newer kernels retransmit once
    // more than tcp_syn_retries says when the timeout allows it: 6.18 sends three).
    let syns = FLOOD + ns.tcp_counter("TcpExtTCPSynRetrans");
    assert!(syns >= FLOOD * (1 + SYN_RETRIES), "{syns} SYNs");
    assert_eq!(drops, syns, "the kernel's own count: each SYN dropped");
    assert_eq!(ss_queue(&ns), (2.0, 1.0), "ss: two queued, limit 1");
    let scrape = agent.scrape();
    let series = |name: &str| scrape.get(&format!("{name}{{port=\"{PORT}\"}}"));
    assert_eq!(series("tcpmon_listen_queue_length"), 2.0);
    assert_eq!(series("tcpmon_listen_queue_limit"), 1.0);
    assert_eq!(series("tcpmon_listen_drops_total"), drops as f64);

    // The same drops as events of `tail --recent`, each the listener's since the agent's
    // previous look.
    let events = agent.recent(&["--port", &PORT.to_string(), "--state", "LISTEN"]);
    assert!(!events.is_empty(), "no listen_dropped events");
    for e in &events {
        assert_eq!(e["what"], "listen_dropped", "{e}");
        assert_eq!(
            (&e["local"], &e["local_port"]),
            (&"127.0.0.1".into(), &PORT.into())
        );
        assert_eq!(
            (&e["state"], &e["remote"]),
            (&"LISTEN".into(), &serde_json::Value::Null)
        );
        let n = e["dropped"].as_u64().expect("a count");
        assert_eq!(e["detail"], format!("{n} dropped"));
    }
    let dropped: u64 = events
        .iter()
        .map(|e| e["dropped"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(dropped, drops, "{events:?}");

    // Gone with the listener: the queue; kept: what it dropped.
    drop(listener);
    drop(queued);
    std::thread::sleep(Duration::from_millis(100));
    let scrape = agent.scrape();
    let series = |name: &str| scrape.get(&format!("{name}{{port=\"{PORT}\"}}"));
    assert!(
        !scrape.text.contains("tcpmon_listen_queue_length{"),
        "no listener, no queue:\n{}",
        scrape.text
    );
    assert_eq!(series("tcpmon_listen_drops_total"), drops as f64);
}
