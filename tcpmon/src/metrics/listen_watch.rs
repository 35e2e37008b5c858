//! Listen drops as events: every second the agent reads the drop counts of every listener in
//! scope (one pass of the listener iterator, across all namespaces, as a scrape makes) and
//! writes one `listen_dropped` event for each listener whose count rose, into the recent
//! trouble that `tcpmon tail --recent` prints. The look costs what the listeners cost: it
//! neither scans `/proc` nor enters a namespace.
//!
//! Why the agent and not the program: the kernel has no hook where a listener drops. A SYN
//! dropped because the accept queue is full is consumed (`consume_skb`), not freed with a drop
//! reason, so `skb:kfree_skb` does not see it (verified on 6.18: a flood of 12 dropped SYNs gave
//! one `kfree_skb`, reason NOT_SPECIFIED); the drop is only counted (`sk_drops`,
//! `TcpExtListenDrops`). So an event stands for the drops of one listener in up to a second,
//! and carries how many. The counter and the events come from the same counts, through one
//! [`ListenDrops`]: they always agree.
use std::{
    collections::BTreeMap,
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::listeners::{ListenDrops, Listener, PortQueue};
use crate::{probe::readers::KernelReaders, tail::agent::recent::Recent};

/// How often the watcher looks. A second is what a person reading `tail --recent` resolves,
/// and a look costs what the listeners cost (one read of the listener table in the kernel).
const INTERVAL: Duration = Duration::from_secs(1);

pub struct ListenWatch {
    drops: Mutex<ListenDrops>,
    recent: Arc<Recent>,
    readers: Arc<KernelReaders>,
}

impl ListenWatch {
    pub fn new(recent: Arc<Recent>, readers: Arc<KernelReaders>) -> Arc<ListenWatch> {
        Arc::new(ListenWatch {
            drops: Mutex::new(ListenDrops::default()),
            recent,
            readers,
        })
    }

    /// The kernel readers it reads the listeners with.
    pub fn readers(&self) -> &KernelReaders {
        &self.readers
    }

    /// Starts looking every second on the current tokio runtime.
    pub fn start(self: &Arc<ListenWatch>) {
        let watch = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let look = Arc::clone(&watch);
                // A failed look (a namespace that vanished mid-dump) is retried next second;
                // the scrape reports errors.
                let _ = tokio::task::spawn_blocking(move || look.look()).await;
            }
        });
    }

    /// Every listener in scope now.
    pub fn listeners(&self) -> io::Result<Vec<Listener>> {
        Ok(self
            .readers
            .listeners()?
            .iter()
            .map(Listener::from)
            .collect())
    }

    /// Reads the listeners and takes what they dropped.
    fn look(&self) -> io::Result<()> {
        self.observe(&self.listeners()?);
        Ok(())
    }

    /// Takes the listeners open now, writes an event for each that dropped since the previous
    /// look, and returns each port's sums for the metrics.
    pub fn observe(&self, listeners: &[Listener]) -> BTreeMap<u16, PortQueue> {
        let look = self
            .drops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(listeners);
        for (listener, dropped) in &look.dropped {
            self.recent
                .listen_dropped(listener.family, listener.address, listener.port, *dropped);
        }
        look.ports
    }
}
