//! `tcpmon agent --web-config FILE`: TLS, basic auth and extra response headers for the HTTP
//! endpoint, in the web configuration format of the Prometheus exporter-toolkit
//! (<https://prometheus.io/docs/prometheus/latest/configuration/https/>), so a file written for
//! node_exporter works here too.
//!
//! The file is read once, at start, before the eBPF program is loaded: a mistake in it stops
//! the agent with one line naming the key and the file. Keys of the format that tcpmon does not
//! implement are refused rather than ignored, so nobody believes a setting is in force when it
//! is not. The TLS certificate and key files are re-read when they change (see `tls.rs`); users
//! and headers need a restart.
//!
//! YAML: `serde_yaml` is deprecated and unmaintained, and `serde_yml` carries an unsoundness
//! advisory (RUSTSEC-2025-0068); `serde_norway` is a maintained fork of `serde_yaml` with the
//! same API and a pure-Rust parser.
use std::{collections::BTreeMap, path::Path, str::FromStr, sync::Arc};

use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_norway::Value;

use super::{
    tls,
    tls_config::{TlsFile, TlsSettings},
};
use crate::error::Error;

/// What the HTTP server needs from a web config file.
#[derive(Debug, Default)]
pub struct WebConfig {
    /// Serve HTTPS with this configuration; plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// User name to bcrypt hash; empty means no authentication.
    pub users: BTreeMap<String, String>,
    /// Added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl WebConfig {
    /// Reads and checks `path`, including the certificate, key and CA files it names.
    pub fn load(path: &Path) -> Result<WebConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|cause| Error::WebConfigRead {
            path: path.display().to_string(),
            cause,
        })?;
        let invalid = |reason: String| Error::WebConfig {
            path: path.display().to_string(),
            reason,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let settings = Settings::parse(&text, dir).map_err(invalid)?;
        let tls = match &settings.tls {
            Some(tls) => Some(Arc::new(tls::server_config(tls).map_err(invalid)?)),
            None => None,
        };
        Ok(WebConfig {
            tls,
            users: settings.users,
            headers: settings.headers,
        })
    }
}

/// The file's content, checked, with paths made absolute; no file it names has been read yet.
#[derive(Debug)]
pub struct Settings {
    pub tls: Option<TlsSettings>,
    pub users: BTreeMap<String, String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The file as written. `Value` fields are keys of the format that tcpmon refuses if set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    /// Accepted for compatibility and ignored: tcpmon serves HTTP/1.1 only.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// The headers exporter-toolkit allows, with their allowed values (any when empty).
const HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

impl Settings {
    /// Parses a web config; relative paths are taken from `dir`, the file's directory.
    pub fn parse(text: &str, dir: &Path) -> Result<Settings, String> {
        // An empty file is a valid configuration that turns nothing on, as in exporter-toolkit.
        let file: File = match serde_norway::from_str::<Option<File>>(text) {
            Ok(file) => file.unwrap_or_default(),
            Err(e) => return Err(e.to_string()),
        };
        if is_set(&file.rate_limit) {
            return Err(unsupported("rate_limit"));
        }
        let tls = file
            .tls_server_config
            .map(|t| TlsSettings::parse(t, dir))
            .transpose()?;
        let users = file.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            if user.contains(':') {
                return Err(format!(
                    "basic_auth_users: user name {user:?} contains ':', which basic auth cannot carry"
                ));
            }
            if bcrypt::HashParts::from_str(hash).is_err() {
                return Err(format!("basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"));
            }
        }
        let headers = file
            .http_server_config
            .and_then(|h| h.headers)
            .unwrap_or_default();
        Ok(Settings {
            tls,
            users,
            headers: parse_headers(headers)?,
        })
    }
}

fn parse_headers(
    headers: BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut parsed = Vec::new();
    for (name, value) in headers {
        let Some((known, allowed)) = HEADERS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = HEADERS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "http_server_config.headers: header {name:?} cannot be set: use one of {}",
                names.join(", ")
            ));
        };
        if value.is_empty() {
            continue; // "unset if blank"
        }
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(format!(
                "http_server_config.headers.{known}: {value:?} is not allowed: use {}",
                allowed.join(" or ")
            ));
        }
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("http_server_config.headers.{known}: invalid header value"))?;
        let name = HeaderName::from_bytes(known.as_bytes())
            .map_err(|_| format!("http_server_config.headers: invalid header name {known}"))?;
        parsed.push((name, value));
    }
    Ok(parsed)
}

/// A key tcpmon refuses is set unless it is null or an empty list.
pub(crate) fn is_set(value: &Option<Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Sequence(items)) => !items.is_empty(),
        Some(_) => true,
    }
}

pub(crate) fn unsupported(key: &str) -> String {
    format!("{key} is not supported by tcpmon: remove it")
}

#[cfg(test)]
#[path = "web_config_tests.rs"]
mod tests;
