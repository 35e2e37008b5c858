//! Which events a tail client wants: by port, address (CIDR), state, family and pid. Within one
//! criterion any value matches; a client gets an event only if every criterion it set matches.
use std::{net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize};

use tcpmon_common::{TailEvent, TroubleEvent};

use super::event::{owner_pid, Event};
use crate::socket_fields::{address, family_label};
use crate::state::TcpState;

/// A tail client's request, sent to the agent as the first line of the connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Local or remote port.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Local or remote address within any of these networks.
    #[serde(default)]
    pub addrs: Vec<Cidr>,
    /// Old or new state.
    #[serde(default)]
    pub states: Vec<TcpState>,
    /// "inet" or "inet6".
    #[serde(default)]
    pub families: Vec<Family>,
    /// Owning process (only known for sockets whose connect, listen, close or shutdown was seen).
    #[serde(default)]
    pub pids: Vec<u32>,
    /// The workload that owns the socket (matched by the agent once it has named the socket's
    /// cgroup, never in the kernel).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<String>,
}

/// What a filter looks at in an event.
struct Keys {
    local: IpAddr,
    local_port: u16,
    remote: IpAddr,
    remote_port: u16,
    old_state: TcpState,
    new_state: TcpState,
    family: &'static str,
    pid: Option<u32>,
}

impl Filter {
    /// Whether an event of `workload` passes the workload filter.
    pub fn matches_workload(&self, workload: Option<&str>) -> bool {
        self.workloads.is_empty() || workload.is_some_and(|w| self.workloads.iter().any(|x| x == w))
    }

    pub fn matches(&self, e: &Event) -> bool {
        self.matches_keys(&Keys {
            local: e.local,
            local_port: e.local_port,
            remote: e.remote,
            remote_port: e.remote_port,
            old_state: e.old_state,
            new_state: e.new_state,
            family: if e.family == "inet" { "inet" } else { "inet6" },
            pid: e.pid,
        })
    }

    /// [`Filter::matches`] for the kernel's record, without decoding it into an [`Event`];
    /// false for a record whose states are not TCP states.
    pub fn matches_record(&self, e: &TailEvent) -> bool {
        let (Some(old_state), Some(new_state)) = (
            TcpState::from_raw(e.oldstate),
            TcpState::from_raw(e.newstate),
        ) else {
            return false;
        };
        self.matches_keys(&Keys {
            local: address(e.family, &e.saddr),
            local_port: e.sport,
            remote: address(e.family, &e.daddr),
            remote_port: e.dport,
            old_state,
            new_state,
            family: family_label(e.family),
            pid: owner_pid(e),
        })
    }

    /// [`Filter::matches`] for a trouble event (`tail --recent`): its one state is both old and
    /// new; one with no socket has only ports, and no process is known for any.
    pub fn matches_trouble(&self, e: &TroubleEvent) -> bool {
        if e.family == 0 {
            let only_ports = self.addrs.is_empty()
                && self.families.is_empty()
                && self.states.is_empty()
                && self.pids.is_empty();
            return only_ports
                && (self.ports.is_empty()
                    || self.ports.contains(&e.sport)
                    || self.ports.contains(&e.dport));
        }
        let Some(state) = TcpState::from_raw(i32::from(e.state)) else {
            return false;
        };
        self.matches_keys(&Keys {
            local: address(e.family, &e.saddr),
            local_port: e.sport,
            remote: address(e.family, &e.daddr),
            remote_port: e.dport,
            old_state: state,
            new_state: state,
            family: family_label(e.family),
            pid: None,
        })
    }

    /// Whether every event matches (no criterion set).
    pub fn matches_everything(&self) -> bool {
        *self == Filter::default()
    }

    fn matches_keys(&self, e: &Keys) -> bool {
        let any = |empty: bool, hit: bool| empty || hit;
        any(
            self.ports.is_empty(),
            self.ports.contains(&e.local_port) || self.ports.contains(&e.remote_port),
        ) && any(
            self.addrs.is_empty(),
            self.addrs
                .iter()
                .any(|n| n.contains(e.local) || n.contains(e.remote)),
        ) && any(
            self.states.is_empty(),
            self.states.contains(&e.old_state) || self.states.contains(&e.new_state),
        ) && any(
            self.families.is_empty(),
            self.families.iter().any(|f| f.label() == e.family),
        ) && any(
            self.pids.is_empty(),
            e.pid.is_some_and(|p| self.pids.contains(&p)),
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Inet,
    Inet6,
}

impl Family {
    pub fn label(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
        }
    }
}

impl FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Family, String> {
        match s {
            "inet" | "ipv4" | "4" => Ok(Family::Inet),
            "inet6" | "ipv6" | "6" => Ok(Family::Inet6),
            _ => Err(format!("unknown family '{s}': use inet or inet6")),
        }
    }
}

/// Parses a state name as `ss` and tcpmon print it (`ESTABLISHED`, `close_wait`, ...).
pub fn parse_state(s: &str) -> Result<TcpState, String> {
    TcpState::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = TcpState::ALL.iter().map(|s| s.name()).collect();
        format!("unknown state '{s}': use one of {}", names.join(", "))
    })
}

/// A network: an address and a prefix length. A bare address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("invalid address or CIDR '{s}': use for example 10.0.0.0/8 or ::1");
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
