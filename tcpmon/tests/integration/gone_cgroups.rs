//! Workloads whose cgroups are removed: a cgroup gone before the agent named it counts as
//! `unknown`, one removed after it was named keeps its name, and neither series ever goes
//! down, while the agent forgets the gone cgroups' names (a new cgroup makes it walk the tree
//! again) and names new ones.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
};

use crate::support::{
    cgroups::Cgroups, hidden::HiddenTransitions, require_root, scrape_until, Agent, NetNs, Scrape,
};

const PORT: u16 = 7095;
/// Connections each client makes.
const EACH: u64 = 4;
/// Clients in all: `early`, `late` and `later`.
const CLIENTS: u64 = 3;

fn handshake(side: &str, workload: &str) -> String {
    format!(
        "tcpmon_handshakes_total{{side=\"{side}\",result=\"established\",port=\"{PORT}\",workload=\"{workload}\"}}"
    )
}

/// The handshakes on the test's port, by workload.
fn handshakes(scrape: &Scrape) -> BTreeMap<String, f64> {
    scrape
        .by_workload
        .iter()
        .filter(|(series, _)| series.starts_with("tcpmon_handshakes_total{"))
        .filter(|(series, _)| series.contains(&format!("port=\"{PORT}\"")))
        .map(|(series, value)| (series.clone(), *value))
        .collect()
}

/// Runs a client in a new cgroup `unit`: `EACH` connections, each closed first by the client;
/// returns once it has exited.
fn client(cgroups: &mut Cgroups, unit: &str, ns: &NetNs) {
    cgroups.add_unit(unit);
    let mut child = cgroups.python_in(
        unit,
        ns,
        &format!(
            "import socket\n\
             for _ in range({EACH}):\n\
             \x20   s = socket.create_connection(('127.0.0.1', {PORT})); s.close()"
        ),
    );
    assert!(child.wait().expect("the client exits").success());
}

/// Scrapes until the handshakes are `want`, and asserts they are (less what the kernel hid
/// from BPF, and nothing else).
fn assert_handshakes(agent: &Agent, hidden: &HiddenTransitions, want: &BTreeMap<String, f64>) {
    let scrape = scrape_until(agent, |s| handshakes(s) == *want);
    let got = handshakes(&scrape);
    if hidden.count() == 0 {
        assert_eq!(&got, want);
    } else {
        let (got_sum, want_sum) = (got.values().sum::<f64>(), want.values().sum::<f64>());
        assert!(got.keys().all(|k| want.contains_key(k)), "{got:?}");
        assert!(got_sum <= want_sum && got_sum + hidden.count() as f64 >= want_sum);
    }
}

#[test]
fn removed_cgroups_keep_their_counts_in_the_series_they_were_counted_under() {
    require_root();
    let mut cgroups = Cgroups::create(&["web.service"]);
    let ns = NetNs::new();
    let agent = Agent::start_with(&ns, &["--ports", &PORT.to_string()]);
    let hidden = HiddenTransitions::observe();
    let mut server = cgroups.python_in(
        "web.service",
        &ns,
        &format!(
            "import socket\n\
             l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             l.bind(('127.0.0.1', {PORT})); l.listen(64); print('ready', flush=True)\n\
             for _ in range({}):\n\
             \x20   c, _ = l.accept(); c.recv(1); c.close()\n\
             l.close()",
            CLIENTS * EACH
        ),
    );
    let mut ready = String::new();
    BufReader::new(server.stdout.take().expect("piped"))
        .read_line(&mut ready)
        .expect("the server says it listens");
    let each = EACH as f64;

    // Gone before any scrape asked for its name: `unknown`.
    client(&mut cgroups, "early.service", &ns);
    cgroups.remove_unit("early.service");
    let mut want = BTreeMap::from([
        (handshake("server", "web.service"), each),
        (handshake("client", "unknown"), each),
    ]);
    assert_handshakes(&agent, &hidden, &want);

    // Named while it is there; removed afterwards.
    client(&mut cgroups, "late.service", &ns);
    want.insert(handshake("server", "web.service"), 2.0 * each);
    want.insert(handshake("client", "late.service"), each);
    assert_handshakes(&agent, &hidden, &want);
    cgroups.remove_unit("late.service");

    // A new cgroup makes the agent walk the tree again, which no longer holds `late.service`:
    // its counts stay where they are, as do `unknown`'s.
    client(&mut cgroups, "later.service", &ns);
    want.insert(handshake("server", "web.service"), 3.0 * each);
    want.insert(handshake("client", "later.service"), each);
    assert_handshakes(&agent, &hidden, &want);
    hidden.report();
    assert!(server.wait().expect("the server exits").success());
}
