//! `tcpmon tail -o timeline`: each connection printed when it closes, as the steps of the
//! three-way handshake and four-way teardown (the model in docs/METRICS.md, "The model") with the time between them.
use std::collections::HashMap;

use tcpmon_common::{errno, outcome, teardown, Outcome};

use crate::tail::event::Event;
use crate::{socket_fields::endpoint, state::TcpState};

/// Connections being assembled at most; past that the oldest half is flushed as incomplete,
/// so a tail on a busy host stays bounded in memory.
const MAX_OPEN: usize = 100_000;

#[derive(Default)]
pub struct Timelines {
    open: HashMap<String, Vec<Event>>,
    /// When each connection sent its SYN again, by connection.
    retransmits: HashMap<String, Vec<u64>>,
}

impl Timelines {
    /// Notes a SYN sent again, for the connection's line.
    pub fn retransmit(&mut self, e: &Event) {
        if self.retransmits.len() > MAX_OPEN {
            self.retransmits.clear();
        }
        self.retransmits
            .entry(e.connection.clone())
            .or_default()
            .push(e.mono_ns);
    }

    /// Adds an event; returns the lines of connections it completes (or flushes).
    pub fn push(&mut self, e: Event) -> Vec<String> {
        let closed = e.new_state == TcpState::Close && e.old_state != TcpState::Close;
        let key = e.connection.clone();
        self.open.entry(key.clone()).or_default().push(e);
        let mut lines = Vec::new();
        if closed {
            if let Some(events) = self.open.remove(&key) {
                let again = self.retransmits.remove(&key).unwrap_or_default();
                lines.push(render_with(&events, &again));
            }
        } else if self.open.len() > MAX_OPEN {
            let mut oldest: Vec<(u64, String)> = self
                .open
                .iter()
                .map(|(k, v)| (v[0].mono_ns, k.clone()))
                .collect();
            oldest.sort();
            for (_, key) in oldest.into_iter().take(MAX_OPEN / 2) {
                if let Some(events) = self.open.remove(&key) {
                    let again = self.retransmits.remove(&key).unwrap_or_default();
                    lines.push(format!("{} (incomplete)", render_with(&events, &again)));
                }
            }
        }
        lines
    }
}

/// One connection's line: `time local → remote pid COMM in WORKLOAD: step dt → ... [outcome]`.
pub fn render(events: &[Event]) -> String {
    render_with(events, &[])
}

/// [`render`], with the times the connection sent its SYN again: the first step reads
/// `SYN ×3 (+1.00 s, +3.00 s)`, each time counted from the first SYN.
pub fn render_with(events: &[Event], syn_again_ns: &[u64]) -> String {
    let first = &events[0];
    // connect() fires before the source port is chosen: take the endpoints from the last
    // event, which has both.
    let last = &events[events.len() - 1];
    let owner = events
        .iter()
        .rev()
        .find_map(|e| {
            Some(format!(
                "pid {} {}",
                e.pid?,
                e.comm.as_deref().unwrap_or("?")
            ))
        })
        .unwrap_or_else(|| "pid -".to_string());
    // The socket's workload is the same on every event; an event of a kernel that gave no
    // cgroup has none.
    let owner = match events.iter().find_map(|e| e.workload.as_deref()) {
        Some(workload) => format!("{owner} in {workload}"),
        None => owner,
    };
    let mut line = format!(
        "{} {} → {} {owner}: ",
        first.time.get(11..23).unwrap_or(&first.time),
        endpoint(last.local, last.local_port),
        endpoint(last.remote, last.remote_port),
    );
    let steps: Vec<&Event> = events
        .iter()
        .filter(|e| e.old_state != e.new_state)
        .collect();
    for (i, e) in steps.iter().enumerate() {
        if i > 0 {
            let gap = e.mono_ns.saturating_sub(steps[i - 1].mono_ns);
            line.push_str(&format!(" {} → ", duration(gap)));
        }
        line.push_str(&step(e));
        if (e.old_state, e.new_state) == (TcpState::Close, TcpState::SynSent)
            && !syn_again_ns.is_empty()
        {
            let after: Vec<String> = syn_again_ns
                .iter()
                .map(|at| format!("+{}", duration(at.saturating_sub(e.mono_ns))))
                .collect();
            line.push_str(&format!(
                " ×{} ({})",
                syn_again_ns.len() + 1,
                after.join(", ")
            ));
        }
    }
    if let Some(end) = steps.last().map(|e| conclusion(e)) {
        line.push_str(&format!(" [{end}]"));
    }
    line
}

/// The step of the handshake and teardown model a transition is, named by what caused it.
fn step(e: &Event) -> String {
    use TcpState::*;
    let closed = |what: &str| format!("{what} → CLOSED");
    match (e.old_state, e.new_state) {
        (Close, SynSent) => "SYN".into(),
        (Close, Listen) => "LISTEN".into(),
        (Listen, SynRecv) => "SYN → SYN_RECV".into(),
        (_, Established) => "ESTABLISHED".into(),
        (Established, FinWait1) | (CloseWait, LastAck) => format!("local FIN → {}", e.new_state),
        (Established, CloseWait) | (FinWait1, Closing) => format!("remote FIN → {}", e.new_state),
        (FinWait1, FinWait2) => "FIN_WAIT2".into(),
        (SynSent, Close) => match e.error {
            errno::ECONNREFUSED => closed("RST"),
            errno::ETIMEDOUT => closed("no answer"),
            errno::EHOSTUNREACH | errno::ENETUNREACH => closed("unreachable"),
            _ => closed("closed by the application"),
        },
        (old, Close) => match outcome(old as i32, tcpmon_common::tcp_state::CLOSE, e.error) {
            Outcome::Teardown(_, teardown::KIND_FIN) if matches!(old, FinWait2 | Closing) => {
                "TIME_WAIT".into()
            }
            Outcome::Teardown(_, teardown::KIND_FIN) => "CLOSED".into(),
            Outcome::Teardown(_, _) if e.error != 0 => closed("RST received"),
            Outcome::Teardown(_, _) => closed("RST sent"),
            _ => "CLOSED".into(),
        },
        (_, new) => new.name().into(),
    }
}

/// What the connection's last transition concluded.
fn conclusion(e: &Event) -> String {
    match outcome(e.old_state as i32, e.new_state as i32, e.error) {
        Outcome::Handshake(result) => {
            let names = [
                "connected",
                "refused",
                "timed out",
                "unreachable",
                "aborted",
                "accepted",
                "reset",
            ];
            format!("handshake {}", names.get(result as usize).unwrap_or(&"?"))
        }
        Outcome::Teardown(initiator, kind) => {
            let who = match initiator {
                teardown::INITIATOR_LOCAL => "local",
                teardown::INITIATOR_REMOTE => "remote",
                _ => "simultaneous",
            };
            let how = if kind == teardown::KIND_FIN {
                "fin"
            } else {
                "reset"
            };
            format!("closed: {who} {how}")
        }
        Outcome::Nothing => "closed".into(),
    }
}

/// A time between steps: µs below a millisecond, ms below a second.
pub fn duration(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

#[cfg(test)]
#[path = "timeline_tests.rs"]
mod tests;
