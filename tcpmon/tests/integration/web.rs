//! `tcpmon agent --web-config`: TLS, basic auth and client certificates on a real agent,
//! checked with a separate TLS client (rustls) and certificates made at test time.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Instant,
};

use crate::support::{
    require_root, timeout,
    tls::{https_get, presented_certificate, Identity, Pki, Reply},
    Agent, NetNs,
};

const TLS: &str = "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n";

/// Starts an agent with `config` written as web.yml next to the PKI's files.
fn start(ns: &NetNs, pki: &Pki, config: &str) -> Agent {
    let path = pki.write("web.yml", config);
    let agent = Agent::start_with(ns, &["--web-config", &path]);
    let serving = format!("serving https://{}/metrics", agent.addr);
    assert!(
        agent.startup_line.contains(&serving),
        "{}",
        agent.startup_line
    );
    agent
}

fn has_header(reply: &Reply, header: &str) -> bool {
    reply.head.lines().any(|l| l.eq_ignore_ascii_case(header))
}

#[test]
fn https_with_basic_auth_lets_only_the_right_password_in() {
    require_root();
    let pki = Pki::new();
    // Cost 10, as `htpasswd -nBC 10` makes: 70–85 ms per check on this machine.
    let hash = bcrypt::hash("s3cret", 10).expect("bcrypt");
    let config = format!(
        "{TLS}http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\nbasic_auth_users:\n  prometheus: '{hash}'\n"
    );
    let ns = NetNs::new();
    let agent = start(&ns, &pki, &config);
    let client = pki.client(Identity::Anonymous);
    let get = |path: &str, basic| {
        https_get(agent.addr, path, client.clone(), basic)
            .unwrap_or_else(|e| panic!("HTTPS GET {path}: {e}"))
    };

    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let reply = get("/metrics", Some(("prometheus", "s3cret")));
        times.push(started.elapsed());
        assert_eq!(reply.status, 200, "{}", reply.head);
        assert!(reply.body.contains("tcpmon_build_info{"), "{}", reply.body);
        assert!(has_header(&reply, "x-content-type-options: nosniff"));
    }
    eprintln!("authenticated HTTPS scrapes (first one runs bcrypt): {times:?}");
    for (who, basic) in [
        ("wrong password", Some(("prometheus", "s3cret2"))),
        ("unknown user", Some(("root", "s3cret"))),
        ("no credentials", None),
    ] {
        for path in ["/metrics", "/healthz", "/"] {
            let reply = get(path, basic);
            assert_eq!(reply.status, 401, "{who} on {path}: {}", reply.head);
            assert!(
                has_header(&reply, "www-authenticate: Basic"),
                "{}",
                reply.head
            );
            assert!(has_header(&reply, "x-content-type-options: nosniff"));
            assert!(!reply.body.contains("tcpmon_"), "{who} on {path}");
        }
    }

    // Plain HTTP to the TLS port gets no HTTP answer, only the end of the connection.
    let mut plain = TcpStream::connect(agent.addr).expect("connect");
    plain.set_read_timeout(Some(timeout())).expect("timeout");
    plain
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("send");
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(!reply.starts_with(b"HTTP/"), "{reply:?}");
    assert!(!String::from_utf8_lossy(&reply).contains("tcpmon_"));

    let reply = get("/healthz", Some(("prometheus", "s3cret")));
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
}

#[test]
fn client_certificates_are_required_and_verified() {
    require_root();
    let pki = Pki::new();
    let config = format!(
        "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  min_version: TLS13\n"
    );
    let ns = NetNs::new();
    let agent = start(&ns, &pki, &config);
    let get = |identity| https_get(agent.addr, "/metrics", pki.client(identity), None);

    let reply = get(Identity::Trusted).expect("a client signed by the CA is served");
    assert_eq!(reply.status, 200, "{}", reply.head);
    assert!(reply.body.contains("tcpmon_build_info{"));
    let refused = get(Identity::Anonymous).expect_err("a client without a certificate");
    eprintln!("without a certificate: {refused}");
    let refused = get(Identity::Stranger).expect_err("a client signed by another CA");
    eprintln!("signed by another CA: {refused}");
    assert_eq!(get(Identity::Trusted).expect("still serving").status, 200);
}

#[test]
fn verify_client_cert_if_given_takes_anonymous_clients_but_not_strangers() {
    require_root();
    let pki = Pki::new();
    let config =
        format!("{TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n");
    let ns = NetNs::new();
    let agent = start(&ns, &pki, &config);
    let get = |identity| https_get(agent.addr, "/healthz", pki.client(identity), None);
    assert_eq!(get(Identity::Trusted).expect("trusted").status, 200);
    assert_eq!(get(Identity::Anonymous).expect("anonymous").status, 200);
    get(Identity::Stranger).expect_err("a certificate from another CA");
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart() {
    require_root();
    let pki = Pki::new();
    let ns = NetNs::new();
    let mut agent = start(&ns, &pki, TLS);
    let presented =
        || presented_certificate(agent.addr, pki.client(Identity::Anonymous)).expect("handshake");
    let first = presented();
    assert_eq!(first, pki.der("server.pem"));

    pki.renew_server(false);
    let renewed = presented();
    assert_ne!(renewed, first);
    assert_eq!(renewed, pki.der("server.pem"));

    // A half-done renewal (a key that does not fit) keeps the last good pair in service.
    pki.renew_server(true);
    assert_eq!(presented(), renewed);
    let reply = https_get(
        agent.addr,
        "/healthz",
        pki.client(Identity::Anonymous),
        None,
    )
    .expect("still served");
    assert_eq!(reply.status, 200);

    let (status, stderr) = agent.stop();
    assert!(status.success());
    assert_eq!(stderr[0], "tcpmon: TLS certificate and key reloaded");
    assert!(
        stderr[1].starts_with("tcpmon: warning: tls_server_config.cert_file ")
            && stderr[1].ends_with("; still serving the previous certificate"),
        "{stderr:?}"
    );
    assert_eq!(stderr.len(), 3, "one warning per change: {stderr:?}");
}
