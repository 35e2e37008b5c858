//! Counting a hash map's entries with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6+).
//!
//! `get_next_key` iteration restarts from the first key whenever the current key is deleted
//! under it, so on a busy host it can count sockets twice or never finish. The batch command
//! walks buckets instead and always terminates. aya 0.14 has no public wrapper for it.
use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

use aya::maps::MapData;
use tcpmon_common::SocketEntry;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries fetched per call; larger than any hash bucket can get, so ENOSPC cannot happen.
const BATCH: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Number of entries in the socket map (key `u64`, value [`SocketEntry`]).
pub fn count_entries(map: &MapData) -> io::Result<u64> {
    let fd = map.fd().as_fd().as_raw_fd();
    let mut keys = vec![0u64; BATCH];
    let mut values = vec![[0u8; size_of::<SocketEntry>()]; BATCH];
    // The kernel's cursor for hash maps is a bucket index (u32); u64 leaves room.
    let mut cursor_in = 0u64;
    let mut cursor_out = 0u64;
    let mut total = 0u64;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw mut cursor_in as u64 },
            out_batch: &raw mut cursor_out as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: attr points at buffers of `count` keys and values that outlive the call, and
        // at cursors of at least the 4 bytes the kernel writes.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let error = (rc < 0).then(io::Error::last_os_error);
        total += u64::from(attr.count);
        match error {
            None => {}
            // ENOENT: the walk reached the end (count holds the last entries, if any).
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(total),
            Some(e) => return Err(e),
        }
        cursor_in = cursor_out;
        first = false;
    }
}
