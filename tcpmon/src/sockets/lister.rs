//! The agent's side of `tcpmon sockets`: the socket iterator read in each namespace in scope,
//! and each socket's owner found by its inode in `/proc/PID/fd`.
//!
//! The answer is streamed, and what the agent holds for it is bounded whatever the host's
//! sockets: at most [`CHUNK_SOCKETS`] records (104 bytes each, 6.5 MiB) and a few pieces of
//! answer of about 64 KiB on their way to the client. Each chunk costs one walk of /proc to
//! find its sockets' owners, so a host with up to 65,536 sockets costs one walk, as before.
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
    clock::monotonic_ns,
    netns,
    probe::socket_iter::{for_each_record, SocketIterator},
    socket_fields::{address, comm_name, family_label},
    state::TcpState,
    workload::cgroups::Workloads,
};

/// Sockets whose records the agent holds at once while answering.
pub const CHUNK_SOCKETS: usize = 65_536;
/// Namespaces whose iterators are open at once (a descriptor each).
const NAMESPACES_AT_ONCE: usize = 64;
/// About how many bytes of answer are handed on at a time.
const PIECE_BYTES: usize = 64 * 1024;

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

    /// Hands every full TCP socket in scope to `send` as JSON lines, in pieces of about
    /// 64 KiB (blocking: it walks namespaces and /proc). Stops early, without an error, once
    /// `send` returns `false` (the client left).
    pub fn stream(&self, send: impl FnMut(Vec<u8>) -> bool) -> io::Result<()> {
        let paths: Vec<PathBuf> = match &self.netns {
            Some(path) => vec![path.clone()],
            None => netns::all().into_values().collect(),
        };
        let mut answer = Answer::new(&self.workloads, CHUNK_SOCKETS, send);
        for batch in paths.chunks(NAMESPACES_AT_ONCE) {
            // Each worker thread makes the iterator's file in the namespace it entered, and
            // names the namespace; the files are read here.
            let files = netns::in_each(batch.to_vec(), || {
                let namespace = fs::metadata("/proc/thread-self/ns/net")?;
                Ok((namespace.ino(), self.iterator.open()?))
            })?;
            for (netns, file) in files {
                if !for_each_record(file, |record| answer.push(netns, record))? {
                    return Ok(());
                }
            }
        }
        answer.flush().map(drop)
    }
}

/// The answer being made: records gathered up to a chunk, then turned into lines with their
/// owners and workloads and handed on.
struct Answer<'a, S> {
    workloads: &'a Workloads,
    chunk: usize,
    pending: Vec<(u64, SocketRecord)>,
    send: S,
}

impl<'a, S: FnMut(Vec<u8>) -> bool> Answer<'a, S> {
    fn new(workloads: &'a Workloads, chunk: usize, send: S) -> Answer<'a, S> {
        Answer {
            workloads,
            chunk,
            pending: Vec::new(),
            send,
        }
    }

    /// Adds the socket `record` of namespace `netns`; `false` once the client has left.
    fn push(&mut self, netns: u64, record: SocketRecord) -> io::Result<bool> {
        self.pending.push((netns, record));
        if self.pending.len() >= self.chunk {
            return self.flush();
        }
        Ok(true)
    }

    /// Hands on the pending sockets; `false` once the client has left.
    fn flush(&mut self) -> io::Result<bool> {
        let now = monotonic_ns();
        let wanted: HashSet<u64> = self
            .pending
            .iter()
            .map(|(_, r)| r.inode)
            .filter(|&inode| inode != 0)
            .collect();
        let owners = owners(&wanted);
        let mut piece = Vec::with_capacity(PIECE_BYTES + 1024);
        for (netns, record) in self.pending.drain(..) {
            let Some(mut line) = line(netns, &record, now) else {
                continue;
            };
            line.workload = self.workloads.name(record.cgroup_id).map(|w| w.to_string());
            if let Some((pid, comm)) = line.inode.and_then(|i| owners.get(&i)) {
                line.pid = Some(*pid);
                line.comm = Some(comm.clone());
            }
            serde_json::to_writer(&mut piece, &line).map_err(io::Error::other)?;
            piece.push(b'\n');
            if piece.len() >= PIECE_BYTES && !(self.send)(std::mem::take(&mut piece)) {
                return Ok(false);
            }
        }
        Ok(piece.is_empty() || (self.send)(piece))
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

#[cfg(test)]
#[path = "lister_tests.rs"]
mod tests;
