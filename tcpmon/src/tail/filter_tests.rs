use super::*;
use tcpmon_common::TailEvent;

fn event(local: &str, lport: u16, remote: &str, rport: u16) -> Event {
    Event {
        time: String::new(),
        mono_ns: 0,
        connection: "1".into(),
        pid: Some(7),
        comm: Some("app".into()),
        family: if local.contains(':') { "inet6" } else { "inet" }.into(),
        local: local.parse().unwrap(),
        local_port: lport,
        remote: remote.parse().unwrap(),
        remote_port: rport,
        old_state: TcpState::SynSent,
        new_state: TcpState::Established,
        ms: None,
        error: 0,
        workload: None,
    }
}

#[test]
fn parses_cidrs_and_bare_addresses() {
    let net: Cidr = "10.1.0.0/16".parse().unwrap();
    assert!(net.contains("10.1.200.3".parse().unwrap()));
    assert!(!net.contains("10.2.0.1".parse().unwrap()));
    assert!(!net.contains("::1".parse().unwrap()));
    let host: Cidr = "::1".parse().unwrap();
    assert_eq!(host.to_string(), "::1/128");
    assert!(host.contains("::1".parse().unwrap()));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("192.0.2.1".parse().unwrap()));
}

#[test]
fn rejects_bad_cidrs_with_an_example() {
    for bad in [
        "10.0.0.0/33",
        "10.0.0/8",
        "fe80::/129",
        "localhost",
        "10.0.0.0/x",
        "",
    ] {
        assert_eq!(
            bad.parse::<Cidr>(),
            Err(format!(
                "invalid address or CIDR '{bad}': use for example 10.0.0.0/8 or ::1"
            ))
        );
    }
}

#[test]
fn parses_states_and_families() {
    assert_eq!(parse_state("close_wait"), Ok(TcpState::CloseWait));
    let err = parse_state("ESTAB").unwrap_err();
    assert!(
        err.starts_with("unknown state 'ESTAB': use one of ESTABLISHED, SYN_SENT,"),
        "{err}"
    );
    assert_eq!("inet6".parse::<Family>(), Ok(Family::Inet6));
    assert_eq!(
        "ip".parse::<Family>(),
        Err("unknown family 'ip': use inet or inet6".into())
    );
}

#[test]
fn every_criterion_must_match_any_of_its_values() {
    let e = event("127.0.0.1", 40000, "10.0.0.5", 8080);
    assert!(Filter::default().matches(&e));
    let by_port = Filter {
        ports: vec![8080],
        ..Default::default()
    };
    assert!(by_port.matches(&e));
    let other_port = Filter {
        ports: vec![9090],
        ..Default::default()
    };
    assert!(!other_port.matches(&e));
    let by_net = Filter {
        addrs: vec!["10.0.0.0/24".parse().unwrap()],
        ..Default::default()
    };
    assert!(by_net.matches(&e));
    let both = Filter {
        ports: vec![8080],
        states: vec![TcpState::CloseWait],
        ..Default::default()
    };
    assert!(!both.matches(&e), "the state does not match");
    let by_state = Filter {
        states: vec![TcpState::SynSent],
        ..Default::default()
    };
    assert!(by_state.matches(&e), "old state matches");
    let v6 = Filter {
        families: vec![Family::Inet6],
        ..Default::default()
    };
    assert!(!v6.matches(&e));
    let pid = Filter {
        pids: vec![7, 8],
        ..Default::default()
    };
    assert!(pid.matches(&e));
    let unknown_pid = Event { pid: None, ..e };
    assert!(!pid.matches(&unknown_pid));
}

#[test]
fn round_trips_as_json() {
    let f = Filter {
        ports: vec![80],
        addrs: vec!["10.0.0.0/8".parse().unwrap()],
        states: vec![TcpState::Established],
        families: vec![Family::Inet],
        pids: vec![1],
        workloads: vec!["web.service".into()],
    };
    let json = serde_json::to_string(&f).unwrap();
    assert_eq!(
        json,
        r#"{"ports":[80],"addrs":["10.0.0.0/8"],"states":["ESTABLISHED"],"families":["inet"],"pids":[1],"workloads":["web.service"]}"#
    );
    assert!(f.matches_workload(Some("web.service")));
    assert!(!f.matches_workload(Some("host")) && !f.matches_workload(None));
    assert!(Filter::default().matches_workload(None));
    assert_eq!(serde_json::from_str::<Filter>(&json).unwrap(), f);
    assert_eq!(
        serde_json::from_str::<Filter>("{}").unwrap(),
        Filter::default()
    );
    assert!(serde_json::from_str::<Filter>(r#"{"addrs":["nope"]}"#).is_err());
}

#[test]
fn records_match_as_their_decoded_events_do() {
    let mut v4 = TailEvent {
        ts_ns: 1,
        skaddr: 2,
        dwell_ns: 3,
        cgroup_id: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        comm: *b"app\0\0\0\0\0\0\0\0\0\0\0\0\0",
        pid: 7,
        oldstate: 2,
        newstate: 1,
        sk_err: 0,
        sport: 40000,
        dport: 8080,
        family: tcpmon_common::AF_INET,
        kind: 0,
        _pad: 0,
    };
    v4.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
    v4.daddr[..4].copy_from_slice(&[192, 0, 2, 1]);
    let v6 = TailEvent {
        family: 10,
        saddr: "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
        daddr: "::ffff:10.9.9.9"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
        pid: 0,
        ..v4
    };
    let filters = [
        Filter::default(),
        Filter {
            ports: vec![8080],
            ..Default::default()
        },
        Filter {
            ports: vec![22],
            ..Default::default()
        },
        Filter {
            addrs: vec!["10.0.0.0/8".parse().unwrap()],
            ..Default::default()
        },
        Filter {
            addrs: vec!["2001:db8::/32".parse().unwrap()],
            ..Default::default()
        },
        Filter {
            states: vec![TcpState::SynSent],
            ..Default::default()
        },
        Filter {
            states: vec![TcpState::Listen],
            ..Default::default()
        },
        Filter {
            families: vec![Family::Inet6],
            ..Default::default()
        },
        Filter {
            families: vec![Family::Inet],
            ..Default::default()
        },
        Filter {
            pids: vec![7],
            ..Default::default()
        },
    ];
    let mut hits = 0;
    for record in [v4, v6] {
        let event = Event::from_kernel(&record, 0).expect("valid");
        for filter in &filters {
            assert_eq!(
                filter.matches_record(&record),
                filter.matches(&event),
                "{filter:?} {event:?}"
            );
            hits += usize::from(filter.matches(&event));
        }
    }
    assert!(
        hits > 3 && hits < 2 * filters.len(),
        "the grid has hits and misses"
    );
    assert!(Filter::default().matches_everything());
    assert!(!filters[1].matches_everything());
    let bad = TailEvent { oldstate: 0, ..v4 };
    assert!(!Filter::default().matches_record(&bad));
}
