//! `cargo xtask vm-test`: the privileged integration tests on other kernels, each booted in a
//! virtual machine by virtme-ng with the host's root file system shared read-only over 9p.
//!
//! The test binaries are built on the host; the guest runs them from the shared `target/` and
//! writes their output into a per-kernel directory it may write to. There is no KVM on these
//! machines (`/dev/kvm` is a PVM host that cannot run distribution kernels), so qemu emulates
//! the CPU in software, about 10-20 times slower: the guest runs a reduced set of tests
//! ([`TESTS`]), which covers loading and attaching on that kernel, every metric the agent
//! exports and the tail's ring buffer. `TCPMON_VM_KVM=1` uses KVM where it works.
pub mod kernels;
pub mod results;

use std::{
    fs,
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use self::results::{read_results, report_failures, Outcome};

/// The modules of the integration tests (`tcpmon/tests/integration/`) run in each virtual
/// machine, one after another: every handshake and teardown
/// kind counted exactly, IPv6, refused, timed-out and aborted connects, start-up and clean
/// stop (`agent_metrics`, `handshake_failures`, `initiators`), every namespace found
/// (`namespaces`), the tail's ring buffer with filters and a stalled client (`tail`), dropping
/// to two capabilities after attaching
/// (`least_privilege`), maps pinned on a BPF file system surviving a restart (`pin`), socket
/// counts, listeners and time-wait counts read across every namespace with that kernel's
/// layout of `struct net` (`busy_node`), the
/// socket's cgroup read on that kernel and named (`workloads`; the test mounts cgroup2 where
/// the guest has no mount), and
/// exactness with zero missed runs under a storm of 2,000 connections (`storm`, a hundredth
/// of the host's: with a tenth, a 5.10 guest reset about 1% of the connections it closed, real
/// resets that tcpmon counted as such, but not what the test's ground truth says) and a
/// 30-second soak (`soak`). The user errors (`errors`: each decided before anything is loaded,
/// the same on every kernel; 150 s of a 5.10 guest), the port-cardinality, Prometheus-server,
/// robustness, HTTP, TLS and held-sockets tests stay on the host: their workloads of thousands
/// of connections take minutes under software emulation, and `sockets.rs` times dwells
/// against a wall clock that a slow guest overshoots.
pub const TESTS: [&str; 15] = [
    "agent_metrics",
    "busy_node",
    "handshake_failures",
    "listen_queues",
    "resets",
    "socket_ages",
    "recent",
    "initiators",
    "namespaces",
    "tail",
    "workloads",
    "least_privilege",
    "pin",
    "storm",
    "soak",
];

/// Tests of the matrix's modules that do not depend on the kernel, run on the host only: each
/// costs a guest an agent start (seconds of the verifier under emulation) and tests nothing
/// the kernel decides.
const HOST_ONLY: [&str; 3] = [
    // promtool reads the agent's text; the kernel only made the numbers.
    "agent_metrics::promtool_accepts_a_real_scrape",
    // The file mode of the Unix socket the agent makes.
    "tail::the_tail_socket_is_root_only",
    // How the agent folds names into `other`; the counting per cgroup is the module's first test.
    "workloads::workloads_beyond_the_maximum_fold_into_other_with_totals_exact",
];

/// How much longer the tests' waits may last in a guest than on the host
/// (`TCPMON_TEST_TIME_SCALE`; the base limit is 30 s). Measured on 6.1 with the test build of
/// the agent, from exec to its start-up line, the slowest step of any test: 6.2-7.6 s for one
/// agent and 9.7-11.2 s for two starting at once (as two test threads do), against 0.15 s on
/// the host. Before the BTF parsing was optimised it was 8-14 s, and one CI run timed out at
/// 30 s; 4 gives the slowest measured start ten times its duration. Reproduce: boot a kernel as
/// `boot` does with `--exec` timing `target/debug/tcpmon agent` until it prints its line.
const TIME_SCALE: u32 = 4;

/// A kernel boot that has not finished after this long is killed and counted as failed. A
/// 5.10 guest took 1,100 s for ten of the modules on the 2-CPU build machine of 2026-12-02
/// (software emulation; 439 s for all of them on an earlier CI machine), so 20 minutes was
/// too tight.
const BOOT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The kernels asked for (all of the matrix if none), booted at the same time, each running
/// the `modules` asked for (all of [`TESTS`] if none).
pub fn run(versions: &[String], modules: &[String]) -> anyhow::Result<Vec<Outcome>> {
    if let Some(unknown) = modules.iter().find(|m| !TESTS.contains(&m.as_str())) {
        bail!(
            "unknown test module {unknown}: choose from {}",
            TESTS.join(", ")
        );
    }
    crate::setup::vm_tools()?;
    let mut kernels = Vec::new();
    let defaults: Vec<String> = kernels::KERNELS
        .iter()
        .map(|(v, _)| v.to_string())
        .collect();
    for version in if versions.is_empty() {
        &defaults
    } else {
        versions
    } {
        let (known, suite) = kernels::suite_of(version).with_context(|| {
            format!("unknown kernel {version}: choose from 5.10, 6.1, 6.12 (or bullseye, bookworm, trixie)")
        })?;
        kernels.push(kernels::ensure(known, suite)?);
    }
    let binaries: Vec<(String, PathBuf)> = build_tests()?
        .into_iter()
        .filter(|(module, _)| modules.is_empty() || modules.contains(module))
        .collect();
    // Every kernel at once: a guest runs one test at a time, and most of a test's time is
    // one emulated CPU verifying or running the programs, so one guest keeps about one of the
    // host's cores busy. Booted in turn, the matrix took 1,100 s of a 30-minute CI run.
    std::thread::scope(|scope| {
        let guests: Vec<_> = kernels
            .into_iter()
            .map(|kernel| {
                let binaries = &binaries;
                scope.spawn(move || {
                    let outcome = boot(kernel, binaries)?;
                    println!("{}", outcome.line());
                    Ok(outcome)
                })
            })
            .collect();
        guests
            .into_iter()
            .map(|guest| {
                guest
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a guest's thread panicked")))
            })
            .collect()
    })
}

/// Builds the integration test binary and returns (module, path of the binary) for each of
/// [`TESTS`], from cargo's JSON messages (the file name carries a hash). Optimised: under
/// software emulation a debug agent's start-up and its periodic work cost minutes per module
/// (a 5.10 guest took 1,744 s for the debug build on 2026-12-02), and the host's suite passes
/// as `cargo test --release` too.
fn build_tests() -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut child = Command::new(env!("CARGO"))
        .args([
            "test",
            "--release",
            "--no-run",
            "--package",
            "tcpmon",
            "--test",
            "integration",
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test --no-run")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut binary = None;
    for line in BufReader::new(stdout).lines() {
        let message: serde_json::Value = serde_json::from_str(&line?).unwrap_or_default();
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == "integration" {
            binary = message["executable"].as_str().map(PathBuf::from);
        }
    }
    match binary {
        Some(path) if child.wait()?.success() => Ok(TESTS
            .iter()
            .map(|module| (module.to_string(), path.clone()))
            .collect()),
        _ => bail!("building the integration tests failed"),
    }
}

/// Boots `kernel`, runs the tests in it and reads their results.
fn boot(kernel: kernels::Kernel, binaries: &[(String, PathBuf)]) -> anyhow::Result<Outcome> {
    let workspace = std::env::current_dir()?;
    let out = workspace.join("target/vm").join(&kernel.version);
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    let script = out.join("run.sh");
    fs::write(&script, guest_script(&workspace, &out, binaries))?;
    let cache = kernels::cache_dir();
    // What the guest reads, exported at the same paths: the kernel cache (its modules) and,
    // in case the checkout is somewhere virtme-ng hides from the guest (it mounts tmpfs over
    // /var/tmp, /var/cache and more), the build's binaries and the package directory the tests
    // run in. Not the whole workspace: that would cover the writable directory below it.
    let profile = binaries[0]
        .1
        .parent()
        .and_then(Path::parent)
        .context("binary path")?;
    let exports = [cache.as_path(), profile, &workspace.join("tcpmon")];
    let console = fs::File::create(out.join("console.log"))?;
    let mut command = Command::new("python3");
    command
        .args(["-m", "virtme_ng.run", "--run"])
        .arg(&kernel.image)
        .args([
            "--force-9p",
            "--user",
            "root",
            "--verbose",
            "--cpus",
            "2",
            "--memory",
            "1G",
        ])
        // Softirqs deferred to ksoftirqd rather than run on the way out of an interrupt:
        // under software emulation the program runs long enough for a timer interrupt to land
        // inside it often, and the softirq that follows would run the program nested in
        // itself, which the kernel skips (docs/KERNELS.md, "Known limits"). Measured when tcpmon was a
        // classic tracepoint program: one connection's last two transitions lost, uncounted, in
        // 3,000 on 6.1 without it.
        .args(["--append", "threadirqs"])
        .args(
            exports
                .iter()
                .flat_map(|dir| ["--rodir".to_string(), format!("{0}={0}", dir.display())]),
        )
        .arg("--rwdir")
        .arg(&out)
        .arg("--exec")
        .arg(format!("sh {}", script.display()))
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        .process_group(0);
    if std::env::var_os("TCPMON_VM_KVM").is_none_or(|v| v != "1") {
        command.arg("--disable-kvm");
    }
    eprintln!(
        "xtask: booting Linux {} ({}) in a VM",
        kernel.version, kernel.release
    );
    let started = Instant::now();
    let mut child = command.spawn().context("starting virtme-ng")?;
    let mut problem = None;
    while child.try_wait()?.is_none() {
        if started.elapsed() > BOOT_TIMEOUT {
            // SAFETY: kill on the process group we created for qemu and virtme-ng.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            problem = Some(format!("killed after {} s", BOOT_TIMEOUT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut outcome = read_results(kernel, &out, binaries, seconds);
    if outcome.problem.is_none() {
        outcome.problem = problem;
    }
    if !outcome.ok() {
        report_failures(&out, binaries);
    }
    Ok(outcome)
}

/// The guest's script: each test module (the integration binary filtered to `MODULE::`), from
/// the package directory as cargo runs it, its output, exit status and duration into `out`.
///
/// One test at a time: attaching or detaching a program rewrites the tracepoint's call site
/// in the kernel's text (a static call, patched with int3), and a test starting or stopping
/// its agent while another test's traffic runs through that call site crashed a 6.12 guest
/// once ("Oops: int3" in `inet_sk_state_store`, under qemu's software emulation of the CPU).
/// On real CPUs the patching is safe; the host runs tests of a module in parallel.
fn guest_script(workspace: &Path, out: &Path, binaries: &[(String, PathBuf)]) -> String {
    let mut script = format!(
        "# Written by cargo xtask vm-test; runs as root inside the virtual machine.\n\
         cd {}/tcpmon || exit 1\nulimit -n 65536\nuname -r > {out}/release\n\
         export TCPMON_TEST_TIME_SCALE={TIME_SCALE}\n\
         export TCPMON_STORM_DIVISOR=100\nexport TCPMON_SOAK_SECONDS=30\n",
        workspace.display(),
        out = out.display()
    );
    let skips: String = HOST_ONLY.iter().map(|t| format!(" --skip {t}")).collect();
    for (name, path) in binaries {
        script.push_str(&format!(
            "start=$(date +%s)\n{path} {name}::{skips} --test-threads=1 > {out}/{name}.log 2>&1\n\
             echo $? > {out}/{name}.status\n\
             echo $(( $(date +%s) - start )) > {out}/{name}.seconds\n",
            path = path.display(),
            out = out.display(),
        ));
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_only_tests_are_tests_of_the_matrix() {
        let integration = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tcpmon/tests/integration");
        for test in HOST_ONLY {
            let (module, name) = test.split_once("::").expect("module::test");
            assert!(TESTS.contains(&module), "{module} is not in the matrix");
            let source = fs::read_to_string(integration.join(format!("{module}.rs")))
                .expect("the module's source");
            assert!(source.contains(&format!("fn {name}()")), "no test {test}");
        }
    }
}
