//! The agent's tail socket: a Unix stream socket, 0600 and owned by root, where each
//! `tcpmon tail` sends its filter as one JSON line and then reads events as JSON lines.
use std::{
    fs,
    io::{self, ErrorKind},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter},
    net::{UnixListener, UnixStream},
};

use super::{
    hub::{Hub, Subscription},
    ndjson,
    recent::{self, Recent},
};
use crate::{
    error::Error,
    sockets::lister::SocketLister,
    tail::{
        event::{json_line, Message},
        request::Request,
    },
    workload::cgroups::Workloads,
};

/// The longest request line accepted, and how long a client may take to send it.
const MAX_REQUEST: u64 = 64 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const LOST_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Bytes of formatted lines a client's task gathers before writing them.
const WRITE_CHUNK: usize = 32 * 1024;
/// Pieces of a `tcpmon sockets` answer (about 64 KiB each) queued for a client at most.
const PIECES_IN_FLIGHT: usize = 4;
/// Tail clients served at once. Each stalled client holds up to `hub::QUEUE` references to
/// shared events (128 KiB); the cap bounds that, and an incident needs a handful of clients.
pub const MAX_CLIENTS: usize = 64;

/// Binds the socket with mode 0600, replacing a stale one left by an agent that died.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, Error> {
    let error = |cause: io::Error| Error::TailSocket {
        path: path.display().to_string(),
        cause,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(error)?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(error(io::Error::new(
            ErrorKind::AddrInUse,
            "another agent is serving it",
        )));
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(error(e)),
        _ => {}
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(error)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(error)?;
    listener.set_nonblocking(true).map_err(error)?;
    Ok(listener)
}

/// Removes the socket file when the agent stops.
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Accepts tail clients (and `tcpmon sockets` requests) until the task is dropped.
pub async fn serve(listener: UnixListener, services: Services) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let services = services.clone();
                tokio::spawn(async move {
                    let _ = client(stream, services).await;
                });
            }
            Err(e) => {
                eprintln!("tcpmon: tail socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What the tail socket serves: the live tail, the socket lister, the recent trouble.
#[derive(Clone)]
pub struct Services {
    pub hub: Arc<Hub>,
    pub lister: Arc<SocketLister>,
    pub recent: Arc<Recent>,
    /// Names of the sockets' cgroups.
    pub workloads: Arc<Workloads>,
}

async fn client(stream: UnixStream, services: Services) -> io::Result<()> {
    let Services {
        hub,
        lister,
        recent,
        workloads,
    } = services;
    let (read, write) = stream.into_split();
    let mut write = BufWriter::new(write);
    let mut read = BufReader::new(read.take(MAX_REQUEST));
    let mut request = String::new();
    let got = tokio::time::timeout(REQUEST_TIMEOUT, read.read_line(&mut request)).await;
    let filter = match got.map(|read| read.map(|_| Request::parse(&request))) {
        Ok(Ok(Ok(Request::Sockets(_)))) => return list_sockets(&mut write, lister).await,
        Ok(Ok(Ok(Request::Recent(query)))) => {
            let read = read.into_inner().into_inner();
            return recent_trouble(&mut write, read, &recent, &query).await;
        }
        Ok(Ok(Ok(Request::Tail(filter)))) => Ok(filter),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no request within 5 seconds".to_string()),
    };
    let filter = match filter {
        Ok(_) if hub.subscribers() >= MAX_CLIENTS => Err(format!(
            "too many tail clients ({MAX_CLIENTS} connected): close one and retry"
        )),
        other => other.map_err(|message| format!("bad request: {message}")),
    };
    let filter = match filter {
        Ok(filter) => filter,
        Err(message) => {
            let line = json_line(&Message::Error { message });
            write.write_all(format!("{line}\n").as_bytes()).await?;
            return write.flush().await;
        }
    };
    let wanted = filter.clone();
    let mut subscription = hub.subscribe(filter);
    let mut eof = [0u8; 1];
    let mut read = read.into_inner().into_inner();
    // Losses are reported before the next event, and at least every second: the last ones may
    // have no event after them.
    let mut tick = tokio::time::interval(LOST_REPORT_INTERVAL);
    let mut lines = Vec::new();
    loop {
        tokio::select! {
            batch = subscription.next() => {
                let Some(batch) = batch else { return Ok(()) };
                report_lost(&mut write, &subscription).await?;
                // Lines are formatted into one buffer and written a chunk at a time: no
                // allocation or write call per event, and a client that stopped reading holds
                // one chunk, not a formatted batch.
                let offset = subscription.realtime_offset_ns();
                for record in batch.iter() {
                    let workload = workloads.name_off_runtime(record.cgroup_id).await;
                    if !wanted.matches_workload(workload.as_deref()) {
                        continue;
                    }
                    ndjson::write_line(record, offset, workload.as_deref(), &mut lines);
                    if lines.len() >= WRITE_CHUNK {
                        write.write_all(&lines).await?;
                        lines.clear();
                    }
                }
                drop(batch);
                write.write_all(&lines).await?;
                lines.clear();
                if subscription.is_empty() {
                    write.flush().await?;
                }
            }
            _ = tick.tick() => {
                report_lost(&mut write, &subscription).await?;
                write.flush().await?;
            }
            // The client sends nothing after its request: any read result means it is gone.
            _ = read.read(&mut eof) => return Ok(()),
        }
    }
}

/// Answers a `tcpmon sockets` request: one JSON line per socket, then the connection closes.
/// The lister runs on a blocking thread and hands pieces over a short queue: a slow client
/// holds the lister, never memory (an error after some lines ends the answer with it).
async fn list_sockets(
    write: &mut BufWriter<tokio::net::unix::OwnedWriteHalf>,
    lister: Arc<SocketLister>,
) -> io::Result<()> {
    let (pieces, mut received) = tokio::sync::mpsc::channel::<Vec<u8>>(PIECES_IN_FLIGHT);
    let listing = tokio::task::spawn_blocking(move || {
        lister.stream(|piece| pieces.blocking_send(piece).is_ok())
    });
    while let Some(piece) = received.recv().await {
        write.write_all(&piece).await?;
    }
    let listed = listing
        .await
        .unwrap_or_else(|_| Err(io::Error::other("the socket lister panicked")));
    if let Err(e) = listed {
        let message = format!("listing sockets: {e}");
        let line = json_line(&Message::Error { message });
        write.write_all(format!("{line}\n").as_bytes()).await?;
    }
    write.flush().await
}

/// Answers `tcpmon tail --recent`: the kept events the query selects, then (with `follow`)
/// new ones until the client leaves; a follower that falls behind is told what it lost.
async fn recent_trouble(
    write: &mut BufWriter<tokio::net::unix::OwnedWriteHalf>,
    mut read: tokio::net::unix::OwnedReadHalf,
    recent: &Arc<Recent>,
    query: &recent::Query,
) -> io::Result<()> {
    // A copy of up to `--recent` events, made on a blocking thread.
    let (kept, live) = {
        let (recent, query) = (Arc::clone(recent), query.clone());
        tokio::task::spawn_blocking(move || recent.query(&query))
            .await
            .map_err(|_| io::Error::other("the recent-trouble query panicked"))?
    };
    for event in &kept {
        write.write_all(recent.line(event).as_bytes()).await?;
    }
    write.flush().await?;
    let Some(mut live) = live else {
        return Ok(());
    };
    let mut eof = [0u8; 1];
    loop {
        tokio::select! {
            next = live.recv() => match next {
                Ok(event) if query.filter.matches_trouble(&event) => {
                    write.write_all(recent.line(&event).as_bytes()).await?;
                    write.flush().await?;
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(count)) => {
                    let lost = json_line(&Message::Lost { count });
                    write.write_all(format!("{lost}\n").as_bytes()).await?;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = read.read(&mut eof) => return Ok(()),
        }
    }
}

async fn report_lost(
    write: &mut BufWriter<tokio::net::unix::OwnedWriteHalf>,
    subscription: &Subscription,
) -> io::Result<()> {
    let missed = subscription.take_missed();
    if missed > 0 {
        let lost = json_line(&Message::Lost { count: missed });
        write.write_all(format!("{lost}\n").as_bytes()).await?;
    }
    Ok(())
}
