//! After loading and attaching, the agent keeps only CAP_SYS_ADMIN and CAP_SYS_PTRACE and, with
//! `--user`, runs as that user; its file descriptors (maps, ring buffer, sockets) keep working.

use std::net::{IpAddr, Ipv4Addr};

use crate::support::{
    assert_exact_in, require_root,
    workload::{self, Close, Expected, SERVICE_PORT},
    Agent, NetNs,
};

/// CAP_SYS_PTRACE (19) and CAP_SYS_ADMIN (21), as /proc/PID/status prints masks.
const RUNTIME_CAPS: &str = "0000000000280000";

/// The `Name:\tvalue` fields of `/proc/PID/status` that describe privileges.
fn privileges(pid: u32) -> Vec<(String, String)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let wanted = [
        "Uid",
        "Gid",
        "Groups",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
    ];
    status
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| wanted.contains(name))
        .map(|(name, value)| (name.to_string(), value.trim().to_string()))
        .collect()
}

fn expected_privileges(id: &str) -> Vec<(String, String)> {
    let ids = [id; 4].join("\t");
    [
        ("Uid", ids.as_str()),
        ("Gid", ids.as_str()),
        ("Groups", ""),
        ("CapInh", "0000000000000000"),
        ("CapPrm", RUNTIME_CAPS),
        ("CapEff", RUNTIME_CAPS),
        ("CapBnd", RUNTIME_CAPS),
        ("CapAmb", "0000000000000000"),
        ("NoNewPrivs", "1"),
    ]
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .to_vec()
}

fn client_first_connections(n: u64) -> Expected {
    let port = SERVICE_PORT.to_string();
    let mut expected = Expected::default();
    expected
        .listener("inet")
        .handshakes("inet", n, &port)
        .teardowns("inet", n, &port);
    expected
}

#[test]
fn as_nobody_with_two_capabilities_every_counter_stays_exact() {
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start_with(&ns, &["--user", "nobody", "--ports", "8080"]);
    assert_eq!(privileges(agent.pid()), expected_privileges("65534"));
    let workload = || {
        workload::connections(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            SERVICE_PORT,
            100,
            Close::ClientFirst,
        )
    };
    assert_exact_in(&agent, &ns, workload, &client_first_connections(100));
    // Counting sockets enters the namespace (setns) at every scrape: a held connection shows.
    let held = ns.run(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let server = listener.accept().expect("accept");
        (listener, client, server)
    });
    let scrape = agent.scrape();
    assert_eq!(scrape.sockets()["ESTABLISHED"], 2);
    assert_eq!(scrape.sockets()["LISTEN"], 1);
    drop(held);
}

#[test]
fn without_user_the_agent_stays_root_with_two_capabilities() {
    require_root();
    let ns = NetNs::new();
    let agent = Agent::start(&ns);
    // Supplementary groups are left as they were: uid 0 keeps its own.
    let without_groups = |list: Vec<(String, String)>| {
        list.into_iter()
            .filter(|(name, _)| name != "Groups")
            .collect::<Vec<_>>()
    };
    assert_eq!(
        without_groups(privileges(agent.pid())),
        without_groups(expected_privileges("0"))
    );
    assert_eq!(agent.scrape().get("tcpmon_tracked_sockets"), 0.0);
}
