//! What the running kernel offers, probed at start rather than assumed from a version number
//! (distributions backport features, and a version says nothing about the configuration).
//!
//! Required, each with a one-line error naming the mainline version that introduced it:
//! `bpf_probe_read_kernel` (5.5) reads tracepoint records and socket fields, the BPF ring buffer
//! (5.8) carries tail events. Kernels that lack the ring buffer also lack batch lookups of
//! hash maps before 5.6, so a build without the tail would only help 5.6 and 5.7, which no
//! distribution ships: there is no fallback, only the message.
//!
//! Optional, with a fallback and a start-up note where something is lost (see [`notes`]):
//! counts of skipped runs (recursion misses: in the program's info since 5.12, but counted for
//! tracepoint programs only since 6.7), batch lookups of per-CPU arrays (5.13, see `map_batch`:
//! the fallback is exact, so no note), `kernel.bpf_stats_enabled` (5.8, implied by the ring
//! buffer).
use std::sync::OnceLock;

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_helper_supported, is_map_supported, BpfHelper},
};

use crate::{error::Error, prog_stats::ProgramStats};

/// Fails with a clear message when the kernel lacks something tcpmon cannot run without.
pub fn require() -> Result<(), Error> {
    // A probe that fails in an unexpected way (a seccomp filter, say) is not proof of absence:
    // let the real load report what the kernel says.
    let read_kernel = is_helper_supported(
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_probe_read_kernel,
    );
    if matches!(read_kernel, Ok(false)) {
        return Err(Error::KernelFeature {
            what: "the bpf_probe_read_kernel helper for tracepoint programs",
            since: "5.5",
        });
    }
    if matches!(is_map_supported(MapType::RingBuf), Ok(false)) {
        return Err(Error::KernelFeature {
            what: "BPF ring buffers",
            since: "5.8",
        });
    }
    Ok(())
}

/// One line per optional feature this kernel lacks, saying what is missing as a result.
/// `stats` is a first read of the loaded program's info.
pub fn notes(stats: &ProgramStats) -> Vec<String> {
    let mut notes = Vec::new();
    if stats.recursion_misses.is_none() {
        notes.push(
            "this kernel does not count the runs of tracepoint programs it skips (Linux 6.7+): \
             transitions missed that way go unnoticed, and \
             tcpmon_bpf_program_missed_runs_total is not exported"
                .to_string(),
        );
    }
    notes
}

/// Whether the kernel counts the runs of a tracepoint program it skips because another BPF
/// program is running on that CPU (`trace_call_bpf` calls `bpf_prog_inc_misses_counters` since
/// Linux 6.7; before, such runs vanish without a trace). It cannot be probed without provoking
/// a skip, so the kernel's version decides.
pub fn counts_tracepoint_misses() -> bool {
    static COUNTS: OnceLock<bool> = OnceLock::new();
    *COUNTS.get_or_init(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        release_at_least(&release, (6, 7))
    })
}

/// Whether a kernel release (`uname -r`: `6.1.0-56-amd64`, `6.12.117+deb13-amd64`) is at
/// least `major.minor`; an unreadable one is assumed recent.
fn release_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(!release_at_least("5.10.0-46-amd64", (6, 7)));
        assert!(!release_at_least("6.1.0-56-amd64", (6, 7)));
        assert!(release_at_least("6.7.0", (6, 7)));
        assert!(release_at_least("6.12.117+deb13-amd64", (6, 7)));
        assert!(release_at_least("6.18.2", (6, 7)));
        assert!(release_at_least("garbage", (6, 7)));
    }

    #[test]
    fn a_kernel_without_recursion_misses_gets_one_note() {
        let mut stats = ProgramStats::default();
        assert_eq!(notes(&stats).len(), 1);
        stats.recursion_misses = Some(0);
        assert!(notes(&stats).is_empty());
    }

    #[test]
    fn a_missing_feature_is_one_line_naming_the_version() {
        let error = Error::KernelFeature {
            what: "BPF ring buffers",
            since: "5.8",
        };
        let line = error.to_string();
        assert!(!line.contains('\n'));
        assert!(
            line.contains("BPF ring buffers") && line.contains("5.8"),
            "{line}"
        );
    }
}
