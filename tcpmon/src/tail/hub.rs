//! The agent's side of the tail: it reads the kernel's ring buffer only while someone listens,
//! and fans each event out to every subscriber whose filter matches, through a bounded queue
//! per subscriber. A subscriber that falls behind loses events (counted, and told how many);
//! it never slows the reader or another subscriber. Queues hold shared references to one decoded
//! event, so stalled subscribers cost a pointer per queued event each, not a copy.
use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Mutex,
};

use aya::maps::{Array, MapData, RingBuf};
use tcpmon_common::TailEvent;
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, Notify},
};

use super::{
    event::{realtime_offset_ns, Event},
    filter::Filter,
};

/// Events queued per subscriber before it starts losing them.
pub const QUEUE: usize = 16_384;
/// Events read from the ring buffer before the reader yields to other tasks.
const DRAIN_BATCH: usize = 4_096;
/// How often the reader looks for events the program did not wake it for.
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// Up to [`DRAIN_BATCH`] events from the ring buffer.
fn drain(ring: &mut RingBuf<MapData>, realtime_offset: i128) -> Vec<Event> {
    let mut batch = Vec::with_capacity(DRAIN_BATCH);
    while batch.len() < DRAIN_BATCH {
        let Some(item) = ring.next() else {
            break;
        };
        if item.len() >= size_of::<TailEvent>() {
            // SAFETY: the program writes whole TailEvents; the length is checked.
            let raw = unsafe { item.as_ptr().cast::<TailEvent>().read_unaligned() };
            if let Some(event) = Event::from_kernel(&raw, realtime_offset) {
                batch.push(event);
            }
        }
    }
    batch
}

struct Subscriber {
    id: u64,
    filter: Filter,
    queue: mpsc::Sender<Arc<Event>>,
    missed: Arc<AtomicU64>,
}

/// What a subscriber reads: its events, and how many it missed since it last looked.
pub struct Subscription {
    pub events: mpsc::Receiver<Arc<Event>>,
    pub missed: Arc<AtomicU64>,
    id: u64,
    hub: Arc<Hub>,
}

impl Subscription {
    /// Missed events since the last call.
    pub fn take_missed(&self) -> u64 {
        self.missed.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id);
    }
}

pub struct Hub {
    subscribers: Mutex<Vec<Subscriber>>,
    next_id: AtomicU64,
    switch: Mutex<Array<MapData, u32>>,
    /// Wakes the reader when the first subscriber arrives, so it starts polling.
    first_subscriber: Notify,
    /// Events dropped because a subscriber's queue was full (all subscribers).
    pub dropped_slow: AtomicU64,
}

impl Hub {
    /// Starts the ring-buffer reader on the current tokio runtime.
    pub fn start(ring: RingBuf<MapData>, switch: Array<MapData, u32>) -> std::io::Result<Arc<Hub>> {
        let hub = Arc::new(Hub {
            subscribers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            switch: Mutex::new(switch),
            first_subscriber: Notify::new(),
            dropped_slow: AtomicU64::new(0),
        });
        // SAFETY: the ring buffer owns its descriptor and keeps it open for as long as the
        // AsyncFd holds the ring buffer.
        let ring =
            unsafe { AsyncFd::register(ring) }.map_err(|e| std::io::Error::other(e.to_string()))?;
        let reader = Arc::clone(&hub);
        tokio::spawn(async move { reader.read(ring).await });
        Ok(hub)
    }

    pub fn subscribe(self: &Arc<Hub>, filter: Filter) -> Subscription {
        let (queue, events) = mpsc::channel(QUEUE);
        let missed = Arc::new(AtomicU64::new(0));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut subscribers = self.lock();
        subscribers.push(Subscriber {
            id,
            filter,
            queue,
            missed: Arc::clone(&missed),
        });
        if subscribers.len() == 1 {
            self.set_switch(true);
            self.first_subscriber.notify_one();
        }
        Subscription {
            events,
            missed,
            id,
            hub: Arc::clone(self),
        }
    }

    fn unsubscribe(&self, id: u64) {
        let mut subscribers = self.lock();
        subscribers.retain(|s| s.id != id);
        if subscribers.is_empty() {
            self.set_switch(false);
        }
    }

    pub fn subscribers(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Turns the program's event output on or off.
    fn set_switch(&self, on: bool) {
        let mut switch = self.switch.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = switch.set(0, u32::from(on), 0) {
            eprintln!("tcpmon: tail: cannot switch the event stream: {e}");
        }
    }

    async fn read(self: Arc<Hub>, mut ring: AsyncFd<RingBuf<MapData>>) {
        let offset = realtime_offset_ns();
        // The program wakes the reader only once a batch has piled up (see tcpmon-ebpf's
        // tail.rs); this tick picks up the rest.
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Poll only while someone listens: an idle agent sleeps until the first client.
            let ready = if self.subscribers() == 0 {
                tokio::select! {
                    ready = ring.readable_mut() => ready,
                    _ = self.first_subscriber.notified() => continue,
                }
            } else {
                tokio::select! {
                    ready = ring.readable_mut() => ready,
                    _ = tick.tick() => {
                        let batch = drain(ring.get_mut(), offset);
                        self.fan_out(batch);
                        continue;
                    }
                }
            };
            let Ok(mut ready) = ready else {
                eprintln!("tcpmon: tail: the event ring buffer cannot be polled");
                return;
            };
            let batch = drain(ready.get_inner_mut(), offset);
            // A full batch leaves the descriptor ready: the next turn reads on, after other
            // tasks (clients, scrapes) had theirs.
            if batch.len() < DRAIN_BATCH {
                ready.clear_ready();
            }
            drop(ready);
            self.fan_out(batch);
            tokio::task::yield_now().await;
        }
    }

    fn fan_out(&self, batch: Vec<Event>) {
        if batch.is_empty() {
            return;
        }
        let subscribers = self.lock();
        for event in batch {
            let event = Arc::new(event);
            for s in subscribers.iter().filter(|s| s.filter.matches(&event)) {
                if s.queue.try_send(Arc::clone(&event)).is_err() {
                    s.missed.fetch_add(1, Ordering::Relaxed);
                    self.dropped_slow.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
