//! `cargo xtask`: the commands a tcpmon developer repeats. Each installs what it needs first,
//! idempotently, so they work on a fresh machine.
mod bench;
#[cfg(test)]
mod doc_commands;
mod setup;
mod soak;
mod test;
mod vm;

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
    /// Run the whole test suite: formatting, clippy, unit and privileged integration tests on
    /// this kernel, one short round of the benchmark (every contender, nothing written), then
    /// the kernel matrix (`vm-test`) on Debian's 5.10, 6.1 and 6.12.
    Test {
        /// Skip the kernel matrix (for quick local runs; CI runs it).
        #[arg(long)]
        no_vm: bool,
    },
    /// Run the privileged integration tests (a reduced set) on other kernels, each booted in a
    /// virtual machine: Debian's kernels, downloaded and cached in /var/cache/tcpmon/vm.
    VmTest {
        /// A kernel of the matrix: 5.10 (bullseye), 6.1 (bookworm) or 6.12 (trixie); repeat
        /// for several. Default: all three.
        #[arg(long = "kernel", value_name = "VERSION")]
        kernels: Vec<String>,
        /// A test module of the matrix (`workloads`, `storm`, ...); repeat for several.
        /// Default: all of them.
        #[arg(long = "module", value_name = "MODULE")]
        modules: Vec<String>,
    },
    /// Benchmark tcpmon against no tracing, tcpstates and bpftrace; writes docs/BENCHMARKS.md.
    Bench {
        /// How long each storm runs, in seconds (fractions allowed: 0.5).
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Interleaved pairs of runs (without tracing, with the contender) per measurement.
        #[arg(long, default_value_t = 12)]
        rounds: usize,
        /// Measure only the pinned setting (one CPU, server closes first: the setting of the
        /// targets); prints the results and leaves docs/BENCHMARKS.md unchanged.
        #[arg(long)]
        pinned_only: bool,
        /// Measure only this contender (repeatable); prints the results and leaves
        /// docs/BENCHMARKS.md unchanged. For trying out a change.
        #[arg(long, value_enum)]
        only: Vec<bench::Contender>,
    },
    /// Compare builds of the agent by their programs' kernel time per transition, relative to
    /// an empty program attached at the same time (pinned storm, server closes first; as root).
    ProgramCost {
        /// An agent binary (`target/release/tcpmon`, a copy of another build), optionally
        /// with arguments for `tcpmon agent` (`"target/release/tcpmon --max-workloads 0"`);
        /// repeat.
        #[arg(long = "agent", value_name = "PATH", required = true)]
        agents: Vec<String>,
        /// Alternations of the agents.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// How long each storm runs, in seconds.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// The connection rate with each agent's programs attached over the rate without, in short
    /// blocks alternating within one pinned storm (and the same for nothing, and for an empty
    /// program): resolves about 1%, where `bench` resolves about 3% (as root).
    RateBlocks {
        /// An agent binary, optionally with arguments for `tcpmon agent`; repeat.
        #[arg(
            long = "agent",
            value_name = "PATH",
            default_value = "target/release/tcpmon"
        )]
        agents: Vec<String>,
        /// How long each contender is measured, in seconds.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// How long each block runs, in milliseconds.
        #[arg(long, default_value_t = bench::rate_blocks::BLOCK_MS)]
        block_ms: u64,
    },
    /// What each agent costs at rest and how long its scrapes take, on a quiet host and on a
    /// busy node (processes, namespaces with a listener and connections each; as root).
    BusyNode {
        /// An agent binary, optionally with arguments for `tcpmon agent`; repeat.
        #[arg(
            long = "agent",
            value_name = "PATH",
            default_value = "target/release/tcpmon"
        )]
        agents: Vec<String>,
        /// Processes on the node in all (one in each namespace, the rest sleeping on the host).
        #[arg(long, default_value_t = 3000)]
        processes: usize,
        /// Network namespaces, each with a listener on port 8080.
        #[arg(long, default_value_t = 110)]
        namespaces: usize,
        /// Established connections to each namespace's listener.
        #[arg(long, default_value_t = 10)]
        connections: usize,
        /// How long each agent's rest is measured, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
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

/// One line for a failure (`xtask: what failed: why`), never anyhow's backtrace: cargo test's
/// own output above it says which test failed and how.
fn main() -> std::process::ExitCode {
    match run(Cli::parse().task) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> anyhow::Result<()> {
    match task {
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
        Task::Test { no_vm } => {
            setup::toolchain()?;
            setup::test_tools()?;
            cargo(&["fmt", "--all", "--check"])?;
            cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
            let host = test::run()?;
            // The kernel matrix boots while the benchmark runs its short round on the host:
            // the round only checks that every contender works (it asserts no ratio), and the
            // guests, emulated, leave it a core.
            // Packages first, one apt at a time (two at once would fight over dpkg's lock).
            setup::bench_tools()?;
            if !no_vm {
                setup::vm_tools()?;
            }
            let outcomes = std::thread::scope(|scope| {
                let guests = (!no_vm).then(|| scope.spawn(|| vm::run(&[], &[])));
                // The benchmark, briefly: it drives the agent and every contender for real.
                let smoke = cargo(&["build", "--release", "--package", "tcpmon"])
                    .and_then(|()| bench::smoke());
                let outcomes = match guests {
                    Some(guests) => guests
                        .join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the kernel matrix panicked"))),
                    None => Ok(Vec::new()),
                };
                smoke.and(outcomes)
            })?;
            matrix(&host, &outcomes)
        }
        Task::VmTest { kernels, modules } => {
            setup::toolchain()?;
            setup::test_tools()?;
            let outcomes = vm::run(&kernels, &modules)?;
            matrix("", &outcomes)
        }
        Task::Bench {
            seconds,
            rounds,
            only,
            pinned_only,
        } => {
            let duration = run_length(seconds, rounds)?;
            setup::toolchain()?;
            setup::bench_tools()?;
            cargo(&["build", "--release", "--package", "tcpmon"])?;
            bench::run(duration, rounds, &only, pinned_only)
        }
        Task::ProgramCost {
            agents,
            rounds,
            seconds,
        } => {
            let duration = run_length(seconds, rounds)?;
            setup::toolchain()?;
            setup::bench_tools()?;
            bench::program_cost::run(&agents, rounds, duration)
        }
        Task::RateBlocks {
            agents,
            seconds,
            block_ms,
        } => {
            let total = run_length(seconds, 1)?;
            if block_ms == 0 || block_ms as f64 > seconds * 500.0 {
                bail!("--block-ms must be above 0 and at most half of --seconds");
            }
            setup::toolchain()?;
            setup::bench_tools()?;
            let block = std::time::Duration::from_millis(block_ms);
            bench::rate_blocks::run(&agents, total, block).map(drop)
        }
        Task::BusyNode {
            agents,
            processes,
            namespaces,
            connections,
            seconds,
        } => {
            setup::toolchain()?;
            cargo(&["build", "--release", "--package", "tcpmon"])?;
            let shape = bench::busy_node::Shape {
                processes,
                namespaces,
                connections,
            };
            bench::busy_node::run(&agents, &shape, std::time::Duration::from_secs(seconds))
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
            bench::tail_rate::run(std::time::Duration::from_secs(seconds))
        }
    }
}

/// A benchmark's `--seconds` per run as a duration, if it and `--rounds` make sense.
fn run_length(seconds: f64, rounds: usize) -> anyhow::Result<std::time::Duration> {
    if !(seconds > 0.0 && seconds <= 3600.0) || rounds == 0 {
        bail!("--seconds must be above 0 (at most 3600) and --rounds at least 1");
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// Prints the kernel matrix (this machine's line first, if any); fails if a kernel failed.
fn matrix(host: &str, outcomes: &[vm::results::Outcome]) -> anyhow::Result<()> {
    println!();
    println!("kernel matrix:");
    if !host.is_empty() {
        println!("  {host}");
    }
    for outcome in outcomes {
        println!("  {}", outcome.line());
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.ok())
        .map(|o| o.kernel.version.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("the tests failed on Linux {}", failed.join(", "));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser as _;

    use super::{doc_commands, Cli};

    /// Every `cargo xtask` command line in the README and docs/ parses with the real parser.
    #[test]
    fn documented_xtask_commands_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut checked = 0;
        let mut failures = Vec::new();
        for path in doc_commands::documents(&root) {
            let text = std::fs::read_to_string(&path).expect("readable doc");
            let name = path
                .file_name()
                .expect("file")
                .to_string_lossy()
                .to_string();
            for invocation in doc_commands::invocations(&name, &text, "xtask") {
                checked += 1;
                if let Err(e) = Cli::try_parse_from(&invocation.argv) {
                    let first = e.to_string().lines().next().unwrap_or_default().to_string();
                    failures.push(format!(
                        "{}: {:?}: {first}",
                        invocation.place, invocation.argv
                    ));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "documented commands that do not parse:\n{}",
            failures.join("\n")
        );
        assert!(
            checked >= 5,
            "only {checked} xtask commands found in the docs"
        );
    }
}
