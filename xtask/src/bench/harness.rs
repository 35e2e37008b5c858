//! What the benchmarks share: a network namespace, sysctls restored on exit, child processes
//! stopped on exit, BPF program statistics, and reads of the agent's /metrics.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _};

pub const TCPMON: &str = "target/release/tcpmon";
pub const TAIL_SOCKET: &str = "/run/tcpmon-bench.sock";

/// Sets a sysctl (a /proc/sys path) and restores it on drop.
pub struct Sysctl {
    path: &'static str,
    original: String,
}

impl Sysctl {
    pub fn set(path: &'static str, value: &str) -> anyhow::Result<Sysctl> {
        let original = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        std::fs::write(path, value).with_context(|| format!("writing {path}"))?;
        Ok(Sysctl { path, original })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, self.original.trim());
    }
}

/// A network namespace with loopback up, deleted on drop.
pub struct NetNs(String);

impl NetNs {
    pub fn new() -> anyhow::Result<NetNs> {
        // Unique in the process too: a benchmark may make one while another is alive.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("tcpmon-bench-{}-{n}", std::process::id());
        command("ip", &["netns", "add", &name])?;
        let ns = NetNs(name);
        command("ip", &["-n", &ns.0, "link", "set", "lo", "up"])?;
        // Client-first storms leave a TIME_WAIT per connection: use every port.
        command(
            "ip",
            &[
                "netns",
                "exec",
                &ns.0,
                "sysctl",
                "-qw",
                "net.ipv4.ip_local_port_range=10000 65535",
            ],
        )?;
        Ok(ns)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process stopped with SIGTERM on drop (the agent then removes its socket), SIGKILL
/// if it does not exit within 5 seconds.
pub struct Process(pub Child);

impl Process {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        for _ in 0..250 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn command(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("starting {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Ids of the tracepoint-like programs loaded now.
pub fn program_ids() -> anyhow::Result<Vec<u32>> {
    Ok(programs()?.into_iter().map(|(id, _)| id).collect())
}

/// (id, name) of the tracepoint-like programs loaded now.
pub fn programs() -> anyhow::Result<Vec<(u32, String)>> {
    let json = command("bpftool", &["prog", "show", "--json"])?;
    let progs: serde_json::Value = serde_json::from_str(&json).context("bpftool JSON")?;
    Ok(progs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            let kind = p["type"].as_str().unwrap_or_default();
            kind == "tracepoint" || kind == "raw_tracepoint" || kind == "tracing"
        })
        .filter_map(|p| {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            p["id"].as_u64().map(|id| (id as u32, name))
        })
        .collect())
}

/// (run_time_ns summed over the programs, the highest run_cnt among them). Every program of a
/// contender runs once per transition (tcpmon's main program and its cover both do), so the
/// second is the transitions and the first what they cost.
pub fn program_stats(ids: &[u32]) -> anyhow::Result<(u64, u64)> {
    let mut total = (0, 0);
    for id in ids {
        let json = command(
            "bpftool",
            &["prog", "show", "id", &id.to_string(), "--json"],
        )?;
        let v: serde_json::Value = serde_json::from_str(&json).context("bpftool JSON")?;
        total.0 += v["run_time_ns"].as_u64().unwrap_or(0);
        total.1 = total.1.max(v["run_cnt"].as_u64().unwrap_or(0));
    }
    Ok(total)
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces): utime is the 12th, stime 13th.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Peak resident memory of a process in bytes (VmHWM).
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Starts `tcpmon agent` with `args`; returns it, its program id and its address.
pub fn start_agent(args: &[&str]) -> anyhow::Result<(Process, u32, SocketAddr)> {
    start_agent_from(TCPMON, args)
}

/// [`start_agent_from`] given as one command line: an agent binary and arguments for
/// `tcpmon agent` (`"target/release/tcpmon --max-workloads 0"`).
pub fn start_agent_line(line: &str) -> anyhow::Result<(Process, u32, SocketAddr)> {
    let mut words = line.split_whitespace();
    let binary = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    start_agent_from(binary, &args)
}

/// [`start_agent`] with the agent binary at `binary` (another build, for a comparison).
pub fn start_agent_from(binary: &str, args: &[&str]) -> anyhow::Result<(Process, u32, SocketAddr)> {
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut child = Command::new(binary)
        .args([
            "agent",
            "--listen",
            &addr.to_string(),
            "--tail-socket",
            TAIL_SOCKET,
        ])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {binary}"))?;
    let stderr = child.stderr.take().context("agent stderr")?;
    let agent = Process(child);
    // The start-up line, after any notes about the kernel (such as the one on kernels that
    // hide interrupt work on top of PID 1 from BPF).
    let mut stderr = BufReader::new(stderr);
    let mut line = String::new();
    while line.is_empty() || line.starts_with("tcpmon: note: ") {
        line.clear();
        if stderr.read_line(&mut line)? == 0 {
            anyhow::bail!("the agent exited before starting");
        }
    }
    let id = line
        .strip_prefix("tcpmon: program ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|id| id.parse().ok())
        .with_context(|| format!("unexpected agent output: {line}"))?;
    Ok((agent, id, addr))
}

/// A `tcpmon tail -o json` client (with `filter` arguments) writing to /dev/null, once the
/// agent has counted it.
pub fn start_tail(agent: SocketAddr, filter: &[&str]) -> anyhow::Result<Process> {
    let tail = Process(
        Command::new(TCPMON)
            .args(["tail", "--socket", TAIL_SOCKET, "-o", "json"])
            .args(filter)
            .stdout(Stdio::null())
            .spawn()
            .context("starting tcpmon tail")?,
    );
    while metric(agent, "tcpmon_tail_clients")? < 1.0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(tail)
}

/// The body of the agent's /metrics.
pub fn scrape(agent: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(agent)?;
    write!(stream, "GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

/// A metric's value from the agent's /metrics (0 when absent).
pub fn metric(agent: SocketAddr, series: &str) -> anyhow::Result<f64> {
    Ok(scrape(agent)?
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0))
}
