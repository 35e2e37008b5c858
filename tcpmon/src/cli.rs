//! Command-line interface. Doc comments are the help text; `tests/cli.rs` snapshots it.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{error::ErrorKind, Args, Parser, Subcommand, ValueEnum};

use crate::{
    state::TcpState,
    tail::filter::{parse_state, Cidr, Family},
    unix_socket::DEFAULT_SOCKET,
};

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
    /// Watch TCP state changes as they happen, from the running agent (or --standalone).
    Tail(TailOptions),
    /// List open TCP sockets with how long each has been in its state, its endpoints and its
    /// process, oldest first, from the running agent.
    Sockets(SocketsOptions),
}

#[derive(Debug, Args)]
pub struct SocketsOptions {
    /// Only sockets in this state (CLOSE_WAIT, FIN_WAIT2, ...; repeat or comma-separate).
    #[arg(long, value_name = "STATE", value_delimiter = ',', value_parser = parse_state)]
    pub state: Vec<TcpState>,

    /// Only sockets in their state for at least this long (for example 500ms, 30s, 5m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub older_than: Option<Duration>,

    /// Only sockets with this local or remote port (repeat or comma-separate).
    #[arg(long, value_name = "PORT", value_delimiter = ',')]
    pub port: Vec<u16>,

    /// Only sockets of this workload (as `-o json` names it; repeat or comma-separate).
    #[arg(long, value_name = "WORKLOAD", value_delimiter = ',')]
    pub workload: Vec<String>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = SocketsFormat::Table)]
    pub output: SocketsFormat,

    /// The agent's tail socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SocketsFormat {
    /// Aligned columns, oldest first.
    Table,
    /// One JSON object per line.
    Json,
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

    /// Capacity of the kernel's per-socket map (about 100 bytes each). Sockets beyond it evict
    /// the least recently used entries (counted in tcpmon_tracked_sockets_evicted_total): their
    /// dwell times go unmeasured, every counter stays exact.
    #[arg(long, value_name = "N", default_value_t = tcpmon_common::maps::MAX_TRACKED_SOCKETS,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_tracked_sockets: u32,

    /// How many of the latest failed handshakes, resets, handshake retransmissions and listen drops the agent
    /// keeps for `tcpmon tail --recent` (64 bytes each; 0 keeps none).
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub recent_events: u32,

    /// Workloads (systemd units, pods, containers) with a `workload` label value of their own
    /// on the handshake and teardown counters, the busiest first; the others are "other".
    #[arg(long, value_name = "N", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub max_workloads: u32,

    /// The root of the cgroup v2 hierarchy, where the agent finds the cgroups that own sockets
    /// (default: where /proc/self/mountinfo says cgroup2 is mounted: /sys/fs/cgroup, or
    /// /sys/fs/cgroup/unified on hybrid hosts). In a container, the host's, mounted read-only.
    #[arg(long, value_name = "DIR")]
    pub cgroup_root: Option<std::path::PathBuf>,

    /// The kubelet's pod log directory (one `NAMESPACE_POD_UID` directory per pod), where the
    /// agent finds the names of the pods that own sockets; absent on hosts without Kubernetes.
    #[arg(long, value_name = "DIR", default_value = crate::workload::cgroups::KUBELET_PODS)]
    pub kubelet_pods: std::path::PathBuf,

    /// Unix socket (mode 0600) where `tcpmon tail` connects.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub tail_socket: PathBuf,

    /// Keep the counting maps pinned in this directory on a BPF filesystem (for example
    /// /sys/fs/bpf/tcpmon), so a restart or upgrade continues every counter. Remove the
    /// directory to count from zero.
    #[arg(long, value_name = "DIR")]
    pub pin: Option<PathBuf>,

    /// After loading and attaching, run as this user (for example nobody), keeping only
    /// CAP_SYS_ADMIN and CAP_SYS_PTRACE for entering network namespaces. Without it the agent
    /// stays uid 0 with those two capabilities.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// TLS, client certificates, basic auth and response headers for the HTTP endpoint, from a
    /// YAML file in the Prometheus exporter-toolkit web config format
    /// (https://prometheus.io/docs/prometheus/latest/configuration/https/), read at start.
    /// Without it: plain HTTP, no authentication.
    #[arg(long, value_name = "FILE")]
    pub web_config: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One line per transition, like bcc's tcpstates.
    Table,
    /// One JSON object per line (NDJSON); field names are stable.
    Json,
    /// One line per connection when it closes: its handshake and teardown steps with the time
    /// between them.
    Timeline,
}

#[derive(Debug, Args)]
pub struct TailOptions {
    /// Only transitions with this local or remote port (repeat or comma-separate).
    #[arg(long, value_name = "PORT", value_delimiter = ',')]
    pub port: Vec<u16>,

    /// Only transitions with a local or remote address in this network (for example
    /// 10.0.0.0/8 or ::1; repeat or comma-separate).
    #[arg(long, value_name = "CIDR", value_delimiter = ',', value_parser = clap::value_parser!(Cidr))]
    pub addr: Vec<Cidr>,

    /// Only transitions from or to this state (ESTABLISHED, CLOSE_WAIT, ...; repeat or
    /// comma-separate).
    #[arg(long, value_name = "STATE", value_delimiter = ',', value_parser = parse_state)]
    pub state: Vec<TcpState>,

    /// Only this address family: inet or inet6.
    #[arg(long, value_name = "FAMILY", value_delimiter = ',', value_parser = clap::value_parser!(Family))]
    pub family: Vec<Family>,

    /// Only sockets of this process (known once it connects, listens, closes or shuts down a
    /// socket while the tail runs).
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pub pid: Vec<u32>,

    /// Only sockets of this workload (nginx.service, NAMESPACE/POD, container/ID12, host, as
    /// the events' `workload` names it; repeat or comma-separate).
    #[arg(long, value_name = "WORKLOAD", value_delimiter = ',')]
    pub workload: Vec<String>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Exit after this many events (table, json) or connections (timeline).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Print the failed handshakes, resets and handshake retransmissions the agent kept (the
    /// last --recent-events of them, seen whether or not anyone was tailing) instead of live
    /// transitions; with the usual filters but --pid.
    #[arg(long, conflicts_with = "standalone")]
    pub recent: bool,

    /// With --recent: only those at most this old (for example 10m, 1h).
    #[arg(long, value_name = "DURATION", requires = "recent", value_parser = parse_duration)]
    pub since: Option<Duration>,

    /// With --recent: then print new ones as they happen, until interrupted.
    #[arg(long, requires = "recent")]
    pub follow: bool,

    /// Load a probe of its own instead of connecting to the agent (needs root).
    #[arg(long)]
    pub standalone: bool,

    /// With --standalone: watch only this network namespace.
    #[arg(long, value_name = "PATH", requires = "standalone")]
    pub netns: Option<PathBuf>,

    /// The agent's tail socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
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
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or_default();
    let mut message = first.strip_prefix("error: ").unwrap_or(first).to_string();
    // "the following required arguments were not provided:" lists them on indented lines.
    if message.ends_with(':') {
        let listed: Vec<&str> = lines
            .take_while(|l| l.starts_with(' '))
            .map(str::trim)
            .collect();
        message = format!("{message} {}", listed.join(", "));
    }
    format!("tcpmon: error: {message} (see `tcpmon --help`)\n")
}

/// A duration given as a number and a unit: ms, s, m or h (`500ms`, `30s`, `1.5m`, `2h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("'{text}' is not a duration such as 500ms, 30s, 5m or 1h");
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(number * scale).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_error(args: &[&str]) -> String {
        let mut argv = vec!["tcpmon", "tail"];
        argv.extend(args);
        one_line(&Cli::try_parse_from(argv).expect_err("rejected").to_string())
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["30", "s", "5x", "-1s", ""] {
            assert_eq!(
                parse_duration(bad),
                Err(format!(
                    "'{bad}' is not a duration such as 500ms, 30s, 5m or 1h"
                ))
            );
        }
    }

    #[test]
    fn tail_filters_fail_in_one_line() {
        assert_eq!(
            tail_error(&["--state", "ESTAB"]),
            "tcpmon: error: invalid value 'ESTAB' for '--state <STATE>': unknown state 'ESTAB': use one of ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, CLOSING, NEW_SYN_RECV (see `tcpmon --help`)\n"
        );
        assert_eq!(
            tail_error(&["--addr", "10.0.0/8"]),
            "tcpmon: error: invalid value '10.0.0/8' for '--addr <CIDR>': invalid address or CIDR '10.0.0/8': use for example 10.0.0.0/8 or ::1 (see `tcpmon --help`)\n"
        );
    }

    #[test]
    fn tail_filters_parse() {
        let cli = Cli::try_parse_from([
            "tcpmon",
            "tail",
            "--port",
            "80,443",
            "--addr",
            "10.0.0.0/8",
            "--state",
            "close_wait",
            "--family",
            "inet6",
            "--pid",
            "7",
            "-o",
            "timeline",
        ])
        .expect("parses");
        let Command::Tail(t) = cli.command else {
            panic!("tail");
        };
        assert_eq!(t.port, vec![80, 443]);
        assert_eq!(t.state, vec![TcpState::CloseWait]);
        assert_eq!(t.family, vec![Family::Inet6]);
        assert_eq!(t.output, OutputFormat::Timeline);
        assert_eq!(t.socket, PathBuf::from(DEFAULT_SOCKET));
    }

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
        let Command::Agent(opts) = cli.command else {
            panic!("agent");
        };
        assert_eq!(opts.listen, "0.0.0.0:9977".parse().expect("valid"));
        assert_eq!(opts.netns, None);
        assert_eq!(opts.ports, Vec::<u16>::new());
        assert_eq!(opts.max_ports, 32);
    }

    #[test]
    fn ports_are_a_comma_separated_list() {
        let cli = Cli::try_parse_from(["tcpmon", "agent", "--ports", "80,443", "--ports", "22"])
            .expect("parses");
        let Command::Agent(opts) = cli.command else {
            panic!("agent");
        };
        assert_eq!(opts.ports, vec![80, 443, 22]);
    }
}
