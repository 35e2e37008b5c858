//! Connection storms on loopback inside a network namespace: every worker thread has its own
//! listener and makes connections one after another, ended as the workload says.
use std::{
    fs::File,
    io::Read,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// The client closes first (TIME_WAIT on the client): 10 transitions per connection.
    ClientFirst,
    /// The server closes first (TIME_WAIT on the server): 10 transitions.
    ServerFirst,
    /// The client resets with SO_LINGER 0: 6 transitions.
    Reset,
    /// Connects to a port nobody listens on: 2 transitions.
    Refused,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::ClientFirst => "client closes first",
            Workload::ServerFirst => "server closes first",
            Workload::Reset => "reset (SO_LINGER 0)",
            Workload::Refused => "refused connect",
        }
    }
}

/// Runs `workload` in the namespace at `netns_path` with `workers` threads for `duration`, as
/// fast as possible. Returns the number of connections made.
pub fn run(
    netns_path: &str,
    workers: usize,
    duration: Duration,
    workload: Workload,
) -> anyhow::Result<u64> {
    paced(netns_path, workers, duration, workload, None)
}

/// As [`run`] with one thread pinned to the last CPU: client and server, process context and
/// softirq, all on one CPU, so the rate is that CPU's work per connection and nothing else
/// (no cross-CPU wake-ups or cache lines). The setting where a few per cent are visible.
pub fn run_pinned(netns_path: &str, duration: Duration, workload: Workload) -> anyhow::Result<u64> {
    in_netns(netns_path, || {
        pin_to_last_cpu()?;
        storm(duration, workload, None)
    })
}

/// A pinned server-closes-first storm in `pairs` pairs of blocks of `block`, alternating
/// without and with tracing (`switch(true)` before a block with, `switch(false)` before one
/// without), in the order off-on, on-off, off-on, ... so that a drift within a pair favours
/// neither. Returns each pair's (connections without, connections with).
pub fn pinned_blocks(
    netns_path: &str,
    block: Duration,
    pairs: usize,
    mut switch: impl FnMut(bool) -> anyhow::Result<()> + Send,
) -> anyhow::Result<Vec<(u64, u64)>> {
    in_netns(netns_path, || {
        pin_to_last_cpu()?;
        let listener = TcpListener::bind("127.0.0.1:0").context("listen")?;
        let addr = listener.local_addr()?;
        let mut run = |on: bool| -> anyhow::Result<u64> {
            switch(on)?;
            // What attaching or detaching left to the kernel (RCU callbacks) runs now, not
            // in the timed block.
            std::thread::sleep(SETTLE);
            let deadline = Instant::now() + block;
            let mut connections = 0;
            while Instant::now() < deadline {
                connection(&listener, addr, Workload::ServerFirst)?;
                connections += 1;
            }
            Ok(connections)
        };
        (0..pairs)
            .map(|pair| {
                if pair % 2 == 0 {
                    let off = run(false)?;
                    Ok((off, run(true)?))
                } else {
                    let on = run(true)?;
                    Ok((run(false)?, on))
                }
            })
            .collect()
    })
}

/// The pause between switching tracing and a timed block.
const SETTLE: Duration = Duration::from_millis(2);

fn pin_to_last_cpu() -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::CPU_SET(cpus - 1, &mut set) };
    // SAFETY: pins this thread only; the set is valid.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// As [`run`], each worker making at most `rate` connections per second when given.
pub fn paced(
    netns_path: &str,
    workers: usize,
    duration: Duration,
    workload: Workload,
    rate: Option<f64>,
) -> anyhow::Result<u64> {
    let results: Vec<anyhow::Result<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| scope.spawn(move || worker(netns_path, duration, workload, rate)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("storm worker panicked")))
            .collect()
    });
    results.into_iter().sum()
}

fn worker(
    netns_path: &str,
    duration: Duration,
    workload: Workload,
    rate: Option<f64>,
) -> anyhow::Result<u64> {
    in_netns(netns_path, || storm(duration, workload, rate))
}

fn storm(duration: Duration, workload: Workload, rate: Option<f64>) -> anyhow::Result<u64> {
    let listener = TcpListener::bind("127.0.0.1:0").context("listen")?;
    let addr = listener.local_addr()?;
    // A port that was free a moment ago and is closed now: connects to it are refused.
    let closed: SocketAddr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let start = Instant::now();
    let deadline = start + duration;
    let mut connections = 0;
    while Instant::now() < deadline {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(connections as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        if workload == Workload::Refused {
            if TcpStream::connect(closed).is_ok() {
                bail!("{closed} accepted a connection");
            }
        } else {
            connection(&listener, addr, workload)?;
        }
        connections += 1;
    }
    Ok(connections)
}

fn connection(listener: &TcpListener, addr: SocketAddr, workload: Workload) -> anyhow::Result<()> {
    let mut buf = [0u8; 1];
    let mut client = TcpStream::connect(addr).context("connect")?;
    let (mut server, _) = listener.accept().context("accept")?;
    match workload {
        Workload::ClientFirst => {
            drop(client);
            let _ = server.read(&mut buf);
        }
        Workload::ServerFirst => {
            drop(server);
            let _ = client.read(&mut buf);
        }
        _ => {
            set_linger_zero(&client);
            drop(client);
            let _ = server.read(&mut buf);
        }
    }
    Ok(())
}

fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// Listeners on `ports` inside the namespace at `netns_path` (they stay in it).
pub fn listeners(
    netns_path: &str,
    ports: std::ops::RangeInclusive<u16>,
) -> anyhow::Result<Vec<TcpListener>> {
    in_netns(netns_path, move || {
        ports
            .map(|p| TcpListener::bind(("127.0.0.1", p)).with_context(|| format!("listen on {p}")))
            .collect()
    })
}

/// One connection of each kind to each listener, and a refused connect per port.
pub fn one_each(netns_path: &str, listeners: &[TcpListener]) -> anyhow::Result<()> {
    in_netns(netns_path, || {
        for listener in listeners {
            let addr = listener.local_addr()?;
            for workload in [
                Workload::ClientFirst,
                Workload::ServerFirst,
                Workload::Reset,
            ] {
                connection(listener, addr, workload)?;
            }
        }
        Ok(())
    })
}

/// Runs `f` on a thread inside the namespace at `netns_path`.
pub fn in_netns<T: Send>(
    netns_path: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let netns =
                    File::open(netns_path).with_context(|| format!("opening {netns_path}"))?;
                // SAFETY: enters the namespace on this thread only.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns: {}", std::io::Error::last_os_error());
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| bail!("namespace thread panicked"))
    })
}
