//! The agent's side of the tail: it reads the kernel's ring buffer only while someone listens,
//! and fans the events out to every subscriber whose filter matches, as batches of the kernel's
//! own records (decoded and formatted only by whoever writes them out, see ndjson.rs). A
//! subscriber holds at most [`QUEUE`] events; one that falls behind loses events (counted, and
//! told how many) and never slows the reader or another subscriber. Subscribers that want every
//! event share one batch; a filtered one gets a copy of the records it wants.
use std::sync::{
    atomic::{AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex,
};

use aya::maps::{Array, MapData, RingBuf};
use tcpmon_common::{TailEvent, TailFilter};
use tokio::sync::{mpsc, Notify};

use super::kernel_filter;
use crate::{clock::realtime_offset_ns, tail::filter::Filter};

/// Events queued per subscriber before it starts losing them.
pub const QUEUE: usize = 16_384;
/// Events read from the ring buffer before the reader yields to other tasks.
const DRAIN_BATCH: usize = 4_096;
/// How often the reader looks for events (the program never wakes it).
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// Records read from the ring buffer at one go, shared by the subscribers that get them all.
pub type Batch = Arc<Vec<TailEvent>>;

/// Up to [`DRAIN_BATCH`] records from the ring buffer.
fn drain(ring: &mut RingBuf<MapData>) -> Vec<TailEvent> {
    let mut batch = Vec::with_capacity(DRAIN_BATCH);
    while batch.len() < DRAIN_BATCH {
        let Some(item) = ring.next() else {
            break;
        };
        if item.len() >= size_of::<TailEvent>() {
            // SAFETY: the program writes whole TailEvents; the length is checked.
            batch.push(unsafe { item.as_ptr().cast::<TailEvent>().read_unaligned() });
        }
    }
    batch
}

struct Subscriber {
    id: u64,
    filter: Filter,
    queue: mpsc::UnboundedSender<Batch>,
    /// Events sent and not yet taken by the subscriber: bounds its queue to [`QUEUE`].
    queued: Arc<AtomicUsize>,
    missed: Arc<AtomicU64>,
}

/// What a subscriber reads: batches of matching records, and how many it missed since it last
/// looked.
pub struct Subscription {
    batches: mpsc::UnboundedReceiver<Batch>,
    queued: Arc<AtomicUsize>,
    missed: Arc<AtomicU64>,
    id: u64,
    hub: Arc<Hub>,
}

impl Subscription {
    /// The next batch of records that match the filter; `None` once the agent stops. Taking
    /// it frees its room in the queue.
    pub async fn next(&mut self) -> Option<Batch> {
        let batch = self.batches.recv().await?;
        self.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        Some(batch)
    }

    /// Whether another batch is ready now (if not, it is time to flush the output).
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Missed events since the last call.
    pub fn take_missed(&self) -> u64 {
        self.missed.swap(0, Ordering::Relaxed)
    }

    /// CLOCK_REALTIME − CLOCK_MONOTONIC, for the records' wall-clock time.
    pub fn realtime_offset_ns(&self) -> i128 {
        self.hub.realtime_offset_ns
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
    /// The program's `TAIL_FILTER`: the union of the subscribers' filters.
    kernel_filter: Mutex<Array<MapData, TailFilter>>,
    /// Wakes the reader when the first subscriber arrives, so it starts polling.
    first_subscriber: Notify,
    /// Events dropped because a subscriber's queue was full (all subscribers).
    pub dropped_slow: AtomicU64,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC when the agent started (the records carry monotonic
    /// time).
    realtime_offset_ns: i128,
}

impl Hub {
    /// Starts the ring-buffer reader on the current tokio runtime.
    pub fn start(ring: RingBuf<MapData>, kernel_filter: Array<MapData, TailFilter>) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            subscribers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            kernel_filter: Mutex::new(kernel_filter),
            first_subscriber: Notify::new(),
            dropped_slow: AtomicU64::new(0),
            realtime_offset_ns: realtime_offset_ns(),
        });
        let reader = Arc::clone(&hub);
        tokio::spawn(async move { reader.read(ring).await });
        hub
    }

    pub fn subscribe(self: &Arc<Hub>, filter: Filter) -> Subscription {
        let (queue, batches) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let missed = Arc::new(AtomicU64::new(0));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut subscribers = self.lock();
        subscribers.push(Subscriber {
            id,
            filter,
            queue,
            queued: Arc::clone(&queued),
            missed: Arc::clone(&missed),
        });
        self.push_filter(&subscribers);
        if subscribers.len() == 1 {
            self.first_subscriber.notify_one();
        }
        Subscription {
            batches,
            queued,
            missed,
            id,
            hub: Arc::clone(self),
        }
    }

    fn unsubscribe(&self, id: u64) {
        let mut subscribers = self.lock();
        subscribers.retain(|s| s.id != id);
        self.push_filter(&subscribers);
    }

    pub fn subscribers(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the program which events the subscribers may want (none when there are none).
    /// Called with the subscriber list locked, so that updates happen in order.
    fn push_filter(&self, subscribers: &[Subscriber]) {
        let union = kernel_filter::union(subscribers.iter().map(|s| &s.filter));
        let mut map = self.kernel_filter.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = map.set(0, union, 0) {
            eprintln!("tcpmon: tail: cannot update the program's event filter: {e}");
        }
    }

    /// Reads the ring buffer every [`POLL_INTERVAL`] while someone listens. The program never
    /// wakes the reader (see tcpmon-ebpf's tail.rs): at a million events a second, 10 ms of
    /// them fill a quarter of the 4 MiB ring buffer.
    async fn read(self: Arc<Hub>, mut ring: RingBuf<MapData>) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // An idle agent sleeps until the first client.
            if self.subscribers() == 0 {
                self.first_subscriber.notified().await;
                continue;
            }
            tick.tick().await;
            // Everything that piled up since the last tick, a batch at a time, letting other
            // tasks (clients, scrapes) run in between.
            loop {
                let batch = drain(&mut ring);
                let full = batch.len() == DRAIN_BATCH;
                self.fan_out(batch);
                if !full {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
    }

    fn fan_out(&self, records: Vec<TailEvent>) {
        if records.is_empty() {
            return;
        }
        let all: Batch = Arc::new(records);
        let subscribers = self.lock();
        for s in subscribers.iter() {
            let batch: Batch = if s.filter.matches_everything() {
                Arc::clone(&all)
            } else {
                Arc::new(
                    all.iter()
                        .filter(|e| s.filter.matches_record(e))
                        .copied()
                        .collect(),
                )
            };
            let n = batch.len();
            if n == 0 {
                continue;
            }
            // Room is taken before sending and given back when the subscriber takes the batch:
            // the queue never holds more than QUEUE events.
            let before = s.queued.fetch_add(n, Ordering::Relaxed);
            if before + n > QUEUE || s.queue.send(batch).is_err() {
                s.queued.fetch_sub(n, Ordering::Relaxed);
                s.missed.fetch_add(n as u64, Ordering::Relaxed);
                self.dropped_slow.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}
