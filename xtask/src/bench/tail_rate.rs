//! `cargo xtask tail-rate`: the event rate one tail client receives without loss.
use std::time::Duration;

use super::{
    harness::{metric, start_agent, start_tail, NetNs},
    storm::{self, Workload},
};

const WORKERS: usize = 2;

/// `cargo xtask tail-rate`: the event rate one tail client (NDJSON to /dev/null) receives
/// without loss. Paced storms of rising rates run with the agent and the client attached;
/// each step reports the events written and lost.
pub fn run(step: Duration) -> anyhow::Result<()> {
    let ns = NetNs::new()?;
    let (agent, _id, addr) = start_agent(&[])?;
    let tail = start_tail(addr, &[])?;
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
        5_000.0, 10_000.0, 15_000.0, 20_000.0, 25_000.0, 30_000.0, 40_000.0, 50_000.0, 60_000.0,
        70_000.0, 80_000.0,
    ] {
        let (events_before, lost_before) = (metric(addr, "tcpmon_events_total")?, lost()?);
        storm::paced(
            &ns.path(),
            WORKERS,
            step,
            Workload::ServerFirst,
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
