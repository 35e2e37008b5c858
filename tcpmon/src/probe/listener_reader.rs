//! Reading every listening socket of the host in one pass: the program keeps every listener in
//! the `LISTENERS` map, and `tcpmon_read_listeners` (`tcpmon-ebpf/src/listeners.rs`), run on
//! demand with `BPF_PROG_TEST_RUN`, reads each one's queues and drops in the kernel. The cost
//! grows with the number of listeners, not with processes or namespaces, and no namespace is
//! entered. (A map iterator would walk the map itself, but this kernel refuses to load one.)
use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    sync::Mutex,
};

use aya::{
    maps::{Array, MapData},
    programs::ProgramFd,
};
use tcpmon_common::{maps, tcp_state, ListenerEntry, ListenerRecord};

use super::{map_batch, socket_iter};

/// The loaded listener programs and their maps, usable from any thread.
pub struct ListenerReader {
    reader: ProgramFd,
    seed: ProgramFd,
    maps: Mutex<Maps>,
}

struct Maps {
    listeners: MapData,
    query: Array<MapData, u64>,
    answers: Array<MapData, ListenerRecord>,
}

impl ListenerReader {
    /// `maps_fds`: descriptors of `LISTENERS`, `LISTENER_QUERY` and `LISTENER_ANSWERS`.
    pub fn new(reader: ProgramFd, seed: ProgramFd, map_fds: [OwnedFd; 3]) -> io::Result<Self> {
        let [listeners, query, answers] =
            map_fds.map(|fd| MapData::from_fd(fd).map_err(io::Error::other));
        Ok(ListenerReader {
            reader,
            seed,
            maps: Mutex::new(Maps {
                listeners: listeners?,
                query: array(query?)?,
                answers: array(answers?)?,
            }),
        })
    }

    /// Every listener in scope now. An entry whose socket is no longer listening (it left
    /// LISTEN while the program's run was skipped, or closed while the seed iterator put it
    /// in, on kernels whose socket iterator does not lock sockets) is deleted and left out.
    pub fn read(&self) -> io::Result<Vec<ListenerRecord>> {
        let mut maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        let mut entries: Vec<(u64, ListenerEntry)> = Vec::new();
        map_batch::for_each_entry(
            &maps.listeners,
            size_of::<u64>(),
            size_of::<ListenerEntry>(),
            |key, value| {
                // SAFETY: the kernel's copies of a u64 key and a ListenerEntry (integers only),
                // read unaligned since the buffers are bytes.
                let entry = unsafe {
                    (
                        std::ptr::read_unaligned(key.as_ptr().cast::<u64>()),
                        std::ptr::read_unaligned(value.as_ptr().cast::<ListenerEntry>()),
                    )
                };
                entries.push(entry);
            },
        )?;
        let mut listening = Vec::with_capacity(entries.len());
        for batch in entries.chunks(maps::LISTENERS_PER_READ as usize) {
            for (index, (sk, _)) in (0u32..).zip(batch) {
                maps.query.set(index, sk, 0).map_err(io::Error::other)?;
            }
            test_run(self.reader.as_fd(), batch.len() as u64)?;
            for (index, (sk, entry)) in (0u32..).zip(batch) {
                let mut record = maps.answers.get(&index, 0).map_err(io::Error::other)?;
                record.since_ns = entry.since_ns;
                if record.skaddr == *sk && i32::from(record.state) == tcp_state::LISTEN {
                    listening.push(record);
                } else {
                    // Gone already (the program deleted it meanwhile) is fine.
                    let _ = delete(&maps.listeners, *sk);
                }
            }
        }
        Ok(listening)
    }

    /// Puts the listeners of the calling thread's network namespace in the map (once per
    /// namespace at start-up: later ones are put in by the program).
    pub fn seed_here(&self) -> io::Result<()> {
        socket_iter::run(self.seed.as_fd(), None).map(drop)
    }
}

fn array<T: aya::Pod>(data: MapData) -> io::Result<Array<MapData, T>> {
    Array::try_from(aya::maps::Map::Array(data)).map_err(io::Error::other)
}

/// `BPF_PROG_TEST_RUN` of the reader with its one argument, on the calling CPU.
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
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &raw mut attr,
            size_of::<TestRunAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Deletes `key` from `map` (`BPF_MAP_DELETE_ELEM`).
fn delete(map: &MapData, key: u64) -> io::Result<()> {
    let mut attr = [0u64; 4];
    attr[0] = u64::from(map.fd().as_fd().as_raw_fd() as u32);
    attr[1] = std::ptr::from_ref(&key) as u64;
    // SAFETY: the `elem` member of bpf_attr: map fd, then a pointer to a key of the map's size
    // that outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_DELETE_ELEM, &raw mut attr, 32) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_TEST_RUN: libc::c_long = 10;

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
