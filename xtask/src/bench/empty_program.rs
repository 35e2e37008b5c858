//! The benchmark's floor: an empty BTF-enabled tracepoint program (`tp_btf`, `return 0`) on
//! `inet_sock_set_state`, the attach type tcpmon uses. What it costs is what any program there
//! pays before doing any work of its own: the kernel's dispatch to BPF for each transition.
//! Loaded with two `bpf()` system calls, so the benchmark needs no compiler for it (bpftrace
//! 0.17 cannot attach one).
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context as _};

use super::harness::command;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_TRACE_RAW_TP: u32 = 23;
/// The typedef the kernel's BTF declares for the tracepoint: the program's attach point.
const TRACEPOINT_TYPEDEF: &str = "'btf_trace_inet_sock_set_state'";

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `attach_btf_id`.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_prog_fd: u32,
    _pad: u32,
}

/// `union bpf_attr` for `BPF_RAW_TRACEPOINT_OPEN`.
#[repr(C)]
struct RawTracepointOpen {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// The attached program; dropping it detaches and unloads it.
pub struct EmptyProgram {
    _program: OwnedFd,
    _link: OwnedFd,
}

pub fn attach() -> anyhow::Result<EmptyProgram> {
    let program = load()?;
    let link = attach_program(&program).context("attaching the empty program")?;
    Ok(EmptyProgram {
        _program: program,
        _link: link,
    })
}

/// Loads the empty program without attaching it.
pub fn load() -> anyhow::Result<OwnedFd> {
    // r0 = 0; exit
    let insns: [u64; 2] = [u64::from_le_bytes([0xb7, 0, 0, 0, 0, 0, 0, 0]), 0x95];
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"bench_empty");
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_TRACING,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_TRACE_RAW_TP,
        attach_btf_id: attach_btf_id()?,
        ..ProgLoad::default()
    };
    bpf(BPF_PROG_LOAD, &attr).context("loading the empty program")
}

/// Attaches a loaded `tp_btf` program (this one, or one of the agent's) to its tracepoint:
/// it runs after the programs attached before it. Closing the link detaches it.
pub fn attach_program(program: &OwnedFd) -> anyhow::Result<OwnedFd> {
    let open = RawTracepointOpen {
        name: 0,
        prog_fd: program.as_raw_fd() as u32,
        _pad: 0,
    };
    bpf(BPF_RAW_TRACEPOINT_OPEN, &open)
}

/// A descriptor of the loaded program with this id (`BPF_PROG_GET_FD_BY_ID`): it stays
/// loaded while the descriptor is open, even after the process that loaded it exits.
pub fn program_by_id(id: u32) -> anyhow::Result<OwnedFd> {
    let attr: [u32; 3] = [id, 0, 0];
    bpf(BPF_PROG_GET_FD_BY_ID, &attr).with_context(|| format!("opening program {id}"))
}

/// The BTF type id of the tracepoint's typedef in the kernel's BTF, as bpftool lists it
/// (`[ID] TYPEDEF 'btf_trace_inet_sock_set_state' type_id=...`).
fn attach_btf_id() -> anyhow::Result<u32> {
    let dump = command(
        "bpftool",
        &["btf", "dump", "file", "/sys/kernel/btf/vmlinux"],
    )?;
    dump.lines()
        .find(|l| l.contains(" TYPEDEF ") && l.contains(TRACEPOINT_TYPEDEF))
        .and_then(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .context("the kernel's BTF has no btf_trace_inet_sock_set_state")
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> anyhow::Result<OwnedFd> {
    // SAFETY: `attr` is a valid bpf_attr prefix of the size passed; the kernel reads only that.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            size_of::<T>() as u32,
        )
    };
    if fd < 0 {
        bail!("bpf({cmd}): {}", std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
