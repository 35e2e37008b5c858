//! A tail event as users see it: decoded from the kernel's `TailEvent`, sent to `tcpmon tail`
//! as one JSON object per line, and printed by the output formats.
//!
//! The JSON field names are an interface (documented in docs/TAIL.md): add fields, never rename.
use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use serde::{Deserialize, Serialize};
use tcpmon_common::{TailEvent, AF_INET, DWELL_UNKNOWN};

use crate::state::TcpState;

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

/// "inet" or "inet6".
pub fn family_label(family: u16) -> &'static str {
    if family == AF_INET {
        "inet"
    } else {
        "inet6"
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

/// A kernel command name: NUL-padded bytes.
pub fn comm_name(raw: &[u8; 16]) -> Cow<'_, str> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end])
}

/// Milliseconds in the old state, if the program saw the socket enter it.
pub fn dwell_ms(e: &TailEvent) -> Option<f64> {
    (e.dwell_ns != DWELL_UNKNOWN).then(|| e.dwell_ns as f64 / 1e6)
}

/// An address from the record; IPv4-mapped IPv6 addresses become plain IPv4.
pub fn address(family: u16, bytes: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        return IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]));
    }
    let v6 = Ipv6Addr::from(*bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Formats nanoseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn rfc3339(unix_ns: i128) -> String {
    Rfc3339(unix_ns).to_string()
}

/// Nanoseconds since the Unix epoch, displayed as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (and
/// serialized as that string) without allocating.
#[derive(Clone, Copy, Debug)]
pub struct Rfc3339(pub i128);

/// A point in time as calendar fields in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    /// 1..=12, 1..=31, then the time of day.
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
}

impl Rfc3339 {
    pub fn civil(self) -> Civil {
        let unix_ns = self.0;
        let secs = unix_ns.div_euclid(1_000_000_000) as i64;
        let micros = (unix_ns.rem_euclid(1_000_000_000) / 1000) as u32;
        let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        Civil {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rest / 3600,
            minute: rest % 3600 / 60,
            second: rest % 60,
            micros,
        }
    }
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.civil();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            c.year, c.month, c.day, c.hour, c.minute, c.second, c.micros
        )
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC, in nanoseconds.
pub fn realtime_offset_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the program's `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
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
    use super::*;

    #[test]
    fn formats_wall_clock_time() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_795_843_200_123_456_789),
            "2026-11-28T05:20:00.123456Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn maps_ipv4_mapped_addresses_to_ipv4() {
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(address(10, &mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
        let v6: [u8; 16] = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(address(10, &v6), "2001:db8::1".parse::<IpAddr>().unwrap());
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            address(AF_INET, &v4),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

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
