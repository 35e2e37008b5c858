//! What the running kernel offers, probed at start rather than assumed from a version number
//! (distributions backport features, and a version says nothing about the configuration).
//!
//! Required, each with a one-line error naming the mainline version that introduced it:
//! BTF-enabled tracepoint programs (5.5, checked through the tracepoint's typedef in the
//! kernel's BTF, see `probe`), `bpf_probe_read_kernel` (5.5) reads `tcp_sock` fields, the BPF
//! ring buffer (5.8) carries tail events. Kernels that lack the ring buffer also lack batch
//! lookups of hash maps before 5.6, so a build without the tail would only help 5.6 and 5.7,
//! which no distribution ships: there is no fallback, only the message.
//!
//! Optional, with an exact fallback: counts of skipped runs (in the program's info since 5.12;
//! the metric is absent before), batch lookups of per-CPU arrays (5.13, see `map_batch`),
//! `kernel.bpf_stats_enabled` (5.8, implied by the ring buffer).
use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_helper_supported, is_map_supported, BpfHelper},
};

use crate::error::Error;

/// Fails with a clear message when the kernel lacks something tcpmon cannot run without.
pub fn require() -> Result<(), Error> {
    // A probe that fails in an unexpected way (a seccomp filter, say) is not proof of absence:
    // let the real load report what the kernel says. The helper is probed with a classic
    // tracepoint program: probes of tracing programs need an attach target, and every kernel
    // that has the helper has it for both.
    let read_kernel = is_helper_supported(
        ProgramType::TracePoint,
        BpfHelper::BPF_FUNC_probe_read_kernel,
    );
    if matches!(read_kernel, Ok(false)) {
        return Err(Error::KernelFeature {
            what: "the bpf_probe_read_kernel helper",
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

#[cfg(test)]
mod tests {
    use super::*;

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
