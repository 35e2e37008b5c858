//! What one kernel's run of the matrix gave, read from the files the guest wrote: each test
//! binary's output (`NAME.log`), exit status and seconds, and `release` (`uname -r`), which
//! proves the guest booted the right kernel and got as far as the tests.
use std::{
    fs,
    path::{Path, PathBuf},
};

use super::kernels;
use crate::test;

/// What one kernel's run gave.
pub struct Outcome {
    pub kernel: kernels::Kernel,
    pub passed: u64,
    pub failed: u64,
    pub seconds: f64,
    /// (test binary, seconds in the guest).
    pub binaries: Vec<(String, u64)>,
    /// Why the run is a failure beyond failed tests (no boot, timeout, a binary that crashed).
    pub problem: Option<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.problem.is_none() && self.passed > 0
    }

    /// The matrix line: kernel, tests passed and failed, seconds.
    pub fn line(&self) -> String {
        let k = &self.kernel;
        let binaries: Vec<String> = self
            .binaries
            .iter()
            .map(|(name, s)| format!("{name} {s} s"))
            .collect();
        let mut line = format!(
            "Linux {} (Debian {}, {}) in a VM: {} passed, {} failed in {:.0} s [{}]",
            k.version,
            k.suite,
            k.release,
            self.passed,
            self.failed,
            self.seconds,
            binaries.join(", ")
        );
        if let Some(problem) = &self.problem {
            line.push_str(&format!(" — {problem}"));
        }
        line
    }
}

pub fn read_results(
    kernel: kernels::Kernel,
    out: &Path,
    binaries: &[(String, PathBuf)],
    seconds: f64,
) -> Outcome {
    let read = |file: String| fs::read_to_string(out.join(file)).unwrap_or_default();
    let mut outcome = Outcome {
        kernel,
        passed: 0,
        failed: 0,
        seconds,
        binaries: Vec::new(),
        problem: None,
    };
    if read("release".into()).trim() != outcome.kernel.release {
        outcome.problem = Some(format!(
            "the VM did not run the tests; see {}/console.log",
            out.display()
        ));
        return outcome;
    }
    for (name, _) in binaries {
        let counts = read(format!("{name}.log")).lines().find_map(test::counts);
        let status = read(format!("{name}.status"));
        match counts {
            Some((passed, failed, _)) => {
                outcome.passed += passed;
                outcome.failed += failed;
            }
            None => {
                outcome.problem = Some(format!(
                    "{name} ended without a result (status {})",
                    status.trim()
                ))
            }
        }
        let guest_seconds = read(format!("{name}.seconds")).trim().parse().unwrap_or(0);
        outcome.binaries.push((name.clone(), guest_seconds));
    }
    outcome
}

/// Prints what the failing binaries printed from their first failure on.
pub fn report_failures(out: &Path, binaries: &[(String, PathBuf)]) {
    for (name, _) in binaries {
        let log = fs::read_to_string(out.join(format!("{name}.log"))).unwrap_or_default();
        if let Some(start) = log.find("\nfailures:\n") {
            eprintln!("---- {name} in the VM ----{}", &log[start..]);
        }
    }
    eprintln!("(guest console: {}/console.log)", out.display());
}
