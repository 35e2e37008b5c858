//! The agent's side of `tcpmon sockets`: the socket iterator read in each namespace in scope,
//! and each socket's owner found by its inode in `/proc/PID/fd`.
use std::{
    collections::{BTreeMap, HashSet},
    fs, io,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::Arc,
};

use tcpmon_common::SocketRecord;

use super::SocketLine;
use crate::{
    metrics::netns,
    probe::socket_iter::SocketIterator,
    state::TcpState,
    tail::event::{address, comm_name, family_label, monotonic_ns},
    workload::cgroups::Workloads,
};

/// Lists sockets on request; shared by the tail socket's clients.
#[derive(Debug)]
pub struct SocketLister {
    iterator: SocketIterator,
    /// The one namespace in scope (`--netns`), or `None` for all of them.
    netns: Option<PathBuf>,
    workloads: Arc<Workloads>,
}

impl SocketLister {
    pub fn new(
        iterator: SocketIterator,
        netns: Option<PathBuf>,
        workloads: Arc<Workloads>,
    ) -> SocketLister {
        SocketLister {
            iterator,
            netns,
            workloads,
        }
    }

    /// Every full TCP socket in scope (blocking: it walks namespaces and /proc).
    pub fn list(&self) -> io::Result<Vec<SocketLine>> {
        let paths: Vec<PathBuf> = match &self.netns {
            Some(path) => vec![path.clone()],
            None => netns::all().into_values().collect(),
        };
        // Each worker thread reads the iterator in the namespace it entered, and names it.
        let per_namespace = netns::in_each(paths, || {
            let namespace = fs::metadata("/proc/thread-self/ns/net")?;
            Ok((namespace.ino(), self.iterator.read()?))
        })?;
        let now = monotonic_ns();
        let (mut lines, cgroups): (Vec<SocketLine>, Vec<u64>) = per_namespace
            .iter()
            .flat_map(|(inode, records)| {
                records
                    .iter()
                    .filter_map(move |r| Some((line(*inode, r, now)?, r.cgroup_id)))
            })
            .unzip();
        let wanted: HashSet<u64> = lines.iter().filter_map(|l| l.inode).collect();
        let owners = owners(&wanted);
        for (line, cgroup) in lines.iter_mut().zip(cgroups) {
            line.workload = self.workloads.name(cgroup).map(|w| w.to_string());
            if let Some((pid, comm)) = line.inode.and_then(|i| owners.get(&i)) {
                line.pid = Some(*pid);
                line.comm = Some(comm.clone());
            }
        }
        Ok(lines)
    }
}

fn line(netns: u64, r: &SocketRecord, now_ns: u64) -> Option<SocketLine> {
    let state = TcpState::from_raw(i32::from(r.state))?;
    Some(SocketLine {
        netns,
        connection: format!("{:x}", r.skaddr),
        family: family_label(r.family).to_string(),
        state: state.name().to_string(),
        local: address(r.family, &r.saddr),
        local_port: r.sport,
        remote: address(r.family, &r.daddr),
        remote_port: r.dport,
        age_seconds: (r.entered_ns != 0).then(|| now_ns.saturating_sub(r.entered_ns) as f64 / 1e9),
        inode: (r.inode != 0).then_some(r.inode),
        // What the program saw (only while a tail ran), until /proc says better.
        pid: (r.pid != 0).then_some(r.pid),
        comm: (r.pid != 0).then(|| comm_name(&r.comm).into_owned()),
        workload: None,
    })
}

/// For each wanted socket inode, the lowest pid holding it and that process's command name.
fn owners(wanted: &HashSet<u64>) -> BTreeMap<u64, (u32, String)> {
    let mut found = BTreeMap::new();
    if wanted.is_empty() {
        return found;
    }
    let Ok(processes) = fs::read_dir("/proc") else {
        return found;
    };
    let mut pids: Vec<u32> = processes
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let inode = target.to_str().and_then(|t| {
                t.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            });
            if let Some(inode) = inode.filter(|i| wanted.contains(i)) {
                found.entry(inode).or_insert_with(|| {
                    let name = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    (pid, name.trim_end().to_string())
                });
            }
        }
    }
    found
}
