//! Property tests of everything that parses input tcpmon does not control: the tracefs format
//! file, kernel BTF, sock_diag replies, tail requests and filters. None may panic, whatever the
//! bytes; what they accept must make sense.
use proptest::prelude::*;
use tcpmon::{
    btf::Btf,
    histogram,
    sock_diag::{self, SocketCounts},
    tail::filter::{Cidr, Filter},
    tracefs::parse_layout,
};
use tcpmon_common::{DwellHistogram, DWELL_BUCKETS};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn format_files_never_panic(text in "\\PC*") {
        let _ = parse_layout(&text);
    }

    #[test]
    fn format_lines_with_any_numbers_never_panic(offset in any::<u32>(), size in any::<u32>()) {
        let text = format!(
            "\tfield:const void * skaddr;\toffset:{offset};\tsize:{size};\tsigned:0;\n\tfield:int oldstate;\toffset:{size};\tsize:{offset};\tsigned:1;"
        );
        let _ = parse_layout(&text);
    }

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
    fn sock_diag_replies_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let mut counts = SocketCounts::default();
        let _ = sock_diag::parse(&data, &mut counts);
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
