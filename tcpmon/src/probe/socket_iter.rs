//! Reading the socket iterator (`tcpmon-ebpf/src/sockets_iter.rs`): a BPF iterator is read
//! like a file, made from a link to the loaded program. The kernel walks the TCP sockets of
//! the network namespace current when that file is made, so each namespace gets its own file.
use std::{
    fs::File,
    io::{self, Read},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use aya::programs::ProgramFd;
use tcpmon_common::SocketRecord;

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
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

    /// The sockets of the calling thread's network namespace.
    pub fn read(&self) -> io::Result<Vec<SocketRecord>> {
        let link = link_create(self.program.as_fd())?;
        let mut file = File::from(iter_create(link.as_fd())?);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(records(&bytes))
    }
}

/// The records in what the iterator wrote (whole records only).
pub fn records(bytes: &[u8]) -> Vec<SocketRecord> {
    bytes
        .chunks_exact(size_of::<SocketRecord>())
        // SAFETY: each chunk holds one record as the program wrote it: a #[repr(C)] struct of
        // integers, read unaligned since the buffer is bytes.
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

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a zero-padded bpf_attr of the size given; the kernel returns a new
    // descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, &raw mut *attr, size_of::<Attr>()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just created for this process, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn link_create(program: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut attr = Attr {
        fd: program.as_raw_fd() as u32,
        attach_type: BPF_TRACE_ITER,
        ..Attr::default()
    };
    bpf(BPF_LINK_CREATE, &mut attr)
}

fn iter_create(link: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut attr = Attr {
        fd: link.as_raw_fd() as u32,
        ..Attr::default()
    };
    bpf(BPF_ITER_CREATE, &mut attr)
}
