//! `cargo xtask`: the commands a tcpmon developer repeats. Each installs what it needs first,
//! idempotently, so they work on a fresh machine.
mod bench;
mod harness;
mod report;
mod setup;
mod soak;
mod storm;
mod tail_rate;
mod test;

use std::process::Command;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "tcpmon developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain (nightly rust-src, bpf-linker 0.10.0) and the test tools.
    Setup,
    /// Build tcpmon (release) and run the agent; arguments after `--` go to `tcpmon agent`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the whole test suite: formatting, clippy, unit and privileged integration tests.
    Test,
    /// Benchmark tcpmon against no tracing, tcpstates and bpftrace; writes docs/BENCHMARKS.md.
    Bench {
        /// How long each storm runs.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Interleaved pairs of runs (without tracing, with the contender) per measurement.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Run the soak test for N minutes (as root): every workload mixed, sockets the program
    /// never sees open, a socket map too small; memory, descriptors and counters must hold.
    Soak {
        /// How long the soak runs.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
    /// Measure the event rate one tail client receives without loss (paced storms).
    TailRate {
        /// How long each rate step runs.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => {
            setup::toolchain()?;
            setup::test_tools()
        }
        Task::Run { args } => {
            setup::toolchain()?;
            cargo(&["build", "--release", "--package", "tcpmon"])?;
            let status = Command::new("target/release/tcpmon")
                .arg("agent")
                .args(&args)
                .status()
                .context("starting target/release/tcpmon")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Test => {
            setup::toolchain()?;
            setup::test_tools()?;
            cargo(&["fmt", "--all", "--check"])?;
            cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
            test::run()
        }
        Task::Bench { seconds, rounds } => {
            setup::toolchain()?;
            setup::bench_tools()?;
            cargo(&["build", "--release", "--package", "tcpmon"])?;
            bench::run(std::time::Duration::from_secs(seconds), rounds)
        }
        Task::Soak { minutes } => {
            soak::require_root()?;
            setup::toolchain()?;
            setup::soak_tools()?;
            soak::run(minutes)
        }
        Task::TailRate { seconds } => {
            setup::toolchain()?;
            setup::test_tools()?;
            cargo(&["build", "--release", "--package", "tcpmon"])?;
            tail_rate::run(std::time::Duration::from_secs(seconds))
        }
    }
}

/// Runs cargo with `args` in the workspace root, failing on a non-zero exit.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
