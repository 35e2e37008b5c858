//! Accept queues of listening sockets, and the segments their listeners dropped, per port: what
//! `ss -ltm` shows (Recv-Q is the accept queue now, Send-Q its limit, `d` in `skmem` the drops),
//! read for every listener of every namespace in one pass of the listener iterator
//! (`tcpmon-ebpf/src/listeners.rs`), without entering any namespace.
//!
//! A listener's drop count (`sk_drops`) is what `tcp_listendrop` adds to: a SYN dropped because
//! the accept queue was full (or the SYN queue, without syncookies), a final ACK whose child
//! could not be queued or created. Host-wide that is `TcpExtListenDrops`; here it is per
//! listener, so per port. The count lives on the listening socket and goes when it closes, so
//! [`ListenDrops`] keeps what closed listeners had dropped: the counter never goes backwards.
//! The agent looks every second (`listen_watch`) as well as at each scrape, so what a listener
//! dropped in the last second before it closed is all that can be missed.
use std::collections::{BTreeMap, HashMap};

use prometheus::proto::{Metric, MetricFamily};
use tcpmon_common::ListenerRecord;

use super::{
    descriptors,
    families::{counter, gauge},
    ports::PortTable,
};

/// One listening socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    /// Unique on the host for the listener's lifetime: its kernel address and when tcpmon
    /// first saw it listen (an address is reused by later sockets).
    pub id: u128,
    /// `AF_INET` or `AF_INET6`, and the address it listens on (IPv4 in the first 4 bytes).
    pub family: u16,
    pub address: [u8; 16],
    pub port: u16,
    /// Connections in the accept queue, waiting for `accept()`.
    pub queued: u64,
    /// The accept queue's limit: the `listen()` backlog, capped by `net.core.somaxconn`.
    pub limit: u64,
    pub drops: u64,
    /// Request sockets (handshakes between SYN and final ACK) the listener holds.
    pub requests: u64,
    /// The inode of its network namespace.
    pub netns: u32,
}

impl From<&ListenerRecord> for Listener {
    fn from(r: &ListenerRecord) -> Listener {
        Listener {
            id: u128::from(r.skaddr) << 64 | u128::from(r.since_ns),
            family: r.family,
            address: r.address,
            port: r.port,
            queued: r.queued.into(),
            limit: r.limit.into(),
            drops: r.drops.into(),
            requests: r.requests.into(),
            netns: r.netns,
        }
    }
}

/// One port's listeners, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortQueue {
    /// Listeners open now; 0 for a port whose listeners all closed.
    pub listeners: u64,
    pub queued: u64,
    pub limit: u64,
    /// Drops of every listener seen on the port, closed ones included.
    pub drops: u64,
}

/// The drop counts of listeners seen so far, so that a closed listener's drops stay counted.
#[derive(Debug, Default)]
pub struct ListenDrops {
    /// Open listeners by id: their port and the most drops seen.
    open: HashMap<u128, (u16, u64)>,
    /// Per port, the drops of listeners that closed.
    closed: BTreeMap<u16, u64>,
    /// Whether listeners were looked at before: what they had dropped when the agent started
    /// is counted, but is not news.
    looked: bool,
}

/// What [`ListenDrops::update`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListenLook {
    /// Each port's sums.
    pub ports: BTreeMap<u16, PortQueue>,
    /// The listeners that dropped since the previous look, with how many.
    pub dropped: Vec<(Listener, u64)>,
}

impl ListenDrops {
    /// Takes the listeners open now (of every namespace in scope). Looks may come out of order
    /// (a scrape and the watcher at once): a listener's count never goes below its highest.
    pub fn update(&mut self, listeners: &[Listener]) -> ListenLook {
        let mut dropped = Vec::new();
        let mut now: HashMap<u128, (u16, u64)> = HashMap::with_capacity(listeners.len());
        for l in listeners {
            let before = self.open.get(&l.id).map(|&(_, d)| d);
            let drops = before.unwrap_or(0).max(l.drops);
            let new = drops - before.unwrap_or(0);
            if self.looked && new > 0 {
                dropped.push((*l, new));
            }
            now.insert(l.id, (l.port, drops));
        }
        for (id, &(port, drops)) in &self.open {
            if !now.contains_key(id) {
                *self.closed.entry(port).or_default() += drops;
            }
        }
        self.open = now;
        self.looked = true;
        let mut ports: BTreeMap<u16, PortQueue> = self
            .closed
            .iter()
            .map(|(&port, &drops)| {
                (
                    port,
                    PortQueue {
                        drops,
                        ..PortQueue::default()
                    },
                )
            })
            .collect();
        for l in listeners {
            let sum = ports.entry(l.port).or_default();
            sum.listeners += 1;
            sum.queued += l.queued;
            sum.limit += l.limit;
            sum.drops += self.open[&l.id].1;
        }
        ListenLook { ports, dropped }
    }
}

/// `tcpmon_listen_queue_length`, `tcpmon_listen_queue_limit` (ports with a listener now) and
/// `tcpmon_listen_drops_total` (every port seen listening), by `port` label: ports without a
/// label of their own are summed into "other".
pub fn families(ports: &PortTable, queues: &BTreeMap<u16, PortQueue>) -> Vec<MetricFamily> {
    let mut by_label: BTreeMap<u32, PortQueue> = BTreeMap::new();
    for (&port, q) in queues {
        let sum = by_label.entry(ports.slot(port)).or_default();
        sum.listeners += q.listeners;
        sum.queued += q.queued;
        sum.limit += q.limit;
        sum.drops += q.drops;
    }
    let series = |value: fn(&PortQueue) -> u64,
                  open_only: bool,
                  make: fn(&[(&str, &str)], f64) -> Metric| {
        by_label
            .iter()
            .filter(|(_, q)| !open_only || q.listeners > 0)
            .map(|(&slot, q)| make(&[("port", ports.label(slot))], value(q) as f64))
            .collect::<Vec<Metric>>()
    };
    vec![
        descriptors::LISTEN_QUEUE_LENGTH.with(series(|q| q.queued, true, gauge)),
        descriptors::LISTEN_QUEUE_LIMIT.with(series(|q| q.limit, true, gauge)),
        descriptors::LISTEN_DROPS.with(series(|q| q.drops, false, counter)),
    ]
}

#[cfg(test)]
#[path = "listeners_tests.rs"]
mod tests;
