//! `cargo xtask cost`: the eBPF program's kernel cost per transition (run_time_ns / run_cnt
//! with kernel.bpf_stats_enabled=1) under a connection storm, and the storm's connection rate
//! with and without the agent, run back to back in one invocation.
use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::storm;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
const WORKERS: usize = 2;

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

/// The agent, killed on drop.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
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

fn start_agent() -> anyhow::Result<(Agent, u32)> {
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut child = Command::new("target/release/tcpmon")
        .args(["agent", "--listen", &addr.to_string()])
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
    Ok((agent, id))
}

pub fn measure(duration: Duration) -> anyhow::Result<()> {
    let ns = NetNs::new()?;
    let _stats = Sysctl::set(STATS_SYSCTL, "1")?;
    let secs = duration.as_secs_f64();

    let baseline = storm::run(&ns.path(), WORKERS, duration)?;
    let (agent, id) = start_agent()?;
    let (time_before, count_before) = prog_stats(id)?;
    let traced = storm::run(&ns.path(), WORKERS, duration)?;
    let (time_after, count_after) = prog_stats(id)?;
    drop(agent);

    let runs = count_after - count_before;
    let ns_per_run = (time_after - time_before) as f64 / runs.max(1) as f64;
    let kernel = command("uname", &["-r"])?;
    println!(
        "kernel {}, {WORKERS} storm threads, {secs:.0} s per run, server closes first",
        kernel.trim()
    );
    println!("| run | connections/s | ratio |");
    println!("|---|---|---|");
    println!("| no agent | {:.0} | 1.000 |", baseline as f64 / secs);
    println!(
        "| tcpmon agent | {:.0} | {:.3} |",
        traced as f64 / secs,
        traced as f64 / baseline.max(1) as f64
    );
    println!(
        "program runs: {runs} (storm: {} transitions expected, 10 per connection; the rest is host traffic)",
        traced * 10
    );
    println!("kernel cost: {ns_per_run:.1} ns per transition (run_time_ns / run_cnt)");
    Ok(())
}
