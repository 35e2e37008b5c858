//! The agent's side of the tail's wire format: NDJSON lines written straight from the kernel's
//! records into a client's buffer. Decoding a record into an [`Event`](super::event::Event)
//! and serializing that allocated five strings per event, and with serde and `fmt` it was most
//! of the agent's work under a connection storm; this writes the same bytes by hand (tested
//! below against the serialized `Event`, so the documented format keeps one definition).
use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr},
};

use tcpmon_common::{TailEvent, TAIL_SYN_RETRANSMIT};

use crate::state::TcpState;
use crate::{
    clock::Rfc3339,
    socket_fields::{address, family_label},
    tail::event::{comm, dwell_ms, owner_pid},
};

/// Appends the record's NDJSON line, newline included, to `out`. Writes nothing and returns
/// false for a record whose states are not TCP states (as `Event::from_kernel` refuses it).
pub fn write_line(
    e: &TailEvent,
    realtime_offset_ns: i128,
    workload: Option<&str>,
    out: &mut Vec<u8>,
) -> bool {
    let (Some(old_state), Some(new_state)) = (
        TcpState::from_raw(e.oldstate),
        TcpState::from_raw(e.newstate),
    ) else {
        return false;
    };
    out.extend_from_slice(if e.kind == TAIL_SYN_RETRANSMIT {
        b"{\"type\":\"retransmit\",\"time\":\""
    } else {
        b"{\"type\":\"event\",\"time\":\""
    });
    time(out, i128::from(e.ts_ns) + realtime_offset_ns);
    out.extend_from_slice(b"\",\"mono_ns\":");
    decimal(out, e.ts_ns);
    out.extend_from_slice(b",\"connection\":\"");
    hex(out, e.skaddr);
    out.extend_from_slice(b"\",\"pid\":");
    match owner_pid(e) {
        Some(pid) => decimal(out, u64::from(pid)),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"comm\":");
    match comm(e) {
        Some(comm) => string(out, &comm),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"family\":\"");
    out.extend_from_slice(family_label(e.family).as_bytes());
    out.extend_from_slice(b"\",\"local\":\"");
    ip(out, address(e.family, &e.saddr));
    out.extend_from_slice(b"\",\"local_port\":");
    decimal(out, u64::from(e.sport));
    out.extend_from_slice(b",\"remote\":\"");
    ip(out, address(e.family, &e.daddr));
    out.extend_from_slice(b"\",\"remote_port\":");
    decimal(out, u64::from(e.dport));
    out.extend_from_slice(b",\"old_state\":\"");
    out.extend_from_slice(old_state.name().as_bytes());
    out.extend_from_slice(b"\",\"new_state\":\"");
    out.extend_from_slice(new_state.name().as_bytes());
    out.extend_from_slice(b"\",\"ms\":");
    match dwell_ms(e) {
        // serde_json's own shortest round-trip form, so that ms reads back bit for bit.
        Some(ms) => {
            let _ = serde_json::to_writer(&mut *out, &ms);
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"error\":");
    if e.sk_err < 0 {
        out.push(b'-');
    }
    decimal(out, u64::from(e.sk_err.unsigned_abs()));
    out.extend_from_slice(b",\"workload\":");
    match workload {
        Some(name) => string(out, name),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}\n");
    true
}

fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn hex(out: &mut Vec<u8>, n: u64) {
    let digits = if n == 0 {
        1
    } else {
        16 - n.leading_zeros() as usize / 4
    };
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[(n >> (4 * i)) as usize & 0xf]);
    }
}

/// Wall-clock time as `YYYY-MM-DDTHH:MM:SS.ffffffZ`: years 0–9999 (every time a record's
/// monotonic clock can give) digit by digit, anything else through [`Rfc3339`]'s `Display`.
fn time(out: &mut Vec<u8>, unix_ns: i128) {
    let c = Rfc3339(unix_ns).civil();
    if !(0..=9999).contains(&c.year) {
        let _ = write!(out, "{}", Rfc3339(unix_ns));
        return;
    }
    let fields = [
        (c.year as u32, 4, b'-'),
        (c.month, 2, b'-'),
        (c.day, 2, b'T'),
        (c.hour, 2, b':'),
        (c.minute, 2, b':'),
        (c.second, 2, b'.'),
        (c.micros, 6, b'Z'),
    ];
    for (value, width, separator) in fields {
        for i in (0..width).rev() {
            out.push(b'0' + (value / 10u32.pow(i) % 10) as u8);
        }
        out.push(separator);
    }
}

fn ip(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => ipv4(out, v4),
        // Rare and long: `Display` knows the shortest form (zero runs, embedded IPv4).
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn ipv4(out: &mut Vec<u8>, addr: Ipv4Addr) {
    for (i, octet) in addr.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        decimal(out, u64::from(octet));
    }
}

/// A JSON string: printable ASCII without quotes or backslashes as it is, anything else
/// escaped by serde_json (as the serialized `Event` has it).
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use tcpmon_common::{AF_INET, DWELL_UNKNOWN};

    use super::*;
    use crate::tail::event::{json_line, message_of};

    fn record() -> TailEvent {
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[10, 0, 0, 7]);
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&[192, 0, 2, 1]);
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        TailEvent {
            ts_ns: 123_456_789_012,
            skaddr: 0xffff_8881_0000_1000,
            dwell_ns: 1_130_001,
            cgroup_id: 0,
            saddr,
            daddr,
            comm,
            pid: 4242,
            oldstate: 2,
            newstate: 1,
            sk_err: 0,
            sport: 40000,
            dport: 8080,
            family: AF_INET,
            kind: 0,
            _pad: 0,
        }
    }

    /// What the agent wrote before: the decoded event, serialized.
    fn decoded_line(e: &TailEvent, offset: i128) -> Option<String> {
        message_of(e, offset, None).map(|message| json_line(&message) + "\n")
    }

    fn wire_line(e: &TailEvent, offset: i128) -> Option<String> {
        let mut out = Vec::new();
        write_line(e, offset, None, &mut out).then(|| String::from_utf8(out).expect("UTF-8"))
    }

    #[test]
    fn writes_exactly_what_the_decoded_event_serializes_to() {
        let offset = 1_795_843_200_000_000_000;
        let mut v6 = record();
        v6.family = 10;
        v6.saddr = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        v6.daddr = "::ffff:10.1.2.3"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let mut odd_comm = record();
        odd_comm.comm = *b"a\"b\\c\n\x01\xff\xfe-xyz\0\0\0";
        let mut full_comm = record();
        full_comm.comm = *b"sixteen-bytes-xx";
        let variants = [
            record(),
            v6,
            odd_comm,
            full_comm,
            TailEvent {
                pid: 0,
                dwell_ns: DWELL_UNKNOWN,
                ..record()
            },
            TailEvent {
                dwell_ns: 0,
                sk_err: 111,
                oldstate: 2,
                newstate: 7,
                ..record()
            },
            TailEvent {
                dwell_ns: 1,
                ..record()
            },
            TailEvent {
                dwell_ns: 7_000_000_000_123,
                ..record()
            },
            TailEvent {
                dwell_ns: u64::MAX - 1,
                ..record()
            },
            TailEvent {
                ts_ns: 0,
                skaddr: 0,
                ..record()
            },
        ];
        for e in variants {
            for offset in [
                0,
                offset,
                -1_000_000_000_000,
                -70_000 * 365 * 86_400 * 1_000_000_000,
            ] {
                let line = wire_line(&e, offset);
                assert!(line.is_some());
                assert_eq!(line, decoded_line(&e, offset), "{e:?}");
            }
        }
    }

    #[test]
    fn skips_records_whose_states_are_not_tcp_states() {
        let bad = TailEvent {
            newstate: 99,
            ..record()
        };
        let mut out = b"kept\n".to_vec();
        assert!(!write_line(&bad, 0, None, &mut out));
        assert_eq!(out, b"kept\n");
        assert_eq!(decoded_line(&bad, 0), None);
    }
}
