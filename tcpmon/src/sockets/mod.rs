//! `tcpmon sockets`: the open TCP sockets, with how long each has been in its state, its
//! endpoints and its owner, oldest first. The agent reads them from the kernel on request (a
//! BPF socket iterator per network namespace, joined with the per-socket map for the time
//! each socket entered its state) and finds each socket's process in /proc; the command asks
//! over the tail socket, then filters, sorts and prints.
pub mod lister;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What is asked for: every socket (the client filters).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Query {}

/// One socket, one JSON line of the agent's answer (and of `tcpmon sockets -o json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SocketLine {
    /// Inode of the socket's network namespace.
    pub netns: u64,
    /// The socket's kernel address, as tail events name it.
    pub connection: String,
    pub family: String,
    pub state: String,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    /// Seconds since the socket entered `state`; null where tcpmon did not see it enter it
    /// (the socket is older than the agent).
    pub age_seconds: Option<f64>,
    /// The socket's inode; null for a socket no process holds any more (an orphan).
    pub inode: Option<u64>,
    /// A process holding the socket (the lowest pid if several share it).
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// The workload that owns the socket (as in tail events); null where the kernel gives no
    /// cgroup.
    #[serde(default)]
    pub workload: Option<String>,
}
