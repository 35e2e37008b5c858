//! Soak: minutes of a storm mixing every workload (`crate::support::mix`), with sockets whose life the
//! program sees only part of: connections opened before the agent started (closed midway),
//! and bursts of more open sockets than the per-socket map holds (it evicts). Scraped every
//! second, as Prometheus would, with a tail client connected every third round.
//!
//! It asserts that the agent's resident memory and open descriptors stay flat, that every
//! counter equals the workload's ground truth, that the per-socket map stays bounded and
//! counts its evictions, and that no socket without a valid entry puts a time into a dwell
//! histogram (`crate::support::identities`). `TCPMON_SOAK_SECONDS` sets the length (default 120);
//! `cargo xtask soak --minutes N` runs it for humans.

use std::time::{Duration, Instant};

use crate::support::{
    held::Held,
    hidden::HiddenTransitions,
    identities::{self, STALE, UNTRACKED},
    mix::{self, BURST, V4},
    require_root, scrape_until,
    watch::{retransmitted, Scraper, TailSink, Usage},
    workload::Expected,
    Agent, NetNs, Scrape,
};

/// Connections opened before the agent starts, closed in the first round past half time.
const BEFORE: (u16, u64) = (7000, 300);
/// `--max-tracked-sockets`: a burst holds three times as many sockets open.
const CAPACITY: u64 = 1_024;
/// A tail client is connected every third round, stalled and reading in turn.
const TAIL_EVERY: u64 = 3;
/// How much the agent's resident memory may grow from the end of the first quarter of the
/// soak to the end. The agent keeps nothing per connection or per event in userspace (the
/// kernel counts); by then it has done everything many times: scrapes, bursts, stalled tail
/// clients (their queue full) and reading ones. Its heap reaches a plateau only once a reading
/// tail client has fallen behind: glibc keeps the heap of its freed queue resident and, having
/// freed the reader's 4,096-event batch buffer, raises its mmap threshold so later batches come
/// from the heap (standalone, fixing `MALLOC_MMAP_THRESHOLD_` made that first step 5.8 MiB
/// instead of 8.7). In the soak: a step of about 3 MiB at one of the first ten tail clients,
/// then 20-50 KiB a minute, slowing. A leak of one byte per connection would pass the bound
/// after about 4 million connections (25 minutes of soak), one of 1 KiB per scrape after an
/// hour: `cargo xtask soak` finds those.
const RSS_GROWTH_KIB: u64 = 4 * 1024;
/// How long after its round a socket may still leave a state: a segment dropped on a busy
/// machine (a CPU's backlog full, `/proc/net/softnet_stat`) is sent again after 200 ms, 400 ms,
/// 800 ms, ... (a SYN after 1 s, then 2 s more), so a socket can close seconds after its
/// round. This covers three losses of the same segment in a row.
const LATE: Duration = Duration::from_secs(15);
/// How often a long soak prints where it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

fn duration() -> Duration {
    let seconds = std::env::var("TCPMON_SOAK_SECONDS")
        .map(|s| {
            s.parse()
                .expect("TCPMON_SOAK_SECONDS is a number of seconds")
        })
        .unwrap_or(120);
    Duration::from_secs(seconds)
}

/// The rounds run so far and what they must have produced.
struct Soak<'a> {
    ns: &'a NetNs,
    agent: &'a Agent,
    expected: Expected,
    rounds: u64,
    /// The longest round: every socket the agent saw open lived less than that (plus
    /// [`LATE`]).
    longest: Duration,
    /// When, after the agent started, the connections opened before it were closed.
    before_closed: Option<Duration>,
    started: Instant,
}

impl Soak<'_> {
    /// One round, closing `before` if given, with no tail client or one that is stalled
    /// (`Some(true)`) or reads everything (`Some(false)`).
    fn round(&mut self, before: Option<Held>, tail: Option<bool>) {
        let _tail = tail.map(|stalled| TailSink::connect(self.agent, stalled));
        if before.is_some() {
            self.before_closed = Some(self.started.elapsed());
            Held::expect_close(&mut self.expected, "inet", BEFORE.0, BEFORE.1);
        }
        let started = Instant::now();
        self.ns.run(|| mix::round(before));
        self.longest = self.longest.max(started.elapsed());
        mix::expect_round(&mut self.expected);
        self.rounds += 1;
    }
}

#[test]
fn soak_keeps_memory_descriptors_and_every_counter_flat_and_exact() {
    require_root();
    let duration = duration();
    let ns = NetNs::new();
    // Both ends of these and their listener predate the agent: the program sees them only
    // from their first transition on, without an entry.
    let before = ns.run(|| Held::open(V4, BEFORE.0, BEFORE.1));
    let preexisting = 2 * BEFORE.1 + 1;
    let ports = format!("{},{}", BEFORE.0, mix::PORTS);
    let capacity = CAPACITY.to_string();
    let args = ["--ports", &ports, "--max-tracked-sockets", &capacity];
    let agent = Agent::start_with(&ns, &args);
    let hidden = HiddenTransitions::observe();
    let scraper = Scraper::start(agent.addr, CAPACITY, Duration::from_secs(1));
    let started = Instant::now();
    let mut soak = Soak {
        ns: &ns,
        agent: &agent,
        expected: Expected::default(),
        rounds: 0,
        longest: Duration::ZERO,
        before_closed: None,
        started,
    };

    // Every kind of work, with both kinds of tail client twice; the descriptors the agent
    // holds from here on must not change. Its memory is measured from the end of the first
    // quarter (see RSS_GROWTH_KIB).
    for stalled in [false, true, false, true] {
        soak.round(None, Some(stalled));
    }
    let early = Usage::settled(&agent, &scraper);
    let mut baseline = None;

    let mut before = Some(before);
    let mut progress = Instant::now();
    while (started.elapsed() < duration || before.is_some()) && scraper.alive() {
        // Closed in the first round past half time (the last one, in a very short soak).
        let closing = (started.elapsed() >= duration / 2)
            .then(|| before.take())
            .flatten();
        if baseline.is_none() && started.elapsed() >= duration / 4 {
            baseline = Some(Usage::settled(&agent, &scraper));
        }
        let r = soak.rounds;
        soak.round(
            closing,
            r.is_multiple_of(TAIL_EVERY)
                .then_some(r.is_multiple_of(2 * TAIL_EVERY)),
        );
        if progress.elapsed() >= PROGRESS_EVERY {
            progress = Instant::now();
            let (now, scrape) = (Usage::of(agent.pid()), agent.scrape());
            eprintln!(
                "soak: {:.0} s, {r} rounds, RSS {} KiB, {} fds, {} evicted, {} missed runs",
                started.elapsed().as_secs_f64(),
                now.rss_kib,
                now.fds,
                scrape.get("tcpmon_tracked_sockets_evicted_total"),
                scrape.get("tcpmon_bpf_program_missed_runs_total"),
            );
        }
    }
    assert!(
        scraper.alive(),
        "the background scraper stopped (its panic is printed above)"
    );

    // Every transition counted and every entry gone (or the timeout passed: asserted below).
    let last = scrape_until(&agent, |s| {
        s.observed().transitions == soak.expected.transitions
            && s.get("tcpmon_tracked_sockets") == 0.0
    });
    let end = Usage::settled(&agent, &scraper);
    let baseline = baseline.unwrap_or(end);
    let log = scraper.finish();
    assert!(log.violations.is_empty(), "{:#?}", log.violations);
    let evicted = assert_exact(&ns, &last, &soak, preexisting, &hidden);
    let missed = last.get("tcpmon_bpf_program_missed_runs_total");
    let covered = last.get("tcpmon_bpf_program_covered_runs_total");

    // The tail clients, scrapes and namespace walks of the whole soak left no descriptor open.
    assert_eq!(
        [early.fds, baseline.fds],
        [end.fds; 2],
        "open descriptors after warm-up and at the end"
    );
    let growth = end.rss_kib.saturating_sub(baseline.rss_kib);
    assert!(
        growth <= RSS_GROWTH_KIB,
        "resident memory grew {growth} KiB after the first quarter ({} -> {} KiB)",
        baseline.rss_kib,
        end.rss_kib
    );
    eprintln!(
        "soak: {:.0} s, {} rounds, {} connections, {} scrapes (at most {} of {CAPACITY} sockets \
         tracked); RSS {} KiB after warm-up, {} -> {} KiB from the first quarter, fds {} -> {}; {evicted} evicted, {} untracked ({preexisting} \
         predating the agent), counter error 0, {missed} missed runs, {covered} covered; \
         longest round {:.2} s, {} segments retransmitted",
        started.elapsed().as_secs_f64(),
        soak.rounds,
        soak.rounds * mix::PER_ROUND + BEFORE.1,
        log.scrapes,
        log.max_tracked,
        early.rss_kib,
        baseline.rss_kib,
        end.rss_kib,
        early.fds,
        end.fds,
        last.get(UNTRACKED),
        soak.longest.as_secs_f64(),
        retransmitted(&ns),
    );
}

/// Every counter equals the ground truth, and every transition the program could not time is
/// accounted for (see `crate::support::identities`). Returns the evictions.
fn assert_exact(
    ns: &NetNs,
    last: &Scrape,
    soak: &Soak,
    preexisting: u64,
    hidden: &HiddenTransitions,
) -> u64 {
    // No run the kernel skipped goes uncounted (the cover counts it: asserted by `unseen`), but
    // some kernels hide interrupt work done on top of PID 1 (see `crate::support::hidden`), a
    // host-wide count: the namespace filter is inside the program, so other namespaces'
    // transitions count too. A transition
    // of this namespace kept from the program is in no counter, so it always leaves a
    // transition count below the ground truth: none lost here means none was kept away.
    let expected = &soak.expected;
    let unseen = crate::support::unseen(last, hidden);
    let observed = last.observed();
    let lost: Vec<_> = expected
        .transitions
        .iter()
        .map(|(k, n)| {
            let seen = observed.transitions.get(k).copied().unwrap_or(0);
            (k, n.saturating_sub(seen))
        })
        .filter(|(_, lost)| *lost > 0)
        .collect();
    if !lost.is_empty() {
        // Then the identities below cannot hold; what must is that no more is missing than
        // the kernel kept away, and that nothing is invented.
        eprintln!("{}", ns.diagnose());
        hidden.report();
        let total: u64 = lost.iter().map(|(_, n)| n).sum();
        assert!(
            total <= unseen,
            "this namespace lost {lost:?}, but the kernel kept only {unseen} transitions from the program"
        );
        for (labels, n) in &observed.transitions {
            let truth = expected.transitions.get(labels).copied().unwrap_or(0);
            assert!(*n <= truth, "{labels:?}: {n} counted, {truth} happened");
        }
        eprintln!("soak: the kernel kept {total} of this namespace's transitions from the program: {lost:?}");
        return last.get("tcpmon_tracked_sockets_evicted_total") as u64;
    }
    if unseen > 0 {
        eprintln!(
            "soak: the kernel kept {unseen} transitions from the program, all of other namespaces"
        );
    }
    if observed.transitions != expected.transitions {
        eprintln!("{}", ns.diagnose());
    }
    assert_eq!(observed.transitions, expected.transitions, "transitions");
    assert_eq!(observed.handshakes, expected.handshakes, "handshakes");
    crate::support::kernel_resets::assert_teardowns(ns, &observed, expected);
    assert_eq!(
        last.get("tcpmon_tracked_sockets"),
        0.0,
        "every entry deleted"
    );

    // A stale entry needs a CLOSE of this namespace the program never ran for (none: nothing
    // was lost; other namespaces' sockets never get an entry); so the transitions it could not
    // time are exactly the untracked ones.
    let (untracked, stale) = (last.get(UNTRACKED) as u64, last.get(STALE) as u64);
    assert_eq!(stale, 0, "stale entries without a missed run");
    let measurable = identities::measurable(&expected.transitions);
    let unmeasured = identities::unmeasured(last, &measurable);
    assert_eq!(
        unmeasured,
        untracked + stale,
        "dwell counts + unmeasured = transitions"
    );

    // A socket has no entry because it predates the agent or its entry was evicted; its next
    // transition is then untracked and makes a new entry (or closes it). Every socket closed,
    // so each of them and each eviction is one untracked transition. At this quiet scrape the
    // eviction estimate (inserts - deletes - entries present) is exact. (It would not be if
    // the LRU evicted an entry between the program's lookup and delete of it on another CPU;
    // the lookup sets the entry's reference bit, which makes the LRU pass over it.)
    let evicted = last.get("tcpmon_tracked_sockets_evicted_total") as u64;
    assert!(evicted > 0, "bursts of {} sockets must evict", 2 * BURST.1);
    assert_eq!(
        untracked,
        preexisting + evicted,
        "untracked = preexisting + evicted"
    );

    for side in ["client", "server"] {
        let (established, timed, untimed) = identities::handshake_times(last, side);
        assert_eq!(timed + untimed, established, "{side} handshake times");
    }

    // Every socket the agent saw enter a state left it within the round it was opened in, or
    // [`LATE`] after: a longer time could only come from an entry that was not the socket's.
    // The connections opened before the agent would show the time from its start to their
    // close, if they were timed: the check sees them when that is beyond the bucket bound.
    let limit = soak.longest + LATE;
    if let Some(above) = identities::dwell_above(last, limit.as_secs_f64()) {
        if above.values().any(|n| *n > 0) {
            let buckets = last
                .text
                .lines()
                .filter(|l| l.contains("state_duration_seconds_b"));
            eprintln!("{}", buckets.collect::<Vec<_>>().join("\n"));
        }
        assert!(
            above.values().all(|n| *n == 0),
            "dwell > {limit:?}: {above:?}"
        );
    }
    if soak.before_closed.is_some_and(|t| t < 2 * limit) {
        eprintln!("soak: too short for the dwell bound to tell the connections opened before");
    }
    evicted
}
