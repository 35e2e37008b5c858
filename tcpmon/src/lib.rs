//! tcpmon: a TCP connection monitor built on the kernel's `inet_sock_set_state` tracepoint.
//!
//! The eBPF program (crate `tcpmon-ebpf`) aggregates in the kernel; this library loads it
//! (`probe`), reads its maps at scrape time (`metrics`) and serves them to Prometheus (`web`),
//! and streams transitions to `tcpmon tail` (`tail`). `main.rs` only calls [`run`];
//! docs/ARCHITECTURE.md draws the whole data flow.
pub mod agent;
pub mod cli;
pub mod client;
pub mod clock;
pub mod error;
pub mod metrics;
pub mod netns;
pub mod privileges;
pub mod probe;
pub mod socket_fields;
pub mod sockets;
pub mod startup;
pub mod state;
pub mod tail;
pub mod unix_socket;
pub mod web;
pub mod workload;

/// Runs the command the user asked for.
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Agent(options) => agent::run(options),
        cli::Command::Tail(options) => client::run(options),
        cli::Command::Sockets(options) => client::sockets::run(options),
    }
}
