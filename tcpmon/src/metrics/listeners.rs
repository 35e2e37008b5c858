//! Accept queues of listening sockets, and the segments their listeners dropped, per port: a
//! sock_diag dump of the LISTEN sockets, which is what `ss -ltm` shows (Recv-Q is the accept
//! queue now, Send-Q its limit, `d` in `skmem` the drops).
//!
//! A listener's drop count (`sk_drops`) is what `tcp_listendrop` adds to: a SYN dropped because
//! the accept queue was full (or the SYN queue, without syncookies), a final ACK whose child
//! could not be queued or created. Host-wide that is `TcpExtListenDrops`; here it is per
//! listener, so per port. The count lives on the listening socket and goes when it closes, so
//! [`ListenDrops`] keeps what closed listeners had dropped: the counter never goes backwards.
//! The agent looks every second (`listen_watch`) as well as at each scrape, so what a listener
//! dropped in the last second before it closed is all that can be missed.
use std::{
    collections::{BTreeMap, HashMap},
    io,
    os::fd::OwnedFd,
};

use prometheus::proto::{Metric, MetricFamily};

use super::{
    descriptors as family,
    families::{counter, gauge},
    ports::PortTable,
    sock_diag::{self, truncated, INET_DIAG_SKMEMINFO},
};

/// `struct inet_diag_msg`, before the attributes.
const MESSAGE_LEN: usize = 72;
/// `SK_MEMINFO_DROPS` (`<linux/sock_diag.h>`): index of `sk_drops` in the memory counters.
const MEMINFO_DROPS: usize = 8;
/// Attribute type bits that are flags, not the type (`NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`).
const ATTRIBUTE_TYPE_MASK: u16 = 0x3fff;

/// One listening socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    /// The socket's cookie: unique on the host, across namespaces, for its lifetime.
    pub cookie: u64,
    /// `AF_INET` or `AF_INET6`, and the address it listens on (IPv4 in the first 4 bytes).
    pub family: u16,
    pub address: [u8; 16],
    pub port: u16,
    /// Connections in the accept queue, waiting for `accept()`.
    pub queued: u64,
    /// The accept queue's limit: the `listen()` backlog, capped by `net.core.somaxconn`.
    pub limit: u64,
    pub drops: u64,
}

/// The listening sockets of the namespace `socket` was opened in.
pub fn listeners(socket: &OwnedFd) -> io::Result<Vec<Listener>> {
    let mut found = Vec::new();
    sock_diag::dump_listeners(socket, |payload| {
        found.push(parse_listener(payload)?);
        Ok(())
    })?;
    Ok(found)
}

/// One socket of a dump of listeners.
pub fn parse_listener(payload: &[u8]) -> io::Result<Listener> {
    let message = payload.get(..MESSAGE_LEN).ok_or_else(truncated)?;
    let word = |at: usize| {
        u32::from_ne_bytes([
            message[at],
            message[at + 1],
            message[at + 2],
            message[at + 3],
        ])
    };
    let drops = meminfo_drops(&payload[MESSAGE_LEN..])?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "sock_diag reported a listener without its drop count",
        )
    })?;
    let mut address = [0; 16];
    address.copy_from_slice(&message[8..24]);
    Ok(Listener {
        // idiag_family, idiag_src, idiag_sport (network byte order), idiag_cookie (two
        // host-order halves, low first), idiag_rqueue, idiag_wqueue.
        family: message[0].into(),
        address,
        port: u16::from_be_bytes([message[4], message[5]]),
        cookie: u64::from(word(44)) | u64::from(word(48)) << 32,
        queued: word(56).into(),
        limit: word(60).into(),
        drops: drops.into(),
    })
}

/// `sk_drops` from the `INET_DIAG_SKMEMINFO` attribute, if there is one.
fn meminfo_drops(mut attributes: &[u8]) -> io::Result<Option<u32>> {
    while attributes.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attributes[0], attributes[1]]));
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]) & ATTRIBUTE_TYPE_MASK;
        let value = attributes.get(4..len).ok_or_else(truncated)?;
        if kind == INET_DIAG_SKMEMINFO {
            let at = MEMINFO_DROPS * 4;
            return Ok(value
                .get(at..at + 4)
                .map(|d| u32::from_ne_bytes([d[0], d[1], d[2], d[3]])));
        }
        attributes = attributes.get(len.div_ceil(4) * 4..).unwrap_or_default();
    }
    Ok(None)
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
    /// Open listeners by cookie: their port and the most drops seen.
    open: HashMap<u64, (u16, u64)>,
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
        let mut now: HashMap<u64, (u16, u64)> = HashMap::with_capacity(listeners.len());
        for l in listeners {
            let before = self.open.get(&l.cookie).map(|&(_, d)| d);
            let drops = before.unwrap_or(0).max(l.drops);
            let new = drops - before.unwrap_or(0);
            if self.looked && new > 0 {
                dropped.push((*l, new));
            }
            now.insert(l.cookie, (l.port, drops));
        }
        for (cookie, &(port, drops)) in &self.open {
            if !now.contains_key(cookie) {
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
            sum.drops += self.open[&l.cookie].1;
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
        family::LISTEN_QUEUE_LENGTH.with(series(|q| q.queued, true, gauge)),
        family::LISTEN_QUEUE_LIMIT.with(series(|q| q.limit, true, gauge)),
        family::LISTEN_DROPS.with(series(|q| q.drops, false, counter)),
    ]
}

#[cfg(test)]
#[path = "listeners_tests.rs"]
mod tests;
