//! The series budget with workloads: 50 workloads, each serving a port of its own and calling
//! every one of the 50 ports (the worst case: every workload uses every port), under the
//! default set-up (`--max-ports 32`, `--max-workloads 32`). Counts stay exact, at most 32
//! workloads and 32 ports get values of their own, and the whole scrape stays within the
//! budget docs/METRICS.md states.
use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Write},
    time::{Duration, Instant},
};

use crate::support::{
    assert_no_missed_runs, cgroups::Cgroups, hidden::HiddenTransitions, require_root, Agent, NetNs,
    Scrape,
};

const WORKLOADS: u16 = 50;
const FIRST_PORT: u16 = 7200;
/// What docs/METRICS.md promises for this worst case, every series of the scrape counted.
const BUDGET: usize = 5_000;

fn unit(i: u16) -> String {
    format!("w{i:02}.service")
}

/// Workload `i`: listens on its port, says so, and once told to go, connects to every port and
/// closes first; its listener accepts one connection from every workload and closes after the
/// peer did.
fn script(i: u16) -> String {
    format!(
        "import socket, sys, threading\n\
         l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         l.bind(('127.0.0.1', {port})); l.listen(128); print('ready', flush=True)\n\
         def serve():\n\
         \x20   for _ in range({WORKLOADS}):\n\
         \x20       c, _ = l.accept(); c.recv(1); c.close()\n\
         t = threading.Thread(target=serve); t.start()\n\
         sys.stdin.readline()\n\
         for p in range({FIRST_PORT}, {end}):\n\
         \x20   s = socket.create_connection(('127.0.0.1', p)); s.close()\n\
         t.join(); l.close()",
        port = FIRST_PORT + i,
        end = FIRST_PORT + WORKLOADS,
    )
}

/// The values `label` takes in the series with a workload label.
fn values_of(scrape: &Scrape, label: &str) -> BTreeSet<String> {
    let key = format!("{label}=\"");
    scrape
        .by_workload
        .keys()
        .filter_map(|series| {
            let start = series.find(&key)? + key.len();
            let end = series[start..].find('"')? + start;
            Some(series[start..end].to_string())
        })
        .collect()
}

#[test]
fn fifty_workloads_on_fifty_ports_stay_within_the_series_budget() {
    require_root();
    let units: Vec<String> = (0..WORKLOADS).map(unit).collect();
    let cgroups = Cgroups::create(&units.iter().map(String::as_str).collect::<Vec<_>>());
    let ns = NetNs::new();
    let agent = Agent::start(&ns); // the default set-up
    let mut workloads: Vec<_> = (0..WORKLOADS)
        .map(|i| cgroups.python_in(&unit(i), &ns, &script(i)))
        .collect();
    for w in &mut workloads {
        let mut ready = String::new();
        BufReader::new(w.stdout.as_mut().expect("piped"))
            .read_line(&mut ready)
            .expect("the workload listens");
        assert_eq!(ready.trim(), "ready");
    }
    // The scrape finds the listeners: the first 32 ports get a value.
    agent.scrape();
    let hidden = HiddenTransitions::observe();
    for w in &mut workloads {
        w.stdin
            .as_mut()
            .expect("piped")
            .write_all(b"go\n")
            .expect("tell the workload to go");
    }
    for mut w in workloads {
        assert!(w.wait().expect("the workload exits").success());
    }

    let each = f64::from(WORKLOADS) * f64::from(WORKLOADS);
    let wanted = [
        (
            "tcpmon_handshakes_total{side=\"client\",result=\"established\",port=",
            each,
        ),
        (
            "tcpmon_handshakes_total{side=\"server\",result=\"established\",port=",
            each,
        ),
        (
            "tcpmon_teardowns_total{initiator=\"local\",kind=\"fin\",port=",
            each,
        ),
        (
            "tcpmon_teardowns_total{initiator=\"remote\",kind=\"fin\",port=",
            each,
        ),
    ];
    let total = |scrape: &Scrape, prefix: &str| -> f64 {
        scrape
            .by_workload
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    // The last ACKs may still be in flight when the workloads exit.
    let deadline = Instant::now() + crate::support::timeout();
    let scrape = loop {
        let scrape = agent.scrape();
        let done = wanted.iter().all(|(p, n)| total(&scrape, p) == *n);
        if done || Instant::now() > deadline {
            break scrape;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_no_missed_runs(&scrape);
    hidden.report();
    for (prefix, n) in wanted {
        let got = total(&scrape, prefix);
        // A transition the kernel hid from BPF (hidden.rs) may be missing, nothing else.
        assert!(
            got <= n && got + hidden.count() as f64 >= n,
            "{prefix}: {got} of {n}, {} hidden; every total: {:?}",
            hidden.count(),
            wanted.map(|(p, _)| total(&scrape, p))
        );
    }

    let workloads = values_of(&scrape, "workload");
    assert_eq!(workloads.len(), 33, "32 named and other: {workloads:?}");
    assert!(workloads.contains("other"));
    assert!(workloads
        .iter()
        .all(|w| w == "other" || w.ends_with(".service")));
    let ports = values_of(&scrape, "port");
    assert_eq!(ports.len(), 33, "32 labelled ports and other: {ports:?}");

    let series = scrape
        .text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    let with_workload = scrape.by_workload.len();
    eprintln!(
        "{series} series in all, {with_workload} of them with a workload label \
         (50 workloads x 50 ports, every workload calling every port)"
    );
    assert!(
        series <= BUDGET,
        "{series} series, over the budget of {BUDGET}"
    );
}
