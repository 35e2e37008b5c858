//! Checks up front that the process may load and attach tracing programs, so a missing privilege
//! is reported in one line instead of as an EPERM from deep inside the loader.
use std::fs;

use crate::error::Error;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Succeeds with CAP_SYS_ADMIN, or with CAP_BPF and CAP_PERFMON (Linux 5.8+).
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
    let has = |cap: u32| mask & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return None;
    }
    let wanted: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    Some(format!("{} or CAP_SYS_ADMIN", wanted.join(" and ")))
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
    fn sys_admin_or_bpf_with_perfmon_suffice() {
        assert_eq!(missing(1 << CAP_SYS_ADMIN), None);
        assert_eq!(missing((1 << CAP_BPF) | (1 << CAP_PERFMON)), None);
        assert_eq!(
            missing(0),
            Some("CAP_BPF and CAP_PERFMON or CAP_SYS_ADMIN".to_string())
        );
        assert_eq!(
            missing(1 << CAP_BPF),
            Some("CAP_PERFMON or CAP_SYS_ADMIN".to_string())
        );
    }
}
