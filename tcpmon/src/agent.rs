//! `tcpmon agent`: check privileges, bind, load and attach, serve until SIGINT or SIGTERM.
use std::{
    fs::File,
    io,
    net::{SocketAddr, TcpListener},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use prometheus::Registry;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    capabilities::{self, User},
    cli::AgentOptions,
    collector::ProbeCollector,
    error::Error,
    http, pin,
    ports::PortTable,
    privileges,
    probe::{KernelOffsets, Probe, ProbeConfig},
    routes,
    tail::{self, hub::Hub},
    web_config::WebConfig,
};

/// `ioctl(NS_GET_NSTYPE)` (linux/nsfs.h) and the answer for a network namespace.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

pub fn run(options: AgentOptions) -> anyhow::Result<()> {
    privileges::check()?;
    // Everything a user can get wrong is checked before anything is loaded.
    let web = match &options.web_config {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::default(),
    };
    PortTable::new(&options.ports, options.max_ports).map_err(Error::Ports)?;
    let user = options.user.as_deref().map(User::lookup).transpose()?;
    let netns = options.netns.as_deref().map(netns_inode).transpose()?;
    let pins = match &options.pin {
        Some(dir) => pin::prepare(dir, options.max_tracked_sockets)?,
        None => Vec::new(),
    };
    raise_open_files_limit();
    // Bind before loading, so a busy port fails fast and leaves nothing behind.
    let listener = bind(options.listen)?;
    // The address actually bound: with port 0 the kernel picks one.
    let serving = listener.local_addr().unwrap_or(options.listen);
    let tail_listener = tail::server::bind(&options.tail_socket)?;
    let _socket_file = tail::server::SocketFile(options.tail_socket.clone());
    let config = probe_config(netns, options.max_tracked_sockets, pins)?;
    if config.offsets.skips_runs_under_init {
        eprintln!("{SKIPS_UNDER_INIT_NOTE}");
    }
    let mut probe = Probe::load(&config)?;
    release_startup_memory();
    let program_id = probe.program_id();
    let (ring, switch) = probe.take_tail_maps()?;
    let ports = PortTable::continuing(&probe.port_slots()?, &options.ports, options.max_ports)
        .map_err(Error::Ports)?;
    // Loaded, attached, bound: from here on the agent needs only what its scrapes use.
    capabilities::drop_privileges(user.as_ref())?;

    runtime()?.block_on(async {
        let hub = Hub::start(ring, switch);
        let collector =
            ProbeCollector::new(probe, ports, options.netns.clone(), Arc::clone(&hub))?;
        let registry = Registry::new();
        registry
            .register(Box::new(collector))
            .context("registering the collector")?;
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .context("registering the process collector")?;
        let scope = match (&options.netns, netns) {
            (Some(path), Some(inode)) => {
                format!("network namespace {} (inode {inode})", path.display())
            }
            _ => "all network namespaces".to_string(),
        };
        let scheme = if web.tls.is_some() { "https" } else { "http" };
        eprintln!(
            "tcpmon: program {program_id} attached to sock:inet_sock_set_state, counting {scope}; serving {scheme}://{serving}/metrics and tail socket {}",
            options.tail_socket.display()
        );
        let tail_listener = tokio::net::UnixListener::from_std(tail_listener)
            .context("registering the tail socket")?;
        let tail = tokio::spawn(tail::server::serve(tail_listener, hub));
        let listener = tokio::net::TcpListener::from_std(listener)
            .context("registering the listener")?;
        let app = routes::router(registry, &web);
        let served = http::serve(listener, app, web.tls.clone(), shutdown_signal()?)
            .await
            .context("serving HTTP");
        tail.abort();
        served
    })?;
    eprintln!("tcpmon: stopped; program {program_id} detached");
    Ok(())
}

/// The agent's async runtime: one thread; the work per event is small and the kernel does the
/// counting.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Raises the soft limit on open files to the hard limit, as Go programs do at start: the
/// soft limit is often 1,024 (systemd's default), too few for [`http::MAX_CONNECTIONS`]
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
pub fn release_startup_memory() {
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
}

/// Printed at start on kernels that hide interrupt work on top of PID 1 from BPF tracing
/// programs (see `KernelOffsets::skips_runs_under_init`).
pub const SKIPS_UNDER_INIT_NOTE: &str = "tcpmon: note: this kernel does not run BPF tracing programs while a thread of PID 1 is the current task; transitions made in interrupts that land on PID 1 are neither counted nor reported as skipped runs";

/// Reads this kernel's struct offsets from its BTF.
pub fn probe_config(
    netns: Option<u32>,
    max_tracked_sockets: u32,
    pins: Vec<(&'static str, PathBuf)>,
) -> Result<ProbeConfig, Error> {
    Ok(ProbeConfig {
        offsets: KernelOffsets::from_vmlinux()?,
        netns,
        max_tracked_sockets,
        pins,
    })
}

fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    let listener = TcpListener::bind(addr).map_err(|cause| match cause.kind() {
        io::ErrorKind::AddrInUse => Error::ListenAddrInUse { addr },
        _ => Error::Listen { addr, cause },
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|cause| Error::Listen { addr, cause })?;
    // std listens with a backlog of 128; let as many connections queue as are served at once,
    // so a burst of scrapers waits for a slot instead of retrying SYNs.
    let backlog = libc::c_int::try_from(http::MAX_CONNECTIONS).unwrap_or(libc::c_int::MAX);
    // SAFETY: listen() again on a listening socket only changes its backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
        let cause = io::Error::last_os_error();
        return Err(Error::Listen { addr, cause });
    }
    Ok(listener)
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
