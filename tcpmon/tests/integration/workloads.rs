//! Whose connections: every tail event and listed socket carries the workload that owns the
//! socket, from the socket's own cgroup, in a cgroup v2 hierarchy the test creates (a server
//! in `web.service`, a client in `client.service`, another in a kubelet-shaped pod cgroup
//! whose name comes from a `/var/log/pods`-shaped directory the test creates).

use std::{
    collections::BTreeMap,
    fs,
    process::{Command, Stdio},
    sync::mpsc::Receiver,
    time::{Duration, Instant},
};

use crate::support::{
    cgroups::Cgroups, hidden::HiddenTransitions, lines_of, require_root, run, scrape_until, Agent,
    NetNs, TCPMON,
};

const PORT: u16 = 7090;
/// Connections each client makes.
const EACH: u64 = 3;
const POD_UID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

/// The test's hierarchy: the server's and the client's units, a kubelet-shaped pod cgroup and
/// the pod's directory under `--kubelet-pods`.
fn create_cgroups() -> Cgroups {
    let cgroups = Cgroups::create(&["web.service", "client.service", &pod_unit()]);
    fs::create_dir_all(cgroups.pods.join(format!("shop_checkout-5d8f_{POD_UID}"))).expect("mkdir");
    cgroups
}

fn pod_unit() -> String {
    format!("kubepods-besteffort-pod{}.slice", POD_UID.replace('-', "_"))
}

/// What one run of the workload showed: the agent (to scrape) and the transitions the kernel
/// hid from BPF meanwhile.
struct Run {
    agent: Agent,
    hidden: u64,
    _ns: NetNs,
}

/// Starts an agent with `args`, runs the server and both clients with a tail client attached,
/// and checks what the tail and `tcpmon sockets` said of each workload.
fn run_workload(cgroups: &Cgroups, args: &[&str]) -> Run {
    let ns = NetNs::new();
    let pods = cgroups.pods.display().to_string();
    let mut all = vec!["--ports", "7090", "--kubelet-pods", &pods];
    all.extend(args);
    let agent = Agent::start_with(&ns, &all);
    let hidden = HiddenTransitions::observe();
    let mut tail = Command::new(TCPMON)
        .args([
            "tail",
            "--socket",
            &agent.tail_socket,
            "--port",
            &PORT.to_string(),
        ])
        .args(["-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn tcpmon tail");
    let lines = lines_of(tail.stdout.take().expect("piped"));
    let mut web_tail = Command::new(TCPMON)
        .args([
            "tail",
            "--socket",
            &agent.tail_socket,
            "--workload",
            "web.service",
        ])
        .args(["-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn tcpmon tail");
    let web_lines = lines_of(web_tail.stdout.take().expect("piped"));
    scrape_until(&agent, |s| s.get("tcpmon_tail_clients") == 2.0);
    // The server accepts every connection and closes it first; the clients wait in
    // CLOSE_WAIT until told to go on, so that `tcpmon sockets` sees them.
    let mut server = cgroups.python_in(
        "web.service",
        &ns,
        &format!(
            "import socket\n\
             l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             l.bind(('127.0.0.1', {PORT})); l.listen(16); print('ready', flush=True)\n\
             for _ in range({}): c, _ = l.accept(); c.close()\n\
             l.close()",
            2 * EACH
        ),
    );
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().expect("piped")),
        &mut ready,
    )
    .expect("the server says it listens");
    let client = |unit: &str| {
        cgroups.python_in(
            unit,
            &ns,
            &format!(
                "import socket, sys, time\n\
                 s = [socket.create_connection(('127.0.0.1', {PORT})) for _ in range({EACH})]\n\
                 [c.recv(1) for c in s]; print('closing', flush=True); sys.stdin.readline()\n\
                 [c.close() for c in s]"
            ),
        )
    };
    let mut clients = [client("client.service"), client(&pod_unit())];
    // Both clients hold their sockets in CLOSE_WAIT now.
    for c in &mut clients {
        let mut said = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(c.stdout.as_mut().expect("piped")),
            &mut said,
        )
        .expect("the client is in CLOSE_WAIT");
    }
    let listed = run(
        TCPMON,
        &[
            "sockets",
            "--socket",
            &agent.tail_socket,
            "--state",
            "CLOSE_WAIT",
            "-o",
            "json",
        ],
    );
    let mut listed_by: BTreeMap<String, u64> = BTreeMap::new();
    for line in listed.lines() {
        let socket: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let workload = socket["workload"].as_str().expect("a workload").to_string();
        *listed_by.entry(workload).or_default() += 1;
    }
    assert_eq!(
        listed_by,
        BTreeMap::from([
            ("client.service".to_string(), EACH),
            ("shop/checkout-5d8f".to_string(), EACH)
        ])
    );
    let of_pod = run(
        TCPMON,
        &[
            "sockets",
            "--socket",
            &agent.tail_socket,
            "--workload",
            "shop/checkout-5d8f",
        ],
    );
    assert_eq!(
        of_pod.lines().count() as u64,
        1 + EACH,
        "header and the pod's:\n{of_pod}"
    );
    for mut c in clients {
        drop(c.stdin.take());
        assert!(c.wait().expect("the client exits").success());
    }
    assert!(server.wait().expect("the server exits").success());

    // Per connection 5 transitions on each side (client: to SYN_SENT, ESTABLISHED,
    // CLOSE_WAIT, LAST_ACK, CLOSE; server's child: to SYN_RECV, ESTABLISHED, FIN_WAIT1,
    // FIN_WAIT2, CLOSE), and the listener's 2; less what the kernel hid from BPF.
    let expected = BTreeMap::from([
        ("web.service".to_string(), 2 + 5 * 2 * EACH),
        ("client.service".to_string(), 5 * EACH),
        ("shop/checkout-5d8f".to_string(), 5 * EACH),
    ]);
    let total: u64 = expected.values().sum();
    let by_workload = collect(&lines, total - hidden.count());
    hidden.report();
    let seen: u64 = by_workload.values().sum();
    assert_eq!(seen, total - hidden.count(), "{by_workload:?}");
    if hidden.count() == 0 {
        assert_eq!(by_workload, expected);
    }
    // The client filtered to the server's workload got the server's events and no other.
    let web_only = collect(&web_lines, expected["web.service"] - hidden.count());
    assert_eq!(
        web_only.keys().collect::<Vec<_>>(),
        ["web.service"],
        "{web_only:?}"
    );
    for mut t in [tail, web_tail] {
        let _ = t.kill();
        let _ = t.wait();
    }
    let hidden = hidden.count();
    Run {
        agent,
        hidden,
        _ns: ns,
    }
}

/// The workload's handshakes and teardowns, each side by its workload.
fn expected_counters(
    server_label: &str,
    client_label: &str,
    pod_label: &str,
) -> BTreeMap<String, f64> {
    let each = EACH as f64;
    let mut want = BTreeMap::new();
    let mut add = |series: String, n: f64| *want.entry(series).or_insert(0.0) += n;
    add(handshake("server", server_label), 2.0 * each);
    add(teardown("local", server_label), 2.0 * each);
    for label in [client_label, pod_label] {
        add(handshake("client", label), each);
        add(teardown("remote", label), each);
    }
    want
}

fn handshake(side: &str, workload: &str) -> String {
    format!(
        "tcpmon_handshakes_total{{side=\"{side}\",result=\"established\",port=\"{PORT}\",workload=\"{workload}\"}}"
    )
}

fn teardown(initiator: &str, workload: &str) -> String {
    format!(
        "tcpmon_teardowns_total{{initiator=\"{initiator}\",kind=\"fin\",port=\"{PORT}\",workload=\"{workload}\"}}"
    )
}

/// Asserts the counters are `want`, exactly; where the kernel hid transitions from BPF, that
/// no more than those are missing and nothing is counted that did not happen.
fn assert_counters(run: &Run, want: BTreeMap<String, f64>) {
    let got = workload_counters(run);
    if run.hidden == 0 {
        assert_eq!(got, want);
    } else {
        let (got_sum, want_sum) = (got.values().sum::<f64>(), want.values().sum::<f64>());
        assert!(got.keys().all(|k| want.contains_key(k)), "{got:?}");
        assert!(
            got_sum <= want_sum && got_sum + run.hidden as f64 >= want_sum,
            "{got:?}"
        );
    }
}

/// The handshake and teardown series of the scrape, by workload.
fn workload_counters(run: &Run) -> BTreeMap<String, f64> {
    let scrape = run.agent.scrape();
    scrape
        .by_workload
        .into_iter()
        .filter(|(name, _)| name.contains(&format!("port=\"{PORT}\"")))
        .collect()
}

#[test]
fn every_event_socket_and_counter_names_the_workload_that_owns_it() {
    require_root();
    let cgroups = create_cgroups();
    let run = run_workload(&cgroups, &[]);
    assert_counters(
        &run,
        expected_counters("web.service", "client.service", "shop/checkout-5d8f"),
    );
}

#[test]
fn workloads_beyond_the_maximum_fold_into_other_with_totals_exact() {
    require_root();
    let cgroups = create_cgroups();
    // The server's workload is the busiest (both clients' connections): it alone is named.
    let run = run_workload(&cgroups, &["--max-workloads", "1"]);
    assert_counters(&run, expected_counters("web.service", "other", "other"));
}

#[test]
fn without_attribution_every_count_is_other_and_exact() {
    require_root();
    let cgroups = create_cgroups();
    let run = run_workload(&cgroups, &["--max-workloads", "0"]);
    assert_counters(&run, expected_counters("other", "other", "other"));
}

/// Tail events by workload until `want` have come, or 10 s have passed.
fn collect(lines: &Receiver<String>, want: u64) -> BTreeMap<String, u64> {
    let mut by_workload = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = 0;
    while seen < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            break;
        };
        let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        if event["type"] != "event" {
            continue;
        }
        let workload = event["workload"].as_str().unwrap_or("none").to_string();
        *by_workload.entry(workload).or_default() += 1;
        seen += 1;
    }
    by_workload
}
