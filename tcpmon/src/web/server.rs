//! The HTTP server behind `/metrics`, `/healthz` and `/`, over plain TCP or TLS.
//!
//! The agent runs as root on every host, and its port is often reachable from far more than
//! Prometheus, so a broken or hostile client must not be able to exhaust it:
//! - at most [`MAX_CONNECTIONS`] connections are served at once; further ones wait in the
//!   kernel's accept queue until a slot frees (memory stays bounded, nothing is dropped);
//! - a request's head (request line and headers) may hold [`MAX_HEADER_BYTES`]; a longer one
//!   is answered 431 and the connection closed, never buffered whole;
//! - a client has [`HEADER_READ_TIMEOUT`] to send a complete request head, counted from the
//!   connection's start and again after each answer: a slowloris client trickling bytes, or a
//!   connection left idle, is closed after 5 seconds (Prometheus opens a new one if its
//!   scrape interval is longer);
//! - a TLS handshake must finish within [`TLS_HANDSHAKE_TIMEOUT`];
//! - a connection lives at most [`MAX_CONNECTION_AGE`]: then the request in flight is finished
//!   and the connection closed, or dropped [`GRACE`] later if the client does not read.
use std::{future::Future, io, sync::Arc, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    time::{sleep, timeout},
};
use tokio_rustls::TlsAcceptor;

/// Connections served at once. The agent raises its open-files limit at start so that this
/// many sockets fit next to its own descriptors.
pub const MAX_CONNECTIONS: usize = 1024;
/// Longest request head accepted. A Prometheus scrape request is about 300 bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Time a client has to send a complete request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to complete a TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of a connection.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// How long a closing connection (at shutdown or at its maximum age) may take to finish.
pub const GRACE: Duration = Duration::from_secs(5);

/// Serves `app` until `shutdown` resolves, then lets answers in flight finish (for up to
/// [`GRACE`]). With `tls`, every connection must first complete a TLS handshake.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop, stopping) = watch::channel(());
    let acceptor = tls.map(TlsAcceptor::from);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.map_err(io::Error::other)?,
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or memory: wait rather than spin; the queue keeps.
                    if !matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
                        sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        let connection = Connection {
            http: Arc::clone(&http),
            app: app.clone(),
            stopping: stopping.clone(),
            _slot: slot,
        };
        tokio::spawn(connection.run(stream, acceptor.clone()));
    }
    drop(listener);
    let _ = stop.send(());
    // Each connection gives its slot back when it ends.
    let _ = timeout(GRACE, slots.acquire_many(MAX_CONNECTIONS as u32)).await;
    Ok(())
}

/// One accepted connection, holding its slot until it ends.
struct Connection {
    http: Arc<http1::Builder>,
    app: Router,
    stopping: watch::Receiver<()>,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(mut self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        // Answers are written whole; no reason to wait for more to coalesce.
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = tls else {
            return self.serve(stream).await;
        };
        let handshake = tokio::select! {
            done = timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => done,
            _ = self.stopping.changed() => return,
        };
        // A failed handshake has already told the client why (a TLS alert).
        if let Ok(Ok(stream)) = handshake {
            self.serve(stream).await;
        }
    }

    async fn serve<I>(mut self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = TowerToHyperService::new(self.app.clone());
        let connection = self.http.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        // Errors (a timeout, a malformed request, a client gone) end only this connection,
        // and hyper has already answered what deserved an answer (400, 431).
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = self.stopping.changed() => {}
            () = sleep(MAX_CONNECTION_AGE) => {}
        }
        connection.as_mut().graceful_shutdown();
        let _ = timeout(GRACE, connection).await;
    }
}
