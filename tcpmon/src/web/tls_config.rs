//! The `tls_server_config` section of a web config: what it says, checked, before any file it
//! names is read (`tls.rs` reads them and builds the rustls configuration).
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::Value;

use super::web_config::{is_set, unsupported};

#[derive(Debug, PartialEq)]
pub struct TlsSettings {
    pub cert: Pem,
    pub key: Pem,
    pub client_auth: ClientAuth,
    pub client_ca: Option<Pem>,
    /// TLS 1.2 and/or 1.3, from min_version and max_version.
    pub versions: Vec<TlsVersion>,
    /// prefer_server_cipher_suites (default true): the server's order of cipher suites wins.
    pub prefer_server_order: bool,
}

/// PEM text given inline (`cert`, `key`, `client_ca`) or a file (`cert_file`, ...).
#[derive(Clone, Debug, PartialEq)]
pub enum Pem {
    Inline(String),
    File(PathBuf),
}

/// client_auth_type. The Go values that accept unverified certificates (RequestClientCert,
/// RequireAnyClientCert) are refused: they authenticate nobody.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClientAuth {
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// The section as written. `Value` fields are keys tcpmon refuses if set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    cipher_suites: Option<Value>,
    curve_preferences: Option<Value>,
    client_allowed_sans: Option<Value>,
}

impl TlsSettings {
    pub fn parse(t: TlsFile, dir: &Path) -> Result<TlsSettings, String> {
        for (key, value) in [
            ("cipher_suites", &t.cipher_suites),
            ("curve_preferences", &t.curve_preferences),
            ("client_allowed_sans", &t.client_allowed_sans),
        ] {
            if is_set(value) {
                return Err(unsupported(&format!("tls_server_config.{key}")));
            }
        }
        let pem = |inline: Option<String>, file: Option<PathBuf>, name: &str| match (inline, file) {
            (Some(_), Some(_)) => Err(format!(
                "tls_server_config: give {name} or {name}_file, not both"
            )),
            (Some(text), None) => Ok(Some(Pem::Inline(text))),
            (None, Some(path)) => Ok(Some(Pem::File(dir.join(path)))),
            (None, None) => Ok(None),
        };
        let cert = pem(t.cert, t.cert_file, "cert")?
            .ok_or("tls_server_config: missing cert_file (or cert)")?;
        let key =
            pem(t.key, t.key_file, "key")?.ok_or("tls_server_config: missing key_file (or key)")?;
        let client_ca = pem(t.client_ca, t.client_ca_file, "client_ca")?;
        let client_auth = match t.client_auth_type.as_deref() {
            None | Some("") | Some("NoClientCert") => ClientAuth::NoClientCert,
            Some("VerifyClientCertIfGiven") => ClientAuth::VerifyClientCertIfGiven,
            Some("RequireAndVerifyClientCert") => ClientAuth::RequireAndVerifyClientCert,
            Some(other @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert")) => {
                return Err(format!("tls_server_config.client_auth_type {other} accepts certificates nobody verified and is not supported: use RequireAndVerifyClientCert with client_ca_file"));
            }
            Some(other) => {
                return Err(format!("tls_server_config.client_auth_type: unknown value {other:?}: use NoClientCert, RequireAndVerifyClientCert or VerifyClientCertIfGiven"));
            }
        };
        match (client_auth, &client_ca) {
            (ClientAuth::NoClientCert, Some(_)) => {
                return Err("tls_server_config: client_ca_file is set but client_auth_type is NoClientCert: set client_auth_type: RequireAndVerifyClientCert".into());
            }
            (ClientAuth::NoClientCert, None) | (_, Some(_)) => {}
            (_, None) => {
                return Err(
                    "tls_server_config: client_auth_type verifies client certificates but no client_ca_file is given".into(),
                );
            }
        }
        let min = version("min_version", t.min_version)?.unwrap_or(TlsVersion::Tls12);
        let max = version("max_version", t.max_version)?.unwrap_or(TlsVersion::Tls13);
        if min > max {
            return Err("tls_server_config: min_version is above max_version".into());
        }
        let versions = [TlsVersion::Tls12, TlsVersion::Tls13]
            .into_iter()
            .filter(|v| (min..=max).contains(v))
            .collect();
        Ok(TlsSettings {
            cert,
            key,
            client_auth,
            client_ca,
            versions,
            prefer_server_order: t.prefer_server_cipher_suites.unwrap_or(true),
        })
    }
}

fn version(key: &str, value: Option<String>) -> Result<Option<TlsVersion>, String> {
    match value.as_deref() {
        None => Ok(None),
        Some("TLS12") => Ok(Some(TlsVersion::Tls12)),
        Some("TLS13") => Ok(Some(TlsVersion::Tls13)),
        Some(old @ ("TLS10" | "TLS11")) => Err(format!(
            "tls_server_config.{key} {old} is not supported (tcpmon speaks TLS 1.2 and 1.3): use TLS12 or TLS13"
        )),
        Some(other) => Err(format!(
            "tls_server_config.{key}: unknown TLS version {other:?}: use TLS12 or TLS13"
        )),
    }
}
