//! A connection storm on loopback inside a network namespace: every worker thread connects to
//! its own listener, the server side closes first (so TIME_WAIT stays on the server and client
//! ports never run out), the client reads EOF and closes. 10 transitions per connection.
use std::{
    fs::File,
    io::Read,
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

/// Runs the storm in the namespace at `netns_path` with `workers` threads for `duration`, as
/// fast as possible. Returns the number of connections completed.
pub fn run(netns_path: &str, workers: usize, duration: Duration) -> anyhow::Result<u64> {
    paced(netns_path, workers, duration, None)
}

/// As [`run`], each worker making at most `rate` connections per second when given.
pub fn paced(
    netns_path: &str,
    workers: usize,
    duration: Duration,
    rate: Option<f64>,
) -> anyhow::Result<u64> {
    let results: Vec<anyhow::Result<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| scope.spawn(move || worker(netns_path, duration, rate)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("storm worker panicked")))
            .collect()
    });
    results.into_iter().sum()
}

fn worker(netns_path: &str, duration: Duration, rate: Option<f64>) -> anyhow::Result<u64> {
    let netns = File::open(netns_path).with_context(|| format!("opening {netns_path}"))?;
    // SAFETY: enters the namespace on this thread only; `netns` is an open nsfs descriptor.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns: {}", std::io::Error::last_os_error());
    }
    let listener = TcpListener::bind("127.0.0.1:0").context("listen")?;
    let addr = listener.local_addr()?;
    let start = Instant::now();
    let deadline = start + duration;
    let mut connections = 0;
    let mut buf = [0u8; 1];
    while Instant::now() < deadline {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(connections as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let mut client = TcpStream::connect(addr).context("connect")?;
        let (server, _) = listener.accept().context("accept")?;
        drop(server);
        let _ = client.read(&mut buf);
        drop(client);
        connections += 1;
    }
    Ok(connections)
}
