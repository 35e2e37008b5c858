//! Watching a running agent over a long test: a background scraper that behaves like
//! Prometheus (one scrape a second) and checks what must hold at every scrape, the agent's
//! resident memory and open descriptors, and a tail client that reads into nothing.
use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::Duration,
};

use super::{http_get, scrape_until, Agent, NetNs, Scrape, TCPMON};

/// What the background scraper saw.
#[derive(Debug, Default)]
pub struct ScrapeLog {
    pub scrapes: u64,
    /// Largest `tcpmon_tracked_sockets` seen.
    pub max_tracked: u64,
    /// Every broken invariant, with the scrape number it broke at.
    pub violations: Vec<String>,
}

/// Scrapes `/metrics` every `period` on a thread of its own until finished.
pub struct Scraper {
    stop: Arc<AtomicBool>,
    /// Held for the duration of each scrape: [`Scraper::quiet`] waits for it.
    busy: Arc<Mutex<()>>,
    thread: JoinHandle<ScrapeLog>,
}

impl Scraper {
    /// Checks at every scrape that `tcpmon_tracked_sockets` never exceeds `capacity` and that
    /// no counter (`_total`, and a histogram's `_count`, `_sum`, `_bucket`) ever goes down or
    /// disappears: Prometheus would read either as a counter reset.
    pub fn start(addr: SocketAddr, capacity: u64, period: Duration) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(Mutex::new(()));
        let (stop_flag, busy_lock) = (Arc::clone(&stop), Arc::clone(&busy));
        let thread = std::thread::spawn(move || {
            let mut log = ScrapeLog::default();
            let mut previous: Option<Scrape> = None;
            while !stop_flag.load(Ordering::Relaxed) {
                {
                    let _busy = busy_lock.lock().unwrap_or_else(|e| e.into_inner());
                    let scrape = Scrape::parse(&http_get(addr, "/metrics"));
                    log.scrapes += 1;
                    check(&mut log, previous.as_ref(), &scrape, capacity);
                    previous = Some(scrape);
                }
                let mut slept = Duration::ZERO;
                while slept < period && !stop_flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    slept += Duration::from_millis(20);
                }
            }
            log
        });
        Scraper { stop, busy, thread }
    }

    /// No scrape is in flight while the guard lives (the agent holds no connection for one).
    pub fn quiet(&self) -> MutexGuard<'_, ()> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// False once the thread stopped, which before [`Scraper::finish`] means a scrape failed.
    pub fn alive(&self) -> bool {
        !self.thread.is_finished()
    }

    pub fn finish(self) -> ScrapeLog {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the scraper failed")
    }
}

fn is_counter(series: &str) -> bool {
    let name = series.split('{').next().unwrap_or_default();
    ["_total", "_count", "_sum", "_bucket"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

fn check(log: &mut ScrapeLog, previous: Option<&Scrape>, scrape: &Scrape, capacity: u64) {
    let n = log.scrapes;
    let tracked = scrape.get("tcpmon_tracked_sockets") as u64;
    log.max_tracked = log.max_tracked.max(tracked);
    if tracked > capacity {
        log.violations.push(format!(
            "scrape {n}: {tracked} tracked sockets > {capacity}"
        ));
    }
    for (series, before) in previous.iter().flat_map(|p| &p.series) {
        let now = scrape.series.get(series).copied();
        if is_counter(series) && now.is_none_or(|now| now < *before) {
            log.violations.push(format!(
                "scrape {n}: {series} went from {before} to {now:?}"
            ));
        }
    }
}

/// Resident memory and open descriptors of a process, from /proc.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    pub rss_kib: u64,
    pub fds: usize,
}

impl Usage {
    pub fn of(pid: u32) -> Usage {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("/proc/PID/fd")
            .count();
        Usage { rss_kib, fds }
    }

    /// The agent's usage once it is idle: no scrape in flight (the scraper is held off) and the
    /// descriptor count the same on three reads 100 ms apart (a connection the agent just
    /// answered may still be closing).
    pub fn settled(agent: &Agent, scraper: &Scraper) -> Usage {
        let _quiet = scraper.quiet();
        let mut last = Usage::of(agent.pid());
        let mut same = 0;
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(100));
            let now = Usage::of(agent.pid());
            same = if now.fds == last.fds { same + 1 } else { 0 };
            last = now;
            if same == 2 {
                break;
            }
        }
        last
    }
}

/// A `tcpmon tail -o json` client; disconnected on drop.
pub struct TailSink<'a> {
    agent: &'a Agent,
    child: Child,
}

impl<'a> TailSink<'a> {
    /// Connects and waits until the agent counts the client. Its output goes nowhere, or, if
    /// `stalled`, into a pipe nobody reads: the client soon stops reading and its queue in the
    /// agent fills up (its largest size), as a stopped `tcpmon tail | less` would.
    pub fn connect(agent: &'a Agent, stalled: bool) -> TailSink<'a> {
        let stdout = if stalled {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let child = Command::new(TCPMON)
            .args(["tail", "--socket", &agent.tail_socket, "-o", "json"])
            .stdout(stdout)
            .spawn()
            .expect("spawn tcpmon tail");
        let sink = TailSink { agent, child };
        let ready = scrape_until(agent, |s| s.get("tcpmon_tail_clients") == 1.0);
        assert_eq!(
            ready.get("tcpmon_tail_clients"),
            1.0,
            "tail client connected"
        );
        sink
    }
}

impl Drop for TailSink<'_> {
    /// Kills the client and waits until the agent has let it go.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        scrape_until(self.agent, |s| s.get("tcpmon_tail_clients") == 0.0);
    }
}

/// Segments the namespace's TCP sent again: each a loss, after which a socket closes later
/// than its workload did.
pub fn retransmitted(ns: &NetNs) -> u64 {
    ns.tcp_counter("TcpRetransSegs")
}
