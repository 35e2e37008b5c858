//! The help text is part of the interface: a change to it shows up here as a diff.
//! Regenerate with `UPDATE_SNAPSHOTS=1 cargo test --test cli` and review the change.
use std::process::Command;

const TCPMON: &str = env!("CARGO_BIN_EXE_tcpmon");

fn assert_snapshot(args: &[&str], file: &str) {
    let out = Command::new(TCPMON)
        .args(args)
        .output()
        .expect("run tcpmon");
    assert!(out.status.success(), "{args:?} exits 0");
    let actual = String::from_utf8(out.stdout).expect("utf8");
    let path = format!("{}/tests/snapshots/{file}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &actual).expect("write snapshot");
    }
    let expected = std::fs::read_to_string(&path).expect("snapshot exists");
    assert_eq!(actual, expected, "{args:?} differs from {path}");
}

#[test]
fn top_level_help() {
    assert_snapshot(&["--help"], "help.txt");
}

#[test]
fn agent_help() {
    assert_snapshot(&["agent", "--help"], "agent-help.txt");
}

#[test]
fn tail_help() {
    assert_snapshot(&["tail", "--help"], "tail-help.txt");
}

#[test]
fn version() {
    assert_snapshot(&["--version"], "version.txt");
}
