use super::*;
use crate::state::TcpState::{self, *};

/// A connection's events: (old, new, microseconds since the first event, sk_err).
fn connection(steps: &[(TcpState, TcpState, u64, i32)]) -> Vec<Event> {
    steps
        .iter()
        .map(|&(old, new, us, error)| Event {
            time: "2026-11-24T05:23:43.123456Z".into(),
            mono_ns: 1_000_000_000 + us * 1000,
            connection: "ffff1".into(),
            pid: (old == Close).then_some(4242),
            comm: (old == Close).then(|| "curl".into()),
            family: "inet".into(),
            local: "127.0.0.1".parse().unwrap(),
            local_port: 41234,
            remote: "127.0.0.1".parse().unwrap(),
            remote_port: 8080,
            old_state: old,
            new_state: new,
            ms: None,
            error,
            workload: None,
        })
        .collect()
}

fn line(steps: &[(TcpState, TcpState, u64, i32)]) -> String {
    let mut t = Timelines::default();
    let mut out = Vec::new();
    for e in connection(steps) {
        out.extend(t.push(e));
    }
    assert_eq!(out.len(), 1, "one line when the connection closes");
    assert!(t.open.is_empty());
    out.remove(0)
}

const PREFIX: &str = "05:23:43.123 127.0.0.1:41234 → 127.0.0.1:8080 pid 4242 curl: ";

#[test]
fn local_close() {
    assert_eq!(
        line(&[
            (Close, SynSent, 0, 0),
            (SynSent, Established, 1130, 0),
            (Established, FinWait1, 5_201_130, 0),
            (FinWait1, FinWait2, 5_201_180, 0),
            (FinWait2, Close, 5_213_180, 0),
        ]),
        format!("{PREFIX}SYN 1.13 ms → ESTABLISHED 5.20 s → local FIN → FIN_WAIT1 50 µs → FIN_WAIT2 12.00 ms → TIME_WAIT [closed: local fin]")
    );
}

#[test]
fn remote_close() {
    assert_eq!(
        line(&[
            (Close, SynSent, 0, 0),
            (SynSent, Established, 40, 0),
            (Established, CloseWait, 2_000_040, 0),
            (CloseWait, LastAck, 2_300_040, 0),
            (LastAck, Close, 2_300_100, 0),
        ]),
        format!("{PREFIX}SYN 40 µs → ESTABLISHED 2.00 s → remote FIN → CLOSE_WAIT 300.00 ms → local FIN → LAST_ACK 60 µs → CLOSED [closed: remote fin]")
    );
}

#[test]
fn simultaneous_close() {
    assert_eq!(
        line(&[
            (Close, SynSent, 0, 0),
            (SynSent, Established, 40, 0),
            (Established, FinWait1, 1040, 0),
            (FinWait1, Closing, 1060, 0),
            (Closing, Close, 1100, 0),
        ]),
        format!("{PREFIX}SYN 40 µs → ESTABLISHED 1.00 ms → local FIN → FIN_WAIT1 20 µs → remote FIN → CLOSING 40 µs → TIME_WAIT [closed: simultaneous fin]")
    );
}

#[test]
fn resets_both_ways() {
    assert_eq!(
        line(&[
            (Close, SynSent, 0, 0),
            (SynSent, Established, 40, 0),
            (Established, Close, 90, 104)
        ]),
        format!(
            "{PREFIX}SYN 40 µs → ESTABLISHED 50 µs → RST received → CLOSED [closed: remote reset]"
        )
    );
    assert_eq!(
        line(&[
            (Close, SynSent, 0, 0),
            (SynSent, Established, 40, 0),
            (Established, Close, 90, 0)
        ]),
        format!("{PREFIX}SYN 40 µs → ESTABLISHED 50 µs → RST sent → CLOSED [closed: local reset]")
    );
}

#[test]
fn refused_and_timed_out_handshakes() {
    assert_eq!(
        line(&[(Close, SynSent, 0, 0), (SynSent, Close, 35, 111)]),
        format!("{PREFIX}SYN 35 µs → RST → CLOSED [handshake refused]")
    );
    assert_eq!(
        line(&[(Close, SynSent, 0, 0), (SynSent, Close, 3_010_000, 110)]),
        format!("{PREFIX}SYN 3.01 s → no answer → CLOSED [handshake timed out]")
    );
    assert_eq!(
        line(&[(Close, SynSent, 0, 0), (SynSent, Close, 20, 0)]),
        format!("{PREFIX}SYN 20 µs → closed by the application → CLOSED [handshake aborted]")
    );
}

#[test]
fn server_side_and_same_state_events() {
    let events = &[
        (Listen, SynRecv, 0, 0),
        (SynRecv, Established, 5, 0),
        (Established, FinWait1, 1005, 0),
        (FinWait1, FinWait1, 1010, 0),
        (FinWait1, FinWait2, 1050, 0),
        (FinWait2, Close, 2050, 0),
    ];
    let rendered = line(events);
    assert!(rendered.ends_with(": SYN → SYN_RECV 5 µs → ESTABLISHED 1.00 ms → local FIN → FIN_WAIT1 45 µs → FIN_WAIT2 1.00 ms → TIME_WAIT [closed: local fin]"), "{rendered}");
    assert!(rendered.contains(" pid -: "), "no owner seen: {rendered}");
}

#[test]
fn a_connection_is_printed_only_when_it_closes() {
    let mut t = Timelines::default();
    let events = connection(&[(Close, SynSent, 0, 0), (SynSent, Established, 40, 0)]);
    for e in events {
        assert!(t.push(e).is_empty());
    }
    assert_eq!(t.open.len(), 1);
}

#[test]
fn syns_sent_again_are_counted_with_their_times_from_the_first() {
    let events = connection(&[
        (Close, SynSent, 0, 0),
        (SynSent, Close, 7_000_000, errno::ETIMEDOUT),
    ]);
    let mut t = Timelines::default();
    let mut again = events[0].clone();
    t.push(events[0].clone());
    for after_us in [1_000_000, 3_000_000] {
        again.mono_ns = events[0].mono_ns + after_us * 1000;
        t.retransmit(&again);
    }
    let lines = t.push(events[1].clone());
    assert_eq!(
        lines,
        [format!(
            "{PREFIX}SYN ×3 (+1.00 s, +3.00 s) 7.00 s → no answer → CLOSED [handshake timed out]"
        )]
    );
    assert!(t.retransmits.is_empty(), "forgotten once printed");
}

#[test]
fn the_owner_names_the_workload_when_the_kernel_gave_one() {
    let mut events = connection(&[
        (Close, SynSent, 0, 0),
        (SynSent, Established, 1130, 0),
        (Established, FinWait1, 5_201_130, 0),
        (FinWait1, FinWait2, 5_201_180, 0),
        (FinWait2, Close, 5_213_180, 0),
    ]);
    for e in &mut events {
        e.workload = Some("shop/checkout-5d8f".into());
    }
    assert!(
        render(&events).starts_with(
            "05:23:43.123 127.0.0.1:41234 → 127.0.0.1:8080 pid 4242 curl in shop/checkout-5d8f: SYN 1.13 ms"
        ),
        "{}",
        render(&events)
    );
}
