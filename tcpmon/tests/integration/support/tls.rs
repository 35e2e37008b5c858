//! TLS for the `--web-config` tests: a throw-away PKI made with rcgen at test time and a small
//! HTTPS client on rustls, so the agent's TLS is checked by a client that is not the server.
use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};
use rustls::{pki_types::ServerName, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use super::timeout;

/// Which certificate the client shows.
#[derive(Clone, Copy)]
pub enum Identity {
    Anonymous,
    /// Signed by the CA the agent trusts (`ca.pem`).
    Trusted,
    /// Signed by another CA.
    Stranger,
}

/// A directory with `ca.pem`, `server.pem`/`server-key.pem` (for 127.0.0.1 and localhost),
/// `client.pem`/`client-key.pem` signed by the CA, and `stranger.pem`/`stranger-key.pem`
/// signed by another CA; removed on drop.
pub struct Pki {
    pub dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::new()).expect("params");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert, Issuer::new(params, key))
}

fn leaf(names: &[&str], issuer: &Issuer<'_, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let cert = CertificateParams::new(names)
        .expect("params")
        .signed_by(&key, issuer)
        .expect("certificate");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn new() -> Pki {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tcpmon-pki-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create PKI directory");
        let (ca_cert, ca) = new_ca("tcpmon test CA");
        let (_, other_ca) = new_ca("another CA");
        let pki = Pki { dir, ca };
        pki.write("ca.pem", &ca_cert.pem());
        for (name, names, issuer) in [
            ("server", &["127.0.0.1", "localhost"][..], &pki.ca),
            ("client", &["prometheus"][..], &pki.ca),
            ("stranger", &["prometheus"][..], &other_ca),
        ] {
            let (cert, key) = leaf(names, issuer);
            pki.write(&format!("{name}.pem"), &cert);
            pki.write(&format!("{name}-key.pem"), &key);
        }
        pki
    }

    /// Replaces server.pem and server-key.pem with a new pair from the same CA, each by a
    /// rename as cert-manager and Kubernetes secret volumes do; with `mismatched`, the new
    /// certificate comes with a key that is not its own.
    pub fn renew_server(&self, mismatched: bool) {
        let (cert, mut key) = leaf(&["127.0.0.1", "localhost"], &self.ca);
        if mismatched {
            key = KeyPair::generate().expect("key").serialize_pem();
        }
        for (name, text) in [("server-key.pem", key), ("server.pem", cert)] {
            let fresh = self.write(&format!("{name}.new"), &text);
            std::fs::rename(fresh, self.dir.join(name)).expect("rename into place");
        }
    }

    /// The DER of the first certificate in a PEM file of the directory.
    pub fn der(&self, name: &str) -> Vec<u8> {
        CertificateDer::from_pem_file(self.dir.join(name))
            .expect("PEM certificate")
            .to_vec()
    }

    /// Writes a file into the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("write PKI file");
        path.to_string_lossy().into_owned()
    }

    /// A client configuration that trusts the CA and shows `identity`.
    pub fn client(&self, identity: Identity) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        let ca = CertificateDer::from_pem_file(self.dir.join("ca.pem")).expect("CA");
        roots.add(ca).expect("add CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let name = match identity {
            Identity::Anonymous => return Arc::new(builder.with_no_client_auth()),
            Identity::Trusted => "client",
            Identity::Stranger => "stranger",
        };
        let chain = vec![
            CertificateDer::from_pem_file(self.dir.join(format!("{name}.pem")))
                .expect("client certificate"),
        ];
        let key = PrivateKeyDer::from_pem_file(self.dir.join(format!("{name}-key.pem")))
            .expect("client key");
        Arc::new(
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth"),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP answer: status code, head (status line and headers) and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// `GET path` over TLS, with basic auth credentials if given. An error is a failed handshake
/// or a connection closed without an answer.
pub fn https_get(
    addr: SocketAddr,
    path: &str,
    config: Arc<ClientConfig>,
    basic: Option<(&str, &str)>,
) -> io::Result<Reply> {
    let name = ServerName::IpAddress(addr.ip().into());
    let connection = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let socket = TcpStream::connect_timeout(&addr, timeout())?;
    socket.set_read_timeout(Some(timeout()))?;
    let mut tls = StreamOwned::new(connection, socket);
    let authorization = basic
        .map(|(user, password)| {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Authorization: Basic {token}\r\n")
        })
        .unwrap_or_default();
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    if let Err(e) = tls.read_to_end(&mut response) {
        // A server that closes without close_notify after a whole answer is fine here.
        if e.kind() != io::ErrorKind::UnexpectedEof || response.is_empty() {
            return Err(e);
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("not an HTTP answer: {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status in {head:?}")))?;
    Ok(Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// The certificate (DER) a TLS server presents in a handshake.
pub fn presented_certificate(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<Vec<u8>> {
    let name = ServerName::IpAddress(addr.ip().into());
    let mut connection = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut socket = TcpStream::connect_timeout(&addr, timeout())?;
    socket.set_read_timeout(Some(timeout()))?;
    while connection.is_handshaking() {
        connection.complete_io(&mut socket)?;
    }
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.to_vec())
        .ok_or_else(|| io::Error::other("no server certificate"))
}
