//! `cargo xtask soak --minutes N`: the soak test (`tcpmon/tests/integration/soak.rs`) for as long as a
//! human wants to watch it, printing its progress every minute and its summary at the end.
//! CI runs the same test for two minutes as part of `cargo xtask test`.
use std::process::Command;

use anyhow::{bail, Context as _};

/// Says in one line, before anything is built or installed, that the soak needs root.
pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask soak needs root: it loads an eBPF program and creates a network namespace (run it with sudo)");
    }
    Ok(())
}

pub fn run(minutes: u64) -> anyhow::Result<()> {
    let seconds = minutes.checked_mul(60).context("--minutes is too large")?;
    let status = Command::new(env!("CARGO"))
        .args([
            "test",
            "--package",
            "tcpmon",
            "--test",
            "integration",
            "--",
            "soak::",
            "--nocapture",
        ])
        .env("TCPMON_SOAK_SECONDS", seconds.to_string())
        .status()
        .context("running cargo test --test integration -- soak::")?;
    if !status.success() {
        bail!("the soak failed ({status})");
    }
    Ok(())
}
