//! A tail event as users see it: decoded from the kernel's `TailEvent`, sent to `tcpmon tail`
//! as one JSON object per line, and printed by the output formats.
//!
//! The JSON field names are an interface (documented in docs/TAIL.md): add fields, never rename.
use std::{borrow::Cow, net::IpAddr};

use serde::{Deserialize, Serialize};
use tcpmon_common::{TailEvent, DWELL_UNKNOWN};

use crate::{
    clock::rfc3339,
    socket_fields::{address, comm_name, family_label},
    state::TcpState,
};

/// One line of the tail stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    Event(Event),
    /// A SYN the connection sent again while in SYN_SENT (both states SYN_SENT, `ms` null): the
    /// timeline's `SYN ×2 (+1.00 s)`. Not counted by `--count`.
    Retransmit(Event),
    /// Events this client missed because it read too slowly.
    Lost {
        count: u64,
    },
    /// The agent refused the request.
    Error {
        message: String,
    },
}

/// One NDJSON line (without the newline): the wire format, documented in docs/TAIL.md.
pub fn json_line(message: &Message) -> String {
    serde_json::to_string(message)
        .unwrap_or_else(|e| format!("{{\"type\":\"error\",\"message\":\"{e}\"}}"))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Wall-clock time, RFC 3339 in UTC with microseconds.
    pub time: String,
    /// CLOCK_MONOTONIC nanoseconds: for exact intervals between events.
    pub mono_ns: u64,
    /// The socket's kernel address in hex: one connection until it reaches CLOSE.
    pub connection: String,
    /// The process that owns the socket, when a connect, listen, close or shutdown by it was
    /// seen; null otherwise (transitions in softirq have no reliable process).
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// "inet" or "inet6".
    pub family: String,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    pub old_state: TcpState,
    pub new_state: TcpState,
    /// Milliseconds the socket spent in `old_state`; null if the agent did not see it enter.
    pub ms: Option<f64>,
    /// The socket's error (errno) when it reached CLOSE: 111 refused, 110 timed out, 104 reset.
    pub error: i32,
    /// The workload that owns the socket (its cgroup's name: `nginx.service`, `NAMESPACE/POD`,
    /// `container/ID12`, `host`); null where the kernel gives no cgroup.
    #[serde(default)]
    pub workload: Option<String>,
}

/// A kernel record as the message it is: a transition, or a SYN retransmission.
pub fn message_of(
    e: &TailEvent,
    realtime_offset_ns: i128,
    workload: Option<&str>,
) -> Option<Message> {
    let mut event = Event::from_kernel(e, realtime_offset_ns)?;
    event.workload = workload.map(str::to_string);
    Some(if e.kind == tcpmon_common::TAIL_SYN_RETRANSMIT {
        Message::Retransmit(event)
    } else {
        Message::Event(event)
    })
}

impl Event {
    /// Decodes a kernel event; `realtime_offset_ns` is CLOCK_REALTIME − CLOCK_MONOTONIC.
    pub fn from_kernel(e: &TailEvent, realtime_offset_ns: i128) -> Option<Event> {
        Some(Event {
            time: rfc3339(i128::from(e.ts_ns) + realtime_offset_ns),
            mono_ns: e.ts_ns,
            connection: format!("{:x}", e.skaddr),
            pid: owner_pid(e),
            comm: comm(e).map(String::from),
            family: family_label(e.family).to_string(),
            local: address(e.family, &e.saddr),
            local_port: e.sport,
            remote: address(e.family, &e.daddr),
            remote_port: e.dport,
            old_state: TcpState::from_raw(e.oldstate)?,
            new_state: TcpState::from_raw(e.newstate)?,
            ms: dwell_ms(e),
            error: e.sk_err,
            workload: None,
        })
    }
}

/// The owning process, if the program knew it.
pub fn owner_pid(e: &TailEvent) -> Option<u32> {
    (e.pid != 0).then_some(e.pid)
}

/// The owner's command name, if the program knew the owner.
pub fn comm(e: &TailEvent) -> Option<Cow<'_, str>> {
    owner_pid(e).map(|_| comm_name(&e.comm))
}

/// Milliseconds in the old state, if the program saw the socket enter it.
pub fn dwell_ms(e: &TailEvent) -> Option<f64> {
    (e.dwell_ns != DWELL_UNKNOWN).then(|| e.dwell_ns as f64 / 1e6)
}

impl Serialize for TcpState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TcpState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        TcpState::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown TCP state {name}")))
    }
}

#[cfg(test)]
mod tests {
    use tcpmon_common::AF_INET;

    use super::*;

    #[test]
    fn decodes_a_kernel_event() {
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        let raw = TailEvent {
            ts_ns: 5_000,
            skaddr: 0xffff_8881_0000_1000,
            dwell_ns: 1_130_000,
            cgroup_id: 0,
            saddr,
            daddr: saddr,
            comm,
            pid: 42,
            oldstate: 2,
            newstate: 1,
            sk_err: 0,
            sport: 40000,
            dport: 8080,
            family: AF_INET,
            kind: 0,
            _pad: 0,
        };
        let e = Event::from_kernel(&raw, 1_000_000_000).expect("valid states");
        assert_eq!(e.time, "1970-01-01T00:00:01.000005Z");
        assert_eq!(e.connection, "ffff888100001000");
        assert_eq!((e.pid, e.comm.as_deref()), (Some(42), Some("curl")));
        assert_eq!(
            (e.old_state, e.new_state),
            (TcpState::SynSent, TcpState::Established)
        );
        assert_eq!(e.ms, Some(1.13));
        let json = serde_json::to_string(&Message::Event(e.clone())).expect("serializes");
        assert!(json.starts_with("{\"type\":\"event\",\"time\":\"1970-01-01T00:00:01.000005Z\""));
        assert!(json.contains("\"old_state\":\"SYN_SENT\",\"new_state\":\"ESTABLISHED\""));
        let back: Message = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, Message::Event(e));
        let unknown = TailEvent {
            pid: 0,
            dwell_ns: DWELL_UNKNOWN,
            ..raw
        };
        let e = Event::from_kernel(&unknown, 0).expect("valid");
        assert_eq!((e.pid, e.comm, e.ms), (None, None, None));
    }
}
