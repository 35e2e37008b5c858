//! Command-line interface. Doc comments are the help text; `tests/cli.rs` snapshots it.
use std::{net::SocketAddr, path::PathBuf};

use clap::{error::ErrorKind, Args, Parser, Subcommand};

/// TCP handshake and teardown metrics from the kernel, for Prometheus.
#[derive(Debug, Parser)]
#[command(name = "tcpmon", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the eBPF probe on sock:inet_sock_set_state and serve /metrics and /healthz.
    Agent(AgentOptions),
}

#[derive(Debug, Args)]
pub struct AgentOptions {
    /// Address and port to serve /metrics and /healthz on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:9977")]
    pub listen: SocketAddr,

    /// Count only the sockets of this network namespace (for example /run/netns/NAME or
    /// /proc/PID/ns/net). By default every namespace on the host is counted.
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,

    /// Service ports that get their own `port` label value, comma-separated (for example
    /// 80,443,5432). Listening ports are added automatically, up to --max-ports.
    #[arg(long, value_name = "PORT,...", value_delimiter = ',')]
    pub ports: Vec<u16>,

    /// How many listening ports, found at start and at each scrape, get their own `port` label
    /// value; connections on other ports are counted as port="other".
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub max_ports: usize,
}

/// Parses the command line. Usage errors come back as one line (exit status 2); help and
/// version requests are printed by clap, which then exits.
pub fn parse() -> Result<Cli, String> {
    Cli::try_parse().map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => one_line(&e.to_string()),
    })
}

/// The first line of a clap error, with a pointer to --help instead of clap's usage block.
fn one_line(rendered: &str) -> String {
    let first = rendered.lines().next().unwrap_or_default();
    let message = first.strip_prefix("error: ").unwrap_or(first);
    format!("tcpmon: error: {message} (see `tcpmon --help`)\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_are_one_line() {
        let err = Cli::try_parse_from(["tcpmon", "agent", "--listen", "nonsense"])
            .expect_err("bad address");
        assert_eq!(
            one_line(&err.to_string()),
            "tcpmon: error: invalid value 'nonsense' for '--listen <ADDR:PORT>': invalid socket address syntax (see `tcpmon --help`)\n"
        );
    }

    #[test]
    fn defaults_are_sensible() {
        let cli = Cli::try_parse_from(["tcpmon", "agent"]).expect("parses");
        let Command::Agent(opts) = cli.command;
        assert_eq!(opts.listen, "0.0.0.0:9977".parse().expect("valid"));
        assert_eq!(opts.netns, None);
        assert_eq!(opts.ports, Vec::<u16>::new());
        assert_eq!(opts.max_ports, 32);
    }

    #[test]
    fn ports_are_a_comma_separated_list() {
        let cli = Cli::try_parse_from(["tcpmon", "agent", "--ports", "80,443", "--ports", "22"])
            .expect("parses");
        let Command::Agent(opts) = cli.command;
        assert_eq!(opts.ports, vec![80, 443, 22]);
    }
}
