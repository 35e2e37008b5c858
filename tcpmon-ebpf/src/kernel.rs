//! Reading kernel memory: members of `struct sock` at offsets the agent found in BTF.
use aya_ebpf::{
    bindings::seq_file,
    helpers::{bpf_probe_read_kernel, bpf_seq_write},
};

use tcpmon_common::AF_INET;

use crate::config::{
    global, CGROUP_KN_OFFSET, CGROUP_TYPED, KN_ID_OFFSET, SK_CGRP_OFFSET, SK_DADDR_OFFSET,
    SK_RCV_SADDR_OFFSET, SK_V6_DADDR_OFFSET, SK_V6_RCV_SADDR_OFFSET,
};

/// Reads the member of a kernel struct at `*offset` bytes into `base`, a pointer the verifier
/// knows the BTF type of (the tracepoint's `struct sock *`, or a pointer read from one). The
/// offset is a load-time constant, so the verifier checks the access against the struct's
/// layout, and the JIT makes it a plain load that yields 0 rather than fault on a bad address.
#[inline(always)]
pub fn sock_field<T: Copy>(base: *const u8, offset: &'static u32) -> T {
    // SAFETY: see above; the kernel's exception table covers the load.
    unsafe { core::ptr::read_volatile(base.add(global(offset) as usize).cast::<T>()) }
}

/// [`sock_field`] at `extra` bytes past the member (a word of an array member).
#[inline(always)]
pub fn sock_field_at<T: Copy>(base: *const u8, offset: &'static u32, extra: usize) -> T {
    // SAFETY: as for `sock_field`; the caller keeps `extra` inside the member.
    unsafe { core::ptr::read_volatile(base.add(global(offset) as usize + extra).cast::<T>()) }
}

/// Reads a `T` at `base + offset` in kernel memory that the verifier cannot type (a member of
/// a struct that embeds `struct sock`, such as `tcp_sock`).
#[inline(always)]
pub fn read_kernel<T>(base: u64, offset: u32) -> Result<T, i32> {
    let field = (base + u64::from(offset)) as *const T;
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel(field) }
}

/// [`read_kernel`] without a branch on the result: the helper zeroes its destination when the
/// address cannot be read, so a failed read is 0. For the readers' loops, where a branch per
/// field multiplies the paths the verifier walks (Linux 5.10 gave up, E2BIG, with one per
/// field).
#[inline(always)]
pub fn read_or_zero<T: Copy>(base: u64, offset: u32) -> T {
    let mut value = core::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: the helper checks the source address and writes `size_of::<T>()` bytes into
    // `value`, zeroes on failure; `T` is an integer or an array of them (any bits are valid).
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            value.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            (base + u64::from(offset)) as *const core::ffi::c_void,
        );
        value.assume_init()
    }
}

/// Writes `record` to an iterator's output. `meta` is the iterator context's first member, its
/// BTF-typed `struct bpf_iter_meta *`.
#[inline(always)]
pub fn seq_write<T>(meta: *const u8, record: &T) {
    // SAFETY: the first member of `bpf_iter_meta` is the seq_file; the record is a live value
    // of the size given.
    unsafe {
        let seq: *mut seq_file = core::ptr::read_volatile(meta as *const *mut seq_file);
        bpf_seq_write(
            seq,
            core::ptr::from_ref(record).cast(),
            core::mem::size_of::<T>() as u32,
        );
    }
}

/// Adds `n` to `*target` with one atomic instruction (`BPF_ATOMIC | BPF_ADD`): safe against other
/// CPUs, and against a run that interrupts this one on its own CPU.
///
/// # Safety
/// `target` must be a valid, aligned `u64` in a map value.
#[inline(always)]
pub unsafe fn atomic_add(target: *mut u64, n: u64) {
    // SAFETY: the caller's; the result is unused, so this is the add without fetch that every
    // kernel since 3.18 accepts.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            target, n,
        )
    };
}

/// Writes the socket's local and remote addresses as 32-bit words (IPv4 in the first word,
/// the others zero; or IPv6): plain loads from the socket, no helper call, no zeroing pass.
///
/// # Safety
/// `saddr` and `daddr` must be valid for writes and 4-byte aligned.
#[inline(always)]
pub unsafe fn write_addresses(
    sk: *const u8,
    family: u16,
    saddr: *mut [u32; 4],
    daddr: *mut [u32; 4],
) {
    // SAFETY: the caller's.
    unsafe {
        if family == AF_INET {
            *saddr = [sock_field(sk, &SK_RCV_SADDR_OFFSET), 0, 0, 0];
            *daddr = [sock_field(sk, &SK_DADDR_OFFSET), 0, 0, 0];
        } else {
            *saddr = in6_words(sk, &SK_V6_RCV_SADDR_OFFSET);
            *daddr = in6_words(sk, &SK_V6_DADDR_OFFSET);
        }
    }
}

/// The `struct in6_addr` member of the socket at `*offset`, as its four 32-bit words.
#[inline(always)]
fn in6_words(sk: *const u8, offset: &'static u32) -> [u32; 4] {
    [
        sock_field_at(sk, offset, 0),
        sock_field_at(sk, offset, 4),
        sock_field_at(sk, offset, 8),
        sock_field_at(sk, offset, 12),
    ]
}

/// The id of the socket's cgroup v2 (its kernfs node's id: the inode number of the cgroup's
/// directory), 0 if unknown. Set when the socket was created, by the process that created it,
/// and copied from the listener to its children: the owner of the socket, not the task that
/// happens to be current (most transitions run in softirq). `sk` must be the tracepoint's
/// `struct sock *` (the verifier knows it as such); [`socket_cgroup_id`] reads any socket.
#[inline(always)]
pub fn sock_cgroup_id(sk: *const u8) -> u64 {
    if global(&SK_CGRP_OFFSET) != 0 && global(&CGROUP_TYPED) != 0 {
        // 5.15+: `sk_cgrp_data.cgroup` and `cgroup.kn` are typed pointers, so the verifier
        // lets the program follow them with plain loads (a bad address reads as 0), where a
        // helper read costs a call. On older kernels this branch is dead code to the verifier.
        let cgroup: *const u8 = sock_field(sk, &SK_CGRP_OFFSET);
        if cgroup.is_null() {
            return 0;
        }
        let kn: *const u8 = sock_field(cgroup, &CGROUP_KN_OFFSET);
        if kn.is_null() {
            return 0;
        }
        return sock_field(kn, &KN_ID_OFFSET);
    }
    socket_cgroup_id(sk)
}

/// [`sock_cgroup_id`] of a socket given as any pointer (the socket iterator's
/// `struct sock_common *`), through helper reads.
#[inline(always)]
pub fn socket_cgroup_id(sk: *const u8) -> u64 {
    let offset = global(&SK_CGRP_OFFSET);
    if offset == 0 {
        return 0;
    }
    // `sk_cgrp_data.cgroup` (5.15+), or before it the union's `val`: a pointer, or with bit 0
    // set net_prio / net_cls data, and then the socket is in the root cgroup.
    let data = read_kernel::<u64>(sk as u64, offset).unwrap_or(0);
    if data & 1 != 0 {
        return ROOT_CGROUP_ID;
    }
    if data == 0 {
        return 0;
    }
    let Ok(kn) = read_kernel::<u64>(data, global(&CGROUP_KN_OFFSET)) else {
        return 0;
    };
    read_kernel::<u64>(kn, global(&KN_ID_OFFSET)).unwrap_or(0)
}

/// The id of cgroup v2's root.
const ROOT_CGROUP_ID: u64 = 1;
