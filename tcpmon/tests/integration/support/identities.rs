//! What must hold between the agent's series when the program did not see every socket's
//! whole life (it started after them, or evicted their entries), so that exactness can be
//! checked without knowing which sockets lost their entries.
//!
//! How the program (tcpmon-ebpf/src/main.rs, `track`) accounts a transition `old -> new` with
//! `old != new` (same-state events touch no entry and no histogram):
//! - a *birth* (from CLOSE: connect, listen; or LISTEN -> anything but CLOSE: a listener's
//!   child) has no time to measure. It inserts an entry; if one is there already (a stale one:
//!   its socket's CLOSE was never run) it counts `stale_entry`.
//! - any other transition looks up the socket's entry: if the entry holds `old`, the time
//!   since it was written goes into `old`'s dwell histogram; if it holds another state it is
//!   stale (`stale_entry`); if there is none, `untracked`. A transition to CLOSE then deletes
//!   the entry; any other writes it (or inserts one).
//!
//! Hence, per state S, with `measurable[S]` the ground truth's transitions out of S that are
//! not births: `dwell_count[S] <= measurable[S]`, and summed over all states
//! `sum(measurable - dwell_count) + stale births = untracked + stale_entry`. The unmeasured
//! counters carry no state label, so the per-state identity can only be that inequality.
use std::collections::BTreeMap;

use super::{workload::Labels, Scrape};

pub const UNTRACKED: &str = "tcpmon_state_duration_unmeasured_total{reason=\"untracked\"}";
pub const STALE: &str = "tcpmon_state_duration_unmeasured_total{reason=\"stale_entry\"}";

/// Transitions out of each state that have a time in it to measure: every change of state but
/// a birth. `transitions` is keyed by (family, old, new), as [`super::workload::Expected`].
pub fn measurable(transitions: &BTreeMap<Labels, u64>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (key, n) in transitions {
        let (old, new) = (key[1].as_str(), key[2].as_str());
        let birth = old == "CLOSE" || (old == "LISTEN" && new != "CLOSE");
        if old != new && !birth {
            *out.entry(old.to_string()).or_default() += n;
        }
    }
    out
}

/// Checks each state's dwell count against `measurable` and returns the transitions that
/// went unmeasured: `sum(measurable - dwell_count)`.
pub fn unmeasured(scrape: &Scrape, measurable: &BTreeMap<String, u64>) -> u64 {
    let dwell = scrape.by_labels("tcpmon_state_duration_seconds_count", &["state"]);
    for (state, n) in &dwell {
        let out = measurable.get(&state[0]).copied().unwrap_or(0);
        assert!(
            *n <= out,
            "{n} {} dwell times for {out} measurable transitions out of it",
            state[0]
        );
    }
    let measured: u64 = dwell.values().sum();
    measurable.values().sum::<u64>() - measured
}

/// Established handshakes with and without a time, per side: `(established, timed,
/// untimed)`. Each established handshake is timed or counted untimed, never both.
pub fn handshake_times(scrape: &Scrape, side: &str) -> (u64, u64, u64) {
    let established = scrape
        .by_labels("tcpmon_handshakes_total", &["side", "result"])
        .into_iter()
        .filter(|(k, _)| k[0] == side && k[1] == "established")
        .map(|(_, n)| n)
        .sum();
    let timed = scrape
        .by_labels("tcpmon_handshake_duration_seconds_count", &["side"])
        .into_iter()
        .filter(|(k, _)| k[0] == side)
        .map(|(_, n)| n)
        .sum();
    let untimed = scrape.get(&format!(
        "tcpmon_handshake_duration_unmeasured_total{{side=\"{side}\"}}"
    )) as u64;
    (established, timed, untimed)
}

/// Dwell times longer than `limit` seconds, per state: observations above the smallest bucket
/// bound not below `limit` (`None` if `limit` is beyond the last bound).
pub fn dwell_above(scrape: &Scrape, limit: f64) -> Option<BTreeMap<String, u64>> {
    let mut bound: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (series, value) in &scrape.series {
        let Some(labels) = series.strip_prefix("tcpmon_state_duration_seconds_bucket{state=\"")
        else {
            continue;
        };
        let Some((state, le)) = labels.split_once("\",le=\"") else {
            continue;
        };
        let Ok(le) = le.trim_end_matches("\"}").parse::<f64>() else {
            continue; // +Inf
        };
        let slot = bound.entry(state.to_string()).or_insert((f64::MAX, 0.0));
        if le >= limit && le < slot.0 {
            *slot = (le, *value);
        }
    }
    let mut above = BTreeMap::new();
    for (state, (le, cumulative)) in bound {
        if le == f64::MAX {
            return None;
        }
        let count = scrape.get(&format!(
            "tcpmon_state_duration_seconds_count{{state=\"{state}\"}}"
        ));
        above.insert(state, (count - cumulative) as u64);
    }
    Some(above)
}
