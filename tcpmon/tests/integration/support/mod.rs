//! Shared machinery of the privileged integration tests: a network namespace and a running
//! agent, both removed on drop (even when the test fails), and a scrape parser.

pub mod artefacts;
pub mod cgroups;
pub mod held;
pub mod hidden;
pub mod identities;
pub mod kernel_resets;
pub mod mix;
pub mod tls;
pub mod watch;
pub mod workload;

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::{fd::AsRawFd, unix::process::CommandExt},
    panic::Location,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    sync::{mpsc, Condvar, Mutex},
    time::{Duration, Instant},
};

pub const TCPMON: &str = env!("CARGO_BIN_EXE_tcpmon");
/// The longest any wait in these tests lasts on this machine: start-up, a scrape, a tail line.
const BASE_TIMEOUT: Duration = Duration::from_secs(30);

/// How much slower than this machine the tests run, from `TCPMON_TEST_TIME_SCALE` (default 1).
/// `cargo xtask vm-test` sets it in its guests, whose CPU qemu emulates in software; its value
/// there is measured (see `xtask/src/vm/mod.rs`). Waits scale with it; no assertion on a
/// duration does.
pub fn time_scale() -> f64 {
    std::env::var("TCPMON_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|scale| *scale >= 1.0)
        .unwrap_or(1.0)
}

/// `wait` on this machine, scaled by [`time_scale`].
pub fn scaled(wait: Duration) -> Duration {
    wait.mul_f64(time_scale())
}

/// The limit of every wait for something that must happen: start-up, a scrape, a tail line.
pub fn timeout() -> Duration {
    scaled(BASE_TIMEOUT)
}

/// Fails the test unless it runs as root: these tests load eBPF programs and create namespaces.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "privileged test: run the suite as root (`sudo cargo xtask test`)"
    );
}

/// A network namespace made for one test, with loopback up; deleted on drop. It holds its
/// test module's turn while it lives (see [`ModuleTurn`]).
pub struct NetNs {
    pub name: String,
    _turn: ModuleTurn,
}

impl NetNs {
    #[track_caller]
    pub fn new() -> NetNs {
        let turn = ModuleTurn::wait(Location::caller().file());
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tcpmon-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = NetNs { name, _turn: turn };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Sets a per-namespace sysctl; it goes away with the namespace.
    pub fn sysctl(&self, name: &str, value: &str) {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.name,
                "sysctl",
                "-qw",
                &format!("{name}={value}"),
            ],
        );
    }

    /// One of the namespace's TCP counters as `nstat` names them (`TcpRetransSegs`,
    /// `TcpExtTCPSynRetrans`, ...): the kernel's own count, a ground truth.
    pub fn tcp_counter(&self, name: &str) -> u64 {
        let out = run("ip", &["netns", "exec", &self.name, "nstat", "-asz", name]);
        out.lines()
            .filter_map(|l| l.strip_prefix(name))
            .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// What the kernel says about this namespace when counters disagree with a workload:
    /// sockets not yet in TIME_WAIT or LISTEN (a retransmission still pending) and the TCP
    /// error counters (drops, aborts, retransmissions). Printed by failing exactness tests.
    pub fn diagnose(&self) -> String {
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &self.name];
            all.extend_from_slice(args);
            Command::new("ip")
                .args(&all)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_else(|e| format!("{args:?}: {e}\n"))
        };
        let sockets = exec(&[
            "ss",
            "-tanoi",
            "exclude",
            "time-wait",
            "exclude",
            "listening",
        ]);
        let counters: String = exec(&["nstat", "-asz"])
            .lines()
            .filter(|l| {
                let value = l.split_whitespace().nth(1).unwrap_or("0");
                value != "0"
                    && [
                        "Abort", "Retrans", "Drop", "Overflow", "Timeout", "Prune", "Reset",
                    ]
                    .iter()
                    .any(|word| l.contains(word))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let softnet = std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
        format!(
            "sockets still changing state in {}:\n{sockets}\nTCP error counters:\n{counters}\n\
             /proc/net/softnet_stat (column 2: backlog drops):\n{softnet}",
            self.name
        )
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

/// Which test module's tests may make network namespaces now, and how many of them hold one.
struct Turns {
    module: Option<String>,
    holders: usize,
}

static TURNS: Mutex<Turns> = Mutex::new(Turns {
    module: None,
    holders: 0,
});
static TURN_FREED: Condvar = Condvar::new();

/// A test module's turn: while one is held, tests of other modules wait before making a
/// network namespace. Tests of one module share the turn and run in parallel, as when every
/// module was a test binary of its own and cargo ran the binaries one after another: the storm
/// and the soak load the machine, and the memory, timing and host-wide counts of the others
/// assume no other module's workload runs beside them.
struct ModuleTurn;

impl ModuleTurn {
    /// Waits for the turn of the module in source file `file`.
    fn wait(file: &str) -> ModuleTurn {
        let module = Path::new(file)
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let mut turns = TURNS.lock().unwrap_or_else(|e| e.into_inner());
        while turns.module.as_ref().is_some_and(|m| *m != module) {
            turns = TURN_FREED.wait(turns).unwrap_or_else(|e| e.into_inner());
        }
        turns.module = Some(module);
        turns.holders += 1;
        ModuleTurn
    }
}

impl Drop for ModuleTurn {
    fn drop(&mut self) {
        let mut turns = TURNS.lock().unwrap_or_else(|e| e.into_inner());
        turns.holders -= 1;
        if turns.holders == 0 {
            turns.module = None;
            TURN_FREED.notify_all();
        }
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

/// Raises this process's soft limit on open files to its hard limit, for tests that open
/// a thousand sockets at once.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
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
    /// Where `tcpmon tail` reaches this agent.
    pub tail_socket: String,
    pub program_id: u32,
    /// stderr lines after the start-up line, collected by a reader thread.
    stderr: mpsc::Receiver<String>,
    pub startup_line: String,
    /// `tcpmon: note:` lines printed before it: features this kernel lacks.
    pub notes: Vec<String>,
}

impl Agent {
    /// Starts the agent counting only `netns`, and waits until it serves.
    pub fn start(netns: &NetNs) -> Agent {
        Agent::start_with(netns, &[])
    }

    /// As [`Agent::start`], with more arguments for `tcpmon agent` (for example
    /// `--web-config FILE`).
    pub fn start_with(netns: &NetNs, args: &[&str]) -> Agent {
        Agent::launch(netns, args, None, true)
    }

    /// As [`Agent::start_with`], counting every network namespace (no `--netns`); `netns`
    /// only names the tail socket.
    pub fn start_everywhere(netns: &NetNs, args: &[&str]) -> Agent {
        Agent::launch(netns, args, None, false)
    }

    /// As [`Agent::start_with`], with the soft limit on open files lowered to `soft` in the
    /// agent (systemd's default is 1,024), to see that the agent raises it.
    pub fn start_with_open_files(netns: &NetNs, args: &[&str], soft: u64) -> Agent {
        Agent::launch(netns, args, Some(soft), true)
    }

    fn launch(netns: &NetNs, args: &[&str], soft_open_files: Option<u64>, only: bool) -> Agent {
        let addr = free_addr();
        let tail_socket = format!("/run/{}.sock", netns.name);
        let mut command = Command::new(TCPMON);
        command.args(["agent", "--listen", &addr.to_string()]);
        if only {
            command.args(["--netns", &netns.path()]);
        }
        command
            .args(["--tail-socket", &tail_socket])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(soft) = soft_open_files {
            // SAFETY: only async-signal-safe calls (getrlimit, setrlimit) between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let mut limit = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
                    limit.rlim_cur = soft.min(limit.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                    Ok(())
                })
            };
        }
        let mut child = command.spawn().expect("spawn tcpmon agent");
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
            addr: "0.0.0.0:0".parse().expect("placeholder"),
            tail_socket,
            program_id: 0,
            stderr: rx,
            startup_line: String::new(),
            notes: Vec::new(),
        };
        let line = loop {
            let line = agent
                .stderr
                .recv_timeout(timeout())
                .expect("agent printed its start-up line");
            if !line.starts_with("tcpmon: note: ") {
                break line;
            }
            agent.notes.push(line);
        };
        agent.program_id = line
            .strip_prefix("tcpmon: program ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("unexpected start-up line: {line}"));
        agent.addr = line
            .split("serving http://")
            .nth(1)
            .or_else(|| line.split("serving https://").nth(1))
            .and_then(|rest| rest.split('/').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in start-up line: {line}"));
        agent.startup_line = line;
        agent
    }

    /// The agent's process id, for /proc.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent still running").id()
    }

    /// A line of the agent's `/proc/PID/status` or `/proc/PID/limits`, by its label.
    pub fn proc_line(&self, file: &str, label: &str) -> String {
        proc_line(self.pid(), file, label)
    }

    pub fn scrape(&self) -> Scrape {
        Scrape::parse(&http_get(self.addr, "/metrics"))
    }

    /// The events of `tcpmon tail --recent -o json ARGS`.
    pub fn recent(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all = vec![
            "tail",
            "--recent",
            "-o",
            "json",
            "--socket",
            &self.tail_socket,
        ];
        all.extend(args);
        run(TCPMON, &all)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// Sends SIGTERM and waits; returns the exit status and what it printed meanwhile.
    pub fn stop(&mut self) -> (ExitStatus, Vec<String>) {
        let mut child = self.child.take().expect("agent still running");
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + timeout();
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
    /// SIGTERM, so the agent removes its tail socket and detaches; SIGKILL if it hangs.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + scaled(Duration::from_secs(5));
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.tail_socket);
    }
}

/// A line of `/proc/PID/FILE`, by its label.
pub fn proc_line(pid: u32, file: &str, label: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/{file}: {e}"));
    text.lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label} in /proc/{pid}/{file}"))
        .to_string()
}

/// A process's resident memory (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let line = proc_line(pid, "status", "VmRSS:");
    line.split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("unexpected {line}"))
}

/// A minimal HTTP/1.0 GET; returns the body. Panics on a non-200 answer.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, timeout()).expect("connect to agent");
    stream.set_read_timeout(Some(timeout())).expect("timeout");
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
    /// Every series, except that those with a `workload` label are summed over it (the label
    /// dropped): what a test that is not about workloads asserts.
    pub series: BTreeMap<String, f64>,
    /// The series with a `workload` label, as the agent wrote them.
    pub by_workload: BTreeMap<String, f64>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut series = BTreeMap::new();
        let mut by_workload = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (name, value) = line.rsplit_once(' ').expect("series line");
            let value: f64 = value.parse().expect("numeric value");
            match name.find(",workload=\"") {
                Some(at) => {
                    by_workload.insert(name.to_string(), value);
                    let end = name[at + 11..].find('"').expect("a quoted value") + at + 12;
                    let summed = format!("{}{}", &name[..at], &name[end..]);
                    *series.entry(summed).or_insert(0.0) += value;
                }
                None => {
                    series.insert(name.to_string(), value);
                }
            }
        }
        Scrape {
            text: text.to_string(),
            series,
            by_workload,
        }
    }

    /// Value of a series, 0 when absent (tcpmon omits counters that never moved).
    pub fn get(&self, series: &str) -> f64 {
        self.series.get(series).copied().unwrap_or(0.0)
    }

    /// Every non-zero series of `metric`, keyed by the values of `labels` (in that order).
    pub fn by_labels(&self, metric: &str, labels: &[&str]) -> BTreeMap<Vec<String>, u64> {
        self.series
            .iter()
            .filter_map(|(k, v)| {
                let inner = k
                    .strip_prefix(metric)?
                    .strip_prefix('{')?
                    .strip_suffix('}')?;
                let value_of = |name: &str| {
                    let start = inner.find(&format!("{name}=\""))? + name.len() + 2;
                    let end = inner[start..].find('"')? + start;
                    Some(inner[start..end].to_string())
                };
                let key: Option<Vec<String>> = labels.iter().map(|l| value_of(l)).collect();
                Some((key?, *v as u64))
            })
            .filter(|(_, v)| *v > 0)
            .collect()
    }

    /// The series a workload's [`workload::Expected`] describes, read from this scrape.
    pub fn observed(&self) -> workload::Expected {
        workload::Expected {
            transitions: self.by_labels(
                "tcpmon_state_transitions_total",
                &["family", "old_state", "new_state"],
            ),
            dwell: self.by_labels("tcpmon_state_duration_seconds_count", &["state"]),
            handshakes: self.by_labels("tcpmon_handshakes_total", &["side", "result", "port"]),
            handshake_times: self
                .by_labels("tcpmon_handshake_duration_seconds_count", &["side", "port"]),
            teardowns: self.by_labels("tcpmon_teardowns_total", &["initiator", "kind", "port"]),
            untracked: self.get("tcpmon_state_duration_unmeasured_total{reason=\"untracked\"}")
                as u64,
        }
    }

    /// `tcpmon_sockets{state}` for every state.
    pub fn sockets(&self) -> BTreeMap<String, u64> {
        self.series
            .iter()
            .filter_map(|(k, v)| {
                let state = k
                    .strip_prefix("tcpmon_sockets{state=\"")?
                    .strip_suffix("\"}")?;
                Some((state.to_string(), *v as u64))
            })
            .collect()
    }
}

/// Scrapes until the scrape shows `expected` (the last ACKs may still be in flight when a
/// workload returns) or the timeout passes; returns the last scrape.
pub fn settle(agent: &Agent, expected: &workload::Expected) -> Scrape {
    let deadline = Instant::now() + timeout();
    loop {
        let scrape = agent.scrape();
        if scrape.observed() == *expected || Instant::now() > deadline {
            return scrape;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `workload` in a fresh namespace under a fresh agent (started with `args`) and checks
/// every transition, dwell count, handshake, handshake time and teardown series exactly, and
/// that the per-socket map is empty again. Returns the agent and namespace for more checks.
#[track_caller]
pub fn assert_exact(
    args: &[&str],
    workload: impl FnOnce() + Send,
    expected: &workload::Expected,
) -> (Agent, NetNs) {
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start_with(&ns, args);
    assert_exact_in(&agent, &ns, workload, expected);
    (agent, ns)
}

/// [`assert_exact`] with an agent and namespace the caller set up.
pub fn assert_exact_in(
    agent: &Agent,
    ns: &NetNs,
    workload: impl FnOnce() + Send,
    expected: &workload::Expected,
) {
    let before = agent.scrape().observed();
    assert_eq!(before, workload::Expected::default(), "nothing counted yet");
    let hidden = hidden::HiddenTransitions::observe();
    ns.run(workload);
    let after = settle(agent, expected);
    assert_no_missed_runs(&after);
    let observed = after.observed();
    if observed != *expected {
        eprintln!("{}", ns.diagnose());
        eprintln!("series that differ from the ground truth (observed vs expected):");
        for line in differences(&observed, expected) {
            eprintln!("  {line}");
        }
        eprintln!("the agent's bookkeeping at the last scrape:");
        for line in after.text.lines().filter(|l| {
            !l.starts_with('#')
                && ["tracked_sockets", "unmeasured", "_runs", "untracked"]
                    .iter()
                    .any(|word| l.contains(word))
        }) {
            eprintln!("  {line}");
        }
        hidden.report();
        let unseen = unseen(&after, &hidden);
        if unseen > 0 {
            assert_loss_is_explained(&observed, expected, unseen);
            return;
        }
    }
    assert_eq!(observed.transitions, expected.transitions, "transitions");
    assert_eq!(observed.dwell, expected.dwell, "dwell histogram counts");
    assert_eq!(observed.handshakes, expected.handshakes, "handshakes");
    assert_eq!(
        observed.handshake_times, expected.handshake_times,
        "handshake times"
    );
    assert_eq!(observed.teardowns, expected.teardowns, "teardowns");
    assert_eq!(
        observed.untracked, expected.untracked,
        "untracked transitions"
    );
    assert_eq!(
        after.get("tcpmon_tracked_sockets"),
        0.0,
        "every socket closed"
    );
    assert_eq!(after.get("tcpmon_tracked_sockets_evicted_total"), 0.0);
    for series in [
        "tcpmon_state_duration_unmeasured_total{reason=\"stale_entry\"}",
        "tcpmon_handshake_duration_unmeasured_total{side=\"client\"}",
        "tcpmon_handshake_duration_unmeasured_total{side=\"server\"}",
    ] {
        assert_eq!(after.get(series), 0.0, "{series}");
    }
}

/// The labelled counters of `e` by metric, in the order the assertions check them.
fn series(e: &workload::Expected) -> [(&'static str, &BTreeMap<workload::Labels, u64>); 5] {
    [
        ("transitions", &e.transitions),
        ("dwell counts", &e.dwell),
        ("handshakes", &e.handshakes),
        ("handshake times", &e.handshake_times),
        ("teardowns", &e.teardowns),
    ]
}

/// Every series whose observed value differs from the expected one, as `metric{labels}: seen
/// vs truth`.
fn differences(observed: &workload::Expected, expected: &workload::Expected) -> Vec<String> {
    let mut lines = Vec::new();
    let mut compare = |metric: &str,
                       seen: &BTreeMap<workload::Labels, u64>,
                       truth: &BTreeMap<workload::Labels, u64>| {
        let labels: std::collections::BTreeSet<_> = seen.keys().chain(truth.keys()).collect();
        for label in labels {
            let (s, t) = (seen.get(label), truth.get(label));
            if s != t {
                let (s, t) = (s.copied().unwrap_or(0), t.copied().unwrap_or(0));
                lines.push(format!("{metric}{label:?}: {s} vs {t}"));
            }
        }
    };
    for ((metric, seen), (_, truth)) in series(observed).into_iter().zip(series(expected)) {
        compare(metric, seen, truth);
    }
    if observed.untracked != expected.untracked {
        lines.push(format!(
            "untracked: {} vs {}",
            observed.untracked, expected.untracked
        ));
    }
    lines
}

/// Transitions the program can have missed without a defect of its own, host-wide: those the
/// kernel hid from BPF (made under PID 1, see `hidden`). Each is one transition at most missing
/// from a namespace's counters. Runs the kernel skipped (an interrupt that landed while the
/// program ran for another transition on the same CPU) are not among them: the cover program
/// counts those, and this asserts that it did.
pub fn unseen(scrape: &Scrape, hidden: &hidden::HiddenTransitions) -> u64 {
    assert_no_missed_runs(scrape);
    hidden.count()
}

/// Every run the kernel skipped was counted by the cover program: no transition missed.
#[track_caller]
pub fn assert_no_missed_runs(scrape: &Scrape) {
    assert_eq!(
        scrape.get("tcpmon_bpf_program_missed_runs_total"),
        0.0,
        "transitions neither the program nor its cover counted ({} covered)",
        scrape.get("tcpmon_bpf_program_covered_runs_total")
    );
}

/// The contract when the kernel kept transitions from the program (rare, more likely under
/// load; see [`unseen`]): nothing is invented, and no more is missing than the kernel kept
/// away. No series may exceed the ground truth, and at most `unseen` transitions may be
/// missing; what a missing transition does downstream (an entry found stale, a socket left
/// untracked) lands in the unmeasured counters, which are not checked here.
fn assert_loss_is_explained(
    observed: &workload::Expected,
    expected: &workload::Expected,
    unseen: u64,
) {
    eprintln!(
        "the kernel kept {unseen} transitions from the program: checking that no more are missing"
    );
    let at_most = |what: &str,
                   seen: &BTreeMap<workload::Labels, u64>,
                   truth: &BTreeMap<workload::Labels, u64>| {
        for (labels, n) in seen {
            let bound = truth.get(labels).copied().unwrap_or(0);
            assert!(
                *n <= bound,
                "{what} {labels:?}: {n} counted, {bound} happened"
            );
        }
    };
    for ((what, seen), (_, truth)) in series(observed).into_iter().zip(series(expected)) {
        at_most(what, seen, truth);
    }
    let total = |m: &BTreeMap<workload::Labels, u64>| m.values().sum::<u64>();
    let lost = total(&expected.transitions) - total(&observed.transitions);
    assert!(
        lost <= unseen,
        "{lost} transitions missing, but the kernel kept only {unseen} from the program"
    );
}

/// Whether the program with `id` is gone from the kernel within 5 s. A stopped agent has
/// closed its link and program; the kernel frees a tracing program after an RCU grace period,
/// so `bpftool` may still list it for a moment.
pub fn program_unloaded(id: &str) -> bool {
    let deadline = Instant::now() + scaled(Duration::from_secs(5));
    loop {
        let shown = std::process::Command::new("bpftool")
            .args(["prog", "show", "id", id])
            .output()
            .expect("bpftool");
        if !shown.status.success() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ids of the links attached to the program with `id`, read with `BPF_LINK_GET_NEXT_ID`
/// and `BPF_LINK_GET_FD_BY_ID` one link at a time. Other tests attach and detach links
/// meanwhile: a link that goes (or is not settled yet) between listing and opening is skipped
/// rather than failing the listing, as `bpftool link show` does ("can't get link by id").
pub fn links_to_program(id: &str) -> Vec<u32> {
    let id: u32 = id.parse().expect("a program id");
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|link| link.program_id() == id)
        .map(|link| link.id())
        .collect()
}

/// Whether this kernel names its reset reasons (`enum sk_rst_reason`, Linux 6.10+): then it
/// also traces resets sent for segments that match no socket.
pub fn kernel_names_reset_reasons() -> bool {
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").expect("kernel BTF");
    btf.windows(15).any(|w| w == b"\0sk_rst_reason\0")
}

/// Sockets per state in `ns` as `ss -tan` reports them, named as tcpmon names states, with
/// every state present; time-wait mini-sockets in their FIN_WAIT2 substate count as TIME_WAIT.
pub fn ss_counts(ns: &NetNs) -> BTreeMap<String, u64> {
    let names = [
        ("ESTAB", "ESTABLISHED"),
        ("SYN-SENT", "SYN_SENT"),
        ("SYN-RECV", "SYN_RECV"),
        ("FIN-WAIT-1", "FIN_WAIT1"),
        ("FIN-WAIT-2", "FIN_WAIT2"),
        ("TIME-WAIT", "TIME_WAIT"),
        ("UNCONN", "CLOSE"),
        ("CLOSE-WAIT", "CLOSE_WAIT"),
        ("LAST-ACK", "LAST_ACK"),
        ("LISTEN", "LISTEN"),
        ("CLOSING", "CLOSING"),
    ];
    let mut counts: BTreeMap<String, u64> = names
        .iter()
        .map(|(_, ours)| (ours.to_string(), 0))
        .collect();
    let out = run("ip", &["netns", "exec", &ns.name, "ss", "-tanoH"]);
    for line in out.lines() {
        let state = line.split_whitespace().next().unwrap_or_default();
        let (_, ours) = names
            .iter()
            .find(|(ss, _)| *ss == state)
            .unwrap_or_else(|| panic!("unknown ss state {state}"));
        // An orphaned socket in FIN_WAIT2 is a time-wait mini-socket: the kernel (and tcpmon)
        // counts it as a time-wait socket, ss shows its substate.
        let ours = if line.contains("timer:(timewait") {
            "TIME_WAIT"
        } else {
            ours
        };
        *counts.get_mut(ours).expect("listed") += 1;
    }
    counts
}

/// Scrapes until `done(scrape)` holds or the timeout passes; returns the last scrape.
pub fn scrape_until(agent: &Agent, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + timeout();
    loop {
        let scrape = agent.scrape();
        if done(&scrape) || Instant::now() > deadline {
            return scrape;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines `out` gives, as they come, on a channel.
pub fn lines_of(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if send.send(line.trim().to_string()).is_err() {
                break;
            }
        }
    });
    receive
}
