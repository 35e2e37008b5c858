//! Reading the socket iterator (`tcpmon-ebpf/src/sockets_iter.rs`): a BPF iterator is read
//! like a file, made from a link to the loaded program. The kernel walks the TCP sockets of
//! the network namespace current when that file is made, so each namespace gets its own file.
use std::{
    fs::File,
    io::{self, Read},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use aya::programs::ProgramFd;

use super::bpf_call::{bpf, BPF_ITER_CREATE, BPF_LINK_CREATE};

const BPF_TRACE_ITER: u32 = 28;

/// The loaded iterator program, ready to be read in any namespace.
#[derive(Debug)]
pub struct SocketIterator {
    program: ProgramFd,
}

impl SocketIterator {
    pub fn new(program: ProgramFd) -> SocketIterator {
        SocketIterator { program }
    }

    /// The sockets of the calling thread's network namespace, as a file to read records
    /// from (anywhere: the namespace is fixed when the file is made).
    pub fn open(&self) -> io::Result<File> {
        let link = link_create(self.program.as_fd(), None)?;
        Ok(File::from(iter_create(link.as_fd())?))
    }
}

/// Calls `f` with each record of type `T` read from `source` (whole records only; a record may
/// arrive split across reads) until the end or until `f` returns `false`; returns whether `f`
/// saw them all. `T` as for [`records`].
pub fn for_each_record<T: Copy>(
    mut source: impl Read,
    mut f: impl FnMut(T) -> io::Result<bool>,
) -> io::Result<bool> {
    let mut buffer = vec![0u8; 512 * size_of::<T>()];
    let mut filled = 0;
    loop {
        let read = match source.read(&mut buffer[filled..]) {
            Ok(0) => return Ok(true),
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        filled += read;
        let whole = filled - filled % size_of::<T>();
        for record in records::<T>(&buffer[..whole]) {
            if !f(record)? {
                return Ok(false);
            }
        }
        buffer.copy_within(whole..filled, 0);
        filled -= whole;
    }
}

/// Runs an iterator program once and returns what it wrote: a link to the program (for a map
/// iterator, to `map`), a file made from the link, read to its end.
pub fn run(program: BorrowedFd<'_>, map: Option<BorrowedFd<'_>>) -> io::Result<Vec<u8>> {
    let link = link_create(program, map)?;
    let mut file = File::from(iter_create(link.as_fd())?);
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The records of type `T` in what an iterator wrote (whole records only).
///
/// `T` must be one of the `#[repr(C)]` integer-only records of `tcpmon_common::wire`.
pub fn records<T: Copy>(bytes: &[u8]) -> Vec<T> {
    bytes
        .chunks_exact(size_of::<T>())
        // SAFETY: each chunk holds one record as the program wrote it: a #[repr(C)] struct of
        // integers (any bit pattern is valid), read unaligned since the buffer is bytes.
        .map(|chunk| unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast()) })
        .collect()
}

/// `union bpf_attr` for BPF_LINK_CREATE (and, in its first words, BPF_ITER_CREATE).
#[repr(C)]
#[derive(Default)]
struct Attr {
    fd: u32,
    target_fd_or_flags: u32,
    attach_type: u32,
    flags: u32,
    rest: [u64; 4],
}

/// Runs `cmd`, which makes a descriptor (a link, an iterator's file).
fn new_fd(cmd: libc::c_long, attr: &mut Attr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a zero-padded bpf_attr whose pointers (the iterator's link info)
    // outlive the call; the kernel returns a new descriptor.
    let fd = unsafe { bpf(cmd, attr) }?;
    // SAFETY: a descriptor the kernel just created for this process, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `union bpf_iter_link_info` as far as a map iterator needs it: the map's descriptor.
#[repr(C)]
struct IterLinkInfo {
    map_fd: u32,
}

fn link_create(program: BorrowedFd<'_>, map: Option<BorrowedFd<'_>>) -> io::Result<OwnedFd> {
    let info = map.map(|map| IterLinkInfo {
        map_fd: map.as_raw_fd() as u32,
    });
    let mut attr = Attr {
        fd: program.as_raw_fd() as u32,
        attach_type: BPF_TRACE_ITER,
        ..Attr::default()
    };
    if let Some(info) = &info {
        // `link_create.iter_info` (a pointer) and `iter_info_len`.
        attr.rest[0] = std::ptr::from_ref(info) as u64;
        attr.rest[1] = size_of::<IterLinkInfo>() as u64;
    }
    new_fd(BPF_LINK_CREATE, &mut attr)
}

fn iter_create(link: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut attr = Attr {
        fd: link.as_raw_fd() as u32,
        ..Attr::default()
    };
    new_fd(BPF_ITER_CREATE, &mut attr)
}
