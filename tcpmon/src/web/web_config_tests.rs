use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use super::*;
use crate::web::tls_config::{Pem, TlsVersion};

/// A directory with a CA, a server certificate and key signed by it, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tcpmon-web-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        let cert = params.signed_by(&key, &issuer).expect("cert");
        let other_key = rcgen::KeyPair::generate().expect("key");
        for (name, pem) in [
            ("ca.pem", ca_cert.pem()),
            ("cert.pem", cert.pem()),
            ("key.pem", key.serialize_pem()),
            ("other-key.pem", other_key.serialize_pem()),
        ] {
            std::fs::write(dir.join(name), pem).expect("write pem");
        }
        Dir(dir)
    }

    /// Writes `web.yml` with `text` and loads it.
    fn load(&self, text: &str) -> Result<WebConfig, String> {
        let path = self.0.join("web.yml");
        std::fs::write(&path, text).expect("write web.yml");
        WebConfig::load(&path).map_err(|e| e.to_string())
    }

    /// The reason `load` gives, without the path and the advice around it.
    fn reason(&self, text: &str) -> String {
        let message = self.load(text).expect_err("rejected");
        let prefix = format!("web config {}: ", self.0.join("web.yml").display());
        let rest = message.strip_prefix(&prefix).unwrap_or(&message);
        rest.split("; fix the file")
            .next()
            .unwrap_or(rest)
            .to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const HASH: &str = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";

#[test]
fn a_full_file_loads_with_paths_relative_to_it() {
    let dir = Dir::new();
    let web = dir
        .load(&format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  min_version: TLS13\nhttp_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\nbasic_auth_users:\n  prometheus: '{HASH}'\n"
        ))
        .expect("valid");
    let tls = web.tls.expect("TLS on");
    assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert!(tls.ignore_client_order);
    assert_eq!(web.users.len(), 1);
    let headers: Vec<String> = web
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {v:?}"))
        .collect();
    assert_eq!(
        headers,
        [
            "strict-transport-security: \"max-age=31536000\"",
            "x-frame-options: \"deny\""
        ]
    );
}

#[test]
fn an_empty_file_turns_nothing_on() {
    let dir = Dir::new();
    for text in ["", "# nothing\n", "{}\n", "basic_auth_users:\n"] {
        let web = dir.load(text).expect("valid");
        assert!(web.tls.is_none() && web.users.is_empty() && web.headers.is_empty());
    }
}

#[test]
fn unknown_keys_are_named_with_the_file() {
    let dir = Dir::new();
    let message = dir
        .load("tls_server_config:\n  cert_fil: cert.pem\n")
        .expect_err("rejected");
    let path = dir.0.join("web.yml");
    assert!(
        message.starts_with(&format!(
            "web config {}: tls_server_config: unknown field `cert_fil`, expected one of `cert`, ",
            path.display()
        )),
        "{message}"
    );
    assert!(message.contains("at line 2 column 3"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(dir
        .reason("basic_auth_user:\n  a: b\n")
        .starts_with("unknown field `basic_auth_user`"));
    assert_eq!(
        dir.reason("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
        "tls_server_config.cipher_suites is not supported by tcpmon: remove it"
    );
    assert_eq!(
        dir.reason("rate_limit:\n  interval: 1s\n  burst: 5\n"),
        "rate_limit is not supported by tcpmon: remove it"
    );
}

#[test]
fn missing_and_mismatched_files_are_named() {
    let dir = Dir::new();
    let missing = dir.0.join("nope.pem");
    assert_eq!(
        dir.reason("tls_server_config:\n  cert_file: nope.pem\n  key_file: key.pem\n"),
        format!(
            "tls_server_config.cert_file {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    assert_eq!(
        dir.reason("tls_server_config:\n  cert_file: cert.pem\n"),
        "tls_server_config: missing key_file (or key)"
    );
    let mismatch =
        dir.reason("tls_server_config:\n  cert_file: cert.pem\n  key_file: other-key.pem\n");
    assert!(mismatch.contains("do not make a usable pair"), "{mismatch}");
    let not_pem = dir.reason("tls_server_config:\n  cert_file: web.yml\n  key_file: key.pem\n");
    assert!(
        not_pem.ends_with("web.yml: no PEM certificate in it"),
        "{not_pem}"
    );
    let error = WebConfig::load(Path::new("/nonexistent/web.yml")).expect_err("no file");
    assert_eq!(
        error.to_string(),
        "cannot read web config /nonexistent/web.yml (No such file or directory (os error 2)): pass a readable file to --web-config"
    );
}

#[test]
fn bad_bcrypt_hashes_and_user_names_are_refused() {
    let dir = Dir::new();
    assert_eq!(
        dir.reason("basic_auth_users:\n  alice: hunter2\n"),
        "basic_auth_users.alice: not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
    );
    assert!(dir
        .reason(&format!("basic_auth_users:\n  'a:b': '{HASH}'\n"))
        .contains("contains ':'"));
}

fn versions(dir: &Dir, min: &str, max: &str) -> Result<Vec<TlsVersion>, String> {
    let text =
        format!("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n{min}{max}");
    Settings::parse(&text, &dir.0).map(|s| s.tls.expect("TLS").versions)
}

#[test]
fn min_and_max_version() {
    let dir = Dir::new();
    use TlsVersion::*;
    assert_eq!(versions(&dir, "", ""), Ok(vec![Tls12, Tls13]));
    assert_eq!(
        versions(&dir, "  min_version: TLS12\n", ""),
        Ok(vec![Tls12, Tls13])
    );
    assert_eq!(
        versions(&dir, "  min_version: TLS13\n", ""),
        Ok(vec![Tls13])
    );
    assert_eq!(
        versions(&dir, "", "  max_version: TLS12\n"),
        Ok(vec![Tls12])
    );
    assert_eq!(
        versions(&dir, "  min_version: TLS11\n", ""),
        Err("tls_server_config.min_version TLS11 is not supported (tcpmon speaks TLS 1.2 and 1.3): use TLS12 or TLS13".into())
    );
    assert_eq!(
        versions(&dir, "  min_version: tls13\n", ""),
        Err(
            "tls_server_config.min_version: unknown TLS version \"tls13\": use TLS12 or TLS13"
                .into()
        )
    );
    assert_eq!(
        versions(&dir, "  min_version: TLS13\n", "  max_version: TLS12\n"),
        Err("tls_server_config: min_version is above max_version".into())
    );
    assert!(dir.load("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  min_version: TLS13\n").is_ok());
}

#[test]
fn client_auth_needs_a_ca_and_a_ca_needs_client_auth() {
    let dir = Dir::new();
    let tls = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";
    assert!(dir
        .reason(&format!(
            "{tls}  client_auth_type: RequireAndVerifyClientCert\n"
        ))
        .contains("no client_ca_file"));
    assert!(dir
        .reason(&format!("{tls}  client_ca_file: ca.pem\n"))
        .contains("client_auth_type is NoClientCert"));
    assert!(dir
        .reason(&format!(
            "{tls}  client_auth_type: RequireAnyClientCert\n  client_ca_file: ca.pem\n"
        ))
        .contains("not supported"));
    assert!(dir
        .reason(&format!("{tls}  client_auth_type: Sometimes\n"))
        .contains("unknown value \"Sometimes\""));
    assert!(dir
        .load(&format!(
            "{tls}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n"
        ))
        .is_ok());
}

#[test]
fn only_the_exporter_toolkit_headers_can_be_set() {
    let dir = Dir::new();
    assert!(dir
        .reason("http_server_config:\n  headers:\n    Server: x\n")
        .starts_with("http_server_config.headers: header \"Server\" cannot be set"));
    assert_eq!(
        dir.reason("http_server_config:\n  headers:\n    X-Frame-Options: allow\n"),
        "http_server_config.headers.X-Frame-Options: \"allow\" is not allowed: use deny or sameorigin"
    );
}

#[test]
fn the_example_file_parses() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/web-config.example.yml"
    );
    let text = std::fs::read_to_string(path).expect("example file");
    let settings = Settings::parse(&text, Path::new("/etc/tcpmon")).expect("valid");
    let tls = settings.tls.expect("TLS");
    assert_eq!(tls.cert, Pem::File("/etc/tcpmon/tls.crt".into()));
    assert_eq!(settings.users.len(), 1);
}
