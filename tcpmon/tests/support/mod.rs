//! Shared machinery of the privileged integration tests: a network namespace and a running
//! agent, both removed on drop (even when the test fails), and a scrape parser.
#![allow(dead_code)] // each test binary uses a different part of it

pub mod workload;

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    sync::mpsc,
    time::{Duration, Instant},
};

pub const TCPMON: &str = env!("CARGO_BIN_EXE_tcpmon");
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Fails the test unless it runs as root: these tests load eBPF programs and create namespaces.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "privileged test: run the suite as root (`sudo cargo xtask test`)"
    );
}

/// A network namespace made for one test, with loopback up; deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> NetNs {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tcpmon-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = NetNs { name };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it opens live there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(self.path()).expect("open netns");
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns on this thread only; `file` is an open nsfs descriptor.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .expect("workload thread panicked")
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command that must succeed.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loopback address with a port nobody listens on right now.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
}

/// A running `tcpmon agent`, stopped with SIGTERM on drop.
pub struct Agent {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub program_id: u32,
    /// stderr lines after the start-up line, collected by a reader thread.
    stderr: mpsc::Receiver<String>,
    pub startup_line: String,
}

impl Agent {
    /// Starts the agent counting only `netns`, and waits until it serves.
    pub fn start(netns: &NetNs) -> Agent {
        let addr = free_addr();
        let mut child = Command::new(TCPMON)
            .args([
                "agent",
                "--listen",
                &addr.to_string(),
                "--netns",
                &netns.path(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpmon agent");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut agent = Agent {
            child: Some(child),
            addr,
            program_id: 0,
            stderr: rx,
            startup_line: String::new(),
        };
        let line = agent
            .stderr
            .recv_timeout(TIMEOUT)
            .expect("agent printed its start-up line");
        agent.program_id = line
            .strip_prefix("tcpmon: program ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("unexpected start-up line: {line}"));
        agent.startup_line = line;
        agent
    }

    pub fn scrape(&self) -> Scrape {
        Scrape::parse(&http_get(self.addr, "/metrics"))
    }

    /// Sends SIGTERM and waits; returns the exit status and what it printed meanwhile.
    pub fn stop(&mut self) -> (ExitStatus, Vec<String>) {
        let mut child = self.child.take().expect("agent still running");
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for agent") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, self.stderr.try_iter().collect())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A minimal HTTP/1.0 GET; returns the body. Panics on a non-200 answer.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect to agent");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_string()
}

/// A parsed exposition: series (name with labels, as printed) to value.
#[derive(Clone, Debug, PartialEq)]
pub struct Scrape {
    pub text: String,
    pub series: BTreeMap<String, f64>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').expect("series line");
                (name.to_string(), value.parse().expect("numeric value"))
            })
            .collect();
        Scrape {
            text: text.to_string(),
            series,
        }
    }

    /// Value of a series, 0 when absent (tcpmon omits counters that never moved).
    pub fn get(&self, series: &str) -> f64 {
        self.series.get(series).copied().unwrap_or(0.0)
    }

    /// Every non-zero `tcpmon_state_transitions_total` series as (family, old, new) -> count.
    pub fn transitions(&self) -> BTreeMap<(String, String, String), u64> {
        self.series
            .iter()
            .filter_map(|(k, v)| {
                let labels = k.strip_prefix("tcpmon_state_transitions_total{")?;
                let label = |name: &str| {
                    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
                    let end = labels[start..].find('"')? + start;
                    Some(labels[start..end].to_string())
                };
                Some((
                    (label("family")?, label("old_state")?, label("new_state")?),
                    *v as u64,
                ))
            })
            .filter(|(_, v)| *v > 0)
            .collect()
    }

    /// `_count` of the dwell histogram of `state`.
    pub fn dwell_count(&self, state: &str) -> u64 {
        self.get(&format!(
            "tcpmon_state_duration_seconds_count{{state=\"{state}\"}}"
        )) as u64
    }

    /// Every state with a non-zero dwell count.
    pub fn dwell_counts(&self) -> BTreeMap<String, u64> {
        self.series
            .iter()
            .filter_map(|(k, v)| {
                let state = k
                    .strip_prefix("tcpmon_state_duration_seconds_count{state=\"")?
                    .strip_suffix("\"}")?;
                Some((state.to_string(), *v as u64))
            })
            .collect()
    }
}
