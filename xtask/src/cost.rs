//! `cargo xtask cost`: the eBPF program's kernel cost per transition (run_time_ns / run_cnt
//! with kernel.bpf_stats_enabled=1) under a connection storm, and the storm's connection rate
//! with and without the agent, run back to back in one invocation.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::storm;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
const WORKERS: usize = 2;
const TAIL_SOCKET: &str = "/run/tcpmon-cost.sock";

/// Restores a sysctl on drop.
struct Sysctl {
    path: &'static str,
    original: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> anyhow::Result<Sysctl> {
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

/// A network namespace deleted on drop.
struct NetNs(String);

impl NetNs {
    fn new() -> anyhow::Result<NetNs> {
        let name = format!("tcpmon-cost-{}", std::process::id());
        command("ip", &["netns", "add", &name])?;
        let ns = NetNs(name);
        command("ip", &["-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process (the agent, a tail client), stopped with SIGTERM on drop so the agent
/// removes its socket; SIGKILL if it does not exit.
struct Agent(Child);

impl Drop for Agent {
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

fn command(program: &str, args: &[&str]) -> anyhow::Result<String> {
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

/// (run_time_ns, run_cnt) of a program.
fn prog_stats(id: u32) -> anyhow::Result<(u64, u64)> {
    let json = command(
        "bpftool",
        &["prog", "show", "id", &id.to_string(), "--json"],
    )?;
    let v: serde_json::Value = serde_json::from_str(&json).context("bpftool JSON")?;
    let field = |name: &str| v.get(name).and_then(|x| x.as_u64()).unwrap_or(0);
    Ok((field("run_time_ns"), field("run_cnt")))
}

fn start_agent() -> anyhow::Result<(Agent, u32, SocketAddr)> {
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut child = Command::new("target/release/tcpmon")
        .args([
            "agent",
            "--listen",
            &addr.to_string(),
            "--tail-socket",
            TAIL_SOCKET,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting target/release/tcpmon")?;
    let stderr = child.stderr.take().context("agent stderr")?;
    let agent = Agent(child);
    let mut line = String::new();
    BufReader::new(stderr).read_line(&mut line)?;
    let id = line
        .strip_prefix("tcpmon: program ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|id| id.parse().ok())
        .with_context(|| format!("unexpected agent output: {line}"))?;
    Ok((agent, id, addr))
}

/// A `tcpmon tail -o json` client writing to /dev/null, once the agent has counted it.
fn start_tail(agent: SocketAddr) -> anyhow::Result<Agent> {
    let tail = Agent(
        Command::new("target/release/tcpmon")
            .args(["tail", "--socket", TAIL_SOCKET, "-o", "json"])
            .stdout(Stdio::null())
            .spawn()
            .context("starting tcpmon tail")?,
    );
    while metric(agent, "tcpmon_tail_clients")? < 1.0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(tail)
}

/// A metric's value from the agent's /metrics (0 when absent).
fn metric(agent: SocketAddr, series: &str) -> anyhow::Result<f64> {
    let mut stream = TcpStream::connect(agent)?;
    write!(stream, "GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0))
}

pub fn measure(duration: Duration) -> anyhow::Result<()> {
    let ns = NetNs::new()?;
    let _stats = Sysctl::set(STATS_SYSCTL, "1")?;
    let secs = duration.as_secs_f64();

    let baseline = storm::run(&ns.path(), WORKERS, duration)?;
    let (agent, id, addr) = start_agent()?;
    let (time_before, count_before) = prog_stats(id)?;
    let traced = storm::run(&ns.path(), WORKERS, duration)?;
    let (time_after, count_after) = prog_stats(id)?;

    // The same storm with one tail client writing NDJSON to /dev/null.
    let tail = start_tail(addr)?;
    let (tail_time_before, tail_count_before) = prog_stats(id)?;
    let tailed = storm::run(&ns.path(), WORKERS, duration)?;
    let (tail_time_after, tail_count_after) = prog_stats(id)?;
    std::thread::sleep(Duration::from_secs(2)); // let the client drain
    let events = metric(addr, "tcpmon_events_total")?;
    let ring_full = metric(addr, "tcpmon_events_dropped_total{reason=\"ringbuf_full\"}")?;
    let slow = metric(addr, "tcpmon_events_dropped_total{reason=\"client_slow\"}")?;
    drop(tail);
    drop(agent);

    let per_run = |time: u64, count: u64| time as f64 / count.max(1) as f64;
    let kernel = command("uname", &["-r"])?;
    println!(
        "kernel {}, {WORKERS} storm threads, {secs:.0} s per run, server closes first, 10 transitions per connection",
        kernel.trim()
    );
    println!("| run | connections/s | ratio | kernel ns/transition |");
    println!("|---|---|---|---|");
    println!("| no agent | {:.0} | 1.000 | |", baseline as f64 / secs);
    let row = |name: &str, n: u64, ns: f64| {
        println!(
            "| {name} | {:.0} | {:.3} | {ns:.1} |",
            n as f64 / secs,
            n as f64 / baseline.max(1) as f64
        )
    };
    row(
        "tcpmon agent",
        traced,
        per_run(time_after - time_before, count_after - count_before),
    );
    row(
        "tcpmon agent + 1 tail client (NDJSON to /dev/null)",
        tailed,
        per_run(
            tail_time_after - tail_time_before,
            tail_count_after - tail_count_before,
        ),
    );
    let delivered = events - ring_full - slow;
    println!(
        "tail: {events:.0} events written ({:.0}/s), {delivered:.0} delivered, {ring_full:.0} lost in the kernel ring buffer, {slow:.0} lost in the client queue",
        events / secs
    );
    println!(
        "program runs in the agent run: {} (storm: {} transitions, the rest is host traffic)",
        count_after - count_before,
        traced * 10
    );
    Ok(())
}

/// `cargo xtask tail-rate`: the event rate one tail client (NDJSON to /dev/null) receives
/// without loss. Paced storms of rising rates run with the agent and the client attached;
/// each step reports the events written and lost.
pub fn tail_rate(step: Duration) -> anyhow::Result<()> {
    let ns = NetNs::new()?;
    let (agent, _id, addr) = start_agent()?;
    let tail = start_tail(addr)?;
    let lost = || -> anyhow::Result<f64> {
        Ok(
            metric(addr, "tcpmon_events_dropped_total{reason=\"ringbuf_full\"}")?
                + metric(addr, "tcpmon_events_dropped_total{reason=\"client_slow\"}")?,
        )
    };
    println!("| target events/s | events written | events/s | lost |");
    println!("|---|---|---|---|");
    let mut best = 0.0;
    for connections_per_second in [
        5_000.0, 10_000.0, 15_000.0, 20_000.0, 25_000.0, 30_000.0, 40_000.0, 50_000.0,
    ] {
        let (events_before, lost_before) = (metric(addr, "tcpmon_events_total")?, lost()?);
        storm::paced(
            &ns.path(),
            WORKERS,
            step,
            Some(connections_per_second / WORKERS as f64),
        )?;
        std::thread::sleep(Duration::from_secs(2)); // let the client drain
        let events = metric(addr, "tcpmon_events_total")? - events_before;
        let lost = lost()? - lost_before;
        let rate = events / step.as_secs_f64();
        println!(
            "| {:.0} | {events:.0} | {rate:.0} | {lost:.0} |",
            connections_per_second * 10.0
        );
        if lost == 0.0 {
            best = f64::max(best, rate);
        }
    }
    println!("highest rate with no event lost: {best:.0} events/s");
    drop(tail);
    drop(agent);
    Ok(())
}
