//! `tcpmon agent`: check privileges, bind, load and attach, serve until SIGINT or SIGTERM.
use std::{
    io,
    net::{SocketAddr, TcpListener},
    os::fd::AsRawFd,
    sync::Arc,
};

use anyhow::Context as _;
use prometheus::Registry;

use crate::{
    cli::AgentOptions,
    error::Error,
    metrics::{
        collector::ProbeCollector, listen_watch::ListenWatch, ports::PortTable, socket_states,
    },
    netns,
    privileges::{
        self,
        capabilities::{self, User},
    },
    probe::pin,
    sockets::lister::SocketLister,
    startup::{self, netns_inode, raise_open_files_limit, runtime, shutdown_signal},
    tail::agent::{hub::Hub, recent::Recent, server as tail_server},
    web::{routes, server as http, web_config::WebConfig},
    workload::cgroups::Workloads,
};

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
    let tail_listener = tail_server::bind(&options.tail_socket)?;
    let _socket_file = tail_server::SocketFile(options.tail_socket.clone());
    let mut probe = startup::load_probe(
        netns,
        options.max_tracked_sockets,
        pins,
        options.max_workloads > 0,
    )?;
    let program_id = probe.program_id();
    let (ring, kernel_filter) = probe.take_tail_maps()?;
    let iterator = probe
        .take_socket_iterator()
        .ok_or_else(|| Error::Load("the socket iterator was taken twice".into()))?;
    let workloads = Arc::new(Workloads::new(
        options.cgroup_root.as_deref(),
        &options.kubelet_pods,
    ));
    let lister = Arc::new(SocketLister::new(
        iterator,
        options.netns.clone(),
        Arc::clone(&workloads),
    ));
    let readers = Arc::new(
        probe
            .take_readers()
            .ok_or_else(|| Error::Load("the kernel readers were taken twice".into()))?,
    );
    let namespaces = match &options.netns {
        Some(path) => vec![path.clone()],
        None => netns::all().into_values().collect(),
    };
    let (socket_states, unnoted) =
        socket_states::take_baseline(&readers, namespaces, probe.transitions_at_attach().to_vec())
            .map_err(|cause| Error::Io {
                what: "walking the sockets of every namespace at start-up".into(),
                cause,
            })?;
    if unnoted > 0 {
        eprintln!("{}", startup::unnoted_sockets_note(unnoted));
    }
    let trouble_ring = probe.take_trouble_ring()?;
    let reset_reasons = probe.reset_reasons().clone();
    let ports = PortTable::continuing(&probe.port_slots()?, &options.ports, options.max_ports)
        .map_err(Error::Ports)?;
    // Loaded, attached, bound: from here on the agent needs only what its scrapes use.
    capabilities::drop_privileges(user.as_ref())?;

    runtime()?.block_on(async {
        let hub = Hub::start(ring, kernel_filter);
        let recent = Recent::start(trouble_ring, options.recent_events as usize, reset_reasons);
        let listen_watch = ListenWatch::new(Arc::clone(&recent), readers);
        let collector = ProbeCollector::new(
            probe,
            ports,
            Arc::clone(&listen_watch),
            Arc::clone(&hub),
            Arc::clone(&workloads),
            socket_states,
            options.max_workloads as usize,
        )?;
        listen_watch.start();
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
        let services = tail_server::Services {
            hub,
            lister,
            recent,
            workloads,
        };
        let tail = tokio::spawn(tail_server::serve(tail_listener, services));
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
