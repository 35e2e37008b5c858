//! The program's own cost and misses, from `BPF_OBJ_GET_INFO_BY_FD`: run count and run time
//! (counted only while `kernel.bpf_stats_enabled` is 1) and recursion misses (runs the kernel
//! skipped because the program was already running on that CPU, interrupted by the transition:
//! transitions tcpmon did not count). aya 0.14 does not expose the misses, so the info is read
//! here.
//!
//! Older kernels know a shorter `bpf_prog_info` and say how much of it they filled in: run
//! count and time exist since Linux 5.1 (counted since 5.8's `bpf_stats_enabled`), recursion
//! misses since 5.12. A field the kernel did not fill in is unknown, not zero. A kernel that
//! skips a nested run of a BTF-enabled tracepoint program always counts it (the per-program
//! recursion guard and its counter came together); older ones run it nested instead.
use std::{fs, io, os::fd::AsRawFd};

use aya_obj::generated::bpf_prog_info;

use super::bpf_call::{bpf, BPF_OBJ_GET_INFO_BY_FD};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats {
    pub run_time_ns: u64,
    pub run_count: u64,
    /// `None` where the kernel does not report them (before Linux 5.12).
    pub recursion_misses: Option<u64>,
}

/// The `info` member of `union bpf_attr`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

pub fn read(program: &impl AsRawFd) -> io::Result<ProgramStats> {
    // SAFETY: bpf_prog_info is plain old data; all zeroes is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: program.as_raw_fd() as u32,
        info_len: size_of::<bpf_prog_info>() as u32,
        info: (&raw mut info) as u64,
    };
    // SAFETY: attr points at an info buffer of info_len bytes that outlives the call.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    // The kernel writes back how many bytes of the info it knows.
    let known = attr.info_len as usize;
    let misses_end = std::mem::offset_of!(bpf_prog_info, recursion_misses) + size_of::<u64>();
    Ok(ProgramStats {
        run_time_ns: info.run_time_ns,
        run_count: info.run_cnt,
        recursion_misses: (known >= misses_end).then_some(info.recursion_misses),
    })
}

/// Whether the kernel is counting run time and run count (`kernel.bpf_stats_enabled`).
pub fn stats_enabled() -> bool {
    fs::read_to_string(STATS_SYSCTL).is_ok_and(|v| v.trim() == "1")
}
