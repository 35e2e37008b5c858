//! Reading whole maps with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6+): one syscall per few thousand
//! entries instead of one per entry, which keeps a scrape in the low milliseconds.
//!
//! For hash maps it also matters for correctness: `get_next_key` iteration restarts from the
//! first key whenever the current key is deleted under it, so on a busy host it can count
//! sockets twice or never finish; the batch command walks buckets and always terminates.
//! aya 0.14 has no public wrapper for it.
//!
//! Per-CPU arrays only gained the batch command in Linux 5.13; on older kernels (Debian 11's
//! 5.10) it fails with ENOTSUPP and their slots are read one `BPF_MAP_LOOKUP_ELEM` each
//! instead: a few thousand syscalls per scrape, exact all the same, since array slots are never
//! deleted. Hash maps have had the batch command since 5.6.
use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{AtomicBool, Ordering},
};

use aya::maps::MapData;

use super::bpf_call::{
    bpf, ElemAttr, BPF_MAP_LOOKUP_BATCH, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_BATCH,
};

/// The kernel's internal "operation not supported" (not in libc): what a map type without a
/// batch implementation answers.
const ENOTSUPP: i32 = 524;
/// Set once the kernel has refused a batch lookup of a per-CPU array, so later scrapes go
/// straight to per-slot lookups.
static ARRAY_BATCH_UNSUPPORTED: AtomicBool = AtomicBool::new(false);
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

/// One batch command on the first `count` slots of an array map: `keys` holds their indexes,
/// `values` their values. Returns how many slots the kernel handled.
fn array_batch(
    command: libc::c_long,
    map: &MapData,
    keys: &[u32],
    values: *mut u8,
) -> io::Result<usize> {
    // Where a lookup leaves its cursor (the last index copied), unused here.
    let mut cursor_out = [0u8; 8];
    let mut attr = BatchAttr {
        out_batch: cursor_out.as_mut_ptr() as u64,
        keys: keys.as_ptr() as u64,
        values: values as u64,
        count: keys.len() as u32,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: attr points at `count` keys, at a values buffer of `count` values of the map's
    // size and at a cursor of at least the key size, all outliving the call; a lookup from the
    // start has no cursor to read.
    match unsafe { bpf(command, &mut attr) } {
        Ok(_) => Ok(attr.count as usize),
        // A lookup that reached the array's end says ENOENT, with the slots it copied.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(attr.count as usize),
        Err(e) => Err(e),
    }
}

/// Writes `values` into slots `0..values.len()` of an array map of `T` (not per-CPU), in one
/// syscall (`BPF_MAP_UPDATE_BATCH`; arrays have had it since Linux 5.6).
pub fn write_array<T: aya::Pod>(map: &MapData, values: &[T]) -> io::Result<()> {
    let keys: Vec<u32> = (0..values.len() as u32).collect();
    let written = array_batch(
        BPF_MAP_UPDATE_BATCH,
        map,
        &keys,
        values.as_ptr().cast_mut().cast(),
    )?;
    if written != values.len() {
        return Err(io::Error::other(format!(
            "wrote {written} of {} slots",
            values.len()
        )));
    }
    Ok(())
}

/// Reads slots `0..count` of an array map of `T` (not per-CPU), in one syscall.
pub fn read_array<T: aya::Pod>(map: &MapData, count: usize) -> io::Result<Vec<T>> {
    let keys = vec![0u32; count];
    let mut values: Vec<T> = Vec::with_capacity(count);
    let read = array_batch(BPF_MAP_LOOKUP_BATCH, map, &keys, values.as_mut_ptr().cast())?;
    if read != count {
        return Err(io::Error::other(format!("read {read} of {count} slots")));
    }
    // SAFETY: the kernel wrote `count` values of T (Pod: any bit pattern is valid).
    unsafe { values.set_len(count) };
    Ok(values)
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
        let error = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) }.err();
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

/// Calls `each(key, value)` for every entry of a hash map with `key_size`-byte keys and
/// `value_size`-byte values.
pub fn for_each_entry(
    map: &MapData,
    key_size: usize,
    value_size: usize,
    each: impl FnMut(&[u8], &[u8]),
) -> io::Result<()> {
    for_each(map, key_size, value_size, HASH_BATCH, each)
}

/// Every slot of a per-CPU array of `entries` values of type `T`, each as its per-CPU values.
pub fn per_cpu_array<T: aya::Pod>(map: &MapData, entries: u32) -> io::Result<Vec<Vec<T>>> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    // The kernel lays each CPU's value out at an 8-byte stride.
    let stride = size_of::<T>().div_ceil(8) * 8;
    let mut slots = vec![Vec::new(); entries as usize];
    let mut store = |key: &[u8], value: &[u8]| {
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
    };
    if !ARRAY_BATCH_UNSUPPORTED.load(Ordering::Relaxed) {
        match for_each(map, 4, stride * cpus, entries as usize, &mut store) {
            Err(e) if unsupported(&e) => ARRAY_BATCH_UNSUPPORTED.store(true, Ordering::Relaxed),
            done => return done.map(|()| slots),
        }
    }
    let mut value = vec![0u8; stride * cpus];
    for index in 0..entries {
        let key = index.to_ne_bytes();
        lookup(map, &key, &mut value)?;
        store(&key, &value);
    }
    Ok(slots)
}

/// Whether `error` says the map type has no batch lookup (ENOTSUPP; EINVAL on kernels that
/// predate the command altogether).
fn unsupported(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(ENOTSUPP | libc::EINVAL))
}

/// One `BPF_MAP_LOOKUP_ELEM`: copies the value at `key` (all CPUs' for a per-CPU map) into
/// `value`, which must be the size the kernel writes.
pub fn lookup(map: &MapData, key: &[u8], value: &mut [u8]) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: attr points at a key and a value buffer of the map's sizes that outlive the call.
    unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) }.map(drop)
}
