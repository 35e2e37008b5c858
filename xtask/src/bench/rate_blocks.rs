//! `cargo xtask rate-blocks`: the connection rate with a program set attached over the rate
//! without, measured in short blocks that alternate within one pinned storm.
//!
//! The CPU's speed wanders on these machines by ±10-30% from one quarter-second to the next,
//! so `cargo xtask bench`, which starts and stops a contender between runs of a second,
//! resolves about 3% with 20 pairs (docs/BENCHMARKS.md). Here nothing is started between
//! blocks: the programs are loaded once, and only attached (a link per program, one system
//! call) before a block with and detached before one without. Blocks of 50 ms see nearly the
//! same CPU speed as their neighbours, and a minute gives 600 pairs.
//!
//! An agent's programs are taken from a running agent: its two programs on
//! `inet_sock_set_state` (the main one and its cover, attached in that order, as the agent
//! does) are opened by id, then the agent is stopped, which detaches its own links while the
//! programs and their maps stay loaded. The agent's other programs (resets, retransmissions)
//! are not attached: the storm fires none of them, and the agent does no work per transition
//! without a tail client. `--max-workloads 0` and the like are passed to the agent.
use std::{os::fd::OwnedFd, time::Duration};

use anyhow::Context as _;

use super::{
    empty_program,
    harness::{program_ids, programs, start_agent_line, NetNs, Sysctl, TCPMON},
    report::median_interval,
    storm, STATS_SYSCTL,
};

pub const NO_TRACING: &str = "no tracing either (A/A)";
pub const EMPTY: &str = "empty tp_btf program";

/// The agent's programs on the tracepoint, in the order they are attached
/// (`tcpmon_common::PROGRAM_NAME`, `COVER_PROGRAM_NAME`).
const AGENT_PROGRAMS: [&str; 2] = ["inet_sock_set_state", "inet_sock_set_state_cover"];

/// One contender's result: its name, and the median with its 95% interval of the pairs'
/// ratios (with over without).
pub struct BlockResult {
    pub name: String,
    pub pairs: usize,
    pub median: f64,
    pub low: f64,
    pub high: f64,
}

/// Measures, in turn, nothing against nothing (the A/A comparison: what the run resolves),
/// the empty `tp_btf` program (the floor), and each agent's programs, each for `total` in
/// pairs of `block`. Prints and returns the results.
pub fn run(
    agents: &[String],
    total: Duration,
    block: Duration,
) -> anyhow::Result<Vec<BlockResult>> {
    let ns = NetNs::new()?;
    let _stats = Sysctl::set(STATS_SYSCTL, "0")?;
    let pairs = ((total.as_secs_f64() / block.as_secs_f64() / 2.0) as usize).max(1);
    let mut contenders = vec![
        (NO_TRACING.to_string(), Vec::new()),
        (EMPTY.to_string(), vec![empty_program::load()?]),
    ];
    for agent in agents {
        contenders.push((agent.clone(), agent_programs(agent)?));
    }
    println!(
        "{pairs} pairs of {} ms blocks per contender, pinned storm, server closes first:",
        block.as_millis()
    );
    let mut results = Vec::new();
    for (name, programs) in &contenders {
        let mut links: Vec<OwnedFd> = Vec::new();
        let counts = storm::pinned_blocks(&ns.path(), block, pairs, |on| {
            links.clear();
            if on {
                for program in programs {
                    links.push(empty_program::attach_program(program)?);
                }
            }
            Ok(())
        })?;
        let ratios: Vec<f64> = counts
            .iter()
            .map(|&(off, on)| on as f64 / off.max(1) as f64)
            .collect();
        let (median, low, high) = median_interval(&ratios);
        let per_second = counts.iter().map(|&(off, _)| off).sum::<u64>() as f64
            / (pairs as f64 * block.as_secs_f64());
        println!(
            "{name}: {median:.3} of the untraced rate (95% interval {low:.3}-{high:.3}; \
             untraced {per_second:.0} connections/s)"
        );
        results.push(BlockResult {
            name: name.clone(),
            pairs,
            median,
            low,
            high,
        });
    }
    Ok(results)
}

/// Loads an agent's programs on the tracepoint, keeps them, and stops the agent.
fn agent_programs(agent: &str) -> anyhow::Result<Vec<OwnedFd>> {
    let before = program_ids()?;
    let (process, _, _) = start_agent_line(agent)?;
    let loaded = programs()?;
    let mut fds = Vec::new();
    for name in AGENT_PROGRAMS {
        let (id, _) = loaded
            .iter()
            .find(|(id, n)| n == name && !before.contains(id))
            .with_context(|| format!("{agent} loaded no program named {name}"))?;
        fds.push(empty_program::program_by_id(*id)?);
    }
    drop(process);
    Ok(fds)
}

/// How long `cargo xtask bench` runs rate-blocks per contender: 600 pairs of [`BLOCK_MS`].
pub const BENCH_TOTAL: Duration = Duration::from_secs(60);

/// The default block length, in milliseconds.
pub const BLOCK_MS: u64 = 50;

/// Rate-blocks for the agent with and without workload attribution, as `cargo xtask bench`
/// (and its smoke) runs it.
pub fn of_agents(total: Duration) -> anyhow::Result<Vec<BlockResult>> {
    let agents = [TCPMON.to_string(), format!("{TCPMON} --max-workloads 0")];
    run(&agents, total, Duration::from_millis(BLOCK_MS))
}
