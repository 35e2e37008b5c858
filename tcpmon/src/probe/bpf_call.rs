//! The `bpf(2)` commands aya 0.14 has no public wrapper for, in one place: batch lookups and
//! updates, single lookups and deletes by raw key, a program's test run, iterator links and a
//! program's run statistics. Each caller fills the member of `union bpf_attr` its command
//! reads, as a `#[repr(C)]` struct.
use std::io;

pub const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
pub const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
pub const BPF_PROG_TEST_RUN: libc::c_long = 10;
pub const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
pub const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
pub const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
pub const BPF_LINK_CREATE: libc::c_long = 28;
pub const BPF_ITER_CREATE: libc::c_long = 33;

/// Runs command `cmd` with `attr`; returns the kernel's result (a count, a descriptor, 0).
///
/// # Safety
/// `attr` must be the member of `union bpf_attr` that `cmd` reads, zero where unused, and each
/// pointer in it must point at memory of the size the kernel reads or writes there, live for
/// the call.
pub unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<i64> {
    // SAFETY: the caller's; the size given is the struct's.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<A>()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// The `elem` member of `union bpf_attr`: one key of a map (and its value, for a lookup).
#[repr(C)]
#[derive(Default)]
pub struct ElemAttr {
    pub map_fd: u32,
    pub _pad: u32,
    pub key: u64,
    pub value: u64,
    pub flags: u64,
}
