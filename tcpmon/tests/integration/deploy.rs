//! The shipped deployment artefacts (deploy/) are valid and agree with what the agent exports.

use std::{collections::BTreeSet, process::Command};

use crate::support::artefacts::{dashboard_exprs, deploy, recorded};
use prometheus::proto::MetricType;
use tcpmon::metrics::descriptors;

fn succeeds(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (cargo xtask setup installs it)"));
    assert!(
        out.status.success(),
        "{program} {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_rules_config_and_rule_tests() {
    succeeds(
        "promtool",
        &["check", "rules", &deploy("prometheus/rules.yml")],
    );
    succeeds(
        "promtool",
        &["check", "config", &deploy("prometheus/prometheus.yml")],
    );
    succeeds(
        "promtool",
        &["test", "rules", &deploy("prometheus/rules_test.yml")],
    );
}

#[test]
fn kubernetes_manifests_validate_offline() {
    // kubernetes-validate (PyPI) carries the Kubernetes schemas; it has none for the
    // ServiceMonitor CRD, which is checked below for the fields the operator needs.
    // As a module: a pip-installed script may not be on PATH (pyenv shims need a rehash).
    succeeds(
        "python3",
        &[
            "-m",
            "kubernetes_validate",
            "--strict",
            &deploy("kubernetes/daemonset.yaml"),
            &deploy("kubernetes/service.yaml"),
        ],
    );
    let monitor = std::fs::read_to_string(deploy("kubernetes/servicemonitor.yaml")).expect("read");
    for needle in [
        "apiVersion: monitoring.coreos.com/v1",
        "kind: ServiceMonitor",
        "jobLabel: app.kubernetes.io/name",
        "- port: metrics",
        "app.kubernetes.io/name: tcpmon",
    ] {
        assert!(
            monitor.contains(needle),
            "servicemonitor.yaml lacks {needle}"
        );
    }
}

/// Metric names an expression refers to: tcpmon_*, process_* and recording rules (a:b:c).
fn referenced(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            let word = std::mem::take(&mut word);
            let word = word.trim_end_matches(':').to_string();
            let rule = word.contains(':') && word.contains("tcpmon");
            if word.starts_with("tcpmon_") || word.starts_with("process_") || rule {
                names.insert(word);
            }
        }
    }
    names
}

/// Every name the agent exports, with histogram suffixes, plus the process collector's.
fn exported() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = descriptors::ALL
        .iter()
        .map(|f| f.name.to_string())
        .collect();
    for family in descriptors::ALL
        .iter()
        .filter(|f| f.kind == MetricType::HISTOGRAM)
    {
        for suffix in ["_bucket", "_sum", "_count"] {
            names.insert(format!("{}{suffix}", family.name));
        }
    }
    for p in [
        "cpu_seconds_total",
        "resident_memory_bytes",
        "open_fds",
        "max_fds",
    ] {
        names.insert(format!("process_{p}"));
    }
    names
}

#[test]
fn the_dashboard_uses_only_exported_metrics_and_recorded_rules() {
    let known: BTreeSet<String> = exported().union(&recorded()).cloned().collect();
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 20, "{} expressions", exprs.len());
    for expr in &exprs {
        assert!(
            expr.contains("job=\"$job\""),
            "not filtered by $job: {expr}"
        );
        for name in referenced(expr) {
            assert!(known.contains(&name), "{name} is not exported: {expr}");
        }
    }
    let text = std::fs::read_to_string(deploy("grafana/tcpmon.json")).expect("dashboard");
    for variable in [
        "\"name\": \"datasource\"",
        "\"name\": \"job\"",
        "\"name\": \"instance\"",
    ] {
        assert!(text.contains(variable), "dashboard variable {variable}");
    }
}

#[test]
fn the_rules_use_only_exported_metrics() {
    let rules = std::fs::read_to_string(deploy("prometheus/rules.yml")).expect("rules.yml");
    let mut known: BTreeSet<String> = exported().union(&recorded()).cloned().collect();
    known.insert("up".into());
    for name in referenced(&rules) {
        // Annotations mention metric names in prose too; those must exist as well.
        assert!(known.contains(&name), "{name} is not exported");
    }
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    // The unit names /usr/local/bin/tcpmon; verify a copy that points at the built binary.
    let unit = std::fs::read_to_string(deploy("systemd/tcpmon.service")).expect("unit");
    let unit = unit.replace(
        "/usr/local/bin/tcpmon ",
        &format!("{} ", env!("CARGO_BIN_EXE_tcpmon")),
    );
    let dir = std::env::temp_dir().join(format!("tcpmon-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tcpmon.service");
    std::fs::write(&path, unit).expect("write unit");
    let path = path.to_string_lossy().into_owned();
    succeeds("systemd-analyze", &["verify", &path]);
    // Exposure 5.0 or better on systemd's 0-10 scale (threshold is in tenths).
    succeeds(
        "systemd-analyze",
        &["security", "--offline=true", "--threshold=50", &path],
    );
    let _ = std::fs::remove_dir_all(&dir);
}
