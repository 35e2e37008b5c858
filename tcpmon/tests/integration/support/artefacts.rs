//! The shipped artefacts under deploy/: paths and the PromQL they contain.
use std::{collections::BTreeSet, path::PathBuf};

/// Path of a file under deploy/.
pub fn deploy(path: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    root.join(path).to_string_lossy().into_owned()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The recording rules' names in rules.yml.
pub fn recorded() -> BTreeSet<String> {
    read("prometheus/rules.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(str::to_string)
        .collect()
}

/// Every recording rule's expression in rules.yml (single-line or block).
pub fn recording_exprs() -> Vec<String> {
    let rules = read("prometheus/rules.yml");
    let mut exprs = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        if !line.trim().starts_with("- record:") {
            continue;
        }
        let expr = lines.next().expect("expr line").trim();
        let expr = expr
            .strip_prefix("expr:")
            .expect("expr follows record")
            .trim();
        if expr == "|" {
            let mut block = Vec::new();
            while lines.peek().is_some_and(|l| l.starts_with("          ")) {
                block.push(lines.next().unwrap_or_default().trim());
            }
            exprs.push(block.join(" "));
        } else {
            exprs.push(expr.to_string());
        }
    }
    exprs
}

/// Every `expr` of the dashboard.
pub fn dashboard_exprs() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("grafana/tcpmon.json")).expect("dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("expr").to_string())
        .collect()
}
