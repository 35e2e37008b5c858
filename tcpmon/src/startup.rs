//! Start-up steps shared by `tcpmon agent` and `tcpmon tail --standalone`: finding the network
//! namespace to count, loading the probe with this kernel's offsets, the async runtime and the
//! shutdown signal.
use std::{
    fs::File,
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    error::Error,
    probe::{KernelOffsets, Probe, ProbeConfig},
};

/// `ioctl(NS_GET_NSTYPE)` (linux/nsfs.h) and the answer for a network namespace.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// The agent's async runtime: one thread; the work per event is small and the kernel does the
/// counting.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Raises the soft limit on open files to the hard limit, as Go programs do at start: the
/// soft limit is often 1,024 (systemd's default), too few for [`MAX_CONNECTIONS`](crate::web::server::MAX_CONNECTIONS)
/// scrapers next to the agent's own descriptors. Failing leaves the limit as it was; the
/// server then waits for descriptors instead of failing.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Gives back to the kernel what start-up needed only once: parsing the kernel's BTF (5 MB or
/// more) leaves freed heap that glibc would otherwise keep, about 15 MB of resident memory.
fn release_startup_memory() {
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
}

/// Printed at start on kernels that hide interrupt work on top of PID 1 from BPF tracing
/// programs (see `KernelOffsets::skips_runs_under_init`).
pub const SKIPS_UNDER_INIT_NOTE: &str = "tcpmon: note: this kernel does not run BPF tracing programs while a thread of PID 1 is the current task; transitions made in interrupts that land on PID 1 are neither counted nor reported as skipped runs";

/// Printed where `tcp_send_reset` carries no reason (before Linux 6.10).
pub const NO_RESET_REASONS_NOTE: &str = "tcpmon: note: this kernel names no reset reasons (Linux 6.10+ does): tcpmon_resets_total has reason=\"unknown\", and resets sent for segments that match no socket are not seen";

/// Printed at start on kernels whose sockets carry no cgroup (built without
/// `CONFIG_SOCK_CGROUP_DATA`, which every cgroup v2 kernel has).
pub const NO_SOCKET_CGROUPS_NOTE: &str =
    "tcpmon: note: this kernel's sockets carry no cgroup: every workload label is \"unknown\"";

/// Printed at start when sockets changed state faster than the program could note them while
/// the agent took its count of sockets per state.
pub fn unnoted_sockets_note(unnoted: u64) -> String {
    format!("tcpmon: note: {unnoted} sockets changed state while the agent started without room to note them: tcpmon_sockets may be off by up to {unnoted} until the agent restarts")
}

/// Loads and attaches the probe with this kernel's offsets (printing the kernel's caveats, if
/// it has them), then gives back the memory that start-up needed only once.
pub fn load_probe(
    netns: Option<u32>,
    max_tracked_sockets: u32,
    pins: Vec<(&'static str, PathBuf)>,
    attribute_workloads: bool,
) -> Result<Probe, Error> {
    let config = ProbeConfig {
        offsets: KernelOffsets::from_vmlinux()?,
        netns,
        max_tracked_sockets,
        pins,
        attribute_workloads,
    };
    if config.offsets.cgroup.is_none() {
        eprintln!("{NO_SOCKET_CGROUPS_NOTE}");
    }
    if config.offsets.skips_runs_under_init {
        eprintln!("{SKIPS_UNDER_INIT_NOTE}");
    }
    if config.offsets.reset_reasons.is_none() {
        eprintln!("{NO_RESET_REASONS_NOTE}");
    }
    let probe = Probe::load(&config)?;
    release_startup_memory();
    Ok(probe)
}

/// The inode that identifies the network namespace at `path`, checked to be one.
pub fn netns_inode(path: &Path) -> Result<u32, Error> {
    let error = |cause| Error::Netns {
        path: path.display().to_string(),
        cause,
    };
    let file = File::open(path).map_err(error)?;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the open descriptor.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if kind != libc::CLONE_NEWNET {
        return Err(error(io::Error::other("not a network namespace")));
    }
    let inode = file.metadata().map_err(error)?.ino();
    u32::try_from(inode).map_err(|_| error(io::Error::other("inode out of range")))
}

/// Resolves on the first SIGINT or SIGTERM.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
