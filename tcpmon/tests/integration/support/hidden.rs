//! Transitions the kernel hides from every BPF tracing program: the sandbox kernels tcpmon is
//! developed on skip such programs, silently, while a thread of PID 1 is the current task (see
//! `KernelOffsets::skips_runs_under_init`), so a transition made in an interrupt that lands on
//! PID 1 reaches no BPF program and no skip counter. Tests count them with an observer that is
//! not BPF: the tracepoint's own trace event, in a private tracefs instance, filtered to TCP
//! transitions made while a thread of PID 1 was current. A test may then miss exactly those
//! (host-wide, so an upper bound for its namespace) and nothing else.
use std::{
    fs,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
};

const TRACEFS: &str = "/sys/kernel/tracing";
const EVENT: &str = "events/sock/inet_sock_set_state";

/// The observer; dropping it removes its tracefs instance.
pub struct HiddenTransitions {
    /// The tracefs instance, on kernels that hide transitions; `None` elsewhere.
    instance: Option<PathBuf>,
    /// The event observed, under `events/`.
    event: &'static str,
}

impl HiddenTransitions {
    /// Starts counting, on a kernel that hides transitions from BPF; elsewhere it counts 0.
    pub fn observe() -> HiddenTransitions {
        HiddenTransitions::of(EVENT, "protocol == 6")
    }

    /// Starts counting the trace events `event` (`events/tcp/tcp_retransmit_synack`) that match
    /// `filter` (in the event's own fields), made under PID 1, on a kernel that hides such
    /// runs; elsewhere it counts 0. What the other BPF programs (retransmissions, resets) miss.
    pub fn of(event: &'static str, filter: &str) -> HiddenTransitions {
        if !kernel_hides_transitions() {
            return HiddenTransitions {
                instance: None,
                event,
            };
        }
        mount_tracefs();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tcpmon-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let instance = Path::new(TRACEFS).join("instances").join(name);
        fs::create_dir(&instance).expect("create a tracefs instance");
        let observer = HiddenTransitions {
            instance: Some(instance.clone()),
            event,
        };
        // Only transitions made under PID 1 are recorded: a handful, so a small buffer will do.
        write(&instance.join("buffer_size_kb"), "256");
        let threads: Vec<String> = fs::read_dir("/proc/1/task")
            .expect("list PID 1's threads")
            .filter_map(|t| t.ok()?.file_name().into_string().ok())
            .map(|tid| format!("common_pid == {tid}"))
            .collect();
        let filter = format!("{filter} && ({})", threads.join(" || "));
        write(&instance.join(event).join("filter"), &filter);
        write(&instance.join(event).join("enable"), "1");
        observer
    }

    /// How many TCP transitions the kernel made under PID 1 since [`observe`](Self::observe),
    /// in every network namespace.
    pub fn count(&self) -> u64 {
        self.events().len() as u64
    }

    /// Prints the hidden transitions, for a failing test's log.
    pub fn report(&self) {
        let events = self.events();
        if !events.is_empty() {
            eprintln!(
                "{} {} events made under PID 1, hidden from BPF:",
                events.len(),
                self.event
            );
            for line in events {
                eprintln!("  {line}");
            }
        }
    }

    /// The trace lines of the hidden transitions.
    fn events(&self) -> Vec<String> {
        let Some(instance) = &self.instance else {
            return Vec::new();
        };
        let trace = fs::read_to_string(instance.join("trace")).expect("read the trace");
        let lines = trace.lines().filter(|l| !l.starts_with('#'));
        let overrun = lines.clone().any(|l| l.contains("LOST"));
        assert!(!overrun, "the observer's buffer overflowed:\n{trace}");
        let name = format!("{}:", self.event.rsplit('/').next().unwrap_or(self.event));
        lines
            .filter(|l| l.contains(&name))
            .map(|l| l.trim().to_string())
            .collect()
    }
}

impl Drop for HiddenTransitions {
    fn drop(&mut self) {
        if let Some(instance) = &self.instance {
            let _ = fs::write(instance.join(self.event).join("enable"), "0");
            if let Err(e) = fs::remove_dir(instance) {
                eprintln!("removing {}: {e}", instance.display());
            }
        }
    }
}

/// Whether this kernel skips BPF tracing programs under PID 1, as the agent reads it from the
/// kernel's BTF.
pub fn kernel_hides_transitions() -> bool {
    static HIDES: OnceLock<bool> = OnceLock::new();
    *HIDES.get_or_init(|| {
        tcpmon::probe::KernelOffsets::from_vmlinux()
            .expect("read the kernel's BTF")
            .skips_runs_under_init
    })
}

/// Mounts tracefs where the kernel expects it, if nothing is mounted there (a fresh machine).
fn mount_tracefs() {
    if Path::new(TRACEFS).join("instances").is_dir() {
        return;
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .status()
        .expect("run mount");
    assert!(
        status.success() || Path::new(TRACEFS).join("instances").is_dir(),
        "mounting tracefs failed"
    );
}

fn write(path: &Path, value: &str) {
    fs::write(path, value)
        .unwrap_or_else(|e| panic!("writing {value:?} to {}: {e}", path.display()));
}
