//! What the agent reads from the kernel across every network namespace at once, without
//! entering any: listeners' queues and drops, namespaces' time-wait counts, and at start-up
//! each namespace's sockets (the socket iterator, run once per namespace).
//!
//! The program keeps every listener in `LISTENERS` and every namespace that makes time-wait
//! sockets in `NAMESPACES`; `tcpmon_read_listeners` and `tcpmon_read_namespaces`
//! (`tcpmon-ebpf/src/listeners.rs`, `namespaces.rs`), run on demand with
//! `BPF_PROG_TEST_RUN`, read the sockets and namespaces at the addresses the agent hands
//! them. The cost grows with listeners and namespaces, not with processes. (A map iterator
//! would walk the maps itself, but this kernel refuses to load one, with EPERM.)
use std::{
    collections::HashMap,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    sync::Mutex,
};

use aya::{
    maps::{Array, MapData},
    programs::ProgramFd,
};
use tcpmon_common::{
    maps, tcp_state, ListenerEntry, ListenerRecord, NamespaceRecord, StartupSocket,
};

use super::{
    bpf_call::{bpf, ElemAttr, BPF_MAP_DELETE_ELEM, BPF_PROG_TEST_RUN},
    map_batch, socket_iter,
};

/// The loaded reader programs and their maps, usable from any thread.
pub struct KernelReaders {
    listener_reader: ProgramFd,
    namespace_reader: ProgramFd,
    startup_walk: ProgramFd,
    /// One lock: both readers take their addresses from `LISTENER_QUERY`.
    maps: Mutex<Maps>,
}

/// Descriptors of the programs and maps the readers use.
pub struct ReaderParts {
    pub listener_reader: ProgramFd,
    pub namespace_reader: ProgramFd,
    pub startup_walk: ProgramFd,
    /// `LISTENERS`, `LISTENER_QUERY`, `LISTENER_ANSWERS`, `NAMESPACES`, `NAMESPACE_ANSWERS`,
    /// `STARTUP` and `FIRST_SEEN`, in that order.
    pub maps: [OwnedFd; 7],
}

struct Maps {
    listeners: MapData,
    query: MapData,
    listener_answers: MapData,
    namespaces: MapData,
    namespace_answers: MapData,
    startup: Array<MapData, u64>,
    first_seen: MapData,
}

impl KernelReaders {
    pub fn new(parts: ReaderParts) -> io::Result<Self> {
        let [listeners, query, listener_answers, namespaces, namespace_answers, startup, first_seen] =
            parts
                .maps
                .map(|fd| MapData::from_fd(fd).map_err(io::Error::other));
        Ok(KernelReaders {
            listener_reader: parts.listener_reader,
            namespace_reader: parts.namespace_reader,
            startup_walk: parts.startup_walk,
            maps: Mutex::new(Maps {
                listeners: listeners?,
                query: query?,
                listener_answers: listener_answers?,
                namespaces: namespaces?,
                namespace_answers: namespace_answers?,
                startup: array(startup?)?,
                first_seen: first_seen?,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every listener in scope now. An entry whose socket is no longer listening (it left
    /// LISTEN while the program's run was skipped, or closed while the start-up walk put it
    /// in, on kernels whose socket iterator does not lock sockets) is deleted and left out.
    pub fn listeners(&self) -> io::Result<Vec<ListenerRecord>> {
        let maps = self.lock();
        let entries: Vec<(u64, ListenerEntry)> = entries(&maps.listeners)?;
        let mut listening = Vec::with_capacity(entries.len());
        for batch in entries.chunks(maps::LISTENERS_PER_READ as usize) {
            let keys: Vec<u64> = batch.iter().map(|(sk, _)| *sk).collect();
            ask(&maps, &self.listener_reader, &keys)?;
            let answers: Vec<ListenerRecord> =
                map_batch::read_array(&maps.listener_answers, keys.len())?;
            for (mut record, (sk, entry)) in answers.into_iter().zip(batch) {
                record.since_ns = entry.since_ns;
                if record.skaddr == *sk && i32::from(record.state) == tcp_state::LISTEN {
                    listening.push(record);
                } else {
                    forget_stale(&maps.listeners, *sk, *entry);
                }
            }
        }
        Ok(listening)
    }

    /// Every namespace in scope that may hold time-wait sockets, with its count. A namespace
    /// that is gone (no references, or another namespace at its address) is forgotten.
    pub fn namespaces(&self) -> io::Result<Vec<NamespaceRecord>> {
        let maps = self.lock();
        let entries: Vec<(u64, u32)> = entries(&maps.namespaces)?;
        let mut alive = Vec::with_capacity(entries.len());
        for batch in entries.chunks(maps::LISTENERS_PER_READ as usize) {
            let keys: Vec<u64> = batch.iter().map(|(net, _)| *net).collect();
            ask(&maps, &self.namespace_reader, &keys)?;
            let answers: Vec<NamespaceRecord> =
                map_batch::read_array(&maps.namespace_answers, keys.len())?;
            for (record, (net, inum)) in answers.into_iter().zip(batch) {
                if record.net == *net && record.inum == *inum && record.refs > 0 {
                    alive.push(record);
                } else {
                    forget_stale(&maps.namespaces, *net, *inum);
                }
            }
        }
        Ok(alive)
    }

    /// Walks the sockets of the calling thread's network namespace once (at start-up): puts
    /// its listeners in `LISTENERS`, notes the namespace, and returns its full sockets.
    pub fn walk_here(&self) -> io::Result<Vec<StartupSocket>> {
        Ok(socket_iter::records(&socket_iter::run(
            self.startup_walk.as_fd(),
            None,
        )?))
    }

    /// Closes the start-up window; returns the state each socket was in before its first
    /// transition in the window, and how many sockets the program had no room to note.
    pub fn close_startup_window(&self) -> io::Result<(HashMap<u64, u32>, u64)> {
        let mut maps = self.lock();
        maps.startup
            .set(maps::STARTUP_WINDOW, 1, 0)
            .map_err(io::Error::other)?;
        let first: Vec<(u64, u32)> = entries(&maps.first_seen)?;
        let full = maps
            .startup
            .get(&maps::FIRST_SEEN_FULL, 0)
            .map_err(io::Error::other)?;
        Ok((first.into_iter().collect(), full))
    }
}

fn array<T: aya::Pod>(data: MapData) -> io::Result<Array<MapData, T>> {
    Array::try_from(aya::maps::Map::Array(data)).map_err(io::Error::other)
}

/// Every entry of a hash map of `K` to `V` (integer-only types), one batch walk.
fn entries<K: Copy, V: Copy>(map: &MapData) -> io::Result<Vec<(K, V)>> {
    let mut found = Vec::new();
    map_batch::for_each_entry(map, size_of::<K>(), size_of::<V>(), |key, value| {
        // SAFETY: the kernel's copies of a key and a value of these sizes, integer-only types
        // (any bit pattern is valid), read unaligned since the buffers are bytes.
        found.push(unsafe {
            (
                std::ptr::read_unaligned(key.as_ptr().cast::<K>()),
                std::ptr::read_unaligned(value.as_ptr().cast::<V>()),
            )
        });
    })?;
    Ok(found)
}

/// Writes `keys` (at most `LISTENERS_PER_READ`) to `LISTENER_QUERY` and runs `reader` on them:
/// three syscalls for up to 16 listeners or namespaces.
fn ask(maps: &Maps, reader: &ProgramFd, keys: &[u64]) -> io::Result<()> {
    map_batch::write_array(&maps.query, keys)?;
    test_run(reader.as_fd(), keys.len() as u64)
}

/// `BPF_PROG_TEST_RUN` of a reader with its one argument, on the calling CPU.
fn test_run(program: BorrowedFd<'_>, count: u64) -> io::Result<()> {
    let args = [count];
    let mut attr = TestRunAttr {
        prog_fd: program.as_raw_fd() as u32,
        ctx_size_in: size_of_val(&args) as u32,
        ctx_in: args.as_ptr() as u64,
        ..TestRunAttr::default()
    };
    // SAFETY: a zero-padded `test` member of bpf_attr whose ctx_in points at `args`, which
    // outlives the call.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }.map(drop)
}

/// Deletes the entry at `key` if it still holds `value` (the one the reader was asked about): a
/// new listener or namespace at the same address, put in by the program since the reader ran,
/// keeps its entry. (What is left is the microsecond between this lookup and the delete.)
fn forget_stale<V: Copy + PartialEq>(map: &MapData, key: u64, value: V) {
    let mut now = vec![0u8; size_of::<V>()];
    let unchanged = map_batch::lookup(map, &key.to_ne_bytes(), &mut now).is_ok()
        // SAFETY: the kernel's copy of a value of the map's type (integers only), unaligned.
        && unsafe { std::ptr::read_unaligned(now.as_ptr().cast::<V>()) } == value;
    if unchanged {
        // Gone already (the program deleted it meanwhile) is fine.
        let _ = delete(map, key);
    }
}

/// Deletes `key` from `map` (`BPF_MAP_DELETE_ELEM`).
fn delete(map: &MapData, key: u64) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        key: std::ptr::from_ref(&key) as u64,
        ..ElemAttr::default()
    };
    // SAFETY: the `elem` member of bpf_attr: the map, and a pointer to a key of the map's size
    // that outlives the call.
    unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) }.map(drop)
}

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}
