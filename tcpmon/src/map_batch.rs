//! Reading whole maps with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6+): one syscall per few thousand
//! entries instead of one per entry, which keeps a scrape in the low milliseconds.
//!
//! For hash maps it also matters for correctness: `get_next_key` iteration restarts from the
//! first key whenever the current key is deleted under it, so on a busy host it can count
//! sockets twice or never finish; the batch command walks buckets and always terminates.
//! aya 0.14 has no public wrapper for it.
use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

use aya::maps::MapData;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries fetched per call for hash maps: larger than any bucket can get, so no ENOSPC.
const HASH_BATCH: usize = 4096;

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

/// Calls `each(key, value)` for every entry of `map`, `batch` entries per syscall.
fn for_each(
    map: &MapData,
    key_size: usize,
    value_size: usize,
    batch: usize,
    mut each: impl FnMut(&[u8], &[u8]),
) -> io::Result<()> {
    let fd = map.fd().as_fd().as_raw_fd();
    let mut keys = vec![0u8; key_size * batch];
    let mut values = vec![0u8; value_size * batch];
    // The kernel's cursor: a bucket index for hash maps, a key for arrays; 8 bytes hold both.
    let mut cursor_in = [0u8; 8];
    let mut cursor_out = [0u8; 8];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                cursor_in.as_mut_ptr() as u64
            },
            out_batch: cursor_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: batch as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: attr points at buffers of `count` keys and values that outlive the call, and
        // at cursors of at least the key size (at most 8 bytes here) the kernel writes.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let error = (rc < 0).then(io::Error::last_os_error);
        let count = attr.count as usize;
        for i in 0..count {
            each(
                &keys[i * key_size..(i + 1) * key_size],
                &values[i * value_size..(i + 1) * value_size],
            );
        }
        match error {
            // Only ENOENT ends the walk (count holds the last entries, if any): a hash map
            // returns short batches whenever the next bucket would not fit.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Some(e) => return Err(e),
            None => {}
        }
        cursor_in = cursor_out;
        first = false;
    }
}

/// Number of entries in a hash map with `key_size`-byte keys and `value_size`-byte values.
pub fn count_entries(map: &MapData, key_size: usize, value_size: usize) -> io::Result<u64> {
    let mut total = 0;
    for_each(map, key_size, value_size, HASH_BATCH, |_, _| total += 1)?;
    Ok(total)
}

/// Every slot of a per-CPU array of `entries` values of type `T`, each as its per-CPU values.
pub fn per_cpu_array<T: aya::Pod>(map: &MapData, entries: u32) -> io::Result<Vec<Vec<T>>> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    // The kernel lays each CPU's value out at an 8-byte stride.
    let stride = size_of::<T>().div_ceil(8) * 8;
    let mut slots = vec![Vec::new(); entries as usize];
    for_each(map, 4, stride * cpus, entries as usize, |key, value| {
        let index = u32::from_ne_bytes([key[0], key[1], key[2], key[3]]) as usize;
        if let Some(slot) = slots.get_mut(index) {
            *slot = (0..cpus)
                // SAFETY: `value` holds `cpus` values of T at `stride` bytes each; T is Pod.
                .map(|cpu| unsafe {
                    value
                        .as_ptr()
                        .add(cpu * stride)
                        .cast::<T>()
                        .read_unaligned()
                })
                .collect();
        }
    })?;
    Ok(slots)
}
