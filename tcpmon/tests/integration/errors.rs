//! Every failure a user can cause ends in one line on stderr, a non-zero exit, no panic.
//! The kernel-side failures are produced for real, in a private mount namespace (`unshare -m`)
//! where BTF is hidden or replaced, so the host is never touched.

use std::{net::TcpListener, process::Command};

use crate::support::{free_addr, require_root, TCPMON};

/// Runs `program args` and returns (exit code, stderr).
fn run(program: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.stdout.is_empty(), "nothing on stdout");
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8(out.stderr).expect("utf8 stderr"),
    )
}

/// Runs the agent inside a private mount namespace after `setup` (shell commands).
fn agent_in_mount_namespace(setup: &str) -> (i32, String) {
    require_root();
    let listen = free_addr().to_string();
    // Its own tail socket: these tests run at once, and the default path would be taken.
    let socket = format!(
        "/run/tcpmon-errors-{}.sock",
        listen.replace([':', '.'], "-")
    );
    let script = format!("{setup} && exec {TCPMON} agent --listen {listen} --tail-socket {socket}");
    run(
        "unshare",
        &["--mount", "--propagation", "private", "sh", "-c", &script],
    )
}

fn assert_one_line(stderr: &str, expected: &str) {
    assert_eq!(stderr, format!("tcpmon: error: {expected}\n"));
}

/// Starts the agent under `setpriv` with `privileges` (setpriv's options) and checks it stops
/// with the one line that names the missing capability.
fn refused_without_cap_sys_admin(privileges: &[&str]) {
    require_root();
    let listen = free_addr().to_string();
    let mut args = privileges.to_vec();
    args.extend([TCPMON, "agent", "--listen", &listen]);
    let (code, stderr) = run("setpriv", &args);
    assert_eq!(code, 1);
    assert_one_line(
        &stderr,
        "not allowed to load eBPF programs and enter network namespaces (missing CAP_SYS_ADMIN): run tcpmon as root, or give it CAP_SYS_ADMIN (it covers loading eBPF programs) and CAP_SYS_PTRACE",
    );
}

#[test]
fn not_root() {
    refused_without_cap_sys_admin(&["--reuid=65534", "--regid=65534", "--clear-groups"]);
}

#[test]
fn root_without_cap_sys_admin() {
    refused_without_cap_sys_admin(&["--bounding-set=-sys_admin"]);
}

#[test]
fn tracepoint_missing() {
    // A valid BTF blob with no types at all (a 24-byte header and an empty string table): the
    // tracepoint's typedef is missing, as on a kernel without BTF-enabled tracepoints.
    let (code, stderr) = agent_in_mount_namespace(
        r"mount -t tmpfs none /sys/kernel/btf && printf '\237\353\001\000\030\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\001\000\000\000\000' >/sys/kernel/btf/vmlinux",
    );
    assert_eq!(code, 1);
    assert_one_line(
        &stderr,
        "tracepoint sock:inet_sock_set_state is not in this kernel's BTF (/sys/kernel/btf/vmlinux has no btf_trace_inet_sock_set_state): tcpmon needs Linux 5.8 or newer",
    );
}

#[test]
fn btf_missing() {
    let (code, stderr) = agent_in_mount_namespace("mount -t tmpfs none /sys/kernel/btf");
    assert_eq!(code, 1);
    assert_one_line(
        &stderr,
        "kernel BTF is not available (/sys/kernel/btf/vmlinux: No such file or directory (os error 2)): tcpmon needs a kernel built with CONFIG_DEBUG_INFO_BTF=y",
    );
}

#[test]
fn listen_address_in_use() {
    require_root();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, stderr) = run(TCPMON, &["agent", "--listen", &addr]);
    assert_eq!(code, 1);
    assert_one_line(
        &stderr,
        &format!("cannot listen on {addr}: address already in use; stop the other process or choose another address with --listen"),
    );
}

#[test]
fn malformed_listen_address() {
    let (code, stderr) = run(TCPMON, &["agent", "--listen", "localhost"]);
    assert_eq!(code, 2);
    assert_one_line(
        &stderr,
        "invalid value 'localhost' for '--listen <ADDR:PORT>': invalid socket address syntax (see `tcpmon --help`)",
    );
}

#[test]
fn unknown_flag() {
    let (code, stderr) = run(TCPMON, &["agent", "--bogus"]);
    assert_eq!(code, 2);
    assert_one_line(
        &stderr,
        "unexpected argument '--bogus' found (see `tcpmon --help`)",
    );
}

#[test]
fn netns_that_is_not_one() {
    require_root();
    for (path, why) in [
        ("/nonexistent", "No such file or directory (os error 2)"),
        ("/etc/hostname", "not a network namespace"),
    ] {
        let (code, stderr) = run(TCPMON, &["agent", "--netns", path]);
        assert_eq!(code, 1);
        assert_one_line(
            &stderr,
            &format!("cannot open network namespace {path} ({why}): pass a path such as /run/netns/NAME or /proc/PID/ns/net"),
        );
    }
}

#[test]
fn tail_without_an_agent() {
    let (code, stderr) = run(
        TCPMON,
        &["tail", "--socket", "/run/tcpmon-nobody-here.sock"],
    );
    assert_eq!(code, 1);
    assert_one_line(
        &stderr,
        "no tcpmon agent is listening on /run/tcpmon-nobody-here.sock: start the agent, or run `tcpmon tail --standalone`",
    );
}

#[test]
fn tail_with_an_unknown_state_or_a_bad_cidr() {
    let (code, stderr) = run(TCPMON, &["tail", "--state", "ESTAB"]);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("tcpmon: error: invalid value 'ESTAB' for '--state <STATE>': unknown state 'ESTAB': use one of ESTABLISHED,"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
    let (code, stderr) = run(TCPMON, &["tail", "--addr", "10.0.0.0/33"]);
    assert_eq!(code, 2);
    assert_one_line(
        &stderr,
        "invalid value '10.0.0.0/33' for '--addr <CIDR>': invalid address or CIDR '10.0.0.0/33': use for example 10.0.0.0/8 or ::1 (see `tcpmon --help`)",
    );
}

#[test]
fn a_bad_web_config_fails_before_anything_is_bound_or_loaded() {
    require_root();
    let dir = std::env::temp_dir().join(format!("tcpmon-errors-web-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("web.yml");
    let path = file.to_string_lossy().into_owned();
    // The address is taken: the web config must be reported first, so it is read before the
    // agent binds (and binding comes before loading the eBPF program).
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().expect("addr").to_string();
    let agent = |text: &str| {
        std::fs::write(&file, text).expect("write web config");
        run(
            TCPMON,
            &["agent", "--listen", &listen, "--web-config", &path],
        )
    };
    let advice =
        "fix the file (format: https://prometheus.io/docs/prometheus/latest/configuration/https/)";
    let (code, stderr) = agent("basic_auth_user:\n  prometheus: x\n");
    assert_eq!(code, 1);
    assert_one_line(
        &stderr,
        &format!("web config {path}: unknown field `basic_auth_user`, expected one of `tls_server_config`, `http_server_config`, `basic_auth_users`, `rate_limit`; {advice}"),
    );
    let (code, stderr) =
        agent("tls_server_config:\n  cert_file: missing.pem\n  key_file: missing.key\n");
    assert_eq!(code, 1);
    assert_one_line(
        &stderr,
        &format!("web config {path}: tls_server_config.cert_file {}: No such file or directory (os error 2); {advice}", dir.join("missing.pem").display()),
    );
    let (code, stderr) = agent("basic_auth_users:\n  prometheus: hunter2\n");
    assert_eq!(code, 1);
    assert_one_line(
        &stderr,
        &format!("web config {path}: basic_auth_users.prometheus: not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`); {advice}"),
    );
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
    let (code, stderr) = run(
        TCPMON,
        &["agent", "--listen", &listen, "--web-config", &path],
    );
    assert_eq!(code, 1);
    assert_one_line(
        &stderr,
        &format!("cannot read web config {path} (No such file or directory (os error 2)): pass a readable file to --web-config"),
    );
}

#[test]
fn unknown_user() {
    require_root();
    let (code, stderr) = run(TCPMON, &["agent", "--user", "no-such-user-tcpmon"]);
    assert_eq!(code, 1);
    assert_one_line(
        &stderr,
        "no user named no-such-user-tcpmon on this host: pass an existing user to --user (for example nobody)",
    );
}

#[test]
fn pin_directory_not_on_a_bpf_filesystem() {
    require_root();
    let dir = format!("/tmp/tcpmon-not-bpffs-{}/pins", std::process::id());
    let (code, stderr) = run(TCPMON, &["agent", "--pin", &dir]);
    assert_eq!(code, 1);
    assert_one_line(
        &stderr,
        &format!("cannot keep counters in {dir} (not on a BPF filesystem; mount one with `mount -t bpf bpf /sys/fs/bpf`): pass --pin a directory on a BPF filesystem, for example /sys/fs/bpf/tcpmon"),
    );
    assert!(!std::path::Path::new(&dir).exists(), "nothing made");
}

#[test]
fn too_many_ports() {
    require_root();
    let ports: Vec<String> = (1..=250).map(|p| p.to_string()).collect();
    let (code, stderr) = run(TCPMON, &["agent", "--ports", &ports.join(",")]);
    assert_eq!(code, 1);
    assert_one_line(
        &stderr,
        "--ports (250) plus --max-ports (32) exceed 256 labelled ports: lower --max-ports or give fewer --ports",
    );
}

#[test]
fn tail_socket_served_by_another_agent() {
    require_root();
    let ns = crate::support::NetNs::new();
    let agent = crate::support::Agent::start(&ns);
    let listen = free_addr().to_string();
    let (code, stderr) = run(
        TCPMON,
        &[
            "agent",
            "--listen",
            &listen,
            "--tail-socket",
            &agent.tail_socket,
        ],
    );
    assert_eq!(code, 1);
    assert_one_line(
        &stderr,
        &format!(
            "cannot serve the tail socket {} (another agent is serving it): choose another path with --tail-socket",
            agent.tail_socket
        ),
    );
}

#[test]
fn bad_durations_and_options_of_the_trouble_commands() {
    let (code, stderr) = run(TCPMON, &["sockets", "--older-than", "5x"]);
    assert_eq!(code, 2);
    assert_one_line(
        &stderr,
        "invalid value '5x' for '--older-than <DURATION>': '5x' is not a duration such as 500ms, 30s, 5m or 1h (see `tcpmon --help`)",
    );
    let (code, stderr) = run(TCPMON, &["tail", "--recent", "--since", "ten"]);
    assert_eq!(code, 2);
    assert_one_line(
        &stderr,
        "invalid value 'ten' for '--since <DURATION>': 'ten' is not a duration such as 500ms, 30s, 5m or 1h (see `tcpmon --help`)",
    );
    let (code, stderr) = run(TCPMON, &["tail", "--since", "10m"]);
    assert_eq!(code, 2);
    assert_one_line(
        &stderr,
        "the following required arguments were not provided: --recent (see `tcpmon --help`)",
    );
    let socket = "/run/tcpmon-no-agent-here.sock";
    let (code, stderr) = run(
        TCPMON,
        &["tail", "--recent", "-o", "timeline", "--socket", socket],
    );
    assert_eq!(code, 1);
    assert_one_line(
        &stderr,
        "--recent prints -o table or -o json, not timelines",
    );
    let (code, stderr) = run(TCPMON, &["sockets", "--socket", socket]);
    assert_eq!(code, 1);
    assert_one_line(
        &stderr,
        &format!("no tcpmon agent is listening on {socket}: start the agent, or run `tcpmon tail --standalone`"),
    );
}
