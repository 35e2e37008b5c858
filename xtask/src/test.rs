//! `cargo test` with one closing line for the whole suite: cargo prints a summary per test
//! binary, the last of which is often a doc-test run with nothing in it.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

/// Passed, failed and ignored counts of a `test result:` line.
pub fn counts(line: &str) -> Option<(u64, u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let number = |word: &str| -> Option<u64> {
        rest.split([';', '.'])
            .map(str::trim)
            .find_map(|part| part.strip_suffix(word)?.trim().parse().ok())
    };
    Some((number("passed")?, number("failed")?, number("ignored")?))
}

/// Runs the whole suite on this machine's kernel; returns the closing line of the kernel matrix
/// for it.
pub fn run() -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO"))
        .arg("test")
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some((p, f, i)) = counts(&line) {
            passed += p;
            failed += f;
            ignored += i;
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!();
    println!("total: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(format!(
        "Linux {} (this machine): {passed} passed, {failed} failed in {:.0} s [the whole suite]",
        release(),
        started.elapsed().as_secs_f64()
    ))
}

/// This machine's kernel release (`uname -r`).
fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::counts;

    #[test]
    fn reads_cargo_summaries() {
        let line = "test result: ok. 21 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.07s";
        assert_eq!(counts(line), Some((21, 0, 0)));
        let line = "test result: FAILED. 7 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out";
        assert_eq!(counts(line), Some((7, 2, 1)));
        assert_eq!(counts("running 3 tests"), None);
    }
}
