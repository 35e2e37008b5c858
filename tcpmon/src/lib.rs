//! tcpmon: a TCP connection monitor built on the `sock:inet_sock_set_state` tracepoint.
//!
//! The eBPF program (crate `tcpmon-ebpf`) aggregates in the kernel; this library loads it,
//! reads its maps at scrape time and serves them to Prometheus. `main.rs` only calls [`run`].
pub mod agent;
pub mod basic_auth;
pub mod btf;
pub mod capabilities;
pub mod cli;
pub mod collector;
pub mod error;
pub mod families;
pub mod histogram;
pub mod http;
pub mod kernel_features;
pub mod map_batch;
pub mod netns;
pub mod pin;
pub mod ports;
pub mod privileges;
pub mod probe;
pub mod prog_stats;
pub mod routes;
pub mod sock_diag;
pub mod state;
pub mod tail;
pub mod tls;
pub mod tls_config;
pub mod web_config;

/// Runs the command the user asked for.
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Agent(options) => agent::run(options),
        cli::Command::Tail(options) => tail::client::run(options),
    }
}
