//! The HTTP endpoint: the server (connection limits, TLS), its routes (`/metrics`, `/healthz`)
//! and the exporter-toolkit web config (TLS settings, basic auth, response headers).
pub mod basic_auth;
pub mod routes;
pub mod server;
pub mod tls;
pub mod tls_config;
pub mod web_config;
