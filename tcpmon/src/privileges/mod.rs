//! Checks up front that the process may load and attach tracing programs, so a missing privilege
//! is reported in one line instead of as an EPERM from deep inside the loader.
pub mod capabilities;

use std::fs;

use crate::error::Error;

const CAP_SYS_ADMIN: u32 = 21;
#[cfg(test)]
const CAP_PERFMON: u32 = 38;
#[cfg(test)]
const CAP_BPF: u32 = 39;

/// Succeeds with CAP_SYS_ADMIN. CAP_BPF and CAP_PERFMON would load and attach the program on
/// Linux 5.8+, but entering other network namespaces (setns, for the start-up walk and `tcpmon sockets`) needs
/// CAP_SYS_ADMIN, so the agent asks for it up front rather than fail later with a bare EPERM.
pub fn check() -> Result<(), Error> {
    let status = fs::read_to_string("/proc/self/status").map_err(|cause| Error::Io {
        what: "cannot read /proc/self/status".into(),
        cause,
    })?;
    let effective = effective_capabilities(&status).unwrap_or(0);
    match missing(effective) {
        None => Ok(()),
        Some(missing) => Err(Error::NotPrivileged { missing }),
    }
}

/// The `CapEff:` mask of a `/proc/PID/status` text.
pub fn effective_capabilities(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// What is missing from `mask` for tcpmon's work, or `None` if nothing is.
pub fn missing(mask: u64) -> Option<String> {
    (mask & (1u64 << CAP_SYS_ADMIN) == 0).then(|| "CAP_SYS_ADMIN".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_mask() {
        let status = "Name:\tcat\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_capabilities(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_capabilities("Name:\tcat\n"), None);
    }

    #[test]
    fn sys_admin_is_required() {
        assert_eq!(missing(1 << CAP_SYS_ADMIN), None);
        assert_eq!(missing(u64::MAX), None);
        let bpf_only = (1 << CAP_BPF) | (1 << CAP_PERFMON);
        assert_eq!(missing(bpf_only), Some("CAP_SYS_ADMIN".to_string()));
        assert_eq!(missing(0), Some("CAP_SYS_ADMIN".to_string()));
    }
}
