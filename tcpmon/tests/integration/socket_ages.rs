//! How long the oldest socket of each state has been in it: connections whose client closed
//! and whose server never does, held for a known time.

use std::{
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use crate::support::{require_root, run, Agent, NetNs, Scrape, TCPMON};

const PORT: u16 = 7075;
const HELD: Duration = Duration::from_secs(2);

fn age(scrape: &Scrape, state: &str) -> Option<f64> {
    let series = format!("tcpmon_oldest_socket_age_seconds{{state=\"{state}\",port=\"{PORT}\"}}");
    scrape.series.get(&series).copied()
}

#[test]
fn close_wait_sockets_show_how_long_they_have_waited() {
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start_with(&ns, &["--ports", &PORT.to_string()]);
    let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
    let (listener, sockets, since) = ns.run(|| {
        let listener = TcpListener::bind(addr).expect("listen");
        let mut sockets = Vec::new();
        for _ in 0..2 {
            let client = TcpStream::connect(addr).expect("connect");
            let server = listener.accept().expect("accept").0;
            // The client's FIN puts the server's socket in CLOSE_WAIT, where it stays: the
            // server never closes (a leak). The client, still open, waits in FIN_WAIT2 (once
            // closed, an orphan there would become a time-wait mini-socket).
            client.shutdown(Shutdown::Write).expect("shutdown");
            sockets.push((client, server));
        }
        (listener, sockets, Instant::now())
    });
    let before = agent.scrape();
    std::thread::sleep(HELD);
    let scrape = agent.scrape();
    let waited = since.elapsed().as_secs_f64();
    let close_wait = age(&scrape, "CLOSE_WAIT").expect("a CLOSE_WAIT age");
    // At least as long as held; at most as long as since the first connection began.
    assert!(
        close_wait >= HELD.as_secs_f64() && close_wait <= waited + 1.0,
        "CLOSE_WAIT {close_wait} s after {waited} s:\n{}",
        scrape.text
    );
    assert!(
        close_wait > age(&before, "CLOSE_WAIT").expect("before"),
        "grows"
    );
    assert!(age(&scrape, "LISTEN").expect("a LISTEN age") >= close_wait);
    let fin_wait2 = age(&scrape, "FIN_WAIT2").expect("the clients wait for the servers' FINs");
    assert!(fin_wait2 >= HELD.as_secs_f64(), "FIN_WAIT2 {fin_wait2} s");
    assert_eq!(age(&scrape, "ESTABLISHED"), None, "no connection is open");

    // The same sockets, listed with their owner: this test's process.
    let listed = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["sockets", "--socket", &agent.tail_socket, "-o", "json"];
        all.extend(args);
        run(TCPMON, &all)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    let port = PORT.to_string();
    let close_waits = listed(&[
        "--state",
        "CLOSE_WAIT",
        "--port",
        &port,
        "--older-than",
        "2s",
    ]);
    assert_eq!(close_waits.len(), 2, "{close_waits:?}");
    let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
    for socket in &close_waits {
        assert_eq!(socket["local_port"], PORT);
        assert_eq!(socket["remote"], "127.0.0.1");
        assert!(socket["age_seconds"].as_f64().expect("an age") >= HELD.as_secs_f64());
        assert_eq!(socket["pid"], std::process::id(), "{socket}");
        assert_eq!(socket["comm"], comm.trim_end(), "{socket}");
    }
    // Oldest first: the listener, then the connections in the order they were made.
    let all = listed(&["--port", &port]);
    let states: Vec<&str> = all
        .iter()
        .map(|s| s["state"].as_str().expect("state"))
        .collect();
    assert_eq!(states[0], "LISTEN", "{states:?}");
    assert_eq!(
        states.len(),
        5,
        "a listener, two CLOSE_WAIT, two FIN_WAIT2: {states:?}"
    );
    let ages: Vec<f64> = all
        .iter()
        .map(|s| s["age_seconds"].as_f64().expect("an age"))
        .collect();
    assert!(ages.windows(2).all(|w| w[0] >= w[1]), "{ages:?}");
    assert!(listed(&["--port", &port, "--older-than", "1h"]).is_empty());

    // Closed, they are gone from the gauge.
    drop(sockets);
    drop(listener);
    std::thread::sleep(Duration::from_millis(100));
    let after = agent.scrape();
    assert_eq!(age(&after, "CLOSE_WAIT"), None, "{}", after.text);
    assert_eq!(age(&after, "LISTEN"), None);
    assert_eq!(age(&after, "FIN_WAIT2"), None);
}
