use prometheus::Encoder;

use super::*;

/// An `inet_diag_msg` of a listener with its memory counters, as the kernel sends it.
fn message(port: u16, cookie: u64, queued: u32, limit: u32, drops: u32) -> Vec<u8> {
    let mut m = vec![libc::AF_INET as u8, 10, 0, 0];
    m.extend(port.to_be_bytes());
    m.extend([0, 0, 127, 0, 0, 1]);
    m.resize(44, 0);
    m.extend((cookie as u32).to_ne_bytes());
    m.extend(((cookie >> 32) as u32).to_ne_bytes());
    m.resize(56, 0);
    m.extend(queued.to_ne_bytes());
    m.extend(limit.to_ne_bytes());
    m.resize(MESSAGE_LEN, 0);
    // An attribute before the one wanted, of a length that needs padding.
    m.extend(5u16.to_ne_bytes());
    m.extend(1u16.to_ne_bytes());
    m.extend([0u8; 4]);
    let mut meminfo = [0u32; 9];
    meminfo[MEMINFO_DROPS] = drops;
    m.extend((4 + 36u16).to_ne_bytes());
    m.extend(INET_DIAG_SKMEMINFO.to_ne_bytes());
    meminfo.iter().for_each(|v| m.extend(v.to_ne_bytes()));
    m
}

fn listener(cookie: u64, port: u16, queued: u64, drops: u64) -> Listener {
    Listener {
        cookie,
        family: libc::AF_INET as u16,
        address: [0; 16],
        port,
        queued,
        limit: 128,
        drops,
    }
}

#[test]
fn reads_port_cookie_queue_limit_and_drops() {
    let parsed = parse_listener(&message(8080, 0x1_0000_0002, 3, 128, 17)).expect("parses");
    assert_eq!(
        parsed,
        Listener {
            cookie: 0x1_0000_0002,
            family: libc::AF_INET as u16,
            address: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            port: 8080,
            queued: 3,
            limit: 128,
            drops: 17,
        }
    );
}

#[test]
fn refuses_truncated_messages_and_a_missing_drop_count() {
    let full = message(80, 1, 0, 1, 0);
    assert!(parse_listener(&full[..60]).is_err());
    assert!(parse_listener(&full[..MESSAGE_LEN]).is_err(), "no meminfo");
    assert!(
        parse_listener(&full[..full.len() - 2]).is_err(),
        "cut attribute"
    );
}

#[test]
fn a_closed_listeners_drops_stay_counted() {
    let mut drops = ListenDrops::default();
    let first = drops
        .update(&[listener(1, 80, 2, 5), listener(2, 80, 1, 3)])
        .ports;
    assert_eq!(
        first[&80],
        PortQueue {
            listeners: 2,
            queued: 3,
            limit: 256,
            drops: 8
        }
    );
    // Listener 2 closed; a new one (cookie 3) opened on the same port.
    let second = drops
        .update(&[listener(1, 80, 0, 6), listener(3, 80, 0, 0)])
        .ports;
    assert_eq!(second[&80].drops, 9);
    assert_eq!(second[&80].listeners, 2);
    let gone = drops.update(&[]).ports;
    assert_eq!(
        gone[&80],
        PortQueue {
            drops: 9,
            ..PortQueue::default()
        }
    );
}

#[test]
fn ports_without_a_label_are_summed_into_other_and_closed_ports_keep_only_drops() {
    let ports = PortTable::new(&[80], 0).expect("fits");
    let mut drops = ListenDrops::default();
    drops.update(&[listener(9, 443, 0, 4)]);
    let queues = drops
        .update(&[listener(1, 80, 2, 1), listener(2, 22, 1, 0)])
        .ports;
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&families(&ports, &queues), &mut out)
        .expect("encodes");
    let text: Vec<String> = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(String::from)
        .collect();
    assert_eq!(
        text,
        [
            "tcpmon_listen_queue_length{port=\"other\"} 1",
            "tcpmon_listen_queue_length{port=\"80\"} 2",
            "tcpmon_listen_queue_limit{port=\"other\"} 128",
            "tcpmon_listen_queue_limit{port=\"80\"} 128",
            "tcpmon_listen_drops_total{port=\"other\"} 4",
            "tcpmon_listen_drops_total{port=\"80\"} 1",
        ]
    );
}

#[test]
fn drops_since_the_previous_look_are_news_and_an_older_look_changes_nothing() {
    let mut drops = ListenDrops::default();
    let first = drops.update(&[listener(1, 80, 0, 5)]);
    assert!(
        first.dropped.is_empty(),
        "drops before the agent are not news"
    );
    let second = drops.update(&[listener(1, 80, 0, 8), listener(2, 443, 0, 2)]);
    assert_eq!(
        second.dropped,
        [(listener(1, 80, 0, 8), 3), (listener(2, 443, 0, 2), 2)]
    );
    // A look that began before the previous one finished reports less: nothing moves back.
    let stale = drops.update(&[listener(1, 80, 0, 6), listener(2, 443, 0, 2)]);
    assert!(stale.dropped.is_empty());
    assert_eq!(stale.ports[&80].drops, 8);
    let third = drops.update(&[listener(1, 80, 0, 9), listener(2, 443, 0, 2)]);
    assert_eq!(third.dropped, [(listener(1, 80, 0, 9), 1)]);
}
