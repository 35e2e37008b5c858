//! Privileged end-to-end tests: the real eBPF program, real TCP traffic in a network namespace
//! the test creates, and exact counter values. The agent counts only that namespace, so the
//! test's own scrapes and the host's traffic cannot move a counter.

use std::{net::IpAddr, process::Command, time::Duration};

use crate::support::{
    assert_exact, require_root,
    workload::{self, family, Close, Expected, SERVICE_PORT},
    Agent, NetNs,
};

const N: u64 = 200;
const V4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);

/// Arguments that give the test listeners' port its own label.
const PORTS: [&str; 2] = ["--ports", "8080"];
const PORT: &str = "8080";

#[test]
fn client_closes_first_is_counted_exactly() {
    let mut expected = Expected::default();
    expected
        .listener("inet")
        .handshakes("inet", N, PORT)
        .teardowns("inet", N, PORT);
    let workload = || workload::connections(V4, SERVICE_PORT, N, Close::ClientFirst);
    assert_exact(&PORTS, workload, &expected);
}

#[test]
fn server_closes_first_is_counted_exactly() {
    let mut expected = Expected::default();
    expected
        .listener("inet")
        .handshakes("inet", N, PORT)
        .teardowns("inet", N, PORT);
    let workload = || workload::connections(V4, SERVICE_PORT, N, Close::ServerFirst);
    assert_exact(&PORTS, workload, &expected);
}

#[test]
fn linger_zero_resets_are_counted_exactly() {
    let mut expected = Expected::default();
    expected
        .listener("inet")
        .handshakes("inet", N, PORT)
        .resets("inet", N, PORT);
    let workload = || workload::connections(V4, SERVICE_PORT, N, Close::ClientReset);
    assert_exact(&PORTS, workload, &expected);
}

#[test]
fn refused_connects_are_counted_exactly() {
    // Port 9 is not listed: its handshakes count under port="other".
    let mut expected = Expected::default();
    expected.failed_connects("inet", N, "refused", "other");
    assert_exact(&PORTS, || workload::refused_connects(V4, N), &expected);
}

#[test]
fn ipv6_is_counted_under_its_own_family() {
    let f = family(V6);
    let mut expected = Expected::default();
    expected
        .listener(f)
        .handshakes(f, N, PORT)
        .teardowns(f, N, PORT)
        .failed_connects(f, N, "refused", "other");
    let workload = || {
        workload::connections(V6, SERVICE_PORT, N, Close::ClientFirst);
        workload::refused_connects(V6, N);
    };
    assert_exact(&PORTS, workload, &expected);
}

#[test]
fn connection_lifetime_lands_in_its_bucket() {
    // One connection held open for 1.1 s: its two ESTABLISHED dwells are in (1.048576, 2.097152].
    let hold = Duration::from_millis(1100);
    let mut expected = Expected::default();
    expected
        .listener("inet")
        .handshakes("inet", 1, "other")
        .teardowns("inet", 1, "other");
    let workload = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        std::thread::sleep(hold);
        drop(client);
        // Close only once the client's FIN is in: where loopback delivery lags (a slow
        // virtual machine), closing right away makes a simultaneous close.
        workload::read_until_closed(server);
    };
    let (agent, _ns) = assert_exact(&[], workload, &expected);
    let scrape = agent.scrape();
    let bucket = |le: &str| {
        scrape.get(&format!(
            "tcpmon_state_duration_seconds_bucket{{state=\"ESTABLISHED\",le=\"{le}\"}}"
        ))
    };
    assert_eq!(bucket("1.048576"), 0.0, "no lifetime below 1.05 s");
    assert_eq!(bucket("2.097152"), 2.0, "both lifetimes by 2.1 s");
    let sum = scrape.get("tcpmon_state_duration_seconds_sum{state=\"ESTABLISHED\"}");
    assert!(
        (2.2..4.2).contains(&sum),
        "two lifetimes of 1.1-2.1 s, got {sum}"
    );
}

#[test]
fn idle_scrapes_change_nothing_and_stop_detaches_everything() {
    let mut expected = Expected::default();
    expected
        .listener("inet")
        .handshakes("inet", N, PORT)
        .teardowns("inet", N, PORT);
    let workload = || workload::connections(V4, SERVICE_PORT, N, Close::ServerFirst);
    let (mut agent, _ns) = assert_exact(&PORTS, workload, &expected);
    // Everything but the agent's own cost: the program also runs (and is filtered out) for
    // the host's traffic, and the process and the scrape itself take time.
    let own_cost = |series: &String| {
        series.starts_with("process_")
            || series.starts_with("tcpmon_bpf_program_run")
            || series.starts_with("tcpmon_scrape_collect_duration_seconds")
            || series.starts_with("tcpmon_scrape_collector_duration_seconds")
    };
    let counted = |scrape: crate::support::Scrape| {
        let mut series = scrape.series;
        series.retain(|name, _| !own_cost(name));
        series
    };
    let first = counted(agent.scrape());
    let second = counted(agent.scrape());
    assert_eq!(first, second, "two scrapes with no traffic are identical");

    let program = agent.program_id.to_string();
    let shown = Command::new("bpftool")
        .args(["prog", "show", "id", &program])
        .output()
        .expect("bpftool");
    assert!(
        shown.status.success(),
        "program {program} loaded while running"
    );

    let (status, stderr) = agent.stop();
    assert!(status.success(), "agent exits 0 on SIGTERM: {status}");
    assert_eq!(
        stderr,
        [format!("tcpmon: stopped; program {program} detached")]
    );
    assert!(
        crate::support::program_unloaded(&program),
        "program {program} still loaded after stop"
    );
    assert_eq!(
        crate::support::links_to_program(&program),
        Vec::<u32>::new(),
        "links to program {program} remain"
    );
}

#[test]
fn a_normal_start_prints_one_line_and_no_warning() {
    require_root();
    let ns = NetNs::new();
    let mut agent = Agent::start(&ns);
    assert_eq!(
        agent.startup_line,
        format!(
            "tcpmon: program {} attached to sock:inet_sock_set_state, counting network namespace {} (inode {}); serving http://{}/metrics and tail socket {}",
            agent.program_id,
            ns.path(),
            std::fs::metadata(ns.path()).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).expect("netns inode"),
            agent.addr,
            agent.tail_socket
        )
    );
    assert_eq!(crate::support::http_get(agent.addr, "/healthz"), "ok\n");
    // The notes a normal start prints: on kernels that hide transitions from BPF, and on those
    // that name no reset reasons.
    let mut notes = Vec::new();
    if crate::support::hidden::kernel_hides_transitions() {
        notes.push(tcpmon::startup::SKIPS_UNDER_INIT_NOTE);
    }
    if !crate::support::kernel_names_reset_reasons() {
        notes.push(tcpmon::startup::NO_RESET_REASONS_NOTE);
    }
    assert_eq!(agent.notes, notes);
    // Skipped runs are in the program's info since Linux 5.12; before, the metric is absent
    // rather than a misleading 0.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut numbers = release.split(|c: char| !c.is_ascii_digit());
    let mut next = || {
        numbers
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .expect("version")
    };
    let counted = (next(), next()) >= (5, 12);
    let scrape = agent.scrape();
    assert_eq!(
        scrape
            .text
            .contains("\ntcpmon_bpf_program_missed_runs_total "),
        counted
    );
    let (status, stderr) = agent.stop();
    assert!(status.success());
    assert_eq!(stderr.len(), 1, "only the stop line: {stderr:?}");
}

#[test]
fn promtool_accepts_a_real_scrape() {
    let mut expected = Expected::default();
    expected
        .listener("inet")
        .handshakes("inet", 10, PORT)
        .resets("inet", 10, PORT)
        .failed_connects("inet", 10, "refused", "other");
    let workload = || {
        workload::connections(V4, SERVICE_PORT, 10, Close::ClientReset);
        workload::refused_connects(V4, 10);
    };
    let (agent, _ns) = assert_exact(&PORTS, workload, &expected);
    let text = agent.scrape().text;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write scrape");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
