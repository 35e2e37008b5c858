//! Property tests of everything that parses input tcpmon does not control: kernel BTF, the kernel's counts, tail requests and filters. None may panic, whatever the
//! bytes; what they accept must make sense.
use proptest::prelude::*;
use tcpmon::{
    cli::OutputFormat,
    client::Printer,
    metrics::{histogram, socket_states::SocketStates},
    probe::btf::Btf,
    tail::{
        event::{message_of, Event, Message},
        filter::{parse_state, Cidr, Filter},
    },
};
use tcpmon_common::{DwellHistogram, TailEvent, AF_INET, AF_INET6, DWELL_BUCKETS};

/// A kernel tail event made of arbitrary bytes, with a plausible family half the time.
fn kernel_event(bytes: &[u8; 104], state_bias: u8) -> TailEvent {
    // SAFETY: TailEvent is a #[repr(C)] struct of integers and byte arrays, 104 bytes: every bit
    // pattern is a valid value.
    let mut e: TailEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    if state_bias.is_multiple_of(2) {
        e.family = if state_bias.is_multiple_of(4) {
            AF_INET
        } else {
            AF_INET6
        };
        e.oldstate = i32::from(bytes[0] % 13);
        e.newstate = i32::from(bytes[1] % 13);
    }
    e
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn btf_blobs_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..512)) {
        // Half the cases carry a valid magic and header length, to get past the first check.
        if data.len() >= 24 && data[0] % 2 == 0 {
            data[0] = 0x9f;
            data[1] = 0xeb;
            data[4..8].copy_from_slice(&24u32.to_le_bytes());
        }
        if let Ok(btf) = Btf::parse(&data) {
            let _ = btf.member_offset("sock", &["__sk_common", "skc_net"]);
        }
    }

    #[test]
    fn socket_counts_never_panic_whatever_the_kernel_counts(
        before in proptest::collection::vec(any::<u64>(), 0..600),
        now in proptest::collection::vec(any::<u64>(), 0..600),
        requests in any::<u64>(),
        time_wait in any::<u64>(),
    ) {
        let states = SocketStates::new(&[], &Default::default(), before);
        let counts = states.counts(&now, requests, time_wait);
        prop_assert!(counts.by_state.len() > tcpmon_common::tcp_state::NEW_SYN_RECV as usize);
    }

    #[test]
    fn cidrs_parse_or_fail_cleanly(text in "\\PC*") {
        let _ = text.parse::<Cidr>();
    }

    #[test]
    fn a_network_contains_its_own_address(a in any::<[u8; 4]>(), prefix in 0u8..=32) {
        let addr = std::net::Ipv4Addr::from(a);
        let cidr: Cidr = format!("{addr}/{prefix}").parse().expect("valid CIDR");
        prop_assert!(cidr.contains(std::net::IpAddr::V4(addr)));
    }

    #[test]
    fn tail_requests_never_panic(text in "\\PC*") {
        let _ = serde_json::from_str::<Filter>(&text);
    }

    #[test]
    fn kernel_events_decode_or_are_skipped_and_round_trip(
        bytes in proptest::array::uniform32(any::<u8>()),
        more in proptest::array::uniform32(any::<u8>()),
        last in proptest::array::uniform32(any::<u8>()),
        end in proptest::array::uniform8(any::<u8>()),
        bias in any::<u8>(),
    ) {
        let mut all = [0u8; 104];
        all[..32].copy_from_slice(&bytes);
        all[32..64].copy_from_slice(&more);
        all[64..96].copy_from_slice(&last);
        all[96..].copy_from_slice(&end);
        if let Some(event) = Event::from_kernel(&kernel_event(&all, bias), 0) {
            let line = serde_json::to_string(&Message::Event(event.clone())).expect("encodes");
            let back: Message = serde_json::from_str(&line).expect("decodes");
            prop_assert_eq!(back, Message::Event(event));
        }
    }

    /// The agent writes NDJSON straight from the record (tail/agent/ndjson.rs): byte for byte the
    /// serialized decoded event, for any record and clock offset; the filters agree too.
    #[test]
    fn the_agents_wire_lines_are_the_serialized_events(
        bytes in proptest::array::uniform32(any::<u8>()),
        more in proptest::array::uniform32(any::<u8>()),
        last in proptest::array::uniform32(any::<u8>()),
        end in proptest::array::uniform8(any::<u8>()),
        bias in any::<u8>(),
        offset in any::<i64>(),
        port in any::<u16>(),
    ) {
        let mut all = [0u8; 104];
        all[..32].copy_from_slice(&bytes);
        all[32..64].copy_from_slice(&more);
        all[64..96].copy_from_slice(&last);
        all[96..].copy_from_slice(&end);
        let record = kernel_event(&all, bias);
        let offset = i128::from(offset);
        let mut wire = Vec::new();
        let written = tcpmon::tail::agent::ndjson::write_line(&record, offset, None, &mut wire);
        let decoded = Event::from_kernel(&record, offset);
        prop_assert_eq!(written, decoded.is_some());
        let filter = Filter { ports: vec![port, record.sport], ..Default::default() };
        if let Some(event) = decoded {
            // A transition, or a SYN retransmission by the record's kind.
            let message = message_of(&record, offset, None).expect("decodes as the event did");
            let line = serde_json::to_string(&message).expect("encodes") + "\n";
            prop_assert_eq!(String::from_utf8(wire).expect("UTF-8"), line);
            prop_assert!(filter.matches_record(&record));
            let other = Filter { ports: vec![port], ..Default::default() };
            prop_assert_eq!(other.matches_record(&record), other.matches(&event));
        } else {
            prop_assert!(wire.is_empty());
            prop_assert!(!filter.matches_record(&record));
        }
    }

    #[test]
    fn agent_lines_never_panic_the_client(text in "\\PC*") {
        let _ = serde_json::from_str::<Message>(&text);
    }

    /// Any sequence of events, in any order, through every output format (the timeline
    /// assembles connections across events): no panic, whatever the kernel sent.
    #[test]
    fn printers_take_any_event_sequence(
        events in proptest::collection::vec(
            (proptest::array::uniform32(any::<u8>()), any::<u8>(), 0u8..4),
            0..64,
        ),
        lost in any::<u64>(),
    ) {
        for format in [OutputFormat::Table, OutputFormat::Json, OutputFormat::Timeline] {
            let mut printer = Printer::new(format, None);
            let mut out = Vec::new();
            for (bytes, bias, socket) in &events {
                let mut all = [0u8; 104];
                all[..32].copy_from_slice(bytes);
                // Few distinct sockets, so the timeline sees connections evolve.
                all[8] = *socket;
                let Some(event) = Event::from_kernel(&kernel_event(&all, *bias), 0) else {
                    continue;
                };
                printer.print(Message::Event(event), &mut out).expect("prints");
            }
            printer.print(Message::Lost { count: lost }, &mut out).expect("prints");
        }
    }

    #[test]
    fn state_names_parse_or_fail_cleanly(text in "\\PC*") {
        if let Ok(state) = parse_state(&text) {
            prop_assert_eq!(parse_state(state.name()), Ok(state));
        }
    }

    #[test]
    fn histograms_stay_cumulative(buckets in proptest::array::uniform32(0u64..1_000_000), sum in any::<u64>()) {
        let mut h = DwellHistogram { buckets: [0; DWELL_BUCKETS], sum_ns: sum };
        h.buckets[..32].copy_from_slice(&buckets);
        let p = histogram::to_proto(&h);
        let counts: Vec<u64> = p.get_bucket().iter().map(|b| b.cumulative_count()).collect();
        prop_assert!(counts.windows(2).all(|w| w[0] <= w[1]));
        prop_assert_eq!(p.get_sample_count(), buckets.iter().sum::<u64>());
        prop_assert_eq!(*counts.last().expect("buckets"), buckets.iter().sum::<u64>());
    }
}
