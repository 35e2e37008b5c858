//! `cargo xtask busy-node`: what each agent costs at rest, and how long its scrapes take, on a
//! quiet host and then on a node like a Kubernetes node: `--processes` sleeping processes in
//! all, `--namespaces` network namespaces, each with a process in it, a listener on port 8080
//! and `--connections` established connections to it. The agents are measured one after the
//! other on the same node in the same run, so their figures compare. A quiet host after a
//! 30,000-connection storm (its time-wait sockets left) is measured too.
use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    harness::{cpu_seconds, peak_rss, scrape, start_agent_line, NetNs, Process},
    report::median_interval,
    storm::{self, in_netns, Workload},
};

/// The node, as the bench builds it.
pub struct Shape {
    pub processes: usize,
    pub namespaces: usize,
    pub connections: usize,
}

/// What one agent cost on one node.
struct Measured {
    node: String,
    agent: String,
    /// CPU time over wall time at rest, in per cent of one CPU.
    rest_percent: f64,
    scrapes_ms: Vec<f64>,
    rss_mib: f64,
}

/// Connections of the storm before the "after a storm" measurement (TIME_WAIT left behind).
const STORM_CONNECTIONS: u64 = 30_000;
/// Scrapes timed per agent and node.
const SCRAPES: usize = 50;
/// How long after start-up the agent is left alone before its rest is measured.
const SETTLE: Duration = Duration::from_secs(5);

pub fn run(agents: &[String], shape: &Shape, rest: Duration) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for agent in agents {
        results.push(measure("quiet host", agent, rest)?);
    }
    // Time-wait sockets last 60 s: a storm before each agent, so that all of its scrapes see
    // them (and an agent that dumped them would pay for each).
    let storm_node = format!("quiet host after a {STORM_CONNECTIONS}-connection storm");
    for agent in agents {
        let ns = NetNs::new()?;
        let mut made = 0;
        while made < STORM_CONNECTIONS {
            made += storm::run(&ns.path(), 2, Duration::from_secs(1), Workload::ClientFirst)?;
        }
        results.push(measure(
            &storm_node,
            agent,
            rest.min(Duration::from_secs(20)),
        )?);
    }
    let node = BusyNode::build(shape)?;
    let name = format!(
        "{} processes, {} namespaces x (listener + {} connections)",
        shape.processes, shape.namespaces, shape.connections
    );
    for agent in agents {
        results.push(measure(&name, agent, rest)?);
    }
    drop(node);
    println!("| node | agent | CPU at rest | scrape p50 / p99 / max | peak RSS |");
    println!("|---|---|---|---|---|");
    for m in &results {
        let (p50, _, _) = median_interval(&m.scrapes_ms);
        let mut sorted = m.scrapes_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let p99 = sorted[(sorted.len() * 99).div_ceil(100) - 1];
        let max = sorted[sorted.len() - 1];
        println!(
            "| {} | `{}` | {:.2}% | {p50:.1} / {p99:.1} / {max:.1} ms | {:.1} MiB |",
            m.node, m.agent, m.rest_percent, m.rss_mib
        );
    }
    Ok(())
}

/// Starts `agent` (all namespaces, defaults), leaves it alone for [`SETTLE`] and then `rest`
/// while its CPU time is read, then times [`SCRAPES`] scrapes, one every 100 ms.
fn measure(node: &str, agent: &str, rest: Duration) -> anyhow::Result<Measured> {
    eprintln!("busy-node: {agent} on {node}");
    let (process, _, addr) = start_agent_line(agent)?;
    std::thread::sleep(SETTLE);
    let (cpu, started) = (cpu_seconds(process.pid()), Instant::now());
    std::thread::sleep(rest);
    let rest_percent = 100.0 * (cpu_seconds(process.pid()) - cpu) / started.elapsed().as_secs_f64();
    let mut scrapes_ms = Vec::with_capacity(SCRAPES);
    for _ in 0..SCRAPES {
        let began = Instant::now();
        let body = scrape(addr)?;
        scrapes_ms.push(began.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            body.contains("tcpmon_sockets{"),
            "a scrape without socket counts"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_mib = peak_rss(process.pid()) as f64 / (1 << 20) as f64;
    Ok(Measured {
        node: node.to_string(),
        agent: agent.to_string(),
        rest_percent,
        scrapes_ms,
        rss_mib,
    })
}

/// The busy node: removed on drop (processes killed, sockets closed, namespaces deleted).
struct BusyNode {
    _sleepers: Vec<Process>,
    _sockets: Vec<(TcpListener, Vec<TcpStream>, Vec<TcpStream>)>,
    _namespaces: Vec<NetNs>,
}

impl BusyNode {
    fn build(shape: &Shape) -> anyhow::Result<BusyNode> {
        eprintln!("busy-node: building the node");
        let mut namespaces = Vec::new();
        let mut sockets = Vec::new();
        let mut sleepers = Vec::new();
        for _ in 0..shape.namespaces {
            let ns = NetNs::new()?;
            let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
            let n = shape.connections;
            sockets.push(in_netns(&ns.path(), move || {
                let listener = TcpListener::bind(addr).context("listen on 8080")?;
                let clients: Vec<TcpStream> = (0..n)
                    .map(|_| TcpStream::connect(addr))
                    .collect::<Result<_, _>>()?;
                let servers: Vec<TcpStream> = (0..n)
                    .map(|_| listener.accept().map(|(s, _)| s))
                    .collect::<Result<_, _>>()?;
                Ok((listener, clients, servers))
            })?);
            // A process in the namespace, as a pod's pause container is.
            sleepers.push(sleeper(Some(&ns))?);
            namespaces.push(ns);
        }
        while sleepers.len() < shape.processes {
            sleepers.push(sleeper(None)?);
        }
        Ok(BusyNode {
            _sleepers: sleepers,
            _sockets: sockets,
            _namespaces: namespaces,
        })
    }
}

/// `sleep` for an hour, in `ns` if given.
fn sleeper(ns: Option<&NetNs>) -> anyhow::Result<Process> {
    let mut command = match ns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.path())).arg("sleep");
            c
        }
        None => Command::new("sleep"),
    };
    command
        .arg("3600")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(Process(command.spawn().context("starting sleep")?))
}
