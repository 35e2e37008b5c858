//! `--pin DIR`: counters, open sockets' entries and port labels survive a restart of the agent;
//! a pinned map that does not fit is refused in one line.

use std::{
    io::Read,
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::Command,
};

use crate::support::{
    require_root, run, settle,
    workload::{self, Close, Expected, SERVICE_PORT},
    Agent, NetNs,
};

/// A BPF filesystem mounted for one test; unmounted (dropping every pin) and removed on drop.
struct BpfFs(PathBuf);

impl BpfFs {
    fn new() -> BpfFs {
        let dir = std::env::temp_dir().join(format!("tcpmon-bpffs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mount point");
        let fs = BpfFs(dir);
        run("mount", &["-t", "bpf", "bpf", &fs.0.to_string_lossy()]);
        fs
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `n` client-first connections to `listener`.
fn connections(listener: &TcpListener, n: u64) {
    for _ in 0..n {
        workload::connection_to(listener, Close::ClientFirst);
    }
}

#[test]
fn pinned_counters_survive_a_restart_and_keep_their_port_labels() {
    require_root();
    let bpffs = BpfFs::new();
    let dir = bpffs.0.join("tcpmon");
    let dir = dir.to_string_lossy();
    let ns = NetNs::new();
    let port = SERVICE_PORT.to_string();

    let mut first = Agent::start_with(&ns, &["--pin", &dir, "--ports", &port]);
    // 50 connections, and one left open across the restart.
    let (listener, client, server) = ns.run(|| {
        let listener = TcpListener::bind(("127.0.0.1", SERVICE_PORT)).expect("listen");
        connections(&listener, 50);
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (listener, client, server)
    });
    let mut before = Expected::default();
    before
        .transition("inet", "CLOSE", "LISTEN", 1)
        .handshakes("inet", 51, &port)
        .teardowns("inet", 50, &port);
    assert_eq!(settle(&first, &before).observed(), before);
    let program = first.program_id.to_string();
    let (status, _) = first.stop();
    assert!(status.success());
    assert!(
        crate::support::program_unloaded(&program),
        "program {program} left loaded"
    );

    // Another port first: a fresh port table would give it 8080's slot and its counts.
    let second = Agent::start_with(&ns, &["--pin", &dir, "--ports", &format!("9090,{port}")]);
    assert_eq!(
        second.scrape().observed(),
        before,
        "nothing lost, nothing moved"
    );
    ns.run(move || {
        drop(client);
        let mut server = server;
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).expect("read until EOF");
        drop(server);
        connections(&listener, 30);
    });
    let mut after = Expected::default();
    after
        .listener("inet")
        .handshakes("inet", 81, &port)
        .teardowns("inet", 81, &port);
    let scrape = settle(&second, &after);
    // The open connection kept its entries: its ESTABLISHED time and teardown are measured.
    assert_eq!(scrape.observed(), after);
    assert_eq!(scrape.get("tcpmon_tracked_sockets"), 0.0);
    for series in [
        "tcpmon_state_duration_unmeasured_total{reason=\"untracked\"}",
        "tcpmon_state_duration_unmeasured_total{reason=\"stale_entry\"}",
        "tcpmon_tracked_sockets_evicted_total",
    ] {
        assert_eq!(scrape.get(series), 0.0, "{series}");
    }
    drop(second);

    // A per-socket map of another size does not fit: refused before anything is loaded.
    let out = Command::new(crate::support::TCPMON)
        .args(["agent", "--listen", "127.0.0.1:0", "--pin", &dir])
        .args(["--max-tracked-sockets", "1024", "--tail-socket"])
        .arg(format!("/run/{}-refused.sock", ns.name))
        .output()
        .expect("run tcpmon");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "tcpmon: error: the map pinned at {dir}/SOCKETS does not fit this agent (65536 entries, expected 1024 (--max-tracked-sockets)): start with the settings it was made with, or remove its directory to count from zero\n"
        )
    );
}
