use prometheus::Encoder;

use super::*;

fn listener(id: u128, port: u16, queued: u64, drops: u64) -> Listener {
    Listener {
        id,
        family: libc::AF_INET as u16,
        address: [0; 16],
        port,
        queued,
        limit: 128,
        drops,
        requests: 0,
        netns: 1,
    }
}

#[test]
fn a_record_of_the_iterator_becomes_a_listener_identified_by_address_and_time() {
    let record = ListenerRecord {
        skaddr: 0xffff_8880_0000_1000,
        since_ns: 42,
        address: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        drops: 17,
        queued: 3,
        limit: 128,
        requests: 2,
        netns: 4026531840,
        family: libc::AF_INET as u16,
        port: 8080,
        state: 10,
        _pad: [0; 7],
    };
    let listener = Listener::from(&record);
    assert_eq!(listener.id, 0xffff_8880_0000_1000u128 << 64 | 42);
    assert_eq!(
        (
            listener.port,
            listener.queued,
            listener.limit,
            listener.drops
        ),
        (8080, 3, 128, 17)
    );
    assert_eq!((listener.requests, listener.netns), (2, 4026531840));
    let reused = Listener::from(&ListenerRecord {
        since_ns: 43,
        ..record
    });
    assert_ne!(listener.id, reused.id, "a reused address is a new listener");
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
