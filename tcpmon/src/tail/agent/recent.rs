//! Recent trouble: the agent reads the program's trouble ring buffer (failed handshakes,
//! resets, handshake retransmissions, written whether or not anyone tails), adds the listen
//! drops it sees itself (`metrics::listen_watch`) and keeps the last
//! `--recent-events` of them, for `tcpmon tail --recent`; `--follow` clients get new ones as
//! they come.
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use serde::{Deserialize, Serialize};
use tcpmon_common::{handshake, trouble, TroubleEvent};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::broadcast,
};

use crate::{
    clock::{monotonic_ns, realtime_offset_ns, Rfc3339},
    probe::resets::ReasonNames,
    socket_fields::{address, family_label},
    state::TcpState,
    tail::filter::Filter,
};

/// How long the reader waits after emptying the ring before it looks again (the ring holds
/// about 4,000 events): at most ten reads a second in a storm, none while nothing happens.
const READ_PAUSE: Duration = Duration::from_millis(100);
/// New events a following client may fall behind by before it loses some.
const FOLLOW_QUEUE: usize = 4_096;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Query {
    /// Only events at most this old; all kept ones if absent.
    pub since_ns: Option<u64>,
    /// Then go on with new ones until the client leaves.
    pub follow: bool,
    pub filter: Filter,
}

/// The last events, and the channel new ones are announced on.
pub struct Recent {
    events: Mutex<VecDeque<TroubleEvent>>,
    capacity: usize,
    live: broadcast::Sender<TroubleEvent>,
    reasons: ReasonNames,
    realtime_offset_ns: i128,
}

impl Recent {
    /// Starts the reader of `ring` on the current tokio runtime.
    pub fn start(ring: RingBuf<MapData>, capacity: usize, reasons: ReasonNames) -> Arc<Recent> {
        let recent = Arc::new(Recent {
            events: Mutex::new(VecDeque::with_capacity(capacity.min(65_536))),
            capacity,
            live: broadcast::channel(FOLLOW_QUEUE).0,
            reasons,
            realtime_offset_ns: realtime_offset_ns(),
        });
        let reader = Arc::clone(&recent);
        tokio::spawn(async move { reader.read(ring).await });
        recent
    }

    /// Reads the ring when the kernel says it holds events (the first event after a read wakes
    /// the reader), then pauses: no timer runs while nothing goes wrong.
    async fn read(self: Arc<Recent>, ring: RingBuf<MapData>) {
        // SAFETY: the ring owns its descriptor, which stays open and the same until the
        // AsyncFd (which owns the ring) is dropped.
        let mut ring = match unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) } {
            Ok(ring) => ring,
            Err(e) => {
                eprintln!("tcpmon: recent trouble: cannot wait on the trouble ring: {e}");
                return;
            }
        };
        loop {
            let Ok(mut ready) = ring.readable_mut().await else {
                return;
            };
            // Cleared before reading: an event written after the read wakes the reader again.
            ready.clear_ready();
            self.drain(ready.get_inner_mut());
            tokio::time::sleep(READ_PAUSE).await;
        }
    }

    fn drain(&self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            if item.len() < size_of::<TroubleEvent>() {
                continue;
            }
            // SAFETY: the program writes whole TroubleEvents; read unaligned from bytes.
            let event: TroubleEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            drop(item);
            self.push(event);
        }
    }

    /// Records that the listener on `address` (of `family`) and `port` dropped `dropped`
    /// segments since the previous look.
    pub fn listen_dropped(&self, family: u16, address: [u8; 16], port: u16, dropped: u64) {
        self.push(TroubleEvent {
            ts_ns: monotonic_ns(),
            skaddr: 0,
            saddr: address,
            daddr: [0; 16],
            family,
            sport: port,
            dport: 0,
            kind: trouble::LISTEN_DROPPED,
            state: TcpState::Listen as u8,
            detail: 0,
            _pad: [0; 2],
            dropped: u32::try_from(dropped).unwrap_or(u32::MAX),
        });
    }

    fn push(&self, event: TroubleEvent) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == self.capacity {
            events.pop_front();
        }
        if self.capacity > 0 {
            events.push_back(event);
        }
        // No follower is no error.
        let _ = self.live.send(event);
    }

    /// The kept events `query` selects, oldest first, and (if it follows) the receiver of the
    /// ones that come after them.
    pub fn query(
        &self,
        query: &Query,
    ) -> (Vec<TroubleEvent>, Option<broadcast::Receiver<TroubleEvent>>) {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        // Subscribed under the lock: no event falls between the kept ones and the live ones.
        let live = query.follow.then(|| self.live.subscribe());
        let cutoff = query
            .since_ns
            .map(|since| monotonic_ns().saturating_sub(since));
        let kept = events
            .iter()
            .filter(|e| cutoff.is_none_or(|c| e.ts_ns >= c))
            .filter(|e| query.filter.matches_trouble(e))
            .copied()
            .collect();
        (kept, live)
    }

    /// One event as its NDJSON line, newline included.
    pub fn line(&self, e: &TroubleEvent) -> String {
        let line = TroubleLine {
            kind: "trouble",
            time: Rfc3339(i128::from(e.ts_ns) + self.realtime_offset_ns),
            mono_ns: e.ts_ns,
            connection: (e.skaddr != 0).then(|| format!("{:x}", e.skaddr)),
            what: kind_name(e.kind),
            detail: self.detail(e),
            state: TcpState::from_raw(i32::from(e.state)).map(TcpState::name),
            family: (e.family != 0).then(|| family_label(e.family)),
            local: (e.family != 0).then(|| address(e.family, &e.saddr).to_string()),
            local_port: e.sport,
            remote: (e.family != 0 && e.kind != trouble::LISTEN_DROPPED)
                .then(|| address(e.family, &e.daddr).to_string()),
            remote_port: e.dport,
            dropped: (e.kind == trouble::LISTEN_DROPPED).then_some(e.dropped),
        };
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        text
    }

    fn detail(&self, e: &TroubleEvent) -> Option<String> {
        match e.kind {
            trouble::HANDSHAKE_FAILED => Some(handshake_failure(u32::from(e.detail)).to_string()),
            trouble::RESET_SENT => Some(self.reasons.name(e.detail).to_string()),
            trouble::LISTEN_DROPPED => Some(format!("{} dropped", e.dropped)),
            _ => None,
        }
    }
}

/// A trouble event as `tcpmon tail --recent -o json` prints it.
#[derive(Debug, Serialize)]
pub struct TroubleLine<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub time: Rfc3339,
    pub mono_ns: u64,
    pub connection: Option<String>,
    /// handshake_failed, reset_sent, reset_received, syn_retransmit, synack_retransmit,
    /// listen_dropped.
    pub what: &'a str,
    /// How a handshake failed (refused, timeout, unreachable, aborted, reset) or why a reset
    /// was sent (the kernel's reason, or unknown).
    pub detail: Option<String>,
    pub state: Option<&'a str>,
    pub family: Option<&'a str>,
    pub local: Option<String>,
    pub local_port: u16,
    pub remote: Option<String>,
    pub remote_port: u16,
    /// For listen_dropped: the segments (SYNs, final ACKs) the listener dropped since the
    /// agent's previous look, at most a second before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u32>,
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        trouble::HANDSHAKE_FAILED => "handshake_failed",
        trouble::RESET_SENT => "reset_sent",
        trouble::RESET_RECEIVED => "reset_received",
        trouble::SYN_RETRANSMIT => "syn_retransmit",
        trouble::SYNACK_RETRANSMIT => "synack_retransmit",
        trouble::LISTEN_DROPPED => "listen_dropped",
        _ => "unknown",
    }
}

fn handshake_failure(result: u32) -> &'static str {
    match result {
        handshake::CLIENT_REFUSED => "refused",
        handshake::CLIENT_TIMEOUT => "timeout",
        handshake::CLIENT_UNREACHABLE => "unreachable",
        handshake::CLIENT_ABORTED => "aborted",
        handshake::SERVER_RESET => "reset",
        _ => "unknown",
    }
}
