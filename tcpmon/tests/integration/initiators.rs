//! Who closed first, seen from one end only: the client and the server live in two network
//! namespaces joined by a veth pair, and the agent counts the server's namespace alone. On
//! loopback both ends are counted, which hides a swap of "local" and "remote".

use std::{collections::BTreeMap, net::TcpListener};

use crate::support::{
    assert_exact_in, require_root, run,
    workload::{connection_to, Close, Expected},
    Agent, NetNs,
};

const N: u64 = 100;
const SERVER: &str = "169.254.77.1";
const CLIENT: &str = "169.254.77.2";

fn add(map: &mut BTreeMap<Vec<String>, u64>, labels: &[&str], n: u64) {
    *map.entry(labels.iter().map(|l| l.to_string()).collect())
        .or_default() += n;
}

#[test]
fn the_server_side_counts_remote_and_local_closes_apart() {
    require_root();
    let server = NetNs::new();
    let client = NetNs::new();
    // A veth pair with link-local addresses, one end in each namespace.
    run(
        "ip",
        &[
            "-n",
            &server.name,
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth1",
            "netns",
            &client.name,
        ],
    );
    run(
        "ip",
        &[
            "-n",
            &server.name,
            "addr",
            "add",
            &format!("{SERVER}/30"),
            "dev",
            "veth0",
        ],
    );
    run(
        "ip",
        &[
            "-n",
            &client.name,
            "addr",
            "add",
            &format!("{CLIENT}/30"),
            "dev",
            "veth1",
        ],
    );
    run("ip", &["-n", &server.name, "link", "set", "veth0", "up"]);
    run("ip", &["-n", &client.name, "link", "set", "veth1", "up"]);

    // The listener opens before the agent starts: its LISTEN -> CLOSE is counted, with no
    // time in LISTEN (the agent never saw it enter): one untracked transition.
    let listener: TcpListener =
        server.run(|| TcpListener::bind(format!("{SERVER}:8080")).expect("listen"));
    let agent = Agent::start_with(&server, &["--ports", "8080"]);

    let mut expected = Expected {
        untracked: 1,
        ..Expected::default()
    };
    let transitions = [
        ("LISTEN", "CLOSE", 1),
        ("LISTEN", "SYN_RECV", 2 * N),
        ("SYN_RECV", "ESTABLISHED", 2 * N),
        // The client closed first: the server's end is the passive closer.
        ("ESTABLISHED", "CLOSE_WAIT", N),
        ("CLOSE_WAIT", "LAST_ACK", N),
        ("LAST_ACK", "CLOSE", N),
        // The server closed first: its end is the active closer.
        ("ESTABLISHED", "FIN_WAIT1", N),
        ("FIN_WAIT1", "FIN_WAIT2", N),
        ("FIN_WAIT2", "CLOSE", N),
    ];
    for (old, new, n) in transitions {
        expected.transition("inet", old, new, n);
    }
    for (state, n) in [
        ("SYN_RECV", 2 * N),
        ("ESTABLISHED", 2 * N),
        ("CLOSE_WAIT", N),
        ("LAST_ACK", N),
        ("FIN_WAIT1", N),
        ("FIN_WAIT2", N),
    ] {
        expected.dwell(state, n);
    }
    add(
        &mut expected.handshakes,
        &["server", "established", "8080"],
        2 * N,
    );
    add(&mut expected.handshake_times, &["server", "8080"], 2 * N);
    add(&mut expected.teardowns, &["remote", "fin", "8080"], N);
    add(&mut expected.teardowns, &["local", "fin", "8080"], N);

    let workload = move || {
        // Connections start in the client's namespace; accept() works on the server's
        // listener from any thread.
        for close in [Close::ClientFirst, Close::ServerFirst] {
            for _ in 0..N {
                connection_to(&listener, close);
            }
        }
        drop(listener);
    };
    assert_exact_in(&agent, &client, workload, &expected);
}
