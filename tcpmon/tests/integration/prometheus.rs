//! A real Prometheus server (Debian's) scrapes a real agent while a workload runs: every
//! PromQL expression of the dashboard and of the recording rules returns data, and the
//! CLOSE_WAIT alert fires for a workload that leaks CLOSE_WAIT sockets.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::{
    artefacts, free_addr, http_get, require_root, timeout,
    workload::{self, Close, FullListener},
    Agent, NetNs,
};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const CLOSE_WAIT_HELD: u64 = 60;

/// Sets a sysctl for the test and restores it on drop.
struct Sysctl(&'static str, String);

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Sysctl {
        let old = std::fs::read_to_string(path).expect("read sysctl");
        std::fs::write(path, value).expect("write sysctl");
        Sysctl(path, old)
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0, self.1.trim());
    }
}

/// A Prometheus server with its own config and storage in a temporary directory.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Prometheus {
    fn start(agent: SocketAddr) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("tcpmon-prometheus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // The shipped rules, with the CLOSE_WAIT alert's 15 minutes cut to 5 seconds.
        let rules =
            std::fs::read_to_string(artefacts::deploy("prometheus/rules.yml")).expect("rules.yml");
        let (before, after) = rules
            .split_once("alert: TcpmonCloseWaitAccumulating")
            .expect("alert");
        let after = after.replacen("for: 15m", "for: 5s", 1);
        std::fs::write(
            dir.join("rules.yml"),
            format!("{before}alert: TcpmonCloseWaitAccumulating{after}"),
        )
        .expect("write rules");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\nscrape_configs:\n  - job_name: tcpmon\n    static_configs:\n      - targets: ['{agent}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write config");
        let addr = free_addr();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus) runs");
        let server = Prometheus { child, dir, addr };
        let deadline = Instant::now() + timeout();
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "prometheus did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// The `data.result` of an instant query.
    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let body = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", encode(promql)),
        );
        let reply: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(reply["status"], "success", "{promql}: {body}");
        reply["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn firing(&self, alert: &str) -> bool {
        let body = http_get(self.addr, "/api/v1/alerts");
        let reply: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        reply["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["labels"]["alertname"] == alert && a["state"] == "firing")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_gets_data_for_every_panel_and_rule_and_fires_the_close_wait_alert() {
    require_root();
    let _stats = Sysctl::set("/proc/sys/kernel/bpf_stats_enabled", "1");
    let ns = NetNs::new();
    ns.sysctl("net.ipv4.tcp_syn_retries", "1");
    let agent = Agent::start_with(&ns, &["--ports", "8080,8081,8082,8083"]);
    let prometheus = Prometheus::start(agent.addr);

    // Every kind of handshake and teardown, then CLOSE_WAIT sockets held open.
    let held = ns.run(|| {
        for _ in 0..4 {
            workload::connections(V4, 8080, 200, Close::ClientFirst);
            workload::connections(V4, 8081, 100, Close::ClientReset);
            workload::refused_connects(V4, 50);
            std::thread::sleep(Duration::from_millis(500));
        }
        let full = FullListener::open(V4, 8082);
        workload::timed_out_connects(SocketAddr::new(V4, 8082), 2);
        full.close();
        let listener = TcpListener::bind("127.0.0.1:8083").expect("listen");
        let clients: Vec<TcpStream> = (0..CLOSE_WAIT_HELD)
            .map(|_| TcpStream::connect("127.0.0.1:8083").expect("connect"))
            .collect();
        let held: Vec<TcpStream> = (0..CLOSE_WAIT_HELD)
            .map(|_| listener.accept().expect("accept").0)
            .collect();
        drop(clients);
        (listener, held)
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    while !prometheus.firing("TcpmonCloseWaitAccumulating") {
        assert!(
            Instant::now() < deadline,
            "the CLOSE_WAIT alert did not fire"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let value = prometheus.query("tcpmon_sockets{job=\"tcpmon\",state=\"CLOSE_WAIT\"}");
    assert_eq!(value.len(), 1);
    assert_eq!(value[0]["value"][1], CLOSE_WAIT_HELD.to_string());

    let mut empty = Vec::new();
    let dashboard = artefacts::dashboard_exprs().into_iter().map(|e| {
        e.replace("$job", "tcpmon")
            .replace("$instance", ".*")
            .replace("$workload", ".*")
            .replace("$__rate_interval", "1m")
    });
    let all: Vec<String> = dashboard.chain(artefacts::recording_exprs()).collect();
    assert!(all.len() > 25, "{} expressions", all.len());
    for expr in &all {
        if prometheus.query(expr).is_empty() {
            empty.push(expr.clone());
        }
    }
    assert!(
        empty.is_empty(),
        "expressions without data:\n{}",
        empty.join("\n")
    );
    drop(held);
}
