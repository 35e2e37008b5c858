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
//! recursion-miss counts (5.12), batch lookups of per-CPU arrays (5.13, see `map_batch`: the
//! fallback is exact, so no note), `kernel.bpf_stats_enabled` (5.8, implied by the ring buffer).
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
            "this kernel does not count BPF recursion misses (Linux 5.12+): \
             tcpmon_bpf_program_missed_runs_total is not exported"
                .to_string(),
        );
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

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
