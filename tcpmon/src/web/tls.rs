//! The rustls server configuration built from a web config's `tls_server_config`.
//!
//! The crypto provider is `ring`: rustls' default, aws-lc-rs, needs cmake and a C toolchain at
//! build time that the machines building tcpmon do not have.
use std::{
    fs,
    os::unix::fs::MetadataExt,
    sync::{Arc, Mutex, PoisonError},
};

use rustls::{
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use super::tls_config::{ClientAuth, Pem, TlsSettings, TlsVersion};

/// Reads the certificate, key and client CA and builds the server configuration; any problem
/// comes back as one line naming the key and file.
pub fn server_config(t: &TlsSettings) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static SupportedProtocolVersion> = t
        .versions
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match (t.client_auth, &t.client_ca) {
        (ClientAuth::NoClientCert, _) => builder.with_no_client_auth(),
        (_, None) => return Err("tls_server_config: client_ca_file is missing".into()),
        (mode, Some(ca)) => {
            let roots = Arc::new(client_roots(ca)?);
            let verifier =
                WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider));
            let verifier = match mode {
                ClientAuth::VerifyClientCertIfGiven => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("{}: {e}", describe(ca, "client_ca")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let resolver = CertResolver::new(&t.cert, &t.key, provider)?;
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.ignore_client_order = t.prefer_server_order;
    // tcpmon speaks HTTP/1.1 only; saying so lets a client that offers h2 fall back cleanly.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// How an error names where a PEM came from: the key, and the file if there is one.
fn describe(pem: &Pem, key: &str) -> String {
    match pem {
        Pem::Inline(_) => format!("tls_server_config.{key}"),
        Pem::File(path) => format!("tls_server_config.{key}_file {}", path.display()),
    }
}

fn read(pem: &Pem, key: &str) -> Result<Vec<u8>, String> {
    match pem {
        Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
        Pem::File(path) => fs::read(path).map_err(|e| format!("{}: {e}", describe(pem, key))),
    }
}

fn certificates(pem: &Pem, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(&read(pem, key)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", describe(pem, key)))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", describe(pem, key)));
    }
    Ok(certs)
}

fn client_roots(ca: &Pem) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca, "client_ca")? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", describe(ca, "client_ca")))?;
    }
    Ok(roots)
}

/// Loads the certificate chain and its private key and checks that they belong together.
fn certified_key(
    cert: &Pem,
    key: &Pem,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let chain = certificates(cert, "cert")?;
    let private = PrivateKeyDer::from_pem_slice(&read(key, "key")?).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("{}: no PEM private key in it", describe(key, "key"))
        }
        e => format!("{}: {e}", describe(key, "key")),
    })?;
    CertifiedKey::from_der(chain, private, provider)
        .map(Arc::new)
        .map_err(|e| {
            let (cert, key) = (describe(cert, "cert"), describe(key, "key"));
            format!("{cert} and {key} do not make a usable pair: {e}")
        })
}

/// Hands rustls the certificate for each handshake, re-reading cert_file and key_file when
/// either changes (inode, size or modification time: cert-manager and Kubernetes secret
/// volumes replace files by renaming), so a renewed certificate is served without a restart,
/// as exporter-toolkit does. A pair that fails to load (the key renewed but not yet the
/// certificate, say) is reported once and the previous pair is served meanwhile.
#[derive(Debug)]
struct CertResolver {
    cert: Pem,
    key: Pem,
    provider: Arc<CryptoProvider>,
    current: Mutex<(Option<Stamp>, Arc<CertifiedKey>)>,
}

/// (inode, size, mtime seconds, mtime nanoseconds) of the certificate and key files.
type Stamp = [(u64, u64, i64, i64); 2];

impl CertResolver {
    fn new(cert: &Pem, key: &Pem, provider: Arc<CryptoProvider>) -> Result<Self, String> {
        let (cert, key) = (cert.clone(), key.clone());
        let stamp = stamp(&cert, &key);
        let loaded = certified_key(&cert, &key, &provider)?;
        Ok(CertResolver {
            cert,
            key,
            provider,
            current: Mutex::new((stamp, loaded)),
        })
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let stamp = stamp(&self.cert, &self.key);
        if stamp.is_some() && stamp != current.0 {
            current.0 = stamp;
            match certified_key(&self.cert, &self.key, &self.provider) {
                Ok(loaded) => {
                    current.1 = loaded;
                    eprintln!("tcpmon: TLS certificate and key reloaded");
                }
                Err(e) => eprintln!("tcpmon: warning: {e}; still serving the previous certificate"),
            }
        }
        Some(Arc::clone(&current.1))
    }
}

/// The files' identity now; `None` for inline PEM (never reloaded) or a file missing for a
/// moment during a renewal.
fn stamp(cert: &Pem, key: &Pem) -> Option<Stamp> {
    let one = |pem: &Pem| match pem {
        Pem::Inline(_) => None,
        Pem::File(path) => fs::metadata(path)
            .ok()
            .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec())),
    };
    Some([one(cert)?, one(key)?])
}
