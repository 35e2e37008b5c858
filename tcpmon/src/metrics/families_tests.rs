use prometheus::Encoder;
use tcpmon_common::{
    handshake, side, tcp_state, teardown, DwellHistogram, DWELL_BUCKETS, TRANSITION_SLOTS,
};

use super::*;
use crate::metrics::workloads::ByWorkload;
use crate::probe::prog_stats::ProgramStats;

/// Missed runs are the main program's skips less the cover's counts, plus the other programs'
/// skips; run time is every program's time, runs the main program's.
#[test]
fn program_runs_combine_the_main_program_and_its_cover() {
    let main = ProgramStats {
        run_time_ns: 700,
        run_count: 10,
        recursion_misses: Some(3),
    };
    let cover = ProgramStats {
        run_time_ns: 100,
        run_count: 13,
        recursion_misses: Some(0),
    };
    let retransmits = ProgramStats {
        run_time_ns: 10,
        run_count: 2,
        recursion_misses: Some(1),
    };
    let runs = ProgramRuns::of(&[main, cover, retransmits, retransmits], 2);
    assert_eq!(
        runs,
        ProgramRuns {
            runs: 10,
            run_time_ns: 820,
            missed: Some(3)
        }
    );
    let old_kernel = ProgramStats {
        recursion_misses: None,
        ..main
    };
    assert_eq!(
        ProgramRuns::of(&[old_kernel, cover, cover, cover], 0).missed,
        None
    );
}

fn empty_snapshot() -> Snapshot {
    Snapshot {
        transitions: vec![0; TRANSITION_SLOTS as usize],
        dwell: vec![DwellHistogram::EMPTY; tcp_state::SLOTS as usize],
        counters: vec![0; tcpmon_common::counter::SLOTS as usize],
        handshake_duration: vec![DwellHistogram::EMPTY; handshake::SIDE_SLOTS as usize],
        handshake_retransmits: vec![0; handshake::SIDE_SLOTS as usize],
        workload_uncounted: vec![0; tcpmon_common::workload::UNCOUNTED_SLOTS as usize],
    }
}

/// Handshake and teardown counts by index, all of one workload, `host`.
fn host_split(handshakes: &[u64], teardowns: &[u64]) -> ByWorkload {
    let split = |counts: &[u64]| {
        (0..)
            .zip(counts)
            .filter(|(_, &v)| v > 0)
            .map(|(i, &v)| ((i, "host".to_string()), v))
            .collect()
    };
    ByWorkload {
        handshakes: split(handshakes),
        teardowns: split(teardowns),
    }
}

fn render(
    snapshot: &Snapshot,
    by_workload: &ByWorkload,
    ports: &PortTable,
    sockets: &SocketCounts,
) -> String {
    let families = build(&ScrapeInput {
        snapshot,
        by_workload,
        ports,
        sockets: Some(sockets),
        listen: Some(&BTreeMap::new()),
        resets: &[],
        reset_reasons: &ReasonNames::default(),
        now_ns: 1,
        tracked: Some(Tracked {
            count: 3,
            evicted: 1,
            oldest_entered_ns: &BTreeMap::from([((tcp_state::LISTEN, 1), 0)]),
        }),
        dropped_slow: 5,
        tail_clients: 2,
        program: Some(ProgramRuns {
            runs: 10,
            run_time_ns: 1_500_000_000,
            missed: Some(0),
        }),
        bpf_stats_enabled: false,
        last_collect_seconds: 0.002,
    });
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&families, &mut out)
        .expect("encodes");
    String::from_utf8(out).expect("utf8")
}

#[test]
fn per_port_series_carry_the_port_label() {
    let mut s = empty_snapshot();
    let ports = PortTable::new(&[8080], 0).expect("fits");
    let mut handshakes = vec![0; handshake::SLOTS as usize];
    let mut teardowns = vec![0; teardown::SLOTS as usize];
    handshakes[handshake::index(1, handshake::SERVER_ESTABLISHED).unwrap() as usize] = 5;
    handshakes[handshake::index(0, handshake::CLIENT_REFUSED).unwrap() as usize] = 2;
    teardowns[teardown::index(1, teardown::INITIATOR_SIMULTANEOUS, teardown::KIND_FIN).unwrap()
        as usize] = 4;
    let h = &mut s.handshake_duration[handshake::side_index(1, side::SERVER).unwrap() as usize];
    h.buckets[3] = 5;
    h.sum_ns = 5 * 7_000;
    let split = host_split(&handshakes, &teardowns);
    let text = render(&s, &split, &ports, &SocketCounts::default());
    assert!(text.contains(
        "tcpmon_handshakes_total{side=\"server\",result=\"established\",port=\"8080\",workload=\"host\"} 5\n"
    ));
    assert!(text.contains(
        "tcpmon_handshakes_total{side=\"client\",result=\"refused\",port=\"other\",workload=\"host\"} 2\n"
    ));
    assert!(text.contains(
        "tcpmon_teardowns_total{initiator=\"simultaneous\",kind=\"fin\",port=\"8080\",workload=\"host\"} 4\n"
    ));
    assert!(text.contains("tcpmon_handshake_duration_seconds_bucket{side=\"server\",port=\"8080\",le=\"0.000004\"} 0\n"));
    assert!(text.contains("tcpmon_handshake_duration_seconds_bucket{side=\"server\",port=\"8080\",le=\"0.000016\"} 5\n"));
    assert!(
        text.contains("tcpmon_handshake_duration_seconds_count{side=\"server\",port=\"8080\"} 5\n")
    );
    assert!(text.contains(
        "tcpmon_handshake_duration_seconds_sum{side=\"server\",port=\"8080\"} 0.000035\n"
    ));
    // 17 finite bounds + Inf + sum + count for the one histogram.
    assert_eq!(
        text.matches("tcpmon_handshake_duration_seconds_").count(),
        20
    );
    assert_eq!(
        text.matches("tcpmon_handshakes_total{").count(),
        2,
        "zero series left out"
    );
}

#[test]
fn socket_gauges_cover_every_state_and_fold_request_sockets() {
    let mut sockets = SocketCounts::default();
    sockets.by_state[TcpState::TimeWait as usize] = 7;
    sockets.by_state[TcpState::SynRecv as usize] = 1;
    sockets.by_state[TcpState::NewSynRecv as usize] = 2;
    let text = render(
        &empty_snapshot(),
        &ByWorkload::default(),
        &PortTable::new(&[], 0).unwrap(),
        &sockets,
    );
    assert_eq!(text.matches("tcpmon_sockets{").count(), 11);
    assert!(text.contains("tcpmon_sockets{state=\"TIME_WAIT\"} 7\n"));
    assert!(text.contains("tcpmon_sockets{state=\"SYN_RECV\"} 3\n"));
    assert!(text.contains("tcpmon_sockets{state=\"CLOSE_WAIT\"} 0\n"));
    assert!(!text.contains("NEW_SYN_RECV"));
}

#[test]
fn bookkeeping_series_are_always_present() {
    let mut s = empty_snapshot();
    s.dwell[1].buckets[0] = 1;
    let text = render(
        &s,
        &ByWorkload::default(),
        &PortTable::new(&[], 0).unwrap(),
        &SocketCounts::default(),
    );
    for series in [
        "tcpmon_tracked_sockets 3\n",
        "tcpmon_tracked_sockets_evicted_total 1\n",
        "tcpmon_state_duration_unmeasured_total{reason=\"untracked\"} 0\n",
        "tcpmon_handshake_duration_unmeasured_total{side=\"server\"} 0\n",
        "tcpmon_state_duration_seconds_count{state=\"ESTABLISHED\"} 1\n",
        "tcpmon_build_info{version=\"",
        "tcpmon_events_total 0\n",
        "tcpmon_tail_clients 2\n",
        "tcpmon_bpf_program_runs_total 10\n",
        "tcpmon_bpf_program_run_seconds_total 1.5\n",
        "tcpmon_bpf_program_missed_runs_total 0\n",
        "tcpmon_bpf_program_covered_runs_total 0\n",
        "tcpmon_tracked_sockets_busy_total 0\n",
        "tcpmon_bpf_stats_enabled 0\n",
        "tcpmon_scrape_collect_duration_seconds 0.002\n",
        "tcpmon_events_dropped_total{reason=\"ringbuf_full\"} 0\n",
        "tcpmon_events_dropped_total{reason=\"client_slow\"} 5\n",
    ] {
        assert!(text.contains(series), "missing {series}");
    }
    assert_eq!(
        text.matches("tcpmon_state_duration_seconds_bucket{")
            .count(),
        DWELL_BUCKETS
    );
}

/// Every series of every family carries exactly the label names its descriptor announces, in
/// that order, and every family built is one the collector announces: a label added to a
/// series but not to its descriptor (or the other way round) fails here, not in Prometheus.
#[test]
fn series_labels_match_their_descriptors() {
    let mut s = empty_snapshot();
    s.transitions.iter_mut().for_each(|v| *v = 1);
    s.counters.iter_mut().for_each(|v| *v = 1);
    s.handshake_retransmits.iter_mut().for_each(|v| *v = 1);
    for h in s.dwell.iter_mut().chain(s.handshake_duration.iter_mut()) {
        h.buckets[0] = 1;
    }
    let ports = PortTable::new(&[8080, 443], 0).unwrap();
    let mut families = build(&ScrapeInput {
        snapshot: &s,
        by_workload: &host_split(
            &vec![1; handshake::SLOTS as usize],
            &vec![1; teardown::SLOTS as usize],
        ),
        ports: &ports,
        sockets: Some(&SocketCounts::default()),
        listen: Some(&BTreeMap::from([(
            8080,
            PortQueue {
                listeners: 1,
                ..PortQueue::default()
            },
        )])),
        resets: &[(tcpmon_common::reset::Key::default(), 1)],
        reset_reasons: &ReasonNames::default(),
        now_ns: 1,
        tracked: Some(Tracked {
            count: 1,
            evicted: 1,
            oldest_entered_ns: &BTreeMap::from([((tcp_state::LISTEN, 1), 0)]),
        }),
        dropped_slow: 1,
        tail_clients: 1,
        program: Some(ProgramRuns {
            runs: 1,
            run_time_ns: 1,
            missed: Some(1),
        }),
        bpf_stats_enabled: true,
        last_collect_seconds: 0.1,
    });
    // As the collector adds them to every scrape.
    let mut parts = crate::metrics::scrape_parts::Parts::default();
    for part in crate::metrics::scrape_parts::PARTS {
        parts.run(part, || Ok(()));
    }
    families.extend(parts.families());
    families.push(scrape_errors(0));
    let built: Vec<&str> = families.iter().map(|f| f.name()).collect();
    let announced: Vec<&str> = descriptors::ALL.iter().map(|d| d.name).collect();
    assert_eq!(
        built, announced,
        "every family is built, in exposition order"
    );
    for built in &families {
        let desc = descriptors::ALL
            .iter()
            .find(|d| d.name == built.name())
            .expect("announced");
        assert_eq!(built.get_field_type(), desc.kind, "{}", desc.name);
        for metric in built.get_metric() {
            let names: Vec<&str> = metric.get_label().iter().map(|l| l.name()).collect();
            assert_eq!(names, desc.labels, "{}", desc.name);
        }
    }
}

/// The label values of per-index series cover exactly the kernel's index ranges.
#[test]
fn label_value_lists_match_the_kernel_indexes() {
    assert_eq!(HANDSHAKE_LABELS.len(), handshake::RESULTS as usize);
    assert_eq!(SIDE_LABELS.len(), side::SLOTS as usize);
    assert_eq!(INITIATOR_LABELS.len(), teardown::INITIATORS as usize);
    assert_eq!(KIND_LABELS.len(), teardown::KINDS as usize);
    assert_eq!(
        HANDSHAKE_LABELS[handshake::SERVER_ESTABLISHED as usize],
        ("server", "established")
    );
    assert_eq!(
        HANDSHAKE_LABELS[handshake::CLIENT_REFUSED as usize],
        ("client", "refused")
    );
    assert_eq!(SIDE_LABELS[side::SERVER as usize], "server");
    assert_eq!(
        INITIATOR_LABELS[teardown::INITIATOR_REMOTE as usize],
        "remote"
    );
    assert_eq!(KIND_LABELS[teardown::KIND_RESET as usize], "reset");
}
