//! `cargo xtask bench`: tcpmon against no tracing and against its peers, side by side in one
//! run, on loopback storms inside a network namespace; writes docs/BENCHMARKS.md.
pub mod busy_node;
pub mod contender;
pub mod empty_program;
pub mod harness;
pub mod program_cost;
pub mod rate_blocks;
pub mod report;
pub mod storm;
pub mod tail_rate;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::bail;

pub use self::contender::Contender;
use self::{
    contender::{attach, Attached},
    harness::{cpu_seconds, metric, peak_rss, program_stats, scrape, start_agent, NetNs, Sysctl},
    report::{median_interval, report},
    storm::Workload,
};

const WORKERS: usize = 2;
pub const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// Runs with `kernel.bpf_stats_enabled=1` per (setting, contender); the median is reported.
const STATS_RUNS: usize = 3;

/// A workload and how it runs: pinned to one CPU in one thread, or in two threads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    workload: Workload,
    pinned: bool,
}

impl Setting {
    /// The pinned setting first: the one the targets are measured in.
    pub const ALL: [Setting; 5] = [
        Setting::pinned(Workload::ServerFirst),
        Setting::threads(Workload::ClientFirst),
        Setting::threads(Workload::ServerFirst),
        Setting::threads(Workload::Reset),
        Setting::threads(Workload::Refused),
    ];

    const fn pinned(workload: Workload) -> Setting {
        Setting {
            workload,
            pinned: true,
        }
    }

    const fn threads(workload: Workload) -> Setting {
        Setting {
            workload,
            pinned: false,
        }
    }

    pub fn name(self) -> String {
        if self.pinned {
            format!("1 CPU, {}", self.workload.name())
        } else {
            format!("{WORKERS} threads, {}", self.workload.name())
        }
    }

    fn storm(self, ns: &NetNs, duration: Duration) -> anyhow::Result<u64> {
        if self.pinned {
            storm::run_pinned(&ns.path(), duration, self.workload)
        } else {
            storm::run(&ns.path(), WORKERS, duration, self.workload)
        }
    }
}

/// One contender in one setting.
#[derive(Default)]
pub struct Totals {
    /// Connections with the contender over connections without, one per interleaved pair.
    pub ratios: Vec<f64>,
    /// From the run with `kernel.bpf_stats_enabled=1`.
    pub run_time_ns: u64,
    pub runs: u64,
    pub cpu_seconds: f64,
    pub peak_rss: u64,
    pub tail_lost: f64,
}

/// Connection rates with `kernel.bpf_stats_enabled=0` (the stats' two clock reads per run
/// cost every contender 20-60 ns), in `rounds` interleaved pairs (no tracing, then the
/// contender, attached for its run only), so that drift cancels out; then runs with the
/// stats on for the kernel's ns per transition and the contender's CPU (the median run).
fn measure(
    ns: &NetNs,
    setting: Setting,
    contender: Contender,
    duration: Duration,
    rounds: usize,
) -> anyhow::Result<Totals> {
    let mut totals = Totals::default();
    {
        let _off = Sysctl::set(STATS_SYSCTL, "0")?;
        for _ in 0..rounds {
            let baseline = setting.storm(ns, duration)?;
            let attached = attach(contender)?;
            let traced = setting.storm(ns, duration)?;
            totals.tail_lost += tail_lost(contender, &attached)?;
            drop(attached);
            totals.ratios.push(traced as f64 / baseline.max(1) as f64);
        }
    }
    let attached = attach(contender)?;
    if attached.programs.is_empty() {
        // No tracing at all (the A/A contender): no kernel cost to measure.
        return Ok(totals);
    }
    let _on = Sysctl::set(STATS_SYSCTL, "1")?;
    let cpu = |a: &Attached| {
        a.processes
            .iter()
            .map(|p| cpu_seconds(p.pid()))
            .sum::<f64>()
    };
    // Several runs, the median one kept: a single run's ns per transition strayed by up to a
    // third on a noisy machine.
    let mut samples = Vec::new();
    for _ in 0..STATS_RUNS {
        let (time0, runs0) = program_stats(&attached.programs)?;
        let cpu0 = cpu(&attached);
        setting.storm(ns, duration)?;
        let (time1, runs1) = program_stats(&attached.programs)?;
        samples.push((time1 - time0, runs1 - runs0, cpu(&attached) - cpu0));
    }
    samples.sort_by(|a, b| {
        let per = |s: &(u64, u64, f64)| s.0 as f64 / s.1.max(1) as f64;
        per(a).total_cmp(&per(b))
    });
    let (time, runs, cpu_seconds) = samples[samples.len() / 2];
    totals.cpu_seconds = cpu_seconds;
    totals.run_time_ns = time;
    totals.runs = runs;
    totals.peak_rss = attached
        .processes
        .iter()
        .map(|p| peak_rss(p.pid()))
        .max()
        .unwrap_or(0);
    Ok(totals)
}

/// Tail events the agent lost during a run (0 without a tail client).
fn tail_lost(contender: Contender, attached: &Attached) -> anyhow::Result<f64> {
    let Some(agent) = attached.agent.filter(|_| contender.has_tail()) else {
        return Ok(0.0);
    };
    std::thread::sleep(Duration::from_secs(1)); // let the client drain
    Ok(metric(
        agent,
        "tcpmon_events_dropped_total{reason=\"ringbuf_full\"}",
    )? + metric(agent, "tcpmon_events_dropped_total{reason=\"client_slow\"}")?)
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
pub fn run(
    duration: Duration,
    rounds: usize,
    only: &[Contender],
    pinned_only: bool,
) -> anyhow::Result<()> {
    let ns = NetNs::new()?;
    let contenders = if only.is_empty() {
        &Contender::ALL[..]
    } else {
        only
    };
    let settings = if pinned_only {
        &Setting::ALL[..1]
    } else {
        &Setting::ALL[..]
    };
    let results = measure_all(&ns, settings, contenders, duration, rounds)?;
    if !only.is_empty() || pinned_only {
        return Ok(());
    }
    let scrapes = scrape_latencies(&ns)?;
    let blocks = rate_blocks::of_agents(rate_blocks::BENCH_TOTAL)?;
    let report = report(&results, &blocks, scrapes, duration, rounds)?;
    report::write(&report)?;
    println!("{report}");
    Ok(())
}

/// The whole benchmark in one short round of two settings, without touching
/// docs/BENCHMARKS.md: part of the test suite, so that a change that breaks the benchmark or a
/// contender fails there. Every contender must have run its programs and let connections
/// through.
pub fn smoke() -> anyhow::Result<()> {
    let ns = NetNs::new()?;
    let duration = Duration::from_secs(1);
    let results = measure_all(&ns, &Setting::ALL[..2], &Contender::ALL, duration, 1)?;
    for (setting, contender, totals) in &results {
        let ran = totals.runs > 0 || *contender == Contender::NoTracing;
        if totals.ratios.iter().any(|r| *r <= 0.0) || !ran {
            bail!(
                "bench smoke: {} / {}: ratios {:?}, {} program runs",
                setting.name(),
                contender.name(),
                totals.ratios,
                totals.runs
            );
        }
    }
    let scrapes = scrape_latencies(&ns)?;
    let blocks = rate_blocks::of_agents(duration)?;
    if let Some(b) = blocks.iter().find(|b| b.median <= 0.0) {
        bail!("bench smoke: rate-blocks {}: median {}", b.name, b.median);
    }
    println!("{}", report(&results, &blocks, scrapes, duration, 1)?);
    Ok(())
}

pub type Results = Vec<(Setting, Contender, Totals)>;

fn measure_all(
    ns: &NetNs,
    settings: &[Setting],
    contenders: &[Contender],
    duration: Duration,
    rounds: usize,
) -> anyhow::Result<Results> {
    let mut results = Vec::new();
    for &setting in settings {
        for &contender in contenders {
            let totals = measure(ns, setting, contender, duration, rounds)?;
            let (median, low, high) = median_interval(&totals.ratios);
            eprintln!(
                "bench: {} / {}: {median:.3} of baseline (95% interval {low:.3}-{high:.3}), {:.0} ns/transition",
                setting.name(),
                contender.name(),
                totals.run_time_ns as f64 / totals.runs.max(1) as f64
            );
            let mut sorted = totals.ratios.clone();
            sorted.sort_by(f64::total_cmp);
            let sorted: Vec<String> = sorted.iter().map(|r| format!("{r:.3}")).collect();
            eprintln!("bench:   every pair's ratio, sorted: {}", sorted.join(" "));
            results.push((setting, contender, totals));
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
