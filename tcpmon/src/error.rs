//! Errors a user can cause, each rendered as one line that says what is wrong and what to do.
//!
//! Causes are part of the message rather than a `source()`, so printing with `{:#}` never repeats
//! them.
use std::{io, net::SocketAddr};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "not allowed to load eBPF programs and enter network namespaces (missing {missing}): run tcpmon as root, or give it CAP_SYS_ADMIN (it covers loading eBPF programs) and CAP_SYS_PTRACE"
    )]
    NotPrivileged { missing: String },

    #[error("tracepoint sock:inet_sock_set_state is not in this kernel's BTF ({path} has no {typedef}): tcpmon needs Linux 5.8 or newer")]
    TracepointMissing {
        path: &'static str,
        typedef: &'static str,
    },

    #[error("kernel BTF is not available ({path}: {cause}): tcpmon needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    BtfMissing {
        path: &'static str,
        cause: io::Error,
    },

    #[error(
        "kernel BTF at {path} is unusable ({reason}): please report it with your kernel version"
    )]
    BtfLayout { path: &'static str, reason: String },

    #[error("cannot listen on {addr}: address already in use; stop the other process or choose another address with --listen")]
    ListenAddrInUse { addr: SocketAddr },

    #[error("cannot listen on {addr} ({cause}): choose another address with --listen")]
    Listen { addr: SocketAddr, cause: io::Error },

    #[error("cannot open network namespace {path} ({cause}): pass a path such as /run/netns/NAME or /proc/PID/ns/net")]
    Netns { path: String, cause: io::Error },

    #[error("this kernel lacks {what} (Linux {since} or newer): tcpmon cannot run on it; see docs/KERNELS.md")]
    KernelFeature {
        what: &'static str,
        since: &'static str,
    },

    #[error("the kernel refused the eBPF program ({0}): check that this kernel supports BTF-enabled tracepoint programs (tp_btf)")]
    Load(String),

    #[error("cannot {op} the eBPF map {map} ({cause}): restart the agent, and report it with your kernel version if it happens again")]
    Map {
        map: &'static str,
        op: &'static str,
        cause: String,
    },

    #[error("cannot read the eBPF program's run statistics ({cause}): restart the agent, and report it with your kernel version if it happens again")]
    ProgramStats { cause: String },

    #[error(
        "cannot serve the tail socket {path} ({cause}): choose another path with --tail-socket"
    )]
    TailSocket { path: String, cause: io::Error },

    #[error("no tcpmon agent is listening on {path}: start the agent, or run `tcpmon tail --standalone`")]
    AgentMissing { path: String },

    #[error("permission denied on {path}: the tail socket is root's; run tcpmon tail as root")]
    TailPermission { path: String },

    #[error("{0}: lower --max-ports or give fewer --ports")]
    Ports(String),

    #[error(
        "no user named {name} on this host: pass an existing user to --user (for example nobody)"
    )]
    UnknownUser { name: String },

    #[error("cannot keep counters in {path} ({reason}): pass --pin a directory on a BPF filesystem, for example /sys/fs/bpf/tcpmon")]
    PinDir { path: String, reason: String },

    #[error("the map pinned at {path} does not fit this agent ({reason}): start with the settings it was made with, or remove its directory to count from zero")]
    PinMismatch { path: String, reason: String },

    #[error("cannot read web config {path} ({cause}): pass a readable file to --web-config")]
    WebConfigRead { path: String, cause: io::Error },

    #[error("web config {path}: {reason}; fix the file (format: https://prometheus.io/docs/prometheus/latest/configuration/https/)")]
    WebConfig { path: String, reason: String },

    #[error("{what}: {cause}")]
    Io { what: String, cause: io::Error },
}
