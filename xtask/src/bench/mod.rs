//! `cargo xtask bench`: tcpmon against no tracing and against its peers, side by side in one
//! run, on loopback storms inside a network namespace; writes docs/BENCHMARKS.md.
pub mod harness;
pub mod report;
pub mod storm;
pub mod tail_rate;

use std::{
    fmt::Write as _,
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use self::{
    harness::{
        cpu_seconds, metric, peak_rss, program_ids, program_stats, scrape, start_agent, start_tail,
        NetNs, Process, Sysctl,
    },
    storm::Workload,
};

const WORKERS: usize = 2;
const BPFTRACE: &str =
    "tracepoint:sock:inet_sock_set_state { @[args->oldstate, args->newstate] = count(); }";
/// A program that does nothing: what any tool on this classic tracepoint pays before its own
/// work (the kernel builds the trace record and runs the BPF dispatch for every transition).
const BPFTRACE_EMPTY: &str = "tracepoint:sock:inet_sock_set_state { }";

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Contender {
    Tcpmon,
    TcpmonTail,
    Tcpstates,
    Bpftrace,
    EmptyProgram,
}

impl Contender {
    const ALL: [Contender; 5] = [
        Contender::Tcpmon,
        Contender::TcpmonTail,
        Contender::Tcpstates,
        Contender::Bpftrace,
        Contender::EmptyProgram,
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::Tcpmon => "tcpmon agent",
            Contender::TcpmonTail => "tcpmon agent + 1 tail client (NDJSON to /dev/null)",
            Contender::Tcpstates => "libbpf-tools tcpstates (to /dev/null)",
            Contender::Bpftrace => "bpftrace, transitions counted in a map",
            Contender::EmptyProgram => "bpftrace, empty program (the tracepoint's own cost)",
        }
    }
}

/// A contender attached: its processes, its programs, and the agent's address if it has one.
struct Attached {
    processes: Vec<Process>,
    programs: Vec<u32>,
    agent: Option<SocketAddr>,
}

fn attach(contender: Contender) -> anyhow::Result<Attached> {
    let before = program_ids()?;
    let quiet = |program: &str, args: &[&str]| -> anyhow::Result<Process> {
        Ok(Process(
            Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {program}"))?,
        ))
    };
    let (processes, agent) = match contender {
        Contender::Tcpmon => {
            let (agent, _, addr) = start_agent(&[])?;
            (vec![agent], Some(addr))
        }
        Contender::TcpmonTail => {
            let (agent, _, addr) = start_agent(&[])?;
            let tail = start_tail(addr)?;
            // Dropped in order: the client first, so it does not report the agent gone.
            (vec![tail, agent], Some(addr))
        }
        Contender::Tcpstates => (vec![quiet("tcpstates", &[])?], None),
        Contender::Bpftrace => (vec![quiet("bpftrace", &["-e", BPFTRACE])?], None),
        Contender::EmptyProgram => (vec![quiet("bpftrace", &["-e", BPFTRACE_EMPTY])?], None),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let programs: Vec<u32> = program_ids()?
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        if !programs.is_empty() {
            // bpftrace and tcpstates print nothing when ready: give them a moment to attach.
            std::thread::sleep(Duration::from_millis(500));
            return Ok(Attached {
                processes,
                programs,
                agent,
            });
        }
        if Instant::now() > deadline {
            bail!("{} loaded no program", contender.name());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Totals of one contender on one workload over all rounds.
#[derive(Default)]
struct Totals {
    baseline: u64,
    connections: u64,
    run_time_ns: u64,
    runs: u64,
    cpu_seconds: f64,
    peak_rss: u64,
    tail_lost: f64,
}

fn measure(
    ns: &NetNs,
    workload: Workload,
    contender: Contender,
    duration: Duration,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    // A then B: no tracing, then the contender, so drift between runs cancels out.
    totals.baseline += storm::run(&ns.path(), WORKERS, duration, workload)?;
    let attached = attach(contender)?;
    let cpu = |a: &Attached| {
        a.processes
            .iter()
            .map(|p| cpu_seconds(p.pid()))
            .sum::<f64>()
    };
    let (time0, runs0) = program_stats(&attached.programs)?;
    let cpu0 = cpu(&attached);
    totals.connections += storm::run(&ns.path(), WORKERS, duration, workload)?;
    let (time1, runs1) = program_stats(&attached.programs)?;
    totals.cpu_seconds += cpu(&attached) - cpu0;
    totals.run_time_ns += time1 - time0;
    totals.runs += runs1 - runs0;
    for p in &attached.processes {
        totals.peak_rss = totals.peak_rss.max(peak_rss(p.pid()));
    }
    if let (Contender::TcpmonTail, Some(agent)) = (contender, attached.agent) {
        std::thread::sleep(Duration::from_secs(1)); // let the client drain
        totals.tail_lost +=
            metric(
                agent,
                "tcpmon_events_dropped_total{reason=\"ringbuf_full\"}",
            )? + metric(agent, "tcpmon_events_dropped_total{reason=\"client_slow\"}")?;
    }
    Ok(())
}

/// Scrape latencies (p50, p99) in seconds over `n` scrapes.
fn scrape_latency(agent: SocketAddr, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        scrape(agent)?;
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[n / 2], times[(n * 99 / 100).min(n - 1)]))
}

/// Runs the benchmark. With `only` (a development aid), measures just those contenders, prints
/// their ratios and kernel cost, and leaves docs/BENCHMARKS.md alone: the published table always
/// has every contender.
pub fn run(duration: Duration, rounds: usize, only: &[Contender]) -> anyhow::Result<()> {
    let ns = NetNs::new()?;
    let _stats = Sysctl::set("/proc/sys/kernel/bpf_stats_enabled", "1")?;
    let contenders = if only.is_empty() {
        &Contender::ALL[..]
    } else {
        only
    };
    let results = measure_all(&ns, contenders, duration, rounds)?;
    if !only.is_empty() {
        return Ok(());
    }
    let scrapes = scrape_latencies(&ns)?;
    let report = report(&results, scrapes, duration, rounds)?;
    report::write(&report)?;
    println!("{report}");
    Ok(())
}

/// The whole benchmark in one short round, without touching docs/BENCHMARKS.md: part of the
/// test suite, so that a change that breaks the benchmark or a contender fails there. Every
/// contender must have run its programs and let connections through.
pub fn smoke() -> anyhow::Result<()> {
    let ns = NetNs::new()?;
    let _stats = Sysctl::set("/proc/sys/kernel/bpf_stats_enabled", "1")?;
    let duration = Duration::from_secs(1);
    let results = measure_all(&ns, &Contender::ALL, duration, 1)?;
    for (workload, contender, totals) in &results {
        if totals.baseline == 0 || totals.connections == 0 || totals.runs == 0 {
            bail!(
                "bench smoke: {} / {}: {} connections untraced, {} traced, {} program runs",
                workload.name(),
                contender.name(),
                totals.baseline,
                totals.connections,
                totals.runs
            );
        }
    }
    let scrapes = scrape_latencies(&ns)?;
    println!("{}", report(&results, scrapes, duration, 1)?);
    Ok(())
}

type Results = Vec<(Workload, Contender, Totals)>;

fn measure_all(
    ns: &NetNs,
    contenders: &[Contender],
    duration: Duration,
    rounds: usize,
) -> anyhow::Result<Results> {
    let mut results = Vec::new();
    for workload in Workload::ALL {
        for &contender in contenders {
            let mut totals = Totals::default();
            for _ in 0..rounds {
                measure(ns, workload, contender, duration, &mut totals)?;
            }
            eprintln!(
                "bench: {} / {}: {:.3} of baseline, {:.0} ns/transition",
                workload.name(),
                contender.name(),
                totals.connections as f64 / totals.baseline.max(1) as f64,
                totals.run_time_ns as f64 / totals.runs.max(1) as f64
            );
            results.push((workload, contender, totals));
        }
    }
    Ok(results)
}

/// Scrape latency at the default port set after a storm, and with 256 labelled ports that all
/// saw traffic (the most series the agent can have).
fn scrape_latencies(ns: &NetNs) -> anyhow::Result<[(f64, f64); 2]> {
    let (agent, _, addr) = start_agent(&[])?;
    storm::run(
        &ns.path(),
        WORKERS,
        Duration::from_secs(2),
        Workload::ClientFirst,
    )?;
    let default = scrape_latency(addr, 200)?;
    drop(agent);
    let (agent, _, addr) = start_agent(&["--max-ports", "256"])?;
    let listeners = storm::listeners(&ns.path(), 9_001..=9_256)?;
    scrape(addr)?; // discovers the listeners
    storm::one_each(&ns.path(), &listeners)?;
    let maximum = scrape_latency(addr, 200)?;
    drop(agent);
    Ok([default, maximum])
}

fn report(
    results: &Results,
    scrapes: [(f64, f64); 2],
    duration: Duration,
    rounds: usize,
) -> anyhow::Result<String> {
    let mut r = String::new();
    writeln!(r, "{}", report::machine()?)?;
    writeln!(
        r,
        "\nEach cell: connections/s with the contender divided by connections/s without tracing, {rounds} interleaved pairs of {} s runs (no tracing, contender, no tracing, ...), {WORKERS} storm threads.\n",
        duration.as_secs()
    )?;
    write!(r, "| contender |")?;
    for w in Workload::ALL {
        write!(r, " {} |", w.name())?;
    }
    writeln!(r, "\n|---|---|---|---|---|")?;
    for c in Contender::ALL {
        write!(r, "| {} |", c.name())?;
        for w in Workload::ALL {
            let t = find(results, w, c);
            write!(
                r,
                " {:.3} |",
                t.connections as f64 / t.baseline.max(1) as f64
            )?;
        }
        writeln!(r)?;
    }
    writeln!(r, "\nPer contender, all workloads together:\n")?;
    writeln!(r, "| contender | kernel ns/transition | CPU s per million transitions | peak RSS | tail events lost |")?;
    writeln!(r, "|---|---|---|---|---|")?;
    for c in Contender::ALL {
        let (mut time, mut runs, mut cpu, mut rss, mut lost) = (0, 0, 0.0, 0, 0.0);
        for (_, _, t) in results.iter().filter(|(_, contender, _)| *contender == c) {
            time += t.run_time_ns;
            runs += t.runs;
            cpu += t.cpu_seconds;
            rss = rss.max(t.peak_rss);
            lost += t.tail_lost;
        }
        let lost = if c == Contender::TcpmonTail {
            format!("{lost:.0}")
        } else {
            "-".into()
        };
        writeln!(
            r,
            "| {} | {:.0} | {:.2} | {:.1} MiB | {lost} |",
            c.name(),
            time as f64 / runs.max(1) as f64,
            cpu / (runs.max(1) as f64 / 1e6),
            rss as f64 / (1 << 20) as f64
        )?;
    }
    let [(d50, d99), (m50, m99)] = scrapes;
    writeln!(r, "\n/metrics scrape latency over 200 scrapes:\n")?;
    writeln!(r, "| port set | p50 | p99 |\n|---|---|---|")?;
    writeln!(
        r,
        "| default (--max-ports 32) after a storm | {:.2} ms | {:.2} ms |",
        d50 * 1e3,
        d99 * 1e3
    )?;
    writeln!(
        r,
        "| maximum (256 labelled ports, all with traffic) | {:.2} ms | {:.2} ms |",
        m50 * 1e3,
        m99 * 1e3
    )?;
    Ok(r)
}

fn find(results: &[(Workload, Contender, Totals)], w: Workload, c: Contender) -> &Totals {
    results
        .iter()
        .find(|(rw, rc, _)| *rw == w && *rc == c)
        .map(|(_, _, t)| t)
        .expect("every pair measured")
}
