//! `cargo xtask program-cost`: compares builds of the agent by what their programs cost the
//! kernel per transition, relative to an empty `tp_btf` program attached all along. The CPU's
//! speed wanders on these machines by a third between runs of the same code, and both
//! programs run on every transition, so their ratio cancels it where the connection rate and
//! the ns per run alone do not (docs/BENCHMARKS.md).
use std::time::Duration;

use super::{
    empty_program,
    harness::{program_ids, program_stats, start_agent_line, NetNs, Sysctl},
    report::median_interval,
    storm::{self, Workload},
    STATS_SYSCTL,
};

/// Runs each agent in turn, `rounds` times, for a pinned server-closes-first storm of
/// `duration`, and prints each run and each agent's median ratio.
pub fn run(agents: &[String], rounds: usize, duration: Duration) -> anyhow::Result<()> {
    let ns = NetNs::new()?;
    let _stats = Sysctl::set(STATS_SYSCTL, "1")?;
    let before = program_ids()?;
    let _empty = empty_program::attach()?;
    let reference = new_programs(&before)?;
    let mut ratios = vec![Vec::new(); agents.len()];
    for round in 1..=rounds {
        for (agent, ratios) in agents.iter().zip(&mut ratios) {
            let before = program_ids()?;
            let (process, _, _) = start_agent_line(agent)?;
            let programs = new_programs(&before)?;
            let (ref0, ref_runs0) = program_stats(&reference)?;
            let (own0, runs0) = program_stats(&programs)?;
            storm::run_pinned(&ns.path(), duration, Workload::ServerFirst)?;
            let (ref1, ref_runs1) = program_stats(&reference)?;
            let (own1, runs1) = program_stats(&programs)?;
            drop(process);
            let empty = (ref1 - ref0) as f64 / (ref_runs1 - ref_runs0).max(1) as f64;
            let own = (own1 - own0) as f64 / (runs1 - runs0).max(1) as f64;
            let ratio = own / empty.max(1.0);
            println!(
                "round {round}: {agent}: {own:.0} ns per transition, the empty program {empty:.0} ns: {ratio:.2}"
            );
            ratios.push(ratio);
        }
    }
    println!();
    for (agent, ratios) in agents.iter().zip(&ratios) {
        let (median, low, high) = median_interval(ratios);
        println!(
            "{agent}: {median:.2} empty programs per transition (95% interval {low:.2}-{high:.2})"
        );
    }
    Ok(())
}

/// The programs loaded since `before` was listed.
fn new_programs(before: &[u32]) -> anyhow::Result<Vec<u32>> {
    Ok(program_ids()?
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect())
}
